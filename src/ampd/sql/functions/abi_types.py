"""Solidity ABI types: parsing a type string, the ABI layout facts the codec needs, and
the Arrow type Amp gives each Solidity type.

Arrow mapping (Amp's rule, by bit width for integers):
  int8/uint8 -> Int8/UInt8, int16 -> Int16, up to 32 bits -> Int32/UInt32, up to 64 bits
  -> Int64/UInt64, up to 125 bits -> Decimal128(38, 0), up to 251 bits -> Decimal256(76, 0),
  wider (int256/uint256) -> Utf8 (decimal text, so no value is lost); address ->
  FixedSizeBinary(20); bytesN -> FixedSizeBinary(N); bytes -> Binary; string -> Utf8;
  bool -> Boolean; T[] -> List(T); T[k] -> FixedSizeList(T, k); tuples -> Struct with
  fields c0, c1, ... (component names in a signature are not kept).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import pyarrow as pa

from ampd.sql.functions.errors import AbiError

DEC128 = pa.decimal128(38, 0)
DEC256 = pa.decimal256(76, 0)
# Above these bit widths a value may not fit the decimal's 38 / 76 digits (less a sign bit).
DEC128_MAX_BITS = 125
DEC256_MAX_BITS = 251

WORD_KINDS = frozenset({"uint", "int", "address", "bool", "fbytes", "function"})


@dataclass(frozen=True)
class SolType:
    """One Solidity type. `size` is the bit width (uint/int), byte length (fbytes) or
    element count (farray); `inner` the element type of arrays; `items` tuple parts."""

    kind: str  # uint int address bool fbytes function bytes string array farray tuple
    size: int = 0
    inner: SolType | None = None
    items: tuple[SolType, ...] = ()

    @cached_property
    def name(self) -> str:
        """The canonical type string (as used in selectors and messages)."""
        k = self.kind
        if k in ("uint", "int"):
            return f"{k}{self.size}"
        if k == "fbytes":
            return f"bytes{self.size}"
        if k == "array":
            return f"{self.inner.name}[]"
        if k == "farray":
            return f"{self.inner.name}[{self.size}]"
        if k == "tuple":
            return "(" + ",".join(t.name for t in self.items) + ")"
        return k

    def __str__(self) -> str:
        return self.name

    @cached_property
    def dynamic(self) -> bool:
        if self.kind in ("bytes", "string", "array"):
            return True
        if self.kind == "farray":
            return self.inner.dynamic
        if self.kind == "tuple":
            return any(t.dynamic for t in self.items)
        return False

    @cached_property
    def words(self) -> int:
        """Words this type takes in the head of an encoding (1 for dynamic types)."""
        if self.dynamic:
            return 1
        if self.kind == "farray":
            return self.size * self.inner.words
        if self.kind == "tuple":
            return sum(t.words for t in self.items)
        return 1

    @cached_property
    def min_words(self) -> int:
        """The fewest words an encoding can have (a decoder refuses shorter data)."""
        if self.kind == "farray":
            return self.size * self.inner.min_words
        if self.kind == "tuple":
            return sum(t.min_words for t in self.items)
        return 1

    @cached_property
    def zero_sized(self) -> bool:
        if self.kind == "tuple":
            return all(t.zero_sized for t in self.items)
        if self.kind == "farray":
            return self.size == 0 or self.inner.zero_sized
        return False

    @cached_property
    def arrow(self) -> pa.DataType:
        return arrow_type(self)


def arrow_type(t: SolType) -> pa.DataType:
    k = t.kind
    if k == "bool":
        return pa.bool_()
    if k in ("uint", "int"):
        return _int_arrow(k == "int", t.size)
    if k == "fbytes":
        return pa.binary(t.size)
    if k == "address":
        return pa.binary(20)
    if k == "bytes":
        return pa.binary()
    if k == "string":
        return pa.string()
    if k == "array":
        return pa.list_(pa.field("item", t.inner.arrow))
    if k == "farray":
        return pa.list_(pa.field("item", t.inner.arrow), t.size)
    if k == "tuple":
        return pa.struct([pa.field(f"c{i}", item.arrow) for i, item in enumerate(t.items)])
    raise AbiError(f"cannot convert solidity type {t} to arrow data type")


def _int_arrow(signed: bool, bits: int) -> pa.DataType:
    if bits == 8:
        return pa.int8() if signed else pa.uint8()
    if bits == 16:
        return pa.int16() if signed else pa.uint16()
    if bits <= 32:
        return pa.int32() if signed else pa.uint32()
    if bits <= 64:
        return pa.int64() if signed else pa.uint64()
    if bits <= DEC128_MAX_BITS:
        return DEC128
    if bits <= DEC256_MAX_BITS:
        return DEC256
    return pa.string()


def topic_arrow(t: SolType) -> pa.DataType:
    """The Arrow type of an indexed event parameter: reference types are stored in the
    topic as the keccak hash of their encoding, so they come back as those 32 bytes."""
    if t.kind in ("bytes", "string", "array", "farray", "tuple"):
        return pa.binary(32)
    return t.arrow


def topic_value_type(t: SolType) -> SolType:
    """The type the 32 bytes of a topic decode as (bytes32 for reference types)."""
    if t.kind in ("bytes", "string", "array", "farray", "tuple"):
        return SolType("fbytes", 32)
    return t


_TOKEN = re.compile(r"\s*(?:([A-Za-z_$][A-Za-z0-9_$]*)|(\d+)|(\S))")


class _Tokens:
    """A tiny lexer over a type or signature string: identifiers, numbers, punctuation."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.items: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                break
            ident, number, punct = match.groups()
            if ident is not None:
                self.items.append(("ident", ident))
            elif number is not None:
                self.items.append(("number", number))
            elif punct is not None:
                self.items.append(("punct", punct))
            pos = match.end()
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.items[self.i] if self.i < len(self.items) else None

    def next(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise AbiError(f"unexpected end of input in {self.text!r}")
        self.i += 1
        return token

    def take(self, punct: str) -> bool:
        if self.peek() == ("punct", punct):
            self.i += 1
            return True
        return False

    def expect(self, punct: str) -> None:
        if not self.take(punct):
            found = self.peek()
            where = repr(found[1]) if found else "end of input"
            raise AbiError(f"expected {punct!r}, found {where} in {self.text!r}")

    def done(self) -> bool:
        return self.i >= len(self.items)


def _root(name: str) -> SolType:
    if name in ("address", "bool", "string", "bytes", "function"):
        return SolType(name)
    if name in ("uint", "int"):
        return SolType(name, 256)
    if name.startswith("bytes"):
        size = name[5:]
        if size.isdigit() and not size.startswith("0") and 1 <= int(size) <= 32:
            return SolType("fbytes", int(size))
        raise AbiError(f"invalid size for type: {name}")
    unsigned = name.startswith("u")
    rest = name[1:] if unsigned else name
    if rest.startswith("int"):
        size = rest[3:]
        if size.isdigit() and not size.startswith("0") and int(size) <= 256 and int(size) % 8 == 0:
            return SolType("uint" if unsigned else "int", int(size))
        raise AbiError(f"invalid size for type: {name}")
    raise AbiError(f"invalid type string: {name}")


def read_type(tokens: _Tokens, *, named_components: bool = False) -> SolType:
    """One type from `tokens`: a root type or a (optionally `tuple`-prefixed) tuple, then
    any array suffixes. With `named_components`, tuple parts may carry names (and
    `indexed` / storage words), as in event and function signatures."""
    kind, value = tokens.peek() or ("", "")
    if (
        kind == "ident"
        and value == "tuple"
        and tokens.items[tokens.i + 1 : tokens.i + 2] == [("punct", "(")]
    ):
        tokens.next()
        kind, value = "punct", "("
    if (kind, value) == ("punct", "("):
        tokens.next()
        items: list[SolType] = []
        while not tokens.take(")"):
            items.append(read_type(tokens, named_components=named_components))
            if named_components:
                skip_param_words(tokens)
            if not tokens.take(","):
                tokens.expect(")")
                break
        t = SolType("tuple", items=tuple(items))
    elif kind == "ident":
        tokens.next()
        t = _root(value)
    else:
        raise AbiError(f"invalid type string: {tokens.text}")
    while tokens.take("["):
        if tokens.take("]"):
            t = SolType("array", inner=t)
            continue
        kind, value = tokens.next()
        if kind != "number" or int(value) == 0:
            raise AbiError(f"invalid size for type: {t}[{value}]")
        tokens.expect("]")
        t = SolType("farray", int(value), inner=t)
    return t


def skip_param_words(tokens: _Tokens) -> tuple[bool, str]:
    """After a parameter's type: optional storage location, `indexed`, and a name.
    Returns (indexed, name)."""
    indexed, name = False, ""
    token = tokens.peek()
    if token and token[0] == "ident" and token[1] in ("memory", "storage", "calldata"):
        tokens.next()
        token = tokens.peek()
    if token == ("ident", "indexed"):
        tokens.next()
        indexed = True
        token = tokens.peek()
    if token and token[0] == "ident":
        tokens.next()
        name = token[1]
    return indexed, name


def parse_type(text: str) -> SolType:
    """A Solidity type string such as `uint256`, `bytes32[3]` or `(int256, string[])`."""
    tokens = _Tokens(text)
    if tokens.done():
        raise AbiError("invalid type string: empty")
    t = read_type(tokens)
    if not tokens.done():
        raise AbiError(f"invalid type string: {text}")
    return t
