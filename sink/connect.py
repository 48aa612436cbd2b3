"""Kafka Connect's JSON envelope: what JsonConverter writes with `schemas.enable=true`,
`{"schema": ..., "payload": ...}`, read into the payload's values by the schema's types.

Connect's logical types become the values mapping takes: `Decimal` (base64 of the unscaled
big-endian integer, or a JSON number with `decimal.format=NUMERIC`) an exact Decimal,
`Timestamp` an aware UTC datetime, `Date` a date, `Time` a time of day; `bytes` (base64) bytes;
Debezium's semantic types as `sink.debezium.SEMANTIC_TYPES` reads them.
"""

from __future__ import annotations

import base64
import binascii
import decimal
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta, timezone
from functools import partial
from typing import Any

import orjson

from sink.debezium import SEMANTIC_TYPES
from sink.errors import BadPayload, Mismatch, PayloadMismatch, SchemaChangedError
from sink.exactjson import exact_loads, numbers_round_trip

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = date(1970, 1, 1)
_MIDNIGHT = datetime(1970, 1, 1)
_ENVELOPE_KEYS = frozenset({"schema", "payload"})

DECIMAL = "org.apache.kafka.connect.data.Decimal"
TIMESTAMP = "org.apache.kafka.connect.data.Timestamp"
DATE = "org.apache.kafka.connect.data.Date"
TIME = "org.apache.kafka.connect.data.Time"


def read(part: str, data: bytes) -> object:
    """The payload of an envelope, converted by its schema; raises BadPayload."""
    known = _known_prefix(part, data)
    if known is not None:
        payload = _payload(data, len(known[0]))
        if payload is not _UNREAD:
            return _converted_payload(known[1], part, payload)
    return _read_whole(part, data)


def _read_whole(part: str, data: bytes) -> object:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise BadPayload(f"{part} is not JSON: {error}", "not-json") from None
    if not numbers_round_trip(data):  # a NUMERIC-format Decimal or a long past 2**53
        try:
            document = exact_loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as error:
            reason = f"{part}'s numbers cannot be read exactly: {error}"
            raise BadPayload(reason, "not-exact") from None
    if type(document) is not dict or document.keys() != _ENVELOPE_KEYS:
        raise BadPayload(
            f'{part} is not Kafka Connect\'s JSON envelope {{"schema": ..., "payload": ...}} '
            f"(JsonConverter with schemas.enable=true); for plain JSON set {part}_format = "
            f'"json"',
            "not-connect-json",
        )
    schema = document["schema"]
    # schemaless, as JsonConverter writes a value without a schema
    convert = _as_is if schema is None else _converter(schema, part)
    _learn_prefix(part, data, convert)
    return _converted_payload(convert, part, document["payload"])


def _converted_payload(convert: Converter, part: str, payload: object) -> object:
    try:
        return convert(payload)
    except PayloadMismatch as error:
        raise BadPayload(
            f"{part}'s payload does not match its Connect schema: {error}", "schema-mismatch"
        ) from None


# What comes before the payload in the envelopes read so far, `{"schema":<schema>,"payload":`
# as JsonConverter writes it, with that schema's converter, by part and by the bytes before
# the first `,"payload":` (the same as the prefix's unless the schema's text spells it). A
# topic's messages repeat its schemas, spelled the same each time: a message that starts with
# a known prefix and whose rest is one JSON value and `}` is that envelope, so only its
# payload needs reading. The one a part's last message had is tried first.
_PREFIXES: dict[tuple[str, bytes], tuple[bytes, Converter]] = {}
_LATEST: dict[str, tuple[bytes, Converter]] = {}
_MAX_PREFIXES = 1024
_SCHEMA_KEY = b'{"schema":'
_PAYLOAD_KEY = b',"payload":'
_UNREAD = object()


def _known_prefix(part: str, data: bytes) -> tuple[bytes, Converter] | None:
    known = _LATEST.get(part)
    if known is not None and data.startswith(known[0]):
        return known
    known = _PREFIXES.get((part, _head(data)))
    if known is None or not data.startswith(known[0]):
        return None
    _LATEST[part] = known
    return known


def _payload(data: bytes, start: int) -> object:
    """The JSON value between `start` and the envelope's closing brace, numbers exact; _UNREAD
    where the rest is not one value and `}` (the whole envelope is then read, and says why)."""
    body = data[start:].rstrip()
    if body[-1:] != b"}":
        return _UNREAD
    body = body[:-1]
    try:
        payload = orjson.loads(body)
        if not numbers_round_trip(body):
            payload = exact_loads(body.decode("utf-8"))
    except (ValueError, RecursionError):  # orjson's JSONDecodeError is a ValueError
        return _UNREAD
    return payload


def _learn_prefix(part: str, data: bytes, convert: Converter) -> None:
    """Keeps `data`'s prefix up to its payload, once `data` has read as an envelope."""
    prefix = _prefix(data)
    if prefix is not None:
        if len(_PREFIXES) >= _MAX_PREFIXES:
            _PREFIXES.clear()
        _PREFIXES[part, _head(data)] = (prefix, convert)


def _head(data: bytes) -> bytes:
    """`data` up to its first `,"payload":` (whole without one)."""
    at = data.find(_PAYLOAD_KEY, len(_SCHEMA_KEY))
    return data if at == -1 else data[:at]


def _prefix(data: bytes) -> bytes | None:
    """`data` up to and with the first `,"payload":` before which the schema after
    `{"schema":` is one whole JSON value; None without one (not JsonConverter's spelling)."""
    if not data.startswith(_SCHEMA_KEY):
        return None
    at = data.find(_PAYLOAD_KEY, len(_SCHEMA_KEY))
    while at != -1:
        try:
            orjson.loads(data[len(_SCHEMA_KEY) : at])
        except orjson.JSONDecodeError:  # `,"payload":` inside the schema's text
            at = data.find(_PAYLOAD_KEY, at + 1)
            continue
        return data[: at + len(_PAYLOAD_KEY)]
    return None


class SchemaWatch:
    """For topics whose tables take their columns from the Connect schemas their values carry:
    `check` raises SchemaChangedError for the first value of each schema, as spelled, that
    its table does not hold (`changes`, by topic, as sink.schema_columns.changes says), with
    the message's key and value schemas."""

    def __init__(self, changes: Mapping[str, Callable[[Any], str | None]]) -> None:
        self._changes = dict(changes)
        # By topic: the prefixes of the schemas its table holds, by their `_head`; and the one
        # its last message had, tried first.
        self._held: dict[str, dict[bytes, bytes]] = {topic: {} for topic in changes}
        self._latest: dict[str, bytes] = {}

    def watches(self, topic: str) -> bool:
        return topic in self._held

    def check(self, topic: str, key: bytes | None, value: bytes) -> None:
        latest = self._latest.get(topic)
        if latest is not None and value.startswith(latest):
            return
        held = self._held[topic]
        head = _head(value)
        prefix = held.get(head)
        if prefix is not None and value.startswith(prefix):
            self._latest[topic] = prefix
            return
        schema = schema_of(value)
        if schema is None:  # not an envelope, or one without a schema: read as such
            return
        change = self._changes[topic](schema)
        if change is not None:
            key_schema = None if key is None else schema_of(key)
            raise SchemaChangedError(topic, None, change, (key_schema, schema))
        prefix = _prefix(value)
        if prefix is not None:
            if len(held) >= _MAX_PREFIXES:
                held.clear()
            held[head] = self._latest[topic] = prefix


def schema_of(data: bytes) -> Any:
    """The schema of an envelope; None for bytes that are not one, or one without a schema."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return document.get("schema") if type(document) is dict else None


Converter = Callable[[Any], object]
# A type's reading of a value: (schema, value, path) to the value mapping takes.
Conversion = Callable[[Any, Any, str], object]
# Converters by part and schema (its JSON): a topic's messages repeat a few schemas.
_CONVERTERS: dict[tuple[str, bytes], Converter] = {}
_MAX_CONVERTERS = 1024


def _converter(schema: Any, part: str) -> Converter:
    """What `_convert(schema, value, part)` does to a value, worked out once per schema."""
    key = (part, orjson.dumps(schema))
    convert = _CONVERTERS.get(key)
    if convert is None:
        if len(_CONVERTERS) >= _MAX_CONVERTERS:
            _CONVERTERS.clear()
        try:
            convert = _compiled(schema, part)
        except (KeyError, TypeError, AttributeError):  # a malformed schema: says so per value
            convert = partial(_converted, schema, part)
        _CONVERTERS[key] = convert
    return convert


def _compiled(schema: Any, path: str) -> Converter:
    """`_convert` of one schema: a struct's fields and plain values decided once; anything
    else (logical and semantic types, arrays, maps) through `_convert` itself."""
    if type(schema) is not dict:
        return partial(_converted, schema, path)
    name = schema.get("name")
    kind = schema.get("type")
    if name in _LOGICAL or name in SEMANTIC_TYPES or kind in ("array", "map", "bytes"):
        return _compiled_value(schema, path)
    if kind != "struct":
        return _as_is
    # Each field's name and converter; None for a value taken as it is.
    fields = []
    for field in schema.get("fields") or ():
        convert: Converter | None = _compiled(field, f"{path}.{field['field']}")
        fields.append((field["field"], None if convert is _as_is else convert))

    names = tuple(name for name, _ in fields)
    converted = tuple((name, c) for name, c in fields if c is not None)

    def struct(value: Any) -> object:
        if value is None:
            return None
        if type(value) is not dict:
            raise PayloadMismatch(f"{path}: a struct, but the payload holds {_kind(value)}")
        if tuple(value) == names:  # the schema's fields in its order, as JsonConverter writes
            if not converted:
                return value
            value = value.copy()
            for name, c in converted:
                value[name] = c(value[name])
            return value
        get = value.get
        return {name: get(name) if c is None else c(get(name)) for name, c in fields}

    return struct


def _compiled_value(schema: dict[str, Any], path: str) -> Converter:
    """`_convert` of a schema whose values are converted, with its lookups done once."""
    return partial(_typed, schema, path, *_conversions(schema))


def _as_is(value: Any) -> object:
    return value


def _converted(schema: Any, path: str, value: Any) -> object:
    return _convert(schema, value, path)


def _convert(schema: Any, value: Any, path: str) -> object:
    if value is None:
        return None
    if type(schema) is not dict:
        raise PayloadMismatch(f"{path}: the schema is {type(schema).__name__}, not an object")
    return _typed(schema, path, *_conversions(schema), value)


def _conversions(schema: dict[str, Any]) -> tuple[Conversion | None, Converter | None]:
    """What reads a value of the schema's type, and its semantic type's reading, if any."""
    name = schema.get("name")
    semantic = SEMANTIC_TYPES.get(name)  # type: ignore[arg-type]
    return _LOGICAL.get(name) or _TYPES.get(schema.get("type")), semantic


def _typed(
    schema: dict[str, Any],
    path: str,
    convert: Conversion | None,
    semantic: Converter | None,
    value: Any,
) -> object:
    if value is None:
        return None
    if convert is not None:
        value = convert(schema, value, path)
    if semantic is None:
        return value
    try:
        return semantic(value)
    except Mismatch as error:
        raise PayloadMismatch(f"{path}: {schema.get('name')}: {error}") from None


def _struct(schema: Any, value: Any, path: str) -> object:
    if type(value) is not dict:
        raise PayloadMismatch(f"{path}: a struct, but the payload holds {_kind(value)}")
    return {
        field["field"]: _convert(field, value.get(field["field"]), f"{path}.{field['field']}")
        for field in schema.get("fields") or ()
    }


def _array(schema: Any, value: Any, path: str) -> object:
    if type(value) is not list:
        raise PayloadMismatch(f"{path}: an array, but the payload holds {_kind(value)}")
    items = schema.get("items")
    return [_convert(items, item, f"{path}[{i}]") for i, item in enumerate(value)]


def _map(schema: Any, value: Any, path: str) -> object:
    values = schema.get("values")
    if type(value) is dict:  # string keys: a JSON object
        return {key: _convert(values, item, f"{path}.{key}") for key, item in value.items()}
    if type(value) is list:  # other keys: JsonConverter writes [key, value] pairs
        keys = schema.get("keys")
        return [
            [_convert(keys, pair[0], path), _convert(values, pair[1], f"{path}[{i}]")]
            for i, pair in enumerate(value)
        ]
    raise PayloadMismatch(f"{path}: a map, but the payload holds {_kind(value)}")


def _base64(value: Any, path: str) -> bytes:
    if type(value) is not str:
        raise PayloadMismatch(f"{path}: bytes (base64 text), but the payload holds {_kind(value)}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PayloadMismatch(f"{path}: bytes, but {value[:40]!r} is not base64") from None


def _decimal(schema: Any, value: Any, path: str) -> decimal.Decimal:
    if type(value) in (int, float, decimal.Decimal):  # decimal.format=NUMERIC
        return decimal.Decimal(repr(value) if type(value) is float else value)
    try:
        scale = int((schema.get("parameters") or {})["scale"])
    except (KeyError, TypeError, ValueError):
        raise PayloadMismatch(f"{path}: a Decimal schema without its scale parameter") from None
    unscaled = int.from_bytes(_base64(value, path), "big", signed=True)
    return decimal.Decimal(unscaled).scaleb(-scale)


def _integer(value: Any, path: str, what: str) -> int:
    if type(value) is not int:
        raise PayloadMismatch(f"{path}: {what}, but the payload holds {_kind(value)}")
    return value


def _timestamp(schema: Any, value: Any, path: str) -> datetime:
    ms = _integer(value, path, "a Timestamp (milliseconds since 1970)")
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        raise PayloadMismatch(f"{path}: the Timestamp {ms} is out of range") from None


def _date(schema: Any, value: Any, path: str) -> date:
    days = _integer(value, path, "a Date (days since 1970)")
    try:
        return _EPOCH_DAY + timedelta(days=days)
    except OverflowError:
        raise PayloadMismatch(f"{path}: the Date {days} is out of range") from None


def _time(schema: Any, value: Any, path: str) -> time:
    ms = _integer(value, path, "a Time (milliseconds since midnight)")
    if not 0 <= ms < 86_400_000:
        raise PayloadMismatch(f"{path}: the Time {ms} is not within a day")
    return (_MIDNIGHT + timedelta(milliseconds=ms)).time()


_TYPES: Mapping[object, Conversion] = {
    "struct": _struct,
    "array": _array,
    "map": _map,
    "bytes": lambda schema, value, path: _base64(value, path),
}
_LOGICAL: Mapping[object, Conversion] = {
    DECIMAL: _decimal,
    TIMESTAMP: _timestamp,
    DATE: _date,
    TIME: _time,
}


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}"
    )
