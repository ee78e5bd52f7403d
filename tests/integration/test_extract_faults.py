"""`ampd dump` through a fault-injecting proxy: every transient fault is survived, exactly.

Each test points the provider at a FaultProxy in front of anvil, injects one fault kind on
a schedule, and checks that the proxy really injected it, that the dump exited 0, and that
its tables equal a clean run's, row for row. A refused request (HTTP 401) is not transient:
the dump stops with one `error:` line naming the provider.

The chain is the varied chain on london (types 0..2, logs, a revert, empty blocks): short,
so that the dozens of dumps here stay quick.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from ampd.providers.evm_rpc.schema import TABLES
from support.anvil import Anvil
from support.chain import ChainInfo, build_varied_chain
from support.cluster import fill_chain
from support.dumps import DumpOutput, run_dump, write_inputs
from support.faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.timeout(90)

PROVIDER = "flaky"


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[Anvil, ChainInfo]]:
    with Anvil(hardfork="london") as anvil:
        yield anvil, build_varied_chain(anvil)


@pytest.fixture(scope="module")
def clean(node: tuple[Anvil, ChainInfo], tmp_path_factory: pytest.TempPathFactory) -> DumpOutput:
    """The chain dumped straight from anvil, genesis to head."""
    anvil, chain = node
    work = tmp_path_factory.mktemp("clean")
    return run_dump(write_inputs(work, anvil.url), work / "data", 0, chain.end)


def dump_through(proxy: FaultProxy, tmp: Path, start: int, end: int, **provider: Any) -> DumpOutput:
    inputs = write_inputs(tmp, proxy.url, name=PROVIDER, **provider)
    # Warnings on (whatever the caller's AMP_LOG) so the retries show on stderr.
    return run_dump(
        inputs, tmp / "data", start, end, timeout=60, check=False, env={"AMP_LOG": "warn"}
    )


def assert_same_output(out: DumpOutput, clean: DumpOutput) -> None:
    assert out.result.returncode == 0, out.result.stderr
    for table in TABLES:
        got, want = out.tables[table], clean.tables[table]
        assert got.schema.equals(want.schema), table
        assert got.equals(want), f"{table} differs from the clean run"


@dataclass
class Case:
    id: str
    fault: Fault
    provider: dict[str, Any] = field(default_factory=dict)
    logged: str = ""  # what the retry warning must say, when the fault alone is not enough


# Requests go: the head (`eth_getBlockByNumber("latest")`), then the blocks, then the
# receipts of the blocks with transactions. A schedule on any method hits the head call;
# one on `eth_getBlockReceipts` (or `every` 2nd `eth_getBlockByNumber`) hits block fetches.
# Half the cases batch their calls, so both request paths meet faults.
BATCH = {"rpc_batch_size": 50}
BLOCKS, RECEIPTS = "eth_getBlockByNumber", "eth_getBlockReceipts"
CASES = [
    Case("reset", Fault("reset", method=RECEIPTS, first=2)),
    Case("reset-head", Fault("reset", first=2)),
    Case(
        "delay-past-timeout",
        Fault("delay", method=RECEIPTS, first=1, delay=2.5),
        {"timeout_secs": 1},
        logged="timed out",
    ),
    Case("http-429-batch", Fault("http_429", method=RECEIPTS, first=2), BATCH),
    Case("http-500-head", Fault("http_500", first=2)),
    Case("http-502-batch", Fault("http_502", method=BLOCKS, every=2), BATCH),
    Case("http-503-every-3rd", Fault("http_503", every=3)),
    Case("rpc-error", Fault("rpc_error", method=RECEIPTS, first=2)),
    Case("rpc-error-batch", Fault("rpc_error", method=BLOCKS, every=2), BATCH),
    Case("malformed", Fault("malformed", method=BLOCKS, every=2)),
    Case("truncated-batch", Fault("truncated", method=RECEIPTS, first=2), BATCH),
    Case("batch-missing-id", Fault("batch_missing_id", method=RECEIPTS, first=1), BATCH),
    # The head call ("latest") counts towards the schedule but is left alone: `first=2`.
    Case("null-block-batch", Fault("null_block", method=BLOCKS, first=2), BATCH),
    Case("receipts-mismatch", Fault("receipts_mismatch", method=RECEIPTS, first=2)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_transient_fault_is_survived_exactly(
    node: tuple[Anvil, ChainInfo],
    clean: DumpOutput,
    proxy: FaultProxy,
    tmp_path: Path,
    case: Case,
) -> None:
    proxy.set_faults(case.fault)
    out = dump_through(proxy, tmp_path, 0, node[1].end, **case.provider)
    assert proxy.injected[case.fault.kind] > 0, f"the proxy never injected {case.fault.kind}"
    assert_same_output(out, clean)
    # Seen as a failure and retried (not waited out, not accepted): a warning says so.
    assert f"WARN  providers.evm_rpc: provider '{PROVIDER}'" in out.result.stderr
    assert case.logged in out.result.stderr
    assert out.summary["rows"] == {t: clean.tables[t].num_rows for t in TABLES}


def test_null_block_at_the_head_is_retried(
    node: tuple[Anvil, ChainInfo], clean: DumpOutput, proxy: FaultProxy, tmp_path: Path
) -> None:
    # Only the head block is asked for: the node says it exists ("latest"), then answers
    # null for it twice, as a lagging node behind a load balancer does.
    head = node[1].end
    proxy.set_faults(Fault("null_block", method="eth_getBlockByNumber", first=3))
    out = dump_through(proxy, tmp_path, head, head)
    assert proxy.injected["null_block"] == 2
    assert out.result.returncode == 0, out.result.stderr
    for table in TABLES:
        want = clean.tables[table]
        want = want.filter(pc.equal(want["_block_num"], head))
        assert out.tables[table].equals(want), table
    assert out.tables["blocks"].num_rows == 1


def test_answers_of_another_shape_turn_the_arrow_path_off_once(tmp_path: Path) -> None:
    # The Arrow path cannot read `{}` where a list belongs; the general path reads it as
    # an empty list. The first chunk tells; every later chunk goes the general way at once.
    with Anvil(hardfork="london") as anvil:
        end = fill_chain(anvil, 16, txs_per_block=1)  # a type 2 transaction in every block
        want = run_dump(write_inputs(tmp_path / "clean", anvil.url), tmp_path / "want", 0, end)
        with FaultProxy(anvil.url, [Fault("object_access_lists")]) as proxy:
            inputs = write_inputs(tmp_path, proxy.url, name=PROVIDER)
            out = run_dump(
                inputs, tmp_path / "data", 0, end, "--processes", "1", "--chunk-blocks", "1",
                "--chunks-in-flight", "1", timeout=60, check=False, env={"AMP_LOG": "info"},
            )  # fmt: skip
            calls, altered = proxy.calls, proxy.injected["object_access_lists"]
    assert_same_output(out, want)
    notes = [line for line in out.result.stderr.splitlines() if "general way from now on" in line]
    assert len(notes) == 1, out.result.stderr
    assert f"provider '{PROVIDER}'" in notes[0] and "JSON shape" in notes[0]
    assert "WARN" not in out.result.stderr  # not a fault: nothing to retry
    # One block a chunk: the blocks the Arrow path gave up on were asked for twice (one, or
    # the few in flight then), every later one once, though its answer is altered too.
    print(
        f"altered answers {altered}, block calls {calls['eth_getBlockByNumber']}, blocks {end + 1}"
    )
    assert altered >= 16
    assert 1 <= calls["eth_getBlockByNumber"] - (end + 1) <= 4, calls


def test_refused_request_exits_1_naming_the_provider(
    node: tuple[Anvil, ChainInfo], proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.set_faults(Fault("http_401"))
    out = dump_through(proxy, tmp_path, 0, node[1].end)
    assert out.result.returncode == 1
    assert proxy.injected["http_401"] >= 1
    lines = out.result.stderr.strip().splitlines()
    assert len(lines) == 1, out.result.stderr
    (line,) = lines
    assert line.startswith("error: ") and f"provider '{PROVIDER}'" in line, line
    assert "HTTP 401" in line and proxy.url in line, line
    assert out.result.stdout == ""
    assert not [p for p in (tmp_path / "data").rglob("*.parquet") if ".staging" not in p.parts]
