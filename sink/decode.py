"""Decode: a raw `Message` becomes a `Record`, its key and value read per the table's formats.

Failures raise `DecodeError` naming the message's coordinates and what is wrong with the bytes.
The schema registry's formats read through `sink.registry.SchemaDecoders`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from sink import connect
from sink.config import REGISTRY_FORMATS, Format
from sink.errors import BadPayload, ConfigError, DecodeError
from sink.records import Message, Record

if TYPE_CHECKING:  # its readers' libraries load only where a table uses a registry format
    from sink.registry import SchemaDecoders

_JSON = Format.JSON
_loads = orjson.loads
# Builds a Record without the NamedTuple's Python-level __new__: this runs for every message.
_new_tuple = tuple.__new__
# How many bytes around a JSON syntax error to quote in the error message.
_EXCERPT_BYTES = 24


def decode(
    message: Message,
    key_format: Format,
    value_format: Format,
    *,
    target: str | None = None,
    schemas: SchemaDecoders | None = None,
) -> Record:
    """Decode the key and value; a message without a value (a tombstone) gets `value=None`.

    `target` ("schema.table", or several joined by ", ") is named in errors when given;
    `schemas` reads the registry's formats (and may raise its TransientError while the
    registry cannot answer).
    """
    topic, _, _, _, raw_key, value, _ = message
    try:
        key = None if raw_key is None else _decode("key", raw_key, key_format, schemas, topic)
        if value is None:
            return Record(message, key, None)
        if value_format is _JSON:
            try:
                decoded = _loads(value)  # the common case, without a call to _decode
            except orjson.JSONDecodeError:
                decoded = _decode("value", value, value_format, schemas, topic)  # says why
        else:
            decoded = _decode("value", value, value_format, schemas, topic)
    except BadPayload as error:
        raise _error(message, target, error.reason, error.code) from None
    if decoded is None:
        null = "JSON null" if value_format is _JSON else "null"
        reason = f"value is {null}; a delete (tombstone) is a message without a value, not null"
        raise _error(message, target, reason, "null-value")
    return _new_tuple(Record, (message, key, decoded))


def _error(message: Message, target: str | None, reason: str, code: str) -> DecodeError:
    where = f"{target}: " if target else ""
    return DecodeError(message.coordinates, where + reason, code=code)


def _decode(
    part: str, data: bytes, fmt: Format, schemas: SchemaDecoders | None, topic: str
) -> object:
    if fmt is Format.CONNECT_JSON:
        return connect.read(part, data)
    if fmt in REGISTRY_FORMATS:
        if schemas is None:
            raise ConfigError(f'{part}_format "{fmt.value}" needs [schema_registry] url')
        return schemas.read(part, fmt, data, topic)
    if fmt is Format.JSON:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as error:
            _check_utf8(part, data)
            raise BadPayload(_json_reason(part, data, error), "not-json") from None
    if fmt is Format.STRING:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            _check_utf8(part, data)
    return data


def _check_utf8(part: str, data: bytes) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadPayload(
            f"{part} is not UTF-8 text: byte {data[error.start]:#04x} at position "
            f'{error.start} ({error.reason}); use {part}_format = "bytes" for binary data',
            "not-utf8",
        ) from None


def _json_reason(part: str, data: bytes, error: orjson.JSONDecodeError) -> str:
    if not data:
        return f'{part} is empty, not JSON; set {part}_format = "string" or "bytes" if intended'
    start = max(error.pos - _EXCERPT_BYTES, 0)
    excerpt = data[start : error.pos + _EXCERPT_BYTES]
    return (
        f"{part} is not JSON: {error.msg} at byte {error.pos} (line {error.lineno}, "
        f"column {error.colno}) near {excerpt!r}; fix the producer, or set "
        f'{part}_format = "string" or "bytes"'
    )
