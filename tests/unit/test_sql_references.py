"""Finding and parsing dataset references in SQL text (pure logic)."""

from __future__ import annotations

import pytest

from ampd.sql.references import DatasetReference, parse_reference, resolve, table_references


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("eth_rpc", DatasetReference("_", "eth_rpc", None)),
        ("eth_rpc@1.0.0", DatasetReference("_", "eth_rpc", "1.0.0")),
        ("edgeandnode/eth_rpc", DatasetReference("edgeandnode", "eth_rpc", None)),
        ("_/eth_rpc@dev", DatasetReference("_", "eth_rpc", "dev")),
        ("eth_rpc@", None),
        ("Eth", None),  # names are lower case
        ("a/b/c", None),
        ("9lives", None),
    ],
)
def test_parse_reference(text: str, want: DatasetReference | None) -> None:
    assert parse_reference(text) == want


def test_table_references_skip_strings_and_comments_and_lower_case_bare_names() -> None:
    sql = """
        SELECT l.block_num, 'x.y' AS s -- not.this
        FROM ETH_RPC.logs AS l /* nor.this */
        JOIN "ns/Name@1.0.0"."Blocks" b ON b.block_num = l.block_num
        WHERE l.data <> 'it''s.here'
    """
    refs = table_references(sql)
    assert ("eth_rpc", "logs") in refs
    assert ("ns/Name@1.0.0", "Blocks") in refs  # quoted: kept as written
    assert ("l", "block_num") in refs  # a table.column pair is a candidate too
    assert not any("x" == s or "not" == s or "nor" == s or "it" == s for s, _ in refs)


def test_resolve_fills_in_the_default_namespace() -> None:
    known = {"_/eth_rpc", "_/eth_rpc@1.0.0", "ns/other"}
    assert resolve("eth_rpc", known) == "_/eth_rpc"
    assert resolve("eth_rpc@1.0.0", known) == "_/eth_rpc@1.0.0"
    assert resolve("eth_rpc@2.0.0", known) is None
    assert resolve("ns/other", known) == "ns/other"
    assert resolve("l", known) is None


def test_named_columns_names_what_a_query_may_read():
    from ampd.sql.references import named_columns

    sql = (
        'SELECT block_num, "Mixed" AS m, evm_decode_log(topic1, topic2, topic3, data, '
        "'Transfer(address indexed from)') FROM raw.logs -- topic9\n"
        "WHERE topic0 = X'00' AND address /* other */ IS NOT NULL"
    )
    names = named_columns(sql)
    assert names is not None
    assert {
        "block_num",
        "Mixed",
        "topic1",
        "topic2",
        "topic3",
        "data",
        "topic0",
        "address",
    } <= names
    assert "topic9" not in names and "other" not in names and "transfer" not in names
    # Columns it reads without naming them: all of them are assumed.
    assert named_columns("SELECT * FROM raw.logs") is None
    assert named_columns("SELECT l.* FROM raw.logs l") is None
    assert named_columns("SELECT a FROM raw.logs NATURAL JOIN raw.blocks") is None
    assert named_columns("SELECT gas * 2 FROM raw.transactions") is None  # a product: all
