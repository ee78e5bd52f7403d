"""evm_topic(signature) and evm_decode_log(topic1, topic2, topic3, data, signature)
(also under its older name evm_decode).

evm_topic is the keccak-256 hash of the event's canonical signature, FixedSizeBinary(32).
evm_decode_log returns a struct with one field per event parameter, named as in the
signature: the indexed parameters first, read from topic1..3 (a reference type, being
stored as a hash, comes back as its 32 topic bytes), then the others decoded from data.
A NULL topic gives a NULL field; data that is NULL or does not decode gives NULL for every
data field; the struct itself is never NULL. An event without parameters gives NULL.
"""

from __future__ import annotations

import pyarrow as pa

from ampd.sql.functions.abi_decode import Rows, decode_sequence
from ampd.sql.functions.common import Built, present, repeat, single_text, words_of
from ampd.sql.functions.errors import AbiError, FunctionError
from ampd.sql.functions.signatures import Event, parse_event
from ampd.sql.functions.words import decode_words

TOPIC = pa.binary(32)


def event(name: str, signature: str, *, arrow: bool = True) -> Event:
    """The parsed event, or Amp's planning error for `name`; with `arrow`, also the
    error for a parameter type that has no Arrow type."""
    try:
        parsed = parse_event(signature)
    except AbiError as exc:
        raise FunctionError(f"{name}: {exc}") from None
    if not arrow:
        return parsed
    try:
        for p in parsed.params:
            p.type.arrow  # noqa: B018 - raises for types without an Arrow mapping
    except AbiError as exc:
        raise FunctionError(str(exc)) from None
    return parsed


def _topic_body(signatures: pa.Array) -> pa.Array:
    text = single_text(
        signatures,
        "evm_topic: expected scalar argument for the signature but got Utf8",
        "evm_topic: ",
    )
    if text is None:
        return pa.array([], TOPIC)
    parsed = event("evm_topic", text, arrow=False)
    if parsed.anonymous:
        raise FunctionError(f"anonymous event {parsed.name} has no topic0")
    return repeat(parsed.topic0, len(signatures))


def evm_topic() -> Built:
    return Built(_topic_body, [pa.string()], pa.field("evm_topic", TOPIC))


def evm_decode_log(name: str, signature: str) -> Built:
    """`name` is evm_decode_log or evm_decode (the messages name the one called)."""
    parsed = event(name, signature)
    fields = parsed.fields
    inputs = [TOPIC, TOPIC, TOPIC, pa.binary(), pa.string()]
    if not fields:
        return Built(lambda *cols: pa.nulls(len(cols[3])), inputs, pa.field(name, pa.null()))
    topic_types = parsed.topic_types
    body_types = [p.type for p in parsed.body]

    def body(t1: pa.Array, t2: pa.Array, t3: pa.Array, data: pa.Array, _sig) -> pa.Array:
        columns: list[pa.Array] = []
        try:
            for column, t in zip((t1, t2, t3), topic_types, strict=False):
                columns.append(decode_words(words_of(column), t, present(column)))
            if body_types:
                decoded, _ = decode_sequence(Rows(data), body_types)
                columns.extend(decoded)
        except AbiError as exc:
            raise FunctionError(f"{name}: {exc}") from None
        return pa.StructArray.from_arrays(columns, fields=fields)

    return Built(body, inputs, pa.field(name, pa.struct(fields), nullable=False), memo=4)
