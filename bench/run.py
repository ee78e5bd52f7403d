"""`make bench`: extraction by `ampd dump` against a floor and peers, query serving scans, and
the same work on the local disk against an S3 endpoint.

One run: build (or load from bench/work/) an anvil chain whose every block holds contract
calls with logs and transfers. The extract stage runs, on the same block ranges, each tool
as a measured subprocess: the floor (bench/floor.py: fetch and decode, nothing more), `ampd
dump`, cryo and ethereum-etl (in their own virtualenv, bench/work/peers-venv). The query
stage (bench/serving.py) has `ampd solo` extract the chain and times full-table scans
through its JSON Lines and Arrow Flight endpoints against DataFusion over the same files.
The store stage (bench/store_stage.py) runs `ampd dump`, a one-worker job, full scans and a
COUNT(*) over 1,000 files on the local disk and on moto's S3 server, and checks S3's targets.
The distributed stage (bench/distributed_stage.py) times the floor, `ampd dump` and jobs of
one and three workers on the local node and behind a latency proxy (a remote node). The
functions stage (bench/functions_stage.py) decodes a million logs with Amp's EVM functions
through DataFusion; it needs no node.
Prints the tables, writes bench/results/<UTC time>.json and latest.json, and refreshes the
results sections of docs/benchmarks.md. See that document for what is measured and every flag.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import derived_stage
import distributed_report
import distributed_stage
import firehose_stage
import functions_stage
import pyarrow
import report
import serving
import store_stage
import tools
from anvil import Anvil, AnvilError, anvil_version
from chain import Chain, ChainPlan, cache_paths, fill, read_meta, verify, write_meta
from measure import last_json_line, log_tail
from peers import ensure_peer

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = BENCH / "work"
RESULTS = BENCH / "results"
DOC = REPO / "docs" / "benchmarks.md"

ALL_STAGES = ("extract", "query", "store", "distributed", "functions", "derived", "firehose")
ALL_TOOLS = ("floor", "ampd", "cryo", "ethereum-etl")
DEFAULT_SIZES = (20_000, 100_000)
_STARTED = time.monotonic()


def log(message: str) -> None:
    elapsed = int(time.monotonic() - _STARTED)
    print(f"[{elapsed // 60:3d}:{elapsed % 60:02d}] {message}", flush=True)


class BenchError(RuntimeError):
    """The benchmark itself cannot go on (not a tool failing: that is recorded and shown)."""


# -- the machine and versions -------------------------------------------------------------


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "load_average_after": os.getloadavg(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 2**20, 1),
        "cpu_model": cpu,
        "kernel": platform.release(),
    }


# -- the chain ----------------------------------------------------------------------------


def _find_cached(plan: ChainPlan) -> tuple[Chain, Path] | None:
    """A cached chain with the plan's content and at least its blocks (the smallest such)."""
    found = []
    for meta in (WORK / "chains").glob("*.meta.json"):
        try:
            stored = json.loads(meta.read_text())["plan"]
        except (OSError, ValueError, KeyError):
            continue
        candidate = ChainPlan(**stored)
        same = (candidate.calls, candidate.transfers, candidate.layout) == (
            plan.calls, plan.transfers, plan.layout,
        )  # fmt: skip
        state, _ = cache_paths(WORK, candidate)
        chain = read_meta(meta, candidate)
        # Loading takes ~0.5 ms a block, building ~2.5: past 4x the blocks, build instead.
        fits = plan.blocks <= candidate.blocks <= 4 * plan.blocks
        if same and fits and state.exists() and chain is not None:
            found.append((candidate.blocks, chain, state))
    if not found:
        return None
    _, chain, state = min(found, key=lambda f: f[0])
    return chain, state


def _prune_cache(keep: Path) -> None:
    """Drop cached chains that `keep` makes useless: other layouts, or fewer blocks."""
    kept = json.loads(Path(str(keep).replace(".state.json", ".meta.json")).read_text())["plan"]
    for meta in (WORK / "chains").glob("*.meta.json"):
        state = Path(str(meta).replace(".meta.json", ".state.json"))
        if state == keep:
            continue
        try:
            plan = json.loads(meta.read_text())["plan"]
        except (OSError, ValueError, KeyError):
            plan = None
        same = plan is not None and all(
            plan[k] == kept[k] for k in ("calls", "transfers", "layout")
        )
        if plan is None or not same or plan["blocks"] <= kept["blocks"]:
            log(f"removing the cached chain {state.name}, superseded by {keep.name}")
            state.unlink(missing_ok=True)
            meta.unlink(missing_ok=True)


def _build(plan: ChainPlan, anvil: Anvil) -> Chain:
    log(f"building a {plan.blocks:,}-block chain on anvil (about {plan.blocks // 400 + 1} s)")

    def progress(done: int, total: int) -> None:
        log(f"  chain: {done:,} / {total:,} blocks, anvil RSS {anvil.rss_mib():,.0f} MiB")

    chain = fill(anvil, plan, progress)
    rate = plan.blocks / chain.build_seconds
    log(f"chain built in {chain.build_seconds:.0f} s ({rate:,.0f} blocks/s)")
    return chain


@contextmanager
def chain_node(plan: ChainPlan, use_cache: bool, rebuild: bool, info: dict):
    """A running anvil holding a chain of at least `plan.blocks` blocks; always stopped."""
    if not use_cache:
        with Anvil(WORK / "anvil-build.log", no_mining=True) as anvil:
            chain = _build(plan, anvil)
            info.update(chain.to_json(), load_seconds=None)
            yield anvil, chain
        return
    cached = None if rebuild else _find_cached(plan)
    if cached is None:
        state, meta = cache_paths(WORK, plan)
        partial = state.with_name(state.name + ".partial")
        partial.parent.mkdir(parents=True, exist_ok=True)  # absent in a fresh clone
        try:
            with Anvil(WORK / "anvil-build.log", no_mining=True, dump_state=partial) as anvil:
                chain = _build(plan, anvil)
                log("stopping anvil to save the chain state for later runs")
                dump_started = time.monotonic()
            if not partial.exists():
                raise BenchError(f"anvil did not write its state to {partial}")
            partial.rename(state)
        finally:
            partial.unlink(missing_ok=True)  # what an interrupted dump left
        write_meta(meta, chain)
        info["dump_seconds"] = round(time.monotonic() - dump_started, 1)
        info["state_file_mib"] = round(state.stat().st_size / 2**20)
        log(f"saved {state.name} ({info['state_file_mib']:,} MiB) in {info['dump_seconds']} s")
        _prune_cache(state)
    else:
        chain, state = cached
        log(f"reusing the cached {chain.plan.blocks:,}-block chain {state.name}")
    # Every run, first or later, measures against a node loaded from the same state file.
    started = time.monotonic()
    with Anvil(
        WORK / "anvil-bench.log", no_mining=True, load_state=state, startup_timeout=1800
    ) as anvil:
        load_seconds = time.monotonic() - started
        verify(anvil, chain)
        log(f"anvil loaded the chain in {load_seconds:.0f} s, RSS {anvil.rss_mib():,.0f} MiB")
        info.update(chain.to_json(), load_seconds=round(load_seconds, 1))
        info["loaded_from_cache"] = cached is not None
        yield anvil, chain


# -- measuring a tool ---------------------------------------------------------------------


def _measured(command: list[str], timeout: float, out: Path, log_path: Path) -> dict:
    """Run `command` under bench/measure.py; interrupting us interrupts it (and its tree)."""
    wrapper = [
        sys.executable, str(BENCH / "measure.py"), "--out", str(out),
        "--timeout", str(timeout), "--log", str(log_path), "--", *command,
    ]  # fmt: skip
    proc = subprocess.Popen(wrapper, stdin=subprocess.DEVNULL)
    try:
        # measure.py enforces `timeout` itself; this bound only catches it hanging.
        code = proc.wait(timeout + 120)
    except BaseException:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if code != 0 or not out.exists():
        raise BenchError(f"bench/measure.py failed (exit {code}) running {' '.join(command)}")
    return json.loads(out.read_text())


def run_tool(tool: tools.Tool, url: str, chain: Chain, size: int, rep: int, timeout: float) -> dict:
    start, end = chain.first, chain.first + size - 1
    slug = tool.name.replace(" ", "-")
    out_dir = WORK / "out" / f"{slug}-{size}"
    log_path = WORK / "logs" / f"{slug}-{size}-{rep}.log"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    m = _measured(tool.command(url, start, end, out_dir), timeout, WORK / "measure.json", log_path)
    run = {
        "repeat": rep,
        "wall_seconds": round(m["wall_seconds"], 3),
        "peak_rss_mib": round(m["peak_rss_kib"] / 1024, 1),
        "max_process_rss_mib": round(m["max_process_rss_kib"] / 1024, 1),
        "tree_peak_rss_mib": round(m["tree_peak_rss_kib"] / 1024, 1),
        "cpu_seconds": round(m["user_seconds"] + m["system_seconds"], 2),
        "blocks": size,
        "log": str(log_path.relative_to(REPO)),
    }
    if m["timed_out"] or m["returncode"] != 0:
        why = f"timed out after {timeout:g} s" if m["timed_out"] else f"exit {m['returncode']}"
        tail = log_tail(log_path)
        last = tail.splitlines()[-1] if tail and not m["timed_out"] else ""
        run.update(
            status="failed",
            error=f"{why}{': ' + last if last else ''} (log: {run['log']})",
            log_tail=tail,
        )
        return run
    try:
        rows = tool.count_rows(out_dir, log_path)
    except (OSError, ValueError, KeyError) as exc:
        run.update(status="failed", error=f"could not count its output rows: {exc}")
        return run
    expected = {k: v * size // chain.blocks for k, v in chain.expected_rows().items()}
    written = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    run.update(
        status="ok",
        output_mib=round(written / 2**20, 1),
        tool_summary=last_json_line(log_path),
        rows=rows,
        rows_total=sum(rows.values()),
        rows_match=rows == expected,
        expected_rows=expected,
        blocks_per_second=round(size / m["wall_seconds"], 1),
        rows_per_second=round(sum(rows.values()) / m["wall_seconds"], 1),
    )
    if not run["rows_match"]:
        log(f"  warning: {tool.name} wrote {rows}, expected {expected}")
    return run


# -- tuning the floor ---------------------------------------------------------------------


def tune_floor(url: str, chain: Chain, blocks: int) -> tuple[int, int, list[dict]]:
    """Sweep the floor's batch size and concurrency on the first `blocks` blocks."""
    sweep = []
    for batch in (20, 50, 100, 200, 500):
        for concurrency in (1, 2, 4, 8):
            tool = tools.floor_tool(batch, concurrency)
            run = run_tool(tool, url, chain, blocks, 0, 600)
            if run["status"] != "ok":
                raise BenchError(f"floor failed while tuning: {run['error']}")
            sweep.append(
                {
                    "batch_size": batch,
                    "concurrency": concurrency,
                    "wall_seconds": run["wall_seconds"],
                }
            )
            log(f"  floor batch {batch:4d} x {concurrency} in flight: {run['wall_seconds']:.2f} s")
    best = min(sweep, key=lambda s: s["wall_seconds"])
    return best["batch_size"], best["concurrency"], sweep


# -- the run ------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__.splitlines()[0],
    )  # fmt: skip
    p.add_argument(
        "--sizes",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="block counts, comma-separated; one chain of the largest serves all (default: %(default)s)",
    )
    p.add_argument(
        "--stages",
        default=",".join(ALL_STAGES),
        help="extract: the tools on each size; query: full scans through ampd solo's "
        "endpoints; store: dump, a job and scans on the local disk vs S3 (moto); "
        "distributed: floor, dump and jobs of 1 and 3 workers, local and behind a latency "
        "proxy; functions: evm_decode_log and shift_units over 1,000,000 logs; derived: a "
        "derived dataset decoding every log, materialized by one worker, and a streaming "
        "query's latency; firehose: ampd dump through the test Firehose server against "
        "JSON-RPC on a chain of its own (default: %(default)s)",
    )
    p.add_argument(
        "--tools",
        default=",".join(ALL_TOOLS),
        help="which tools, comma-separated (default: %(default)s)",
    )
    p.add_argument(
        "--small-only",
        default="ethereum-etl",
        help="tools run on the smallest size only, comma-separated, '' for none (default: %(default)s)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per tool and size; the median is reported (default: 1)",
    )
    p.add_argument(
        "--floor-batch-size",
        type=int,
        default=tools.FLOOR_BATCH_SIZE,
        help="JSON-RPC calls per batch for the floor (default: %(default)s)",
    )
    p.add_argument(
        "--floor-concurrency",
        type=int,
        default=tools.FLOOR_CONCURRENCY,
        help="batches in flight for the floor (default: %(default)s)",
    )
    p.add_argument(
        "--ampd-batch-size", type=int, help="provider rpc_batch_size (default: the floor's)"
    )
    p.add_argument(
        "--ampd-concurrency",
        type=int,
        help="provider concurrent_request_limit (default: the floor's)",
    )
    p.add_argument(
        "--ampd-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `ampd dump` (repeat it: --ampd-arg=--chunks-in-flight --ampd-arg=8)",
    )
    p.add_argument(
        "--query-size",
        type=int,
        help="blocks the query stage extracts and scans (default: the largest of --sizes)",
    )
    p.add_argument(
        "--query-tables",
        default=",".join(serving.TABLES),
        help="tables the query stage scans, comma-separated (default: %(default)s)",
    )
    p.add_argument(
        "--store-size",
        type=int,
        help="blocks the store stage dumps, extracts and scans (default: the smallest of --sizes)",
    )
    p.add_argument(
        "--distributed-size",
        type=int,
        help="blocks the distributed stage extracts (default: the smallest of --sizes)",
    )
    p.add_argument(
        "--distributed-large-size",
        type=int,
        help="blocks on which the distributed stage also runs the floor, ampd dump and one "
        "worker on the local node (default: the largest of --sizes when it is larger than "
        "--distributed-size; 0 for none)",
    )
    p.add_argument(
        "--derived-size",
        type=int,
        default=20_000,
        help="blocks the derived stage extracts and materializes (default: %(default)s)",
    )
    p.add_argument(
        "--firehose-size",
        type=int,
        default=20_000,
        help="blocks the firehose stage mines, builds and dumps (default: %(default)s)",
    )
    p.add_argument(
        "--node-latency-ms",
        type=float,
        default=200.0,
        help="delay the distributed stage's remote node adds to every request (default: %(default)g)",
    )
    p.add_argument(
        "--tune-floor",
        action="store_true",
        help="first sweep the floor's batch size and concurrency and use the fastest",
    )
    p.add_argument(
        "--timeout", type=float, help="seconds per tool run (default: 300 + 20 ms per block)"
    )
    p.add_argument("--rebuild", action="store_true", help="build the chain even if one is cached")
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="neither reuse nor save the chain state in bench/work/chains",
    )
    p.add_argument(
        "--scratch",
        action="store_true",
        help="write results under bench/work/results only; leave bench/results and the doc alone",
    )
    p.add_argument(
        "--render-doc",
        action="store_true",
        help="only rewrite the results table in docs/benchmarks.md from bench/results/latest.json",
    )
    p.add_argument(
        "--keep-output", action="store_true", help="keep the tools' output in bench/work/out"
    )
    args = p.parse_args(argv)
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        p.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not args.sizes or min(args.sizes) < 1:
        p.error("--sizes needs at least one positive block count")
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    args.small_only = [t.strip() for t in args.small_only.split(",") if t.strip()]
    unknown = (set(args.tools) | set(args.small_only)) - set(ALL_TOOLS)
    if unknown:
        p.error(f"unknown tools {sorted(unknown)}; choose from {', '.join(ALL_TOOLS)}")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    args.stages = [t.strip() for t in args.stages.split(",") if t.strip()]
    if not args.stages or set(args.stages) - set(ALL_STAGES):
        p.error(f"--stages: choose one or more of {', '.join(ALL_STAGES)}")
    args.query_tables = [t.strip() for t in args.query_tables.split(",") if t.strip()]
    if not args.query_tables or set(args.query_tables) - set(serving.TABLES):
        p.error(f"--query-tables: choose one or more of {', '.join(serving.TABLES)}")
    if args.query_size is not None and args.query_size < 1:
        p.error("--query-size must be a positive block count")
    if args.query_size is None:
        args.query_size = max(args.sizes)
    if args.store_size is not None and args.store_size < 1:
        p.error("--store-size must be a positive block count")
    if args.store_size is None:
        args.store_size = min(args.sizes)
    if args.distributed_size is not None and args.distributed_size < 3:
        p.error("--distributed-size must be at least 3 blocks (a segment per worker)")
    if args.distributed_size is None:
        args.distributed_size = min(args.sizes)
    if args.distributed_large_size is None:
        args.distributed_large_size = max(args.sizes)
    if args.distributed_large_size <= args.distributed_size:
        args.distributed_large_size = 0
    if args.node_latency_ms < 0:
        p.error("--node-latency-ms must be >= 0")
    if args.derived_size < 1:
        p.error("--derived-size must be a positive block count")
    if args.firehose_size < 1:
        p.error("--firehose-size must be a positive block count")
    return args


def _tools_for(
    args: argparse.Namespace, floor_batch: int, floor_conc: int
) -> dict[str, tools.Tool]:
    selected: dict[str, tools.Tool] = {}
    for name in args.tools:
        if name == "floor":
            selected[name] = tools.floor_tool(floor_batch, floor_conc)
        elif name == "ampd":
            selected[name] = tools.ampd_tool(
                WORK,
                args.ampd_batch_size or floor_batch,
                args.ampd_concurrency or floor_conc,
                tuple(args.ampd_arg),
            )
        else:
            peer = ensure_peer(WORK / "peers-venv", name, log)
            if peer.error:
                log(f"{name} cannot run here: {peer.error.splitlines()[-1]}")
            make = tools.cryo_tool if name == "cryo" else tools.ethereum_etl_tool
            selected[name] = make(peer.python, peer.version, peer.error)
    return selected


def run_extraction(
    args: argparse.Namespace, selected: dict[str, tools.Tool], anvil: Anvil, chain: Chain
) -> list[dict]:
    """The extract stage: every tool on every size, `--repeat` times, interleaved."""
    runs: list[dict] = []
    for size in args.sizes:
        names = [n for n in selected if n not in args.small_only or size == args.sizes[0]]
        timeout = args.timeout or 300 + 0.02 * size
        per_tool: dict[str, list[dict]] = {n: [] for n in names}
        for rep in range(1, args.repeat + 1):
            for name in names:
                tool = selected[name]
                if tool.unavailable:
                    continue
                log(f"{size:,} blocks, {tool.name}, run {rep}/{args.repeat}")
                run = run_tool(tool, anvil.url, chain, size, rep, timeout)
                per_tool[name].append(run)
                if run["status"] == "ok":
                    log(
                        f"  {run['wall_seconds']:.1f} s, {run['blocks_per_second']:,.0f} blocks/s, "
                        f"{run['rows_per_second']:,.0f} rows/s, peak RSS {run['peak_rss_mib']:,.0f} MiB"
                    )
                else:
                    log(f"  failed: {run['error'].splitlines()[0]}")
        for name in names:
            tool = selected[name]
            entry = {
                "size": size,
                "tool": tool.name,
                "range": [chain.first, chain.first + size - 1],
                "timeout_seconds": timeout,
                "runs": per_tool[name],
                "median": report.summarize(per_tool[name]),
            }
            if tool.unavailable:
                entry.update(status="not available", error=tool.unavailable)
            elif entry["median"]:
                entry.update(status="ok", error=None)
            else:
                entry.update(status="failed", error=per_tool[name][-1]["error"])
            runs.append(entry)
        if not args.keep_output:
            shutil.rmtree(WORK / "out", ignore_errors=True)
    return runs


def run_query(
    args: argparse.Namespace, anvil: Anvil, chain: Chain, batch_size: int, concurrency: int
) -> dict:
    """The query stage on the first `--query-size` blocks; a failure is recorded, not raised."""
    size = args.query_size
    manifest_path = WORK / "ampd" / "anvil.json"
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_source = tools.write_manifest(manifest_path)
    manifest = json.loads(manifest_path.read_text())
    provider = {"rpc_batch_size": batch_size, "concurrent_request_limit": concurrency}
    last = chain.first + size - 1
    try:
        section = serving.run_stage(
            work=WORK / "query",
            node_url=anvil.url,
            first_block=int(manifest.get("start_block", 0)),
            last_block=last,
            tables=args.query_tables,
            repeat=args.repeat,
            provider=provider,
            manifest=manifest,
            timeout=args.timeout or 300 + 0.02 * size,
            keep=args.keep_output,
            measured=_measured,
            log=log,
        )
    except serving.ServeError as exc:
        log(f"query stage failed: {str(exc).splitlines()[0]}")
        return {"status": "failed", "error": str(exc), "range": [0, last]}
    section.update(status="ok", error=None, manifest=manifest_source, chain_blocks=size)
    return section


def run_store(
    args: argparse.Namespace, anvil: Anvil, chain: Chain, batch_size: int, concurrency: int
) -> dict:
    """The store stage on the first `--store-size` blocks; a failure is recorded, not raised."""
    size = args.store_size
    manifest_path = WORK / "ampd" / "anvil.json"
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_source = tools.write_manifest(manifest_path)
    provider = {"rpc_batch_size": batch_size, "concurrent_request_limit": concurrency}
    first, last = chain.first, chain.first + size - 1
    try:
        section = store_stage.run_stage(
            work=WORK / "store",
            node=anvil,
            first_block=first,
            last_block=last,
            repeat=args.repeat,
            provider=provider,
            manifest=json.loads(manifest_path.read_text()),
            timeout=args.timeout or 300 + 0.02 * size,
            measured=_measured,
            log=log,
        )
    except (store_stage.StoreError, store_stage.S3EndpointError) as exc:
        log(f"store stage failed: {str(exc).splitlines()[0]}")
        return {"status": "failed", "error": str(exc), "range": [first, last]}
    section.update(status="ok", error=None, manifest=manifest_source)
    return section


def run_distributed(
    args: argparse.Namespace, anvil: Anvil, chain: Chain, floor: tuple[int, int], provider: dict
) -> dict:
    """The distributed stage on the first `--distributed-size` blocks; a failure is recorded,
    not raised."""
    size, large = args.distributed_size, args.distributed_large_size
    manifest_path = WORK / "ampd" / "anvil.json"
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_source = tools.write_manifest(manifest_path)
    first, last = chain.first, chain.first + size - 1
    local_timeout = args.timeout or 300 + 0.02 * size
    # Behind the proxy, at worst one request of 10 blocks in flight at a time.
    remote_timeout = (
        args.timeout or local_timeout + math.ceil(size / 10) * args.node_latency_ms / 1000
    )
    try:
        section = distributed_stage.run_stage(
            work=WORK / "distributed",
            node_url=anvil.url,
            first_block=first,
            last_block=last,
            expected_rows={k: v * size // chain.blocks for k, v in chain.expected_rows().items()},
            repeat=args.repeat,
            latency_ms=args.node_latency_ms,
            floor=floor,
            provider=provider,
            manifest=json.loads(manifest_path.read_text()),
            timeouts={"local": local_timeout, "remote": remote_timeout},
            run_tool=lambda tool, url, blocks, rep, timeout: run_tool(
                tool, url, chain, blocks, rep, timeout
            ),
            log=log,
            large=(
                (
                    first + large - 1,
                    {k: v * large // chain.blocks for k, v in chain.expected_rows().items()},
                    args.timeout or 300 + 0.02 * large,
                )
                if large
                else None
            ),
        )
    except distributed_stage.DistributedError as exc:
        log(f"distributed stage failed: {str(exc).splitlines()[0]}")
        return {"status": "failed", "error": str(exc), "range": [first, last]}
    finally:
        if not args.keep_output:
            shutil.rmtree(WORK / "out", ignore_errors=True)
    section.update(status="ok", error=None, manifest=manifest_source)
    return section


def run_derived(args: argparse.Namespace, anvil: Anvil, chain: Chain) -> dict:
    """The derived stage on the first `--derived-size` blocks, then blocks mined on top of
    the chain (it runs last); a failure is recorded, not raised."""
    manifest_path = WORK / "ampd" / "anvil.json"
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    tools.write_manifest(manifest_path)
    ranged = dataclasses.replace(chain, last=chain.first + args.derived_size - 1)
    work = WORK / "derived"
    shutil.rmtree(work, ignore_errors=True)
    pg = derived_stage.ManagedPostgres(work / "pg")
    try:
        pg.start()
        section = derived_stage.run_stage(
            work=work, pg=pg, anvil=anvil, chain=ranged,
            manifest=json.loads(manifest_path.read_text()), repeat=args.repeat,
            timeout=args.timeout or 600, log=log,
        )  # fmt: skip
    except derived_stage.DerivedBenchError as exc:
        log(f"derived stage failed: {str(exc).splitlines()[0]}")
        return {"status": "failed", "error": str(exc), "range": [ranged.first, ranged.last]}
    finally:
        pg.stop()
    section.update(status="ok", error=None)
    return section


def run_firehose(args: argparse.Namespace) -> dict:
    """The firehose stage; a failure is recorded, not raised."""
    try:
        section = firehose_stage.run_stage(
            work=WORK / "firehose", blocks=args.firehose_size, repeat=args.repeat,
            timeout=args.timeout or 600, measured=_measured, log=log,
        )  # fmt: skip
    except (firehose_stage.FirehoseBenchError, AnvilError, BenchError) as exc:
        log(f"firehose stage failed: {str(exc).splitlines()[0]}")
        return {"status": "failed", "error": str(exc)}
    section.update(status="ok", error=None)
    return section


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so anvil and the tool being measured are stopped.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.render_doc:
        return _render_doc(None)
    signal.signal(signal.SIGTERM, _interrupt)
    started_at = datetime.now(UTC)
    load_before = os.getloadavg()
    WORK.mkdir(parents=True, exist_ok=True)
    extracting, querying = "extract" in args.stages, "query" in args.stages
    storing, distributing = "store" in args.stages, "distributed" in args.stages
    deriving = "derived" in args.stages
    if extracting:
        sizes = ", ".join(f"{s:,}" for s in args.sizes)
        log(f"extract stage: {', '.join(args.tools)} on {sizes} blocks")
    if querying:
        log(
            f"query stage: full scans of {', '.join(args.query_tables)} on {args.query_size:,} blocks"
        )
    if storing:
        log(f"store stage: local disk vs S3 (moto) on {args.store_size:,} blocks")
    if distributing:
        log(
            f"distributed stage: floor, dump and jobs on {args.distributed_size:,} blocks, "
            f"local and behind a {args.node_latency_ms:g} ms latency proxy"
            + (
                f"; floor, dump and 1 worker on {args.distributed_large_size:,} blocks, local"
                if args.distributed_large_size
                else ""
            )
        )

    floor_batch, floor_conc = args.floor_batch_size, args.floor_concurrency
    selected = _tools_for(args, floor_batch, floor_conc) if extracting else {}
    if "ampd" in selected and selected["ampd"].unavailable:
        log(f"ampd dump: {selected['ampd'].unavailable}")

    needed = (args.sizes if extracting else []) + ([args.query_size] if querying else [])
    # The store stage's COUNT(*) job reads blocks 0..COUNT_FILES-1, one file per block.
    needed += [args.store_size, store_stage.COUNT_FILES] if storing else []
    # Its first-file job reads FIRST_FILE_BLOCKS blocks.
    needed += (
        [args.distributed_size, args.distributed_large_size, distributed_stage.FIRST_FILE_BLOCKS]
        if distributing
        else []
    )
    needed += [args.derived_size] if deriving else []
    plan = ChainPlan(max(needed)) if needed else None
    chain_info: dict = {}
    runs: list[dict] = []
    query = store = distributed = functions = derived = firehose = None
    tuning = None
    try:
        if "functions" in args.stages:
            log("functions stage: evm_decode_log and shift_units over 1,000,000 logs")
            functions = functions_stage.run_stage(
                work=WORK / "functions", repeat=max(3, args.repeat),
                timeout=args.timeout or 600, measured=_measured,
            )  # fmt: skip
            if functions["status"] == "ok":
                log(
                    f"  functions: median {functions['median_logs_per_second']:,} logs/s, "
                    f"best {functions['best_logs_per_second']:,}"
                )
            else:
                log(f"  functions stage failed: {functions['error'].splitlines()[0]}")
        with (
            chain_node(plan, not args.no_cache, args.rebuild, chain_info)
            if plan is not None
            else contextlib.nullcontext((None, None))
        ) as (anvil, chain):
            if args.tune_floor and "floor" in selected:
                log("tuning the floor (batch size x batches in flight)")
                floor_batch, floor_conc, tuning = tune_floor(
                    anvil.url, chain, min(5000, chain.blocks)
                )
                log(f"floor: fastest with batches of {floor_batch} calls, {floor_conc} in flight")
                selected = {**selected, "floor": tools.floor_tool(floor_batch, floor_conc)}
                if "ampd" in selected and not (args.ampd_batch_size or args.ampd_concurrency):
                    selected["ampd"] = tools.ampd_tool(
                        WORK, floor_batch, floor_conc, tuple(args.ampd_arg)
                    )
            if extracting:
                runs = run_extraction(args, selected, anvil, chain)
            if querying:
                query = run_query(
                    args,
                    anvil,
                    chain,
                    args.ampd_batch_size or floor_batch,
                    args.ampd_concurrency or floor_conc,
                )
            if storing:
                store = run_store(
                    args,
                    anvil,
                    chain,
                    args.ampd_batch_size or floor_batch,
                    args.ampd_concurrency or floor_conc,
                )
            if distributing:
                distributed = run_distributed(
                    args,
                    anvil,
                    chain,
                    (floor_batch, floor_conc),
                    {
                        "rpc_batch_size": args.ampd_batch_size or floor_batch,
                        "concurrent_request_limit": args.ampd_concurrency or floor_conc,
                    },
                )
            if deriving:  # last: it mines blocks on top of the chain
                log(f"derived stage: decoding every log of {args.derived_size:,} blocks")
                derived = run_derived(args, anvil, chain)
            if anvil is not None:
                chain_info["anvil_rss_mib_at_end"] = round(anvil.rss_mib() or 0)
        if "firehose" in args.stages:  # after the shared anvil stopped: it runs its own
            log(f"firehose stage: {args.firehose_size:,} blocks through the test Firehose server")
            firehose = run_firehose(args)
    except (AnvilError, BenchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: anvil, ampd solo and the running tool were stopped", file=sys.stderr)
        return 130

    comps = report.comparisons(runs)
    name = started_at.strftime("%Y%m%dT%H%M%SZ") + ".json"
    data = {
        "file": name,
        "started_at": started_at.isoformat(timespec="seconds"),
        "total_seconds": round(time.monotonic() - _STARTED, 1),
        "stages": args.stages,
        "machine": {**machine(), "load_average_before": load_before},
        "versions": {
            "python": platform.python_version(),
            "ampd": tools.ampd_version(),
            "anvil": anvil_version(),
            "cryo": selected["cryo"].version if "cryo" in selected else None,
            "ethereum_etl": selected["ethereum-etl"].version
            if "ethereum-etl" in selected
            else None,
            "pyarrow": pyarrow.__version__,
            "datafusion": _datafusion_version(),
            "moto": store_stage.moto_version() if storing else None,
        },
        "chain": chain_info,
        "settings": {
            "sizes": args.sizes if extracting else [],
            "repeat": args.repeat,
            "small_only": args.small_only,
            "timeout_seconds": args.timeout,
            "tools": {t.name: t.settings for t in selected.values()},
            "floor_tuning": tuning,
            "query_size": args.query_size if querying else None,
            "query_tables": args.query_tables if querying else [],
            "store_size": args.store_size if storing else None,
            "distributed_size": args.distributed_size if distributing else None,
            "distributed_large_size": args.distributed_large_size if distributing else None,
            "node_latency_ms": args.node_latency_ms if distributing else None,
            "derived_size": args.derived_size if deriving else None,
            "firehose_size": args.firehose_size if "firehose" in args.stages else None,
        },
        "runs": runs,
        "comparisons": comps,
        "query": query,
        "store": store,
        "distributed": distributed,
        "functions": functions,
        "derived": derived,
        "firehose": firehose,
    }
    out_dir = WORK / "results" if args.scratch else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / name).write_text(json.dumps(data, indent=2) + "\n")
    (out_dir / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
    print()
    if extracting:
        report.print_console(runs, comps)
    if query is not None:
        report.print_query_console(query)
    if store is not None:
        report.print_store_console(store)
    if distributed is not None:
        distributed_report.print_console(distributed)
    if functions is not None:
        functions_stage.print_console(functions)
    if derived is not None:
        derived_stage.print_console(derived)
    if firehose is not None:
        firehose_stage.print_console(firehose)
    print()
    log(f"results: {(out_dir / name).relative_to(REPO)} (and latest.json)")
    return 0 if args.scratch else _render_doc(data)


def _datafusion_version() -> str | None:
    try:
        import datafusion
    except ImportError:
        return None
    return datafusion.__version__


def _newest_with(stage: str) -> dict | None:
    """The newest recorded results file that holds `stage`'s figures."""
    for path in sorted(RESULTS.glob("2*.json"), reverse=True):
        data = json.loads(path.read_text())
        if stage == "extract" and data.get("runs"):
            return data
        if stage in (
            "query",
            "store",
            "distributed",
            "functions",
            "derived",
            "firehose",
        ) and data.get(stage):
            return data
    return None


def _render_doc(data: dict | None) -> int:
    """Rewrite the doc's section of each stage `data` ran (of every stage, from the newest
    results file holding it, when `data` is None); a stage it skipped keeps its section."""
    sections = []
    for stage, render, markers in (
        ("extract", report.markdown, report.EXTRACT_MARKERS),
        ("query", report.query_markdown, report.QUERY_MARKERS),
        ("store", report.store_markdown, report.STORE_MARKERS),
        ("distributed", distributed_report.markdown, distributed_report.MARKERS),
        ("functions", functions_stage.markdown, functions_stage.MARKERS),
        ("derived", derived_stage.markdown, derived_stage.MARKERS),
        ("firehose", firehose_stage.markdown, firehose_stage.MARKERS),
    ):
        source = _newest_with(stage) if data is None else data
        if source is None or stage not in source.get("stages", ["extract"]):
            continue
        if not report.update_doc(DOC, render(source), *markers):
            print(f"error: {DOC.relative_to(REPO)} has no {stage} results markers", file=sys.stderr)
            return 1
        sections.append(stage)
    if sections:
        log(f"updated the {', '.join(sections)} results in {DOC.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
