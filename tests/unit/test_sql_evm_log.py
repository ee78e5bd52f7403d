"""evm_topic and evm_decode_log (and its older name evm_decode): topics from keccak,
logs encoded with eth-abi, and the Uniswap V3 swaps of Amp's own tests."""

from __future__ import annotations

from decimal import Decimal

import eth_abi
import pyarrow as pa
from eth_hash.auto import keccak

from support.sqlfn import column, error, one, session, table

TRANSFER = "Transfer(address indexed from, address indexed to, uint256 value)"
SWAP_V3 = (
    "Swap(address indexed sender, address indexed recipient, int256 amount0, int256 amount1, "
    "uint160 sqrtPriceX96, uint128 liquidity, int24 tick)"
)


def topic(address: bytes) -> bytes:
    return bytes(12) + address


def logs(rows: list[tuple]) -> dict:
    """Columns of a logs table from (topic1, topic2, topic3, data) rows."""
    t1, t2, t3, data = zip(*rows, strict=True) if rows else ((), (), (), ())
    return {
        "topic1": pa.array(t1, pa.binary(32)),
        "topic2": pa.array(t2, pa.binary(32)),
        "topic3": pa.array(t3, pa.binary(32)),
        "data": pa.array(data, pa.binary()),
    }


def decode(signature: str, rows: list[tuple], fn: str = "evm_decode_log") -> pa.Table:
    ctx = session(logs=logs(rows))
    return table(ctx, f"SELECT {fn}(topic1, topic2, topic3, data, '{signature}') AS d FROM logs")


def test_topic0_of_amps_examples() -> None:
    ctx = session()
    assert one(ctx, f"SELECT evm_topic('{TRANSFER}')") == bytes.fromhex(
        "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
    )
    assert one(ctx, f"SELECT evm_topic('{SWAP_V3}')") == bytes.fromhex(
        "c42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67"
    )
    assert one(ctx, "SELECT evm_topic('Transfer(address,address,uint256)')") == keccak(
        b"Transfer(address,address,uint256)"
    )
    nested = "event Filled((address maker, uint256[] amounts) order, bytes32 indexed hash)"
    assert one(ctx, f"SELECT evm_topic('{nested}')") == keccak(
        b"Filled((address,uint256[]),bytes32)"
    )
    assert table(ctx, f"SELECT evm_topic('{TRANSFER}')").schema.field(0).type == pa.binary(32)


def test_topic_errors() -> None:
    ctx = session(t={"s": pa.array(["A()", "B()"])})
    assert "anonymous event Transfer has no topic0" in error(
        ctx, "SELECT evm_topic('Transfer(address indexed from) anonymous')"
    )
    assert "evm_topic: event can only have 3 indexed parameters but has 4" in error(
        ctx,
        "SELECT evm_topic('E(uint8 indexed a, uint8 indexed b, uint8 indexed c, uint8 indexed d)')",
    )
    assert "evm_topic: parse event signature:" in error(
        ctx, "SELECT evm_topic('Transfer(uint7 a)')"
    )
    assert "evm_topic: expected scalar argument for the signature but got Utf8" in error(
        ctx, "SELECT evm_topic(s) FROM t"
    )
    assert "evm_topic: expected Utf8, got Utf8" in error(ctx, "SELECT evm_topic(NULL)")


def test_transfer_decodes_with_indexed_fields_first() -> None:
    sender, recipient = b"\x11" * 20, b"\x22" * 20
    value = 1_500_000_000_000_000_000
    result = decode(
        TRANSFER,
        [(topic(sender), topic(recipient), None, eth_abi.encode(["uint256"], [value]))],
    )
    field = result.schema.field("d")
    assert not field.nullable
    assert [(f.name, f.type) for f in field.type] == [
        ("from", pa.binary(20)),
        ("to", pa.binary(20)),
        ("value", pa.string()),
    ]
    assert result.column("d").to_pylist() == [
        {"from": sender, "to": recipient, "value": str(value)}
    ]


def test_amps_erc20_example_query() -> None:
    token, sender = b"\x33" * 20, b"\x44" * 20
    topic0 = keccak(b"Transfer(address,address,uint256)")
    other = keccak(b"Approval(address,address,uint256)")
    rows = logs(
        [
            (topic(sender), topic(b"\x55" * 20), None, eth_abi.encode(["uint256"], [25 * 10**17])),
            (topic(sender), topic(b"\x55" * 20), None, eth_abi.encode(["uint256"], [1])),
        ]
    )
    rows["address"] = pa.array([token, token], pa.binary(20))
    rows["topic0"] = pa.array([topic0, other], pa.binary(32))
    ctx = session(logs=rows)
    result = table(
        ctx,
        f"""SELECT evm_decode_hex(address) as token, shift_units(decoded.value, -18) as amount
            FROM (
                SELECT address,
                       evm_decode_log(topic1, topic2, topic3, data, '{TRANSFER}') as decoded
                FROM logs
                WHERE topic0 = evm_topic('{TRANSFER}')
            )""",
    )
    assert result.to_pylist() == [{"token": "0x" + "33" * 20, "amount": "2.5"}]


# Amp's evm_decode_log test: Uniswap V3 swaps from blocks 19644517 to 19644520 (topic1,
# topic2, data; topic3 NULL) and the values Etherscan shows for them.
SWAPS = [
    (
        "e43ca1dee3f0fc1e2df73a0745674545f11a59f5",
        "10bff0723fa78a7c31260a9cbe7aa6ff470905d1",
        "000000000000000000000000000000000000000000000000000000003b9aca00"
        "fffffffffffffffffffffffffffffffffffffffffffffffffbbe45052a280563"
        "000000000000000000000000000000000000446e1e52218e5b236f8735ca8944"
        "0000000000000000000000000000000000000000000000005ca05c4528d95aa2"
        "000000000000000000000000000000000000000000000000000000000002fb65",
    ),
    (
        "def1c0ded9bec7f1a1670819833240f027b25eff",
        "2bf39a1004ff433938a5f933a44b8dad377937f6",
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffff486d4238"
        "0000000000000000000000000000000000000000000000000d1f893781823b9f"
        "000000000000000000000000000000000000446e24fadfd4b87fa4adb40e3782"
        "0000000000000000000000000000000000000000000000005ca05c4528d95aa2"
        "000000000000000000000000000000000000000000000000000000000002fb65",
    ),
]


def test_uniswap_v3_swaps_from_amps_tests() -> None:
    rows = [
        (topic(bytes.fromhex(s)), topic(bytes.fromhex(r)), None, bytes.fromhex(d))
        for s, r, d in SWAPS
    ]
    result = decode(SWAP_V3, rows)
    types = {f.name: f.type for f in result.schema.field("d").type}
    assert types == {
        "sender": pa.binary(20),
        "recipient": pa.binary(20),
        "amount0": pa.string(),
        "amount1": pa.string(),
        "sqrtPriceX96": pa.decimal256(76, 0),
        "liquidity": pa.decimal256(76, 0),
        "tick": pa.int32(),
    }
    got = result.column("d").to_pylist()
    assert [g["sender"].hex() for g in got] == [s for s, _, _ in SWAPS]
    assert [g["amount0"] for g in got] == ["1000000000", "-3079847368"]
    assert [g["amount1"] for g in got] == ["-306731836130196125", "945625318260095903"]
    assert [g["sqrtPriceX96"] for g in got] == [
        Decimal("1387928334765558613523830189754692"),
        Decimal("1387930395673702867992718976366466"),
    ]
    assert [g["liquidity"] for g in got] == [Decimal("6674436099870907042")] * 2
    assert [g["tick"] for g in got] == [195429, 195429]


def test_uniswap_v2_swap_field_order() -> None:
    signature = (
        "Swap(address indexed sender, uint256 amount0In, uint256 amount1In, uint256 amount0Out, "
        "uint256 amount1Out, address indexed to)"
    )
    data = eth_abi.encode(["uint256"] * 4, [1, 2, 3, 4])
    result = decode(signature, [(topic(b"\x01" * 20), topic(b"\x02" * 20), None, data)])
    assert [f.name for f in result.schema.field("d").type] == [
        "sender",
        "to",
        "amount0In",
        "amount1In",
        "amount0Out",
        "amount1Out",
    ]
    assert result.column("d").to_pylist()[0]["amount1Out"] == "4"


def test_indexed_reference_types_are_their_topic_hash() -> None:
    key, blob = keccak(b"myKey"), keccak(b"\x01\x02")
    result = decode(
        "DataStored(string indexed key, bytes indexed data, uint256 value)",
        [(key, blob, None, eth_abi.encode(["uint256"], [42]))],
    )
    assert [(f.name, f.type) for f in result.schema.field("d").type] == [
        ("key", pa.binary(32)),
        ("data", pa.binary(32)),
        ("value", pa.string()),
    ]
    assert result.column("d").to_pylist() == [{"key": key, "data": blob, "value": "42"}]


def test_value_topics_and_dynamic_data() -> None:
    signature = (
        "Note(int8 indexed level, bytes4 indexed tag, bool indexed flag, string text, "
        "uint64[] values, (address,bytes) extra)"
    )
    level = (-3).to_bytes(32, "big", signed=True)
    tag = b"abcd" + bytes(28)
    data = eth_abi.encode(
        ["string", "uint64[]", "(address,bytes)"], ["hi", [1, 2**64 - 1], (b"\x07" * 20, b"\x00")]
    )
    result = decode(signature, [(level, tag, (1).to_bytes(32, "big"), data)])
    assert result.column("d").to_pylist() == [
        {
            "level": -3,
            "tag": b"abcd",
            "flag": True,
            "text": "hi",
            "values": [1, 2**64 - 1],
            "extra": {"c0": b"\x07" * 20, "c1": b"\x00"},
        }
    ]


def test_nulls_and_bad_data() -> None:
    value = eth_abi.encode(["uint256"], [9])
    rows = [
        (topic(b"\x01" * 20), None, None, value),  # NULL topic: NULL field
        (topic(b"\x01" * 20), topic(b"\x02" * 20), None, None),  # NULL data: NULL data fields
        (topic(b"\x01" * 20), topic(b"\x02" * 20), None, value[:31]),  # too short
        (None, None, None, value + b"\x00" * 5),  # trailing bytes are ignored
    ]
    got = decode(TRANSFER, rows).column("d").to_pylist()
    assert got == [
        {"from": b"\x01" * 20, "to": None, "value": "9"},
        {"from": b"\x01" * 20, "to": b"\x02" * 20, "value": None},
        {"from": b"\x01" * 20, "to": b"\x02" * 20, "value": None},
        {"from": None, "to": None, "value": "9"},
    ]


def test_topics_beyond_the_indexed_parameters_are_ignored() -> None:
    data = eth_abi.encode(["address", "uint256"], [b"\x03" * 20, 8])
    rows = [(topic(b"\x01" * 20), topic(b"\x02" * 20), topic(b"\x09" * 20), data)]
    got = decode("Approval(address indexed owner, address spender, uint256 value)", rows)
    assert got.column("d").to_pylist() == [
        {"owner": b"\x01" * 20, "spender": b"\x03" * 20, "value": "8"}
    ]


def test_old_name_and_empty_event() -> None:
    rows = [(topic(b"\x01" * 20), topic(b"\x02" * 20), None, eth_abi.encode(["uint256"], [3]))]
    assert decode(TRANSFER, rows, fn="evm_decode").column("d").to_pylist()[0]["value"] == "3"
    empty = decode("Ping()", rows)
    assert empty.schema.field("d").type == pa.null()
    assert empty.column("d").to_pylist() == [None]


def test_unnamed_parameters_give_unnamed_fields() -> None:
    rows = [(topic(b"\x01" * 20), topic(b"\x02" * 20), None, eth_abi.encode(["uint256"], [3]))]
    result = decode("Transfer(address indexed, address indexed, uint256)", rows)
    assert [f.name for f in result.schema.field("d").type] == ["", "", ""]


def test_decode_log_errors() -> None:
    too_big_for_uint8 = (256).to_bytes(32, "big")
    ctx = session(logs=logs([(too_big_for_uint8, None, None, b"")]))
    assert "evm_decode_log: error converting uint8: Uint<256> value is too large for u8" in error(
        ctx, "SELECT evm_decode_log(topic1, topic2, topic3, data, 'E(uint8 indexed a)') FROM logs"
    )
    assert "evm_decode_log: expected a string literal for the signature" in error(
        ctx, "SELECT evm_decode_log(topic1, topic2, topic3, data, topic1) FROM logs"
    )
    assert "evm_decode: parse event signature:" in error(
        ctx, "SELECT evm_decode(topic1, topic2, topic3, data, 'E(') FROM logs"
    )
    assert "evm_decode_log: expected Utf8, got Int64" in error(
        ctx, "SELECT evm_decode_log(topic1, topic2, topic3, data, 7) FROM logs"
    )
    assert "evm_decode_log: expected 5 arguments, but got 2" in error(
        ctx, "SELECT evm_decode_log(data, 'E()') FROM logs"
    )
    assert "cannot convert solidity type function to arrow data type" in error(
        ctx, "SELECT evm_decode_log(topic1, topic2, topic3, data, 'E(function f)') FROM logs"
    )


def test_unaliased_column_keeps_the_function_name() -> None:
    ctx = session(logs=logs([]))
    names = table(
        ctx, f"SELECT evm_decode_log(topic1, topic2, topic3, data, '{TRANSFER}') FROM logs"
    ).schema.names
    assert names == [
        f'evm_decode_log(logs.topic1,logs.topic2,logs.topic3,logs.data,Utf8("{TRANSFER}"))'
    ]
    assert column(ctx, f"SELECT evm_topic('{TRANSFER}') FROM logs") == []
