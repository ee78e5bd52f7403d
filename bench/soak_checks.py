"""The soak's checks after a trial: the committed output row by row against the node, the
objects on disk against the `files` table, staging leftovers, and tracebacks in the logs.

Unlike `support.cluster.assert_exact_output`, nothing here raises on a difference: every
lost, doubled or wrong row is counted, so one bad trial does not hide the others.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pyarrow.parquet as pq

from support.anvil import Anvil

TABLES = ("blocks", "transactions", "logs")
# What identifies a row, and what of it must match the node.
KEYS = {
    "blocks": (("block_num",), ("hash", "parent_hash")),
    "transactions": (("block_num", "tx_index"), ("tx_hash", "block_hash", "from")),
    "logs": (("block_num", "log_index"), ("tx_hash", "block_hash", "address", "topic0", "data")),
}


def _b(hex_text: str | None) -> bytes | None:
    return None if hex_text is None else bytes.fromhex(hex_text[2:])


@dataclass
class Truth:
    """The node's rows for blocks start..end, by key: what each table must hold exactly once."""

    start: int
    end: int
    rows: dict[str, dict[tuple, tuple]] = field(default_factory=dict)

    @classmethod
    def fetch(cls, anvil: Anvil, start: int, end: int) -> Truth:
        blocks: dict[tuple, tuple] = {}
        txs: dict[tuple, tuple] = {}
        logs: dict[tuple, tuple] = {}
        for number in range(start, end + 1):
            block = anvil.block(number, full=True)
            assert block is not None, f"the node has no block {number}"
            block_hash = _b(block["hash"])
            blocks[(number,)] = (block_hash, _b(block["parentHash"]))
            for tx in block["transactions"]:
                txs[(number, int(tx["transactionIndex"], 16))] = (
                    _b(tx["hash"]),
                    block_hash,
                    _b(tx["from"]),
                )
            if block["transactions"]:
                for receipt in anvil.block_receipts(number) or []:
                    for entry in receipt["logs"]:
                        topics = entry["topics"]
                        logs[(number, int(entry["logIndex"], 16))] = (
                            _b(entry["transactionHash"]),
                            block_hash,
                            _b(entry["address"]),
                            _b(topics[0]) if topics else None,
                            _b(entry["data"]),
                        )
        return cls(start, end, {"blocks": blocks, "transactions": txs, "logs": logs})

    def counts(self) -> dict[str, int]:
        return {table: len(rows) for table, rows in self.rows.items()}


def verify_output(db_url: str, data_dir: Path, manifest_hash: str, truth: Truth) -> dict:
    """Read every live committed file of the dataset and compare each row with the node.

    lost: a node row found in no file; doubled: each extra copy of a row; wrong: a row whose
    key the node has but whose values differ, or whose key the node does not have;
    unreadable: a committed file that is missing or cannot be read."""
    with psycopg.connect(db_url, connect_timeout=10) as conn:
        files = conn.execute(
            """SELECT r.table_name, f.path FROM files f
               JOIN table_revisions r ON r.id = f.table_revision_id
               WHERE r.manifest_hash = %s AND r.active AND f.retired_at IS NULL
               ORDER BY r.table_name, f.start_block""",
            (manifest_hash,),
        ).fetchall()
    result: dict = {"lost": 0, "doubled": 0, "wrong": 0, "unreadable": 0, "tables": {}}
    examples: list[str] = []
    for table in TABLES:
        key_cols, value_cols = KEYS[table]
        expected = truth.rows[table]
        seen: Counter[tuple] = Counter()
        wrong = rows = 0
        for _, path in (f for f in files if f[0] == table):
            try:
                data = pq.read_table(data_dir / path, columns=[*key_cols, *value_cols])
            except Exception as exc:  # noqa: BLE001 - counted
                result["unreadable"] += 1
                examples.append(f"{table}: cannot read {path}: {exc}")
                continue
            columns = [data.column(c).to_pylist() for c in (*key_cols, *value_cols)]
            for row in zip(*columns, strict=True):
                rows += 1
                key, values = tuple(row[: len(key_cols)]), tuple(row[len(key_cols) :])
                seen[key] += 1
                if expected.get(key) != values:
                    wrong += 1
                    if len(examples) < 10:
                        examples.append(f"{table} {key}: {values!r} != node {expected.get(key)!r}")
        lost = sum(1 for key in expected if seen[key] == 0)
        doubled = sum(n - 1 for n in seen.values() if n > 1)
        result["tables"][table] = {
            "rows": rows,
            "expected": len(expected),
            "files": sum(1 for f in files if f[0] == table),
            "lost": lost,
            "doubled": doubled,
            "wrong": wrong,
        }
        result["lost"] += lost
        result["doubled"] += doubled
        result["wrong"] += wrong
        if lost and len(examples) < 10:
            missing = sorted(k for k in expected if seen[k] == 0)
            examples.append(f"{table}: {lost} lost, first {missing[:5]}")
    result["examples"] = examples
    return result


def objects_check(db_url: str, data_dir: Path, clean_pids: set[int]) -> dict:
    """orphans: .parquet objects outside `.staging` that no `files` row (live or retired)
    names. Staging leftovers: files in `.staging`; those written by a process that ended
    gracefully (`clean_pids`) are anomalies, those of killed processes are expected (a
    killed writer cannot clean up; workers delete them after an hour)."""
    with psycopg.connect(db_url, connect_timeout=10) as conn:
        referenced = {p for (p,) in conn.execute("SELECT path FROM files").fetchall()}
    on_disk = set()
    staging_graceful: list[str] = []
    staging_killed: list[str] = []
    if data_dir.is_dir():
        for path in data_dir.rglob("*"):
            if not path.is_file():
                continue
            rel = path.relative_to(data_dir)
            if rel.parts[0] == ".staging":
                pid = rel.name.split("-", 1)[0]
                owner = int(pid) if pid.isdigit() else -1
                (staging_graceful if owner in clean_pids else staging_killed).append(str(rel))
            elif path.suffix == ".parquet":
                on_disk.add(rel.as_posix())
    orphans = sorted(on_disk - referenced)
    return {
        "objects": len(on_disk),
        "orphans": len(orphans),
        "orphan_paths": orphans[:20],
        "missing_objects": len(referenced - on_disk),
        "staging_leftovers": len(staging_graceful),
        "staging_leftover_paths": staging_graceful[:20],
        "staging_of_killed": len(staging_killed),
    }


TRACEBACK = re.compile(r"^Traceback \(most recent call last\):$", re.M)


def scan_logs(logs: list[Path]) -> dict:
    """Tracebacks and ERROR lines in the services' logs (each with a short excerpt)."""
    tracebacks: list[dict] = []
    errors = 0
    for path in logs:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        errors += sum(1 for line in text.splitlines() if " ERROR " in line[:40])
        for match in TRACEBACK.finditer(text):
            lines = text[match.start() :].splitlines()
            block = [lines[0]]
            for line in lines[1:60]:
                block.append(line)
                if line and not line.startswith((" ", "\t", "Traceback", "During", "The above")):
                    break  # the exception line ends the traceback
            tracebacks.append({"log": str(path), "excerpt": "\n".join(block[-12:])})
    return {"tracebacks": tracebacks, "error_lines": errors}
