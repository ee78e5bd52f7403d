"""Human-readable event and function signatures, e.g.
`Transfer(address indexed from, address indexed to, uint256 value)` or
`transfer(address to, uint256 amount)`: their parameters, topic0 and selector."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import pyarrow as pa
from eth_hash.auto import keccak

from ampd.sql.functions.abi_types import (
    SolType,
    _Tokens,
    read_type,
    skip_param_words,
    topic_arrow,
    topic_value_type,
)
from ampd.sql.functions.errors import AbiError


@dataclass(frozen=True)
class Param:
    name: str
    type: SolType
    indexed: bool = False


def _parse(text: str, keyword: str, *, trailing_ok: bool) -> tuple[str, list[Param], list[str]]:
    tokens = _Tokens(text)
    first = tokens.peek()
    if first == ("ident", keyword) and tokens.items[1:2] and tokens.items[1][0] == "ident":
        tokens.next()
    kind, name = tokens.next() if not tokens.done() else ("", "")
    if kind != "ident":
        raise AbiError(f"invalid identifier string: {text}")
    tokens.expect("(")
    params: list[Param] = []
    while not tokens.take(")"):
        t = read_type(tokens, named_components=True)
        indexed, pname = skip_param_words(tokens)
        params.append(Param(pname, t, indexed))
        if not tokens.take(","):
            tokens.expect(")")
            break
    rest = [value for _, value in tokens.items[tokens.i :]]
    if rest and not trailing_ok:
        raise AbiError(f"unexpected {rest[0]!r} after the parameters in {text!r}")
    return name, params, rest


def canonical(name: str, types: list[SolType] | tuple[SolType, ...]) -> str:
    return f"{name}({','.join(t.name for t in types)})"


@dataclass(frozen=True)
class Event:
    name: str
    params: tuple[Param, ...]
    anonymous: bool

    @cached_property
    def indexed(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.indexed)

    @cached_property
    def body(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if not p.indexed)

    @cached_property
    def topic0(self) -> bytes:
        return keccak(canonical(self.name, [p.type for p in self.params]).encode())

    @cached_property
    def topic_types(self) -> tuple[SolType, ...]:
        """What each indexed parameter's topic word decodes as."""
        return tuple(topic_value_type(p.type) for p in self.indexed)

    @cached_property
    def fields(self) -> list[pa.Field]:
        """The decoded struct's fields: indexed parameters first (as their topic holds
        them), then the data parameters, each in signature order."""
        fields = [pa.field(p.name, topic_arrow(p.type)) for p in self.indexed]
        fields += [pa.field(p.name, p.type.arrow) for p in self.body]
        return fields


@lru_cache(maxsize=1024)
def parse_event(text: str) -> Event:
    """Raises AbiError with Amp's texts for the checks Amp makes itself."""
    try:
        name, params, rest = _parse(text, "event", trailing_ok=True)
    except AbiError as exc:
        raise AbiError(f"parse event signature: {exc}") from None
    if rest not in ([], ["anonymous"]):
        raise AbiError(f"parse event signature: unexpected {rest[0]!r} in {text!r}")
    event = Event(name, tuple(params), anonymous=bool(rest))
    if len(event.indexed) > 3:
        raise AbiError(f"event can only have 3 indexed parameters but has {len(event.indexed)}")
    return event


_AFTER_FUNCTION = {"internal", "external", "private", "public", "pure", "view", "payable"}


@dataclass(frozen=True)
class Function:
    name: str
    params: tuple[Param, ...]

    @cached_property
    def selector(self) -> bytes:
        return keccak(canonical(self.name, [p.type for p in self.params]).encode())[:4]

    @cached_property
    def types(self) -> tuple[SolType, ...]:
        return tuple(p.type for p in self.params)

    @cached_property
    def fields(self) -> list[pa.Field]:
        return [pa.field(p.name, p.type.arrow) for p in self.params]


@lru_cache(maxsize=1024)
def parse_function(text: str) -> Function:
    """A function signature whose parameters all have names (Amp requires them, for the
    decoded struct's field names). Visibility, mutability and `returns (...)` may follow
    the parameters and are ignored."""
    try:
        name, params, rest = _parse(text, "function", trailing_ok=True)
        _check_function_tail(rest, text)
    except AbiError as exc:
        raise AbiError(f"parse function signature: {exc}") from None
    for p in params:
        if not p.name:
            raise AbiError(f"function {name} has unnamed input parameter")
    return Function(name, tuple(params))


def _check_function_tail(rest: list[str], text: str) -> None:
    words = list(rest)
    while words and words[0] in _AFTER_FUNCTION:
        words.pop(0)
    if words and words[0] == ":":
        words.pop(0)
    if words and words[0] == "returns":
        words.pop(0)
        if not words or words[0] != "(" or words[-1] != ")":
            raise AbiError(f"invalid returns clause in {text!r}")
        words = []
    if words:
        raise AbiError(f"unexpected {words[0]!r} after the parameters in {text!r}")
