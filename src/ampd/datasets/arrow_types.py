"""Arrow data types in arrow-rs's serde JSON form (the form Amp's manifests use), both ways.

    "UInt64"                               <-> pa.uint64()
    {"FixedSizeBinary": 32}                <-> pa.binary(32)
    {"Decimal128": [38, 0]}                <-> pa.decimal128(38, 0)
    {"Timestamp": ["Nanosecond", "+00:00"]} <-> pa.timestamp("ns", tz="+00:00")
    {"List": <field>}                      <-> pa.list_(<field>)
    {"Struct": [<field>, ...]}             <-> pa.struct([...])

A nested field is `{"name", "data_type", "nullable", "dict_id", "dict_is_ordered", "metadata"}`.
"""

from typing import Any

import pyarrow as pa


class UnknownArrowType(ValueError):
    """A JSON value that is not an Arrow type this module knows. `path` says where it sits."""

    def __init__(self, value: Any, path: str = "", reason: str = "unknown Arrow type") -> None:
        self.value = value
        self.path = path
        self.reason = reason
        where = f" at {path}" if path else ""
        super().__init__(f"{reason}{where}: {value!r}")


_SIMPLE: dict[str, pa.DataType] = {
    "Null": pa.null(),
    "Boolean": pa.bool_(),
    "Int8": pa.int8(),
    "Int16": pa.int16(),
    "Int32": pa.int32(),
    "Int64": pa.int64(),
    "UInt8": pa.uint8(),
    "UInt16": pa.uint16(),
    "UInt32": pa.uint32(),
    "UInt64": pa.uint64(),
    "Float16": pa.float16(),
    "Float32": pa.float32(),
    "Float64": pa.float64(),
    "Utf8": pa.utf8(),
    "LargeUtf8": pa.large_utf8(),
    "Utf8View": pa.string_view(),
    "Binary": pa.binary(),
    "LargeBinary": pa.large_binary(),
    "BinaryView": pa.binary_view(),
    "Date32": pa.date32(),
    "Date64": pa.date64(),
}
_SIMPLE_NAMES = {t: name for name, t in _SIMPLE.items()}

_UNITS = {"Second": "s", "Millisecond": "ms", "Microsecond": "us", "Nanosecond": "ns"}
_UNIT_NAMES = {v: k for k, v in _UNITS.items()}
# pyarrow has no YearMonth or DayTime interval types.
_INTERVALS = {"MonthDayNano": pa.month_day_nano_interval()}


def from_json(value: Any, path: str = "") -> pa.DataType:
    """Parse an arrow-rs JSON data type. Raises UnknownArrowType naming `path` and the value."""
    if isinstance(value, str):
        simple = _SIMPLE.get(value)
        if simple is None:
            raise UnknownArrowType(value, path)
        return simple
    if not isinstance(value, dict) or len(value) != 1:
        raise UnknownArrowType(value, path)
    ((kind, arg),) = value.items()
    try:
        parser = _PARSERS[kind]
    except KeyError:
        raise UnknownArrowType(value, path) from None
    try:
        return parser(arg, path)
    except UnknownArrowType:
        raise
    except (TypeError, ValueError, KeyError, IndexError, pa.ArrowException) as exc:
        raise UnknownArrowType(value, path, f"invalid {kind} type ({exc})") from None


def field_from_json(value: Any, path: str = "") -> pa.Field:
    """Parse a nested arrow-rs field object (`name`, `data_type`, `nullable`, ...)."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise UnknownArrowType(value, path, "expected a field object with a string name")
    name = value["name"]
    inner = f"{path}.{name}" if path else name
    if "data_type" not in value:
        raise UnknownArrowType(value, inner, "field object without data_type")
    nullable = value.get("nullable", True)
    if not isinstance(nullable, bool):
        raise UnknownArrowType(value, inner, "field nullable must be true or false")
    metadata = value.get("metadata") or None
    return pa.field(
        name, from_json(value["data_type"], inner), nullable=nullable, metadata=metadata
    )


def to_json(type_: pa.DataType) -> Any:
    """The arrow-rs JSON form of a pyarrow type. Raises UnknownArrowType for types without one."""
    simple = _SIMPLE_NAMES.get(type_)
    if simple is not None:
        return simple
    if pa.types.is_fixed_size_binary(type_):
        return {"FixedSizeBinary": type_.byte_width}
    if pa.types.is_decimal128(type_):
        return {"Decimal128": [type_.precision, type_.scale]}
    if pa.types.is_decimal256(type_):
        return {"Decimal256": [type_.precision, type_.scale]}
    if pa.types.is_timestamp(type_):
        return {"Timestamp": [_UNIT_NAMES[type_.unit], type_.tz]}
    if pa.types.is_time32(type_):
        return {"Time32": _UNIT_NAMES[type_.unit]}
    if pa.types.is_time64(type_):
        return {"Time64": _UNIT_NAMES[type_.unit]}
    if pa.types.is_duration(type_):
        return {"Duration": _UNIT_NAMES[type_.unit]}
    if type_ == pa.month_day_nano_interval():
        return {"Interval": "MonthDayNano"}
    if pa.types.is_fixed_size_list(type_):
        return {"FixedSizeList": [field_to_json(type_.value_field), type_.list_size]}
    if pa.types.is_large_list(type_):
        return {"LargeList": field_to_json(type_.value_field)}
    if pa.types.is_list(type_):
        return {"List": field_to_json(type_.value_field)}
    if pa.types.is_struct(type_):
        return {"Struct": [field_to_json(type_.field(i)) for i in range(type_.num_fields)]}
    if pa.types.is_map(type_):
        entries = pa.field(
            "entries",
            pa.struct([type_.key_field, type_.item_field]),
            nullable=False,
        )
        return {"Map": [field_to_json(entries), type_.keys_sorted]}
    if pa.types.is_dictionary(type_):
        return {"Dictionary": [to_json(type_.index_type), to_json(type_.value_type)]}
    raise UnknownArrowType(str(type_), reason="no arrow-rs JSON form for Arrow type")


def field_to_json(field: pa.Field) -> dict[str, Any]:
    """A nested field in arrow-rs's JSON form."""
    metadata = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
    return {
        "name": field.name,
        "data_type": to_json(field.type),
        "nullable": field.nullable,
        "dict_id": 0,
        "dict_is_ordered": False,
        "metadata": metadata,
    }


def _unit(name: Any) -> str:
    if name not in _UNITS:
        raise ValueError(f"unknown time unit {name!r}")
    return _UNITS[name]


def _pair(arg: Any) -> tuple[Any, Any]:
    if not isinstance(arg, list) or len(arg) != 2:
        raise ValueError("expected a two-element list")
    return arg[0], arg[1]


def _int(arg: Any) -> int:
    if not isinstance(arg, int) or isinstance(arg, bool):
        raise ValueError(f"expected an integer, got {arg!r}")
    return arg


def _positive(arg: Any) -> int:
    if _int(arg) <= 0:
        raise ValueError(f"expected a positive width, got {arg!r}")
    return arg


def _timestamp(arg: Any, path: str) -> pa.DataType:
    unit, tz = _pair(arg)
    if tz is not None and not isinstance(tz, str):
        raise ValueError("time zone must be a string or null")
    return pa.timestamp(_unit(unit), tz=tz)


def _decimal(factory):
    def parse(arg: Any, path: str) -> pa.DataType:
        precision, scale = _pair(arg)
        return factory(_int(precision), _int(scale))

    return parse


def _list(arg: Any, path: str) -> pa.DataType:
    return pa.list_(field_from_json(arg, f"{path}[]"))


def _large_list(arg: Any, path: str) -> pa.DataType:
    return pa.large_list(field_from_json(arg, f"{path}[]"))


def _fixed_size_list(arg: Any, path: str) -> pa.DataType:
    field, size = _pair(arg)
    return pa.list_(field_from_json(field, f"{path}[]"), _positive(size))


def _struct(arg: Any, path: str) -> pa.DataType:
    if not isinstance(arg, list):
        raise ValueError("expected a list of fields")
    return pa.struct([field_from_json(f, path) for f in arg])


def _map(arg: Any, path: str) -> pa.DataType:
    field, sorted_ = _pair(arg)
    entries = field_from_json(field, path)
    if not pa.types.is_struct(entries.type) or entries.type.num_fields != 2:
        raise ValueError("map entries must be a struct of key and value")
    return pa.map_(entries.type.field(0), entries.type.field(1), keys_sorted=bool(sorted_))


def _dictionary(arg: Any, path: str) -> pa.DataType:
    key, value = _pair(arg)
    return pa.dictionary(from_json(key, path), from_json(value, path))


def _interval(arg: Any, path: str) -> pa.DataType:
    if arg not in _INTERVALS:
        raise ValueError(f"unsupported interval unit {arg!r}")
    return _INTERVALS[arg]


_PARSERS = {
    "FixedSizeBinary": lambda arg, path: pa.binary(_positive(arg)),
    "Decimal128": _decimal(pa.decimal128),
    "Decimal256": _decimal(pa.decimal256),
    "Timestamp": _timestamp,
    "Time32": lambda arg, path: pa.time32(_unit(arg)),
    "Time64": lambda arg, path: pa.time64(_unit(arg)),
    "Duration": lambda arg, path: pa.duration(_unit(arg)),
    "Interval": _interval,
    "List": _list,
    "LargeList": _large_list,
    "FixedSizeList": _fixed_size_list,
    "Struct": _struct,
    "Map": _map,
    "Dictionary": _dictionary,
}
