"""evm_decode_params / evm_encode_params against call data built from keccak selectors and
eth-abi's encoder."""

from __future__ import annotations

import eth_abi
import pyarrow as pa
from eth_hash.auto import keccak

from support.sqlfn import column, error, one, session, table

TRANSFER = "transfer(address to, uint256 amount)"
SWAP = "swap(uint256 amount0Out, uint256 amount1Out, address to, bytes data)"


def selector(canonical: str) -> bytes:
    return keccak(canonical.encode())[:4]


def call(canonical: str, types: list[str], values: list) -> bytes:
    return selector(canonical) + eth_abi.encode(types, values)


def decode(signature: str, inputs: list[bytes | None]) -> pa.Table:
    ctx = session(tx={"input": pa.array(inputs, pa.binary())})
    return table(ctx, f"SELECT evm_decode_params(input, '{signature}') AS p FROM tx")


def test_transfer_selector_is_the_known_one() -> None:
    assert selector("transfer(address,uint256)").hex() == "a9059cbb"


def test_decode_transfer_calls() -> None:
    to = b"\x42" * 20
    good = call("transfer(address,uint256)", ["address", "uint256"], [to, 10**18])
    other = call("approve(address,uint256)", ["address", "uint256"], [to, 1])
    result = decode(TRANSFER, [good, other, good[:3], None, good[:40], good + b"\x00"])
    field = result.schema.field("p")
    assert field.nullable
    assert [(f.name, f.type) for f in field.type] == [
        ("to", pa.binary(20)),
        ("amount", pa.string()),
    ]
    expected = {"to": to, "amount": str(10**18)}
    assert result.column("p").to_pylist() == [expected, None, None, None, None, expected]


def test_amps_transfer_example_query() -> None:
    to = b"\x42" * 20
    data = call("transfer(address,uint256)", ["address", "uint256"], [to, 7])
    ctx = session(
        tx={"input": pa.array([data]), "to_address": pa.array([b"\x01" * 20], pa.binary(20))}
    )
    result = table(
        ctx,
        f"""SELECT evm_decode_hex(t.to_address) as token,
                   (evm_decode_params(t.input, '{TRANSFER}')).to as recipient,
                   (evm_decode_params(t.input, '{TRANSFER}')).amount as amount
            FROM tx t""",
    )
    assert result.to_pylist() == [{"token": "0x" + "01" * 20, "recipient": to, "amount": "7"}]


def test_decode_dynamic_and_nested_parameters() -> None:
    data = call(
        "swap(uint256,uint256,address,bytes)",
        ["uint256", "uint256", "address", "bytes"],
        [1, 2, b"\x09" * 20, b"callback"],
    )
    assert decode(SWAP, [data]).column("p").to_pylist() == [
        {"amount0Out": "1", "amount1Out": "2", "to": b"\x09" * 20, "data": b"callback"}
    ]
    signature = "f((uint8 a, string[] b)[] items, bytes32[2] keys, int40 n)"
    values = [[(1, ["x"]), (2, [])], [b"\x01" * 32, b"\x02" * 32], -7]
    data = call(
        "f((uint8,string[])[],bytes32[2],int40)",
        ["(uint8,string[])[]", "bytes32[2]", "int40"],
        values,
    )
    assert decode(signature, [data, data[:-32]]).column("p").to_pylist() == [
        {
            "items": [{"c0": 1, "c1": ["x"]}, {"c0": 2, "c1": []}],
            "keys": [b"\x01" * 32, b"\x02" * 32],
            "n": -7,
        },
        None,
    ]


def test_function_signature_forms() -> None:
    data = call("transfer(address,uint256)", ["address", "uint256"], [b"\x01" * 20, 5])
    for signature in (
        "function transfer(address to, uint256 amount) external returns (bool)",
        "transfer(address to, uint256 amount) public",
        "transfer(address memory to, uint amount)",
    ):
        assert decode(signature, [data]).column("p").to_pylist()[0]["amount"] == "5"


def test_decode_params_errors() -> None:
    ctx = session(tx={"input": pa.array([b""]), "s": pa.array(["x"])})
    assert "evm_decode_params: function transfer has unnamed input parameter" in error(
        ctx, "SELECT evm_decode_params(input, 'transfer(address,uint256)') FROM tx"
    )
    assert "evm_decode_params: expected a string literal for the signature" in error(
        ctx, "SELECT evm_decode_params(input, s) FROM tx"
    )
    assert "evm_decode_params: parse function signature:" in error(
        ctx, "SELECT evm_decode_params(input, 'transfer(address to') FROM tx"
    )
    assert "evm_decode_params: expected 2 arguments, but got 1" in error(
        ctx, "SELECT evm_decode_params(input) FROM tx"
    )


def test_encode_params_builds_call_data() -> None:
    to = bytes.fromhex("c02aaa39b223fe8d0a0e5c4f27ead9083c756cc2")
    ctx = session(
        t={"to": pa.array([to, to], pa.binary(20)), "amount": pa.array([1, None], pa.uint64())}
    )
    got = column(ctx, f"SELECT evm_encode_params(to, amount, '{TRANSFER}') FROM t")
    assert got == [call("transfer(address,uint256)", ["address", "uint256"], [to, 1]), None]
    # Amp's docs: the address from evm_encode_hex and the amount as a literal.
    literal = one(
        ctx,
        "SELECT evm_encode_params(evm_encode_hex('0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2'), "
        f"1000000000000000000, '{TRANSFER}')",
    )
    assert literal == call("transfer(address,uint256)", ["address", "uint256"], [to, 10**18])
    dynamic = one(
        ctx, f"SELECT evm_encode_params(1, 2, evm_encode_hex('{to.hex()}'), X'ab', '{SWAP}')"
    )
    assert dynamic == call(
        "swap(uint256,uint256,address,bytes)",
        ["uint256", "uint256", "address", "bytes"],
        [1, 2, to, b"\xab"],
    )


def test_a_function_without_parameters() -> None:
    total_supply = selector("totalSupply()")
    ctx = session(t={"d": pa.array([total_supply, b"\x00" * 4, None])})
    assert column(ctx, "SELECT evm_encode_params('totalSupply()') FROM t") == [total_supply] * 3
    assert column(ctx, "SELECT evm_decode_params(d, 'totalSupply()') FROM t") == [{}, None, None]


def test_encode_then_decode_round_trips() -> None:
    ctx = session()
    got = one(
        ctx,
        "SELECT evm_decode_params(evm_encode_params('hi', [1, 2], 'f(string s, uint32[] v)'), "
        "'f(string s, uint32[] v)')",
    )
    assert got == {"s": "hi", "v": [1, 2]}


def test_encode_params_errors() -> None:
    ctx = session()
    assert "evm_encode_params: expected 2 arguments for the function signature but got 1" in error(
        ctx, f"SELECT evm_encode_params(1, '{TRANSFER}')"
    )
    assert "expected int type, got address" in error(
        ctx, f"SELECT evm_encode_params(1, 2, '{TRANSFER}')"
    )
    assert "evm_encode_params: function transfer has unnamed input parameter" in error(
        ctx, "SELECT evm_encode_params(1, 'transfer(uint256)')"
    )
    ctx = session(t={"sig": pa.array([None], pa.string())})
    assert "evm_encode_params: expected Utf8, got Utf8" in error(
        ctx, "SELECT evm_encode_params(1, sig) FROM t"
    )
    assert (
        "evm_encode_params: expected at least 1 argument (Solidity function signature), but got 0"
        in error(ctx, "SELECT evm_encode_params()")
    )
