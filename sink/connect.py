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
from sink.errors import BadPayload, Mismatch, PayloadMismatch
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
    schema, payload = document["schema"], document["payload"]
    if schema is None:  # schemaless, as JsonConverter writes a value without a schema
        return payload
    try:
        return _converter(schema, part)(payload)
    except PayloadMismatch as error:
        raise BadPayload(
            f"{part}'s payload does not match its Connect schema: {error}", "schema-mismatch"
        ) from None


Converter = Callable[[Any], object]
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
    if name in _LOGICAL or name in SEMANTIC_TYPES:
        return partial(_converted, schema, path)
    kind = schema.get("type")
    if kind != "struct":
        return partial(_converted, schema, path) if kind in _TYPES else _as_is
    # Each field's name and converter; None for a value taken as it is.
    fields = []
    for field in schema.get("fields") or ():
        convert: Converter | None = _compiled(field, f"{path}.{field['field']}")
        fields.append((field["field"], None if convert is _as_is else convert))

    def struct(value: Any) -> object:
        if value is None:
            return None
        if type(value) is not dict:
            raise PayloadMismatch(f"{path}: a struct, but the payload holds {_kind(value)}")
        get = value.get
        return {name: get(name) if c is None else c(get(name)) for name, c in fields}

    return struct


def _as_is(value: Any) -> object:
    return value


def _converted(schema: Any, path: str, value: Any) -> object:
    return _convert(schema, value, path)


def _convert(schema: Any, value: Any, path: str) -> object:
    if value is None:
        return None
    if type(schema) is not dict:
        raise PayloadMismatch(f"{path}: the schema is {type(schema).__name__}, not an object")
    name = schema.get("name")
    convert = _LOGICAL.get(name) or _TYPES.get(schema.get("type"))
    if convert is not None:
        value = convert(schema, value, path)
    semantic = SEMANTIC_TYPES.get(name)  # type: ignore[arg-type]
    if semantic is None:
        return value
    try:
        return semantic(value)
    except Mismatch as error:
        raise PayloadMismatch(f"{path}: {name}: {error}") from None


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


_TYPES: Mapping[object, Callable[[Any, Any, str], object]] = {
    "struct": _struct,
    "array": _array,
    "map": _map,
    "bytes": lambda schema, value, path: _base64(value, path),
}
_LOGICAL: Mapping[object, Callable[[Any, Any, str], object]] = {
    DECIMAL: _decimal,
    TIMESTAMP: _timestamp,
    DATE: _date,
    TIME: _time,
}


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}"
    )
