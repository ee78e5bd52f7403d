"""Finding `<dataset>.eth_call(...)` in SQL text and reading its block argument."""

from __future__ import annotations

import pytest

from ampd.sql.functions.errors import FunctionError
from ampd.sql.functions.eth_call import _block, _hex_bytes, qualified_calls


def test_qualified_calls_quoted_and_bare_with_their_arguments() -> None:
    sql = (
        "SELECT \"ns/name@1.0.0\".eth_call(NULL, a, f(b, c), 'latest') AS r, "
        "anvil.eth_call(NULL, a, NULL, 5) FROM t"
    )
    found = qualified_calls(sql)
    assert [(q.qualifier, q.written, len(q.call.args)) for q in found] == [
        ("ns/name@1.0.0", '"ns/name@1.0.0".eth_call', 4),
        ("anvil", "anvil.eth_call", 4),
    ]
    span = found[0].call.token
    assert sql[span.start : span.end] == '"ns/name@1.0.0".eth_call'


def test_not_a_call_inside_strings_comments_or_without_a_qualifier() -> None:
    sql = "SELECT 'x.eth_call(1)' /* y.eth_call(2) */, eth_call(3), a.b.eth_call(4) FROM t"
    assert qualified_calls(sql) == []


def test_a_field_of_the_parenthesised_call_is_kept_for_the_rewrite() -> None:
    (q,) = qualified_calls('SELECT ("d".eth_call(NULL, a, NULL, 1)).data FROM t')
    assert q.call.field is not None and q.call.field[1].text == "data"


@pytest.mark.parametrize(
    ("value", "param"),
    [(0, "0x0"), (255, "0xff"), ("17", "0x11"), ("0x1f", "0x1f"), ("Latest", "latest"),
     ("finalized", "finalized"), ("safe", "safe"), ("earliest", "earliest")],
)  # fmt: skip
def test_block_parameters(value: object, param: str) -> None:
    assert _block(value) == param


@pytest.mark.parametrize(
    ("value", "message"),
    [(None, "'block' is NULL"), (-3, "block number cannot be negative: -3"),
     ("soon", "block is not a valid integer"), ("0x", "block is not a valid integer"),
     ("0xzz", "block is not a valid integer"), (str(1 << 64), "block is not a valid integer")],
)  # fmt: skip
def test_bad_block_parameters(value: object, message: str) -> None:
    with pytest.raises(FunctionError, match=message):
        _block(value)


def test_hex_answers() -> None:
    assert _hex_bytes("0x") == b""
    assert _hex_bytes("0xdeadbeef") == bytes.fromhex("deadbeef")
    assert _hex_bytes('"0x01"') == b"\x01"
    assert _hex_bytes("0xnothex") is None and _hex_bytes({"x": 1}) is None
