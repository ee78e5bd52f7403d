"""Dataset references in SQL, as Amp resolves them.

A table is named `<dataset>.<table>`, where the dataset part is a partial reference
`[namespace/]name[@revision]`: the namespace defaults to `_` and the revision to the
default one (`latest`, or `dev` while there is no version). So all of these work:

    eth_rpc.logs                    _/eth_rpc, default revision
    "eth_rpc@1.0.0".logs            _/eth_rpc, version 1.0.0
    "edgeandnode/eth_rpc".logs      edgeandnode/eth_rpc, default revision
    "edgeandnode/eth_rpc@dev".logs  edgeandnode/eth_rpc, the dev tag (or a manifest hash)

A dataset part with `/` or `@` must be quoted in SQL. Unquoted names are lower-cased, as
DataFusion does, so `ETH_RPC.logs` is `eth_rpc.logs`.

The references are found with a small tokenizer that skips string literals and comments;
every `a.b` pair is a candidate, and only those whose first part names a dataset are used
(a `table.column` pair names none).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container
from dataclasses import dataclass

from ampd.datasets.registry import DEFAULT_NAMESPACE, NAME, NAMESPACE

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<line_comment>--[^\n]*)
  | (?P<block_comment>/\*.*?\*/)
  | (?P<string>'(?:[^']|'')*')
  | (?P<quoted>"(?:[^"]|"")*")
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<dot>\.)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class DatasetReference:
    namespace: str
    name: str
    revision: str | None  # None: the default revision

    @property
    def dataset(self) -> str:
        return f"{self.namespace}/{self.name}"

    def __str__(self) -> str:
        return self.dataset + (f"@{self.revision}" if self.revision else "")


def parse_reference(text: str) -> DatasetReference | None:
    """`[namespace/]name[@revision]`, or None if `text` is not one."""
    before, at, revision = text.partition("@")
    if at and not revision:
        return None
    namespace, slash, name = before.rpartition("/")
    if not slash:
        namespace = DEFAULT_NAMESPACE
    if not NAME.match(name) or not NAMESPACE.match(namespace):
        return None
    return DatasetReference(namespace, name, revision or None)


def table_references(sql: str) -> list[tuple[str, str]]:
    """Every `(schema, table)` pair the SQL may name, as DataFusion will see the names
    (unquoted ones lower-cased), in order, without repeats; a pair called as a function
    (`self.fn(...)`, `ds.eth_call(...)`) is none."""
    parts: list[tuple[str, str | None]] = []  # (kind, normalized identifier)
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup or "other"
        text = match.group()
        if kind in ("space", "line_comment", "block_comment"):
            continue
        if kind == "word":
            parts.append(("ident", text.lower()))
        elif kind == "quoted":
            parts.append(("ident", text[1:-1].replace('""', '"')))
        elif text == "(":
            parts.append(("open", None))
        else:
            parts.append((kind, None))
    found: list[tuple[str, str]] = []
    for i in range(len(parts) - 2):
        (k0, schema), (k1, _), (k2, table) = parts[i : i + 3]
        if i + 3 < len(parts) and parts[i + 3][0] == "open":
            continue  # `self.fn(...)`: a function, not a table
        if k0 == "ident" and k1 == "dot" and k2 == "ident":
            pair = (str(schema), str(table))
            if pair not in found:
                found.append(pair)
    return found


OCCURRENCE = "#"  # `"<schema>#<k>"`: the k-th reading of a table a query reads more than once


def distinct_occurrences(
    sql: str, is_table: Callable[[str, str], bool]
) -> tuple[str, list[tuple[str, str]]]:
    """`sql` with every table it reads more than once named apart, and the `(schema, table)`
    name of each reading, in order: the second `eth.blocks` becomes `"eth#2".blocks`, the
    third `"eth#3".blocks`. `is_table(schema, table)` says which pairs are tables (a
    `table.column` pair is none). `base_schema` gives a renamed schema's original name."""
    pieces: list[str] = []
    readings: list[tuple[str, str]] = []
    counts: dict[tuple[str, str], int] = {}
    significant = significant_tokens(sql)
    position = 0
    for i in range(len(significant) - 2):
        first, dot, second = significant[i : i + 3]
        if first.lastgroup not in ("word", "quoted") or dot.lastgroup != "dot":
            continue
        if second.lastgroup not in ("word", "quoted"):
            continue
        pair = (identifier(first), identifier(second))
        if not is_table(*pair):
            continue
        counts[pair] = counts.get(pair, 0) + 1
        if counts[pair] == 1:
            readings.append(pair)
            continue
        renamed = f"{pair[0]}{OCCURRENCE}{counts[pair]}"
        readings.append((renamed, pair[1]))
        pieces.append(sql[position : first.start()])
        pieces.append('"' + renamed.replace('"', '""') + '"')
        position = first.end()
    pieces.append(sql[position:])
    return "".join(pieces), readings


def significant_tokens(sql: str) -> list[re.Match]:
    """The tokens of `sql` but spaces and comments; a match's `lastgroup` is its kind
    (`word`, `quoted`, `string`, `dot`, `other`: a parenthesis is an `other`)."""
    skipped = ("space", "line_comment", "block_comment")
    return [m for m in _TOKEN.finditer(sql) if m.lastgroup not in skipped]


def words(sql: str) -> set[str]:
    """The unquoted words of `sql` outside strings and comments, lower-cased (keywords
    among them: whether a query says UNION, say)."""
    return {m.group().lower() for m in _TOKEN.finditer(sql) if m.lastgroup == "word"}


def named_columns(sql: str) -> set[str] | None:
    """Every identifier `sql` names (a superset of the columns it reads: unquoted ones
    lower-cased), or None when it may read columns it does not name: it has a `*` (a
    wildcard, or a product: either way all columns are assumed) or a NATURAL join."""
    names: set[str] = set()
    for token in significant_tokens(sql):
        kind = token.lastgroup
        if kind == "other" and token.group() == "*":
            return None
        if kind == "word" and token.group().lower() == "natural":
            return None
        if kind in ("word", "quoted"):
            names.add(identifier(token))
    return names


def base_schema(schema: str) -> str:
    """The schema a reading was renamed from (itself if it was not)."""
    return schema.split(OCCURRENCE, 1)[0]


def identifier(match: re.Match) -> str:
    """A word or quoted token as the identifier it names (an unquoted one lower-cased)."""
    text = match.group()
    return text[1:-1].replace('""', '"') if match.lastgroup == "quoted" else text.lower()


def resolve(schema: str, known: Container[str]) -> str | None:
    """The catalog key (`ns/name` or `ns/name@rev`) that `schema` names, or None."""
    reference = parse_reference(schema)
    if reference is None:
        return None
    key = str(reference)
    return key if key in known else None
