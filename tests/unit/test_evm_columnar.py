"""Batch answers parsed into Arrow and converted column-wise give exactly what the dicts give.

The answers are the captured anvil blocks and receipts of test_evm_convert.py, sent through
the JSON text a node would answer with; `convert.convert` of the same dicts is the reference.
"""

import copy
import json

import pyarrow as pa
import pytest

from ampd.providers.evm_rpc import hexdecode
from ampd.providers.evm_rpc.arrow_answers import BlockColumns, check_blocks, parse_chunk
from ampd.providers.evm_rpc.chunks import convert_chunk
from ampd.providers.evm_rpc.columnar import convert_columns, headers_of
from ampd.providers.evm_rpc.convert import ConversionError, block_headers, convert


def answers(results, first_id, *, pretty=False):
    body = [{"jsonrpc": "2.0", "id": first_id + i, "result": r} for i, r in enumerate(results)]
    return json.dumps(body, indent=1 if pretty else None).encode()


def parsed(pairs, *, batch=None, pretty=False):
    """`pairs` as a chunk: block answers with ids from 1, receipt answers from 1001, in
    batches of `batch` calls (all in one by default)."""
    batch = batch or len(pairs)
    groups = [pairs[k : k + batch] for k in range(0, len(pairs), batch)]
    block_bodies, receipt_bodies, block_ids, receipt_ids = [], [], [], []
    for group in groups:
        first = len(block_ids)
        block_bodies.append(answers([b for b, _ in group], 1 + first, pretty=pretty))
        receipt_bodies.append(answers([r for _, r in group], 1001 + first, pretty=pretty))
        block_ids += range(1 + first, 1 + first + len(group))
        receipt_ids += range(1001 + first, 1001 + first + len(group))
    return parse_chunk(block_bodies, receipt_bodies, block_ids, receipt_ids)


def chunk_of(pairs, **kwargs):
    result = parsed(pairs, **kwargs)
    assert not isinstance(result, str), result
    numbers = [int(b["number"], 16) for b, _ in pairs]
    chunk = BlockColumns(numbers, *result)
    assert check_blocks(chunk) is None
    return chunk


def assert_same(got, want):
    assert set(got) == set(want)
    for table in want:
        assert got[table].schema.equals(want[table].schema), table
        assert got[table].equals(want[table]), (table, got[table].to_pylist()[:2])


def without_type(pairs, tx_type):
    """The pairs with every transaction of `tx_type` (and its receipt) left out."""
    out = copy.deepcopy(pairs)
    for block, receipts in out:
        keep = [i for i, tx in enumerate(block["transactions"]) if tx.get("type") != tx_type]
        block["transactions"] = [block["transactions"][i] for i in keep]
        receipts[:] = [receipts[i] for i in keep]
    return out


def test_the_columnar_conversion_equals_the_dicts_for_types_0_to_3(pairs):
    # Legacy, access-list, dynamic-fee and blob transactions, with logs: all column-wise.
    common = without_type(pairs, "0x4")
    assert {tx["type"] for b, _ in common for tx in b["transactions"]} == {
        "0x0",
        "0x1",
        "0x2",
        "0x3",
    }
    got = convert_columns(chunk_of(common))
    assert got is not None
    assert_same(got, convert(common))
    assert headers_of(chunk_of(common)) == block_headers(common)


def test_authorizations_take_the_general_conversion_with_the_same_result(pairs):
    chunk = chunk_of(pairs)
    assert convert_columns(chunk) is None  # EIP-7702 lists: not column-wise
    batches, headers = convert_chunk(chunk)
    assert_same(batches, convert(pairs))
    assert headers == block_headers(pairs)


@pytest.mark.parametrize("batch", [1, 2])
def test_several_batches_and_pretty_printed_answers(pairs, batch):
    common = without_type(pairs, "0x4")
    got = convert_columns(chunk_of(common, batch=batch, pretty=True))
    assert_same(got, convert(common))


@pytest.mark.parametrize(
    "name", ["unknown_type_126", "legacy_pre_eip155", "pre_byzantium", "overflowing_fee"]
)
def test_rare_forms_convert_as_the_dicts_do(variants, name):
    v = copy.deepcopy(variants[name])
    pairs = [(v["block"], v["receipts"])]
    try:
        want = convert(copy.deepcopy(pairs))
    except ConversionError as exc:
        with pytest.raises(ConversionError) as got:
            convert_chunk(chunk_of(pairs))
        assert str(got.value) == str(exc)
        return
    batches, _ = convert_chunk(chunk_of(pairs))
    assert_same(batches, want)


def test_a_bad_value_is_named_as_the_dicts_name_it(pairs):
    bad = copy.deepcopy(pairs)
    bad[1][0]["transactions"][0]["nonce"] = "0xzz"
    with pytest.raises(ConversionError) as want:
        convert(copy.deepcopy(bad))
    with pytest.raises(ConversionError) as got:
        convert_chunk(chunk_of(bad))
    assert str(got.value) == str(want.value)
    assert "transactions.nonce" in str(got.value)


def test_answers_out_of_order_are_put_in_call_order(pairs):
    common = without_type(pairs, "0x4")
    blocks = json.loads(answers([b for b, _ in common], 1))[::-1]
    receipts = answers([r for _, r in common], 1001)
    result = parse_chunk([json.dumps(blocks).encode()], [receipts], [1, 2, 3], [1001, 1002, 1003])
    chunk = BlockColumns([0, 1, 2], *result)
    assert check_blocks(chunk) is None
    assert_same(convert_columns(chunk), convert(common))


def refused(pairs, edit_blocks=None, edit_receipts=None):
    blocks = json.loads(answers([b for b, _ in pairs], 1))
    receipts = json.loads(answers([r for _, r in pairs], 1001))
    if edit_blocks:
        edit_blocks(blocks)
    if edit_receipts:
        edit_receipts(receipts)
    ids = [a.get("id") for a in blocks], [a.get("id") for a in receipts]
    return parse_chunk(
        [json.dumps(blocks).encode()],
        [json.dumps(receipts).encode()],
        [1, 2, 3],
        [1001, 1002, 1003],
    ), ids


def set_in(path, value):
    def edit(answers):
        target = answers
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("edit_blocks", "edit_receipts", "reason"),
    [
        (set_in([0, "result", "number"], 0), None, "does not fit"),  # a number, not hex
        (set_in([1, "result", "transactions"], ["0x" + "ab" * 32]), None, "does not fit"),
        (set_in([2, "result"], None), None, "answered with null"),  # a block the node lacks
        (set_in([2], {"jsonrpc": "2.0", "id": 3, "error": {"code": -1, "message": "x"}}),
         None, "with an error"),
        (lambda a: a.pop(), None, "2 answers for 3 calls"),
        (set_in([0, "id"], 7), None, "ids do not match"),
        (None, set_in([0, "result"], {"not": "a list"}), "does not fit"),
    ],
)  # fmt: skip
def test_answers_the_arrow_path_refuses(pairs, edit_blocks, edit_receipts, reason):
    result, _ = refused(pairs, edit_blocks, edit_receipts)
    assert isinstance(result, str) and reason in result


def test_an_answer_that_is_not_a_batch_array_is_refused():
    error = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32005,"message":"rate limited"}}'
    assert "not a batch array" in parse_chunk([error], [b"[]"], [1], [])


def test_check_blocks_holds_the_rules_of_whole_blocks(pairs):
    def problem(edit):
        bad = copy.deepcopy(pairs)
        edit(bad)
        result = parsed(bad)
        return check_blocks(BlockColumns([0, 1, 2], *result))

    def swap(p):
        p[2][1][0], p[2][1][1] = p[2][1][1], p[2][1][0]

    def drop(p):
        p[2][1].pop()

    def other_block(p):
        p[1][1][0]["blockHash"] = "0x" + "11" * 32

    def renumber(p):
        p[1][0]["number"] = "0x7"

    assert problem(lambda p: None) is None
    assert "transaction order" in problem(swap)
    assert "as many as" in problem(drop)
    assert "another block" in problem(other_block)
    assert "not the one asked for" in problem(renumber)


def test_hexdecode_reads_sliced_and_null_holding_arrow_arrays():
    values = pa.array(["0x01", None, "0xff", "0x10", "0x2"])
    assert hexdecode.uint64(values.slice(2), nullable=False).to_pylist() == [255, 16, 2]
    assert hexdecode.uint64(values, nullable=True).to_pylist() == [1, None, 255, 16, 2]
    assert hexdecode.uint64(values) is None  # a null where none is allowed
    hashes = pa.array(["0x" + "ab" * 32, "0x" + "cd" * 32, "0x" + "ef" * 32])
    assert hexdecode.fixed_binary(hashes.slice(1, 1), 32).to_pylist() == [b"\xcd" * 32]
    assert hexdecode.binary(pa.array(["0x", "0x00ff"]).slice(1)).to_pylist() == [b"\x00\xff"]
    assert hexdecode.uint64([1, 2]) is None  # not strings
