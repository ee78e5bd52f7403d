"""The planning step that lets DataFusion's Python UDFs (fixed argument and result
types) answer Amp's SQL unchanged.

Amp's functions choose their result type from a literal argument (evm_decode_log's
struct follows its signature string) or accept several argument types (shift_units
takes integers, decimals, floats or text). A Python UDF has one fixed signature, so
`prepare` gives every such call in the query its own UDF: it finds the calls in the SQL
text (`sql_text.py`), registers for each a UDF built for its literal and argument types
under a derived name (`evm_decode_log__<digest>`), and returns the SQL with the call
names replaced. Argument types that the text does not show (a column, an expression) are
learnt from DataFusion itself: the call is first registered with a signature no call can
match, the query is planned, and DataFusion's refusal names the argument types; the call
is then registered for exactly those types and the query planned again, until it plans.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from datafusion import SessionContext, SQLOptions

from ampd.sql.functions import eth_call as eth_call_fns
from ampd.sql.functions import hex as hex_fns
from ampd.sql.functions import log, params, units, value
from ampd.sql.functions.common import Built, failing
from ampd.sql.functions.errors import FunctionError, df_type_name
from ampd.sql.functions.eth_call import EthCaller, QualifiedCall, qualified_calls
from ampd.sql.functions.sql_text import Call, Literal, calls, literal

# Functions whose result type follows a literal: argument count, literal position.
_LITERAL = {
    "evm_decode_log": (5, 4),
    "evm_decode": (5, 4),
    "evm_decode_params": (2, 1),
    "evm_decode_type": (2, 1),
    "evm_encode_hex": (1, 0),
}
# Functions that take several argument types.
_TYPED = {"shift_units", "evm_encode_type", "evm_encode_params", "evm_decode_hex"}
NAMES = frozenset(_LITERAL) | _TYPED | {"evm_topic"}

_INTERNAL = re.compile(
    r"\b("
    + "|".join(sorted((NAMES - {"evm_topic"}) | {eth_call_fns.NAME}, key=len, reverse=True))
    + r")__[0-9a-z]+\b"
)
_REFUSED = re.compile(
    r"call to '(?P<name>[a-z_]+__[0-9a-z]+)' function: coercion from (?P<types>.*?) to the signature"
)
_READ_ONLY = SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)
_NO_CALL = pa.time32("s")  # the probe's argument type (with one argument too many)


def public_name(text: str) -> str:
    """`text` (a column name, an error message) with the derived function names that
    `prepare` put in the query turned back into the names the query used."""
    return _INTERNAL.sub(r"\1", text)


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def _literal_text(call: Call, index: int) -> tuple[Literal | None, str | None]:
    lit = literal(call.args[index]) if index < len(call.args) else None
    return lit, (lit.text if lit is not None and lit.kind == "string" else None)


def _literal_call(call: Call) -> tuple[str, Built]:
    """A call of a function whose result type follows its literal argument."""
    name = call.name
    count, index = _LITERAL[name]
    if len(call.args) != count:
        if name == "evm_encode_hex":
            got = len(call.args)
            raise FunctionError(
                f"{name}: expected 1 argument, {'got 0' if not got else f'but got {got}'}"
            )
        raise FunctionError(f"{name}: expected {count} arguments, but got {len(call.args)}")
    lit, text = _literal_text(call, index)
    if name == "evm_encode_hex":
        built = hex_fns.evm_encode_hex(text, null=lit is not None and lit.kind == "null")
        if lit is not None and lit.kind not in ("string", "null"):
            built = hex_fns.evm_encode_hex(None)
        return f"{name}__{_digest(name, text, lit)}", built
    if text is None:
        if lit is not None:
            prefix = "" if name == "evm_decode_type" else f"{name}: "
            raise FunctionError(f"{prefix}expected Utf8, got {lit.df_type}")
        if name == "evm_decode_type":
            raise FunctionError(f"{name}: expected scalar argument for the Solidity type")
        raise FunctionError(f"{name}: expected a string literal for the signature")
    if name in ("evm_decode_log", "evm_decode"):
        built = log.evm_decode_log(name, text)
    elif name == "evm_decode_params":
        built = params.evm_decode_params(text)
    else:
        built = value.evm_decode_type(text)
    return f"{name}__{_digest(name, text)}", built


def _arity(call: Call) -> None:
    n, name = len(call.args), call.name
    if name == "shift_units" and n != 2:
        raise FunctionError(f"{name}: expected 2 arguments, but got {n}")
    if name == "evm_encode_type" and n != 2:
        raise FunctionError(f"{name}: expected at 2 arguments, but got {n}")
    if name == "evm_encode_params" and n == 0:
        raise FunctionError(
            f"{name}: expected at least 1 argument (Solidity function signature), but got 0"
        )
    if name == "evm_decode_hex" and n != 1:
        raise FunctionError(f"{name}: expected 1 argument, {'got 0' if not n else f'but got {n}'}")


def _typed_call(call: Call, types: list[pa.DataType | str]) -> Built:
    """A call of a function that takes several argument types, for these types (a str is
    a type pyarrow cannot stand for, by DataFusion's name for it)."""
    name = call.name
    literals = [literal(a) for a in call.args]
    if name == "shift_units":
        return units.shift_units(
            *types,
            value_literal=literals[0] is not None,
            units_literal=literals[1] is not None,
        )
    if name == "evm_decode_hex":
        t = types[0]
        if t == pa.null():
            t = pa.binary(20)
        if (
            isinstance(t, str)
            or not pa.types.is_fixed_size_binary(t)
            or t.byte_width not in (20, 32)
        ):
            shown = t if isinstance(t, str) else df_type_name(t)
            raise FunctionError(
                f"{name}: expected FixedSizeBinary(20) or FixedSizeBinary(32), got {shown}"
            )
        return hex_fns.evm_decode_hex(t.byte_width)
    unknown = [t for t in types[:-1] if isinstance(t, str)]
    last = literals[-1]
    text = last.text if last is not None and last.kind == "string" else None
    if last is not None and last.kind != "string":
        message = f"expected Utf8, got {last.df_type}"
        if name == "evm_encode_params":
            message = f"{name}: {message}"
        return Built(_raise(message), _inputs(types), pa.field(name, pa.binary()))
    if unknown:
        target = text or "?"
        message = f"Unsupported type {unknown[0]} for Solidity type {target}"
        return Built(_raise(message), _inputs(types), pa.field(name, pa.binary()))
    if name == "evm_encode_type":
        return value.evm_encode_type(types[0], text)
    return params.evm_encode_params(list(types[:-1]), text)


def _inputs(types: list[pa.DataType | str]) -> list[pa.DataType]:
    return [_NO_CALL if isinstance(t, str) else t for t in types]


def _raise(message: str) -> Callable[..., pa.Array]:
    return failing(message, pa.binary())


@dataclass
class _Site:
    call: Call
    name: str  # the name the call has in the rewritten SQL


EthCallers = Callable[[QualifiedCall], EthCaller]


def prepare(ctx: SessionContext, sql: str, eth_callers: EthCallers | None = None) -> str:
    """Rewrite `sql` for `ctx` (whose tables must already be registered): each call of
    evm_decode_log / evm_decode, evm_decode_params, evm_decode_type, evm_encode_hex,
    evm_encode_type, evm_encode_params, evm_decode_hex and shift_units gets a UDF,
    registered in `ctx`, for its literal and argument types, and the returned SQL calls
    it by that UDF's name. Plan the returned SQL in `ctx`; `public_name` (or
    `restore_names`) turns the derived names in column names and messages back.

    A dataset's `eth_call` gets its UDF the same way, answered by the EthCaller that
    `eth_callers` gives for the call (it raises when the dataset or its providers are
    missing); without `eth_callers` such a call is refused.

    Raises FunctionError with Amp's message where Amp refuses the call when planning
    (a signature that is not a literal or does not parse, wrong argument types, ...). A
    query with none of these calls is returned unchanged and nothing is planned."""
    found = calls(sql, NAMES - {"evm_topic"})
    qualified = qualified_calls(sql) if eth_call_fns.NAME in sql.lower() else []
    if not found and not qualified:
        return sql
    sites: list[_Site] = []
    callers: dict[int, tuple[QualifiedCall, EthCaller]] = {}  # by the call's first offset

    def register_typed(call: Call, types: list) -> str:
        if call.name != eth_call_fns.NAME:
            return _register_typed(ctx, call, types)
        site, caller = callers[call.token.start]
        name = f"{call.name}__{_digest(site.written, tuple(map(str, types)))}"
        ctx.register_udf(eth_call_fns.build(site, types, caller).udf(name))
        return name

    def typed(call: Call) -> str:
        """A typed call's UDF: for its arguments' types when its literals tell them all,
        else a probe that no call matches, whose refusal names the types (see below)."""
        guess = [_guess(literal(a)) for a in call.args]
        if all(g is not None for g in guess):
            return register_typed(call, guess)
        name = f"{call.name}__p{len(sites)}"
        probe = [_NO_CALL] * (len(call.args) + 1)
        ctx.register_udf(
            Built(_raise("unresolved call"), probe, pa.field(name, pa.binary())).udf(name)
        )
        return name

    for call in found:
        if call.name in _LITERAL:
            name, built = _literal_call(call)
            ctx.register_udf(built.udf(name))
        else:
            _arity(call)
            name = typed(call)
        sites.append(_Site(call, name))
    for q in qualified:
        if eth_callers is None:
            raise FunctionError(f"{q.written}: contract calls are not available here")
        callers[q.call.token.start] = (q, eth_callers(q))
        if len(q.call.args) != 4:
            raise FunctionError(f"{q.written}: expected 4 arguments, but got {len(q.call.args)}")
        sites.append(_Site(q.call, typed(q.call)))
    tries = 2 * len(sites) + 1
    text = _render(sql, sites)
    while tries:
        tries -= 1
        try:
            # Calls in some places (a CTE's WHERE, ...) are type-checked by the analyzer,
            # after the SQL is planned: run it too.
            ctx.sql_with_options(text, _READ_ONLY).optimized_logical_plan()
            return text
        except Exception as exc:  # noqa: BLE001 - DataFusion raises one type for all errors
            refused = _REFUSED.search(str(exc))
            stuck = [s for s in sites if refused and s.name == refused.group("name")]
            if not stuck or stuck[0].call.name not in _TYPED | {eth_call_fns.NAME}:
                return text
            types = [parse_df_type(t) for t in split_types(refused.group("types"))]
            for site in stuck:
                site.name = register_typed(site.call, types)
            text = _render(sql, sites)
    return text


def _guess(lit: Literal | None) -> pa.DataType | None:
    """The type DataFusion gives a literal, where it is certain."""
    if lit is None:
        return None
    return {"Utf8": pa.string(), "Null": pa.null(), "Boolean": pa.bool_(), "Int64": pa.int64()}.get(
        lit.df_type
    )


def _register_typed(ctx: SessionContext, call: Call, types: list) -> str:
    flags = tuple(literal(a) is not None for a in call.args)
    last = literal(call.args[-1]) if call.args else None
    name = f"{call.name}__{_digest(call.name, tuple(map(str, types)), flags, last)}"
    ctx.register_udf(_typed_call(call, types).udf(name))
    return name


def _render(sql: str, sites: list[_Site]) -> str:
    edits = []
    for site in sites:
        edits.append((site.call.token.start, site.call.token.end, site.name))
        if site.call.field is not None:
            dot, name = site.call.field
            written = name.text if name.kind == "ident" else name.value  # as the query spells it
            quoted = written.replace("'", "''")
            edits.append((dot.start, name.end, f"['{quoted}']"))
    out, at = [], 0
    for start, end, text in sorted(edits):
        out.append(sql[at:start])
        out.append(text)
        at = end
    out.append(sql[at:])
    return "".join(out)


def split_types(text: str) -> list[str]:
    """A comma-separated list of DataFusion type names, split at the top level."""
    parts, depth, start, quote = [], 0, 0, ""
    for i, c in enumerate(text):
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


_SIMPLE = {
    "Null": pa.null(), "Boolean": pa.bool_(), "Int8": pa.int8(), "Int16": pa.int16(),
    "Int32": pa.int32(), "Int64": pa.int64(), "UInt8": pa.uint8(), "UInt16": pa.uint16(),
    "UInt32": pa.uint32(), "UInt64": pa.uint64(), "Float16": pa.float16(),
    "Float32": pa.float32(), "Float64": pa.float64(), "Utf8": pa.string(),
    "LargeUtf8": pa.large_string(), "Utf8View": pa.string_view(), "Binary": pa.binary(),
    "LargeBinary": pa.large_binary(), "BinaryView": pa.binary_view(), "Date32": pa.date32(),
    "Date64": pa.date64(),
}  # fmt: skip
_CALL = re.compile(r"(\w+)\((.*)\)$", re.DOTALL)
_ITEM = re.compile(r"(non-null )?(.*?)(?:, field: '([^']*)')?$", re.DOTALL)
_MEMBER = re.compile(r'"((?:[^"\\]|\\.)*)": (non-null )?(.*)$', re.DOTALL)


def parse_df_type(text: str) -> pa.DataType | str:
    """A DataFusion type name as a pyarrow type; the name itself when it is not one of
    the types these functions can take (temporal, dictionary, map, ...)."""
    text = text.strip()
    if text in _SIMPLE:
        return _SIMPLE[text]
    match = _CALL.match(text)
    if match is None:
        return text
    head, inner = match.groups()
    try:
        if head == "FixedSizeBinary":
            return pa.binary(int(inner))
        if head in ("Decimal128", "Decimal256"):
            precision, scale = (int(x) for x in inner.split(","))
            return (pa.decimal128 if head == "Decimal128" else pa.decimal256)(precision, scale)
        if head in ("List", "LargeList", "FixedSizeList"):
            size = None
            if head == "FixedSizeList":
                count, _, inner = inner.partition(" x ")
                size = int(count)
            nonnull, item, field_name = _ITEM.match(inner).groups()
            item_type = parse_df_type(item)
            if isinstance(item_type, str):
                return text
            field = pa.field(field_name or "item", item_type, nullable=not nonnull)
            if head == "LargeList":
                return pa.large_list(field)
            return pa.list_(field, size) if size is not None else pa.list_(field)
        if head == "Struct":
            fields = []
            for member in split_types(inner):
                name, nonnull, member_type = _MEMBER.match(member).groups()
                t = parse_df_type(member_type)
                if isinstance(t, str):
                    return text
                fields.append(pa.field(name, t, nullable=not nonnull))
            return pa.struct(fields)
    except (ValueError, AttributeError):
        return text
    return text
