"""Run `ampd dump` as a real process and read back what it wrote.

`write_inputs` makes a manifest and one provider file; `run_dump` runs the command to the
end and reads every output file back, so `DumpOutput.tables[table]` holds all the rows of a
table in block order and `DumpOutput.files[table]` the files they came from.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ampd.providers.evm_rpc.schema import TABLES
from support.procs import AMPD, run

NETWORK = "anvil"
DATASET = "chain"  # the manifest file's stem, hence the dataset folder's name
NAMESPACE = "_"  # ampd dump's default


@dataclass(frozen=True)
class DumpInputs:
    manifest: Path
    providers_dir: Path


@dataclass
class DumpOutput:
    """One finished `ampd dump`: its process result, files and tables."""

    result: subprocess.CompletedProcess[str]
    data_dir: Path
    files: dict[str, list[Path]]  # table -> files, ordered by first block
    tables: dict[str, pa.Table]  # table -> all its files' rows, metadata removed

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads(self.result.stdout)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string is a JSON string for these values


def write_inputs(folder: Path, url: str, name: str = "node", **provider: Any) -> DumpInputs:
    """A manifest for network `anvil` and one provider file `name` pointing at `url`."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / f"{DATASET}.json"
    manifest.write_text(json.dumps({"kind": "evm-rpc", "network": NETWORK}))
    providers_dir = folder / "providers"
    providers_dir.mkdir(exist_ok=True)
    keys = {"kind": "evm-rpc", "network": NETWORK, "url": url, **provider}
    (providers_dir / f"{name}.toml").write_text(
        "".join(f"{k} = {_toml_value(v)}\n" for k, v in keys.items())
    )
    return DumpInputs(manifest, providers_dir)


def dump_command(
    inputs: DumpInputs, data_dir: Path, start: int, end: int, *extra: str
) -> list[str]:
    return [
        AMPD,
        "dump",
        "--manifest",
        str(inputs.manifest),
        "--providers-dir",
        str(inputs.providers_dir),
        "--data-dir",
        str(data_dir),
        "--start",
        str(start),
        "--end",
        str(end),
        "--no-progress",
        *extra,
    ]


def run_dump(
    inputs: DumpInputs,
    data_dir: Path,
    start: int,
    end: int,
    *extra: str,
    timeout: float = 60.0,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> DumpOutput:
    """Run `ampd dump` to completion (killed after `timeout`); with `check`, fail the test
    with its stderr unless it exited 0."""
    command = dump_command(inputs, data_dir, start, end, *extra)
    result = run(command, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"ampd dump exited {result.returncode}:\n{result.stderr}")
    files = table_files(data_dir) if result.returncode == 0 else {}
    tables = {t: read_table(paths, TABLES[t]) for t, paths in files.items()}
    return DumpOutput(result, data_dir, files, tables)


def table_files(data_dir: Path) -> dict[str, list[Path]]:
    """Each table's Parquet files under `<data_dir>/_/chain/<table>/<revision>/`, by name
    (names start with the zero-padded first block, so this is block order)."""
    files: dict[str, list[Path]] = {}
    for table in TABLES:
        revisions = list((data_dir / NAMESPACE / DATASET / table).iterdir())
        assert len(revisions) == 1, f"{table}: expected one revision folder, got {revisions}"
        uuid.UUID(revisions[0].name)  # the revision folder is named by a UUID
        files[table] = sorted(revisions[0].glob("*.parquet"), key=lambda p: p.name)
        assert files[table], f"{table}: no files in {revisions[0]}"
    return files


def read_table(paths: list[Path], schema: pa.Schema) -> pa.Table:
    """The rows of `paths`, in order, as one table (footer metadata dropped)."""
    parts = [pq.read_table(p).replace_schema_metadata(None) for p in paths]
    if not parts:
        return schema.empty_table()
    return pa.concat_tables(parts)
