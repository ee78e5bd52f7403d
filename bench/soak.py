"""`make soak`: a fault soak of a real ampd cluster. See docs/soak.md.

One anvil chain is built once; a FaultProxy in front of it breaks about a tenth of the
JSON-RPC answers. Each trial gets a fresh database in the soak's own PostgreSQL cluster and
a fresh data dir, starts a controller and three workers, deploys a bounded job, and injects
process faults at random moments (kill -9, SIGSTOP past worker_timeout_secs, SIGTERM and
restart, controller kill -9, PostgreSQL immediate restart) until the job ends. Then every
process is stopped gracefully and the trial is checked: job status, the committed rows
against the node, orphan objects, staging leftovers, process anomalies, tracebacks.

Prints one summary line, writes bench/results/soak-<UTC time>.json, exits 0 iff every
target holds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))  # support.* (anvil, cluster, fault proxy, postgres)

import httpx  # noqa: E402
import psycopg  # noqa: E402
from soak_checks import Truth, objects_check, scan_logs, verify_output  # noqa: E402
from soak_faults import Scheduler, Timing  # noqa: E402
from soak_procs import Fleet  # noqa: E402

from ampd.metadb.managed import ManagedPostgres  # noqa: E402
from support.anvil import Anvil, free_port  # noqa: E402
from support.cluster import Cluster, fill_chain  # noqa: E402
from support.faultproxy import Fault, FaultProxy  # noqa: E402
from support.postgres import create_database, drop_database  # noqa: E402
from support.procs import kill_postgres_in  # noqa: E402

WORK = BENCH / "work" / "soak"
RESULTS = BENCH / "results"
TERMINAL = ("COMPLETED", "STOPPED", "ERROR", "FATAL")
# Transient faults only: the provider retries each of them (docs/feat/provider-evm-rpc.md).
# Not rpc_error/oversized_value (a segment may end FATAL) nor 401/403/404 (never retried).
RPC_FAULTS = (
    "http_500",
    "http_429",
    "reset",
    "truncated",
    "malformed",
    "delay",
    "batch_missing_id",
)
# Per trial, on average, for the targets: 15 process faults and 100 RPC faults.
PROCESS_FAULTS_PER_TRIAL = 15
RPC_FAULTS_PER_TRIAL = 100
RECOVERY_TARGET_SECS = 2.0
_STARTED = time.monotonic()


def log(message: str) -> None:
    elapsed = int(time.monotonic() - _STARTED)
    print(f"[{elapsed // 60:3d}:{elapsed % 60:02d}] {message}", flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Fault soak of a real ampd cluster (docs/soak.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--seed", type=int, default=None, help="default: random (always printed)")
    p.add_argument("--blocks", type=int, default=1500, help="chain length; each job takes all")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--segment-blocks", type=int, default=250)
    p.add_argument("--rpc-fault-rate", type=float, default=0.10)
    p.add_argument("--rpc-batch-size", type=int, default=2)
    p.add_argument(
        "--rate-limit",
        type=int,
        default=900,
        help="provider rate_limit_per_minute (per worker): paces a job to last ~a minute",
    )
    p.add_argument("--worker-timeout", type=float, default=3.0, help="worker_timeout_secs")
    p.add_argument("--shutdown-timeout", type=float, default=10.0, help="shutdown_timeout_secs")
    p.add_argument(
        "--hang-margin", type=float, default=5.0, help="past shutdown_timeout_secs: a hang"
    )
    p.add_argument("--trial-timeout", type=float, default=300.0, help="per job, seconds")
    p.add_argument("--min-process-faults", type=int, default=None, help="default: 15 a trial")
    p.add_argument("--min-rpc-faults", type=int, default=None, help="default: 100 a trial")
    p.add_argument("--scratch", action="store_true", help="results to bench/work/soak/ only")
    p.add_argument("--keep", action="store_true", help="keep every trial's folder (logs, data)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = WORK / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    log(f"soak: seed {seed}, {args.trials} trials, {args.blocks} blocks, in {run_dir}")
    log(f"replay the choices with: .venv/bin/python bench/soak.py --seed {seed} ...")
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background

    pg = ManagedPostgres(run_dir / "pg")
    anvil = Anvil(hardfork="cancun")
    proxy: FaultProxy | None = None
    trials: list[dict] = []
    chain: dict = {}
    interrupted = False
    try:
        pg.start()
        anvil.start()
        began = time.monotonic()
        head = fill_chain(anvil, args.blocks, txs_per_block=2)
        truth = Truth.fetch(anvil, 0, head)
        chain = {"head": head, "build_secs": round(time.monotonic() - began, 1), **truth.counts()}
        log(f"chain: blocks 0..{head}, {truth.counts()} rows, built in {chain['build_secs']} s")
        proxy = FaultProxy(anvil.url).start()
        for i in range(1, args.trials + 1):
            trials.append(run_trial(i, args, seed, run_dir, pg, anvil, proxy, truth))
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping everything")
    finally:
        if proxy is not None:
            proxy.stop()
        anvil.stop()
        pg.stop(fast=True)
        kill_postgres_in(run_dir)  # one a restart in progress may have started meanwhile
    return finish(args, seed, stamp, run_dir, chain, trials, interrupted)


def run_trial(
    i: int,
    args: argparse.Namespace,
    seed: int,
    run_dir: Path,
    pg: ManagedPostgres,
    anvil: Anvil,
    proxy: FaultProxy,
    truth: Truth,
) -> dict:
    rng = random.Random(f"{seed}:{i}")
    rpc_rng = random.Random(f"{seed}:{i}:rpc")
    root = run_dir / f"trial-{i:02d}"
    db_url = create_database(pg)
    admin_url = f"http://127.0.0.1:{free_port()}"
    settings = {
        "admin_api_addr": admin_url.removeprefix("http://"),
        "segment_blocks": args.segment_blocks,
        "worker_timeout_secs": args.worker_timeout,
        "shutdown_timeout_secs": args.shutdown_timeout,
        "reconcile_interval_secs": 10,
        "max_retries": 10,
        "provider": {
            "url": proxy.url,
            "rpc_batch_size": args.rpc_batch_size,
            "timeout_secs": 3.0,
            "rate_limit_per_minute": args.rate_limit,
            "concurrent_request_limit": 8,
        },
    }
    cluster = Cluster(root, db_url, anvil, settings)
    cluster.admin_url = admin_url
    each = args.rpc_fault_rate / len(RPC_FAULTS)
    proxy.set_faults(*(Fault(k, probability=each, rng=rpc_rng, delay=4.0) for k in RPC_FAULTS))
    proxy.reset_stats()
    # Small fetches, few in flight: the rate limit then paces the job instead of piling
    # requests up behind it (which would time them out and retry them in a storm).
    env = {"AMP_EXTRACT_CHUNK_BLOCKS": "10", "AMP_EXTRACT_CHUNKS_IN_FLIGHT": "2"}
    fleet = Fleet(cluster.config_path, root, args.shutdown_timeout + args.hang_margin, env, log=log)
    workers = [f"w{n}" for n in range(1, args.workers + 1)]
    began = time.monotonic()
    record: dict = {"trial": i, "seed": f"{seed}:{i}", "dir": str(root)}
    log(f"trial {i}/{args.trials}: database {db_url.split('///')[1].split('?')[0]}")
    sched: Scheduler | None = None
    status = "NOT DEPLOYED"
    try:
        for service in ["controller", *workers]:
            life = fleet.start(service)
            if not fleet.wait_ready(life):
                raise RuntimeError(f"{service} did not start: {life.log_path}")
        manifest_hash = cluster.register()
        job_id = cluster.deploy({"end_block": str(truth.end), "parallelism": 6})
        record["job_id"] = job_id
        record["segments"] = len(cluster.segments(job_id))
        proxy.reset_stats()  # RPC faults of the job only, not of the head lookup
        sched = Scheduler(
            rng, fleet, pg, db_url, admin_url, workers, Timing(args.worker_timeout), log
        )
        status = "RUNNING"
        deadline = began + args.trial_timeout
        last_check = 0.0
        while time.monotonic() < deadline:
            sched.tick()
            now = time.monotonic()
            if now - last_check > 0.5:
                last_check = now
                seen = db_status(db_url, job_id)
                if seen in TERMINAL:
                    status = seen
                    break
            time.sleep(0.05)
        record["job_secs"] = round(time.monotonic() - began, 1)
        sched.quiesce()
        status = api_status(fleet, admin_url, job_id) or f"{status} (by the database)"
    except Exception as exc:  # noqa: BLE001 - the trial fails, the soak goes on
        record["error"] = f"{type(exc).__name__}: {exc}"
        log(f"    trial error: {record['error']}")
        manifest_hash = None
        if sched is not None:
            sched.quiesce()
    except BaseException:  # Ctrl-C: no graceful end, nothing left running
        fleet.kill_all()
        raise
    fleet.stop_all()
    record["status"] = status
    record["injected_process"] = dict(sched.injected) if sched else {}
    record["injected_rpc"] = dict(proxy.injected)
    record["rpc_requests"] = proxy.requests
    record["recoveries"] = [r.as_dict() for r in sched.recoveries] if sched else []
    record["anomalies"] = [a.as_dict() for a in fleet.anomalies]
    record["lives"] = [
        {"service": x.service, "gen": x.gen, "pid": x.pid, "outcome": x.outcome,
         "returncode": x.returncode, "signals": x.sent}
        for x in fleet.lives
    ]  # fmt: skip
    clean = {x.pid for x in fleet.lives if x.outcome == "stopped"}
    try:
        if manifest_hash is not None:
            record["output"] = verify_output(db_url, cluster.data_dir, manifest_hash, truth)
        record["objects"] = objects_check(db_url, cluster.data_dir, clean)
    except Exception as exc:  # noqa: BLE001
        record["check_error"] = f"{type(exc).__name__}: {exc}"
    record["logs"] = scan_logs(sorted(root.glob("*.log")))
    record["trial_secs"] = round(time.monotonic() - began, 1)
    ok = trial_ok(record)
    record["ok"] = ok
    (root / "trial.json").write_text(json.dumps(record, indent=2, default=str))
    log("  " + trial_line(record))
    drop_database(pg, db_url)
    if ok and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return record


def db_status(db_url: str, job_id: int) -> str | None:
    try:
        with psycopg.connect(db_url, connect_timeout=1) as conn:
            row = conn.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone()
        return row[0] if row else None
    except psycopg.Error:
        return None


def api_status(fleet: Fleet, admin_url: str, job_id: int) -> str | None:
    """The job's status from the Admin API (a controller is started for it if none runs)."""
    deadline = time.monotonic() + fleet.shutdown_bound + 5
    current = fleet.current("controller")
    while current is not None and current.running and not current.untouched:
        if time.monotonic() > deadline:
            return None
        fleet.poll()  # a controller just killed: wait until it is gone
        time.sleep(0.05)
    if current is None or not current.running:
        fleet.wait_ready(fleet.start("controller"))
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=5) as http:
        while time.monotonic() < deadline:
            try:
                response = http.get(f"{admin_url}/jobs/{job_id}")
                if response.status_code == 200:
                    return response.json()["status"]
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    return None


def _count(record: dict, kind: str) -> int:
    return sum(1 for a in record["anomalies"] if a["kind"] == kind)


def trial_ok(r: dict) -> bool:
    out, objs = r.get("output") or {}, r.get("objects") or {}
    recovered = [v for rec in r["recoveries"] for v in rec["services"].values()]
    return (
        r["status"] == "COMPLETED"
        and bool(out)
        and out["lost"] == out["doubled"] == out["wrong"] == out["unreadable"] == 0
        and bool(objs)
        and objs["orphans"] == 0
        and not r["anomalies"]
        and all(v is not None and v <= RECOVERY_TARGET_SECS for v in recovered)
        and not any(rec["error"] for rec in r["recoveries"])
        and "check_error" not in r
    )


def trial_line(r: dict) -> str:
    out, objs = r.get("output") or {}, r.get("objects") or {}
    rec = [v for x in r["recoveries"] for v in x["services"].values()]
    worst = "-" if not rec else ("never" if None in rec else f"{max(rec):.2f} s")
    return (
        f"trial {r['trial']}: {r['status']} in {r.get('job_secs', '-')} s, "
        f"{sum(r['injected_process'].values())} process faults {r['injected_process']}, "
        f"{sum(r['injected_rpc'].values())} RPC faults of {r['rpc_requests']} requests; "
        f"lost {out.get('lost', '?')}, doubled {out.get('doubled', '?')}, "
        f"wrong {out.get('wrong', '?')}, orphans {objs.get('orphans', '?')}, "
        f"staging leftovers {objs.get('staging_leftovers', '?')} "
        f"(+{objs.get('staging_of_killed', '?')} of killed), crashes {_count(r, 'crash')}, "
        f"hangs {_count(r, 'hang')}, unexpected exits {_count(r, 'unexpected_exit')}, "
        f"tracebacks {len(r['logs']['tracebacks'])}, db recovery max {worst}"
        + ("" if r["ok"] else "  << FAILED")
    )


def finish(
    args: argparse.Namespace,
    seed: int,
    stamp: str,
    run_dir: Path,
    chain: dict,
    trials: list[dict],
    interrupted: bool,
) -> int:
    total = {
        "process_faults": sum(sum(t["injected_process"].values()) for t in trials),
        "rpc_faults": sum(sum(t["injected_rpc"].values()) for t in trials),
        "rpc_requests": sum(t["rpc_requests"] for t in trials),
    }
    for key in ("lost", "doubled", "wrong", "unreadable"):
        total[key] = sum((t.get("output") or {}).get(key, 0) for t in trials)
    for key in ("orphans", "staging_leftovers", "staging_of_killed", "missing_objects"):
        total[key] = sum((t.get("objects") or {}).get(key, 0) for t in trials)
    for kind in ("crash", "hang", "unexpected_exit"):
        total[kind] = sum(_count(t, kind) for t in trials)
    total["tracebacks"] = sum(len(t["logs"]["tracebacks"]) for t in trials)
    total["completed"] = sum(1 for t in trials if t["status"] == "COMPLETED")
    total["checked"] = sum(1 for t in trials if t.get("output") and t.get("objects"))
    recoveries = [v for t in trials for r in t["recoveries"] for v in r["services"].values()]
    total["pg_restarts"] = sum(len(t["recoveries"]) for t in trials)
    total["recoveries_measured"] = len(recoveries)
    total["not_recovered"] = sum(1 for v in recoveries if v is None)
    measured = [v for v in recoveries if v is not None]
    total["db_recovery_max_secs"] = max(measured) if measured else None
    by_kind: dict[str, int] = {}
    for t in trials:
        for k, v in [*t["injected_process"].items(), *t["injected_rpc"].items()]:
            by_kind[k] = by_kind.get(k, 0) + v
    total["by_kind"] = by_kind

    min_process = args.min_process_faults
    min_process = PROCESS_FAULTS_PER_TRIAL * args.trials if min_process is None else min_process
    min_rpc = (
        RPC_FAULTS_PER_TRIAL * args.trials if args.min_rpc_faults is None else args.min_rpc_faults
    )
    targets = {
        f"{args.trials} trials": len(trials) == args.trials and not interrupted,
        f">= {min_process} process faults": total["process_faults"] >= min_process,
        f">= {min_rpc} RPC faults": total["rpc_faults"] >= min_rpc,
        "0 lost": total["lost"] == 0,
        "0 doubled": total["doubled"] == 0,
        "0 wrong": total["wrong"] == 0 and total["unreadable"] == 0,
        "0 orphans": total["orphans"] == 0,
        "0 crashes": total["crash"] == 0,
        "0 hangs": total["hang"] == 0,
        "0 unexpected exits": total["unexpected_exit"] == 0,
        "every job COMPLETED": total["completed"] == len(trials) == total["checked"] > 0,
        f"db recovery <= {RECOVERY_TARGET_SECS:.0f} s": total["not_recovered"] == 0
        and all(v <= RECOVERY_TARGET_SECS for v in measured),
    }
    ok = all(targets.values())
    wall = time.monotonic() - _STARTED
    worst = total["db_recovery_max_secs"]
    recovery = "-" if worst is None else f"{worst:.2f} s"
    if total["not_recovered"]:
        recovery += f" ({total['not_recovered']} never)"
    line = (
        f"soak: {len(trials)} trials, seed {seed}, {total['process_faults']} process faults, "
        f"{total['rpc_faults']} RPC faults: {total['lost']} lost, {total['doubled']} doubled, "
        f"{total['wrong']} wrong, {total['orphans']} orphans, "
        f"{total['staging_leftovers']} staging leftovers, {total['crash']} crashes, "
        f"{total['hang']} hangs, {total['unexpected_exit']} unexpected exits, "
        f"{total['tracebacks']} tracebacks, {total['completed']}/{len(trials)} jobs COMPLETED, "
        f"db recovery max {recovery} ({total['pg_restarts']} restarts), "
        f"{int(wall) // 60}m{int(wall) % 60:02d}s: {'PASS' if ok else 'FAIL'}"
    )
    result = {
        "kind": "soak",
        "time": stamp,
        "seed": seed,
        "ok": ok,
        "summary": line,
        "wall_secs": round(wall, 1),
        "args": vars(args),
        "machine": {"cores": os.cpu_count(), "load_average_after": os.getloadavg()},
        "chain": chain,
        "targets": targets,
        "total": total,
        "trials": trials,
    }
    out_dir = run_dir if args.scratch else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"soak-{stamp}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    failed = [name for name, good in targets.items() if not good]
    if failed:
        log(f"targets missed: {', '.join(failed)}")
    kept = [t["dir"] for t in trials if not t["ok"] or args.keep]
    if kept:
        log(f"trial folders kept (logs, data): {', '.join(kept)}")
    elif not args.keep:
        shutil.rmtree(run_dir / "pg", ignore_errors=True)
    log(f"results: {out}")
    print(line, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
