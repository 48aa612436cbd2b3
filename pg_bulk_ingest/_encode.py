"""Python values to PostgreSQL COPY text, one specialised encoder per column type.

Pure and hot: a row becomes one COPY line with a single join; escaping only runs on values
that can hold a tab, newline, carriage return or backslash.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence
from typing import Any, Callable

import orjson

from ._types import Kind, PgType

Encoder = Callable[[Any], str]
RowEncoder = Callable[[Sequence[Any]], str]

NULL = "\\N"
_UTC = datetime.timezone.utc
_DUMPS = orjson.dumps
_NAIVE_AS_UTC = orjson.OPT_NAIVE_UTC


class NulInTextError(ValueError):
    """PostgreSQL text, json and jsonb values cannot hold the NUL character."""

    def __init__(self) -> None:
        super().__init__("the value holds a NUL character (\\x00), which PostgreSQL cannot store")


def escape(text: str) -> str:
    """COPY text escaping of one value."""
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text or "\x00" in text:
        if "\x00" in text:
            raise NulInTextError
        return (
            text.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return text


def _text(value: Any) -> str:
    return escape(value if type(value) is str else str(value))


def _integer(value: Any) -> str:
    if isinstance(value, bool):
        raise TypeError(f"a bool ({value!r}) is not an integer")
    return str(value) if type(value) is int else str(int(value))


def _plain(value: Any) -> str:
    return escape(str(value))


def _float(value: Any) -> str:
    return repr(float(value))


def _boolean(value: Any) -> str:
    if type(value) is str:
        return escape(value)
    return "t" if value else "f"


def _iso(value: Any) -> str:
    if type(value) is str:
        return escape(value)
    return value.isoformat()  # type: ignore[no-any-return]


def _timestamptz(value: Any) -> str:
    if type(value) is str:
        return escape(value)
    if value.tzinfo is None or value.tzinfo is _UTC:
        return _DUMPS(value, option=_NAIVE_AS_UTC)[1:-1].decode()
    return value.isoformat()  # type: ignore[no-any-return]


def _timestamp(value: Any) -> str:
    if type(value) is str:
        return escape(value)
    if value.tzinfo is not None:
        value = value.astimezone(_UTC).replace(tzinfo=None)
    return value.isoformat()  # type: ignore[no-any-return]


def _interval(value: Any) -> str:
    if isinstance(value, datetime.timedelta):
        return f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds"
    return escape(str(value))


def _uuid(value: Any) -> str:
    if type(value) is uuid.UUID:
        return _DUMPS(value)[1:-1].decode()
    return escape(str(value))


def _bytea(value: Any) -> str:
    return "\\\\x" + bytes(value).hex()


def _json_text(value: Any) -> str:
    return _DUMPS(value).decode()


def _jsonb_text(value: Any) -> str:
    text = _DUMPS(value).decode()
    if "\\u0000" in text:
        raise NulInTextError
    return text


def _json(value: Any) -> str:
    return _json_text(value).replace("\\", "\\\\")


def _jsonb(value: Any) -> str:
    return _jsonb_text(value).replace("\\", "\\\\")


_ENCODERS: dict[Kind, Encoder] = {
    Kind.INTEGER: _integer,
    Kind.FLOAT: _float,
    Kind.NUMERIC: _plain,
    Kind.BOOLEAN: _boolean,
    Kind.TEXT: _text,
    Kind.DATE: _iso,
    Kind.TIME: _iso,
    Kind.TIMESTAMP: _timestamp,
    Kind.TIMESTAMPTZ: _timestamptz,
    Kind.INTERVAL: _interval,
    Kind.JSON: _json,
    Kind.JSONB: _jsonb,
    Kind.UUID: _uuid,
    Kind.BYTEA: _bytea,
}


def _unescape_bytea(encoded: str) -> str:
    return encoded[1:]


def _element_text(element: PgType) -> Encoder:
    """Encoder of an array element's own text, before array quoting and COPY escaping."""
    if element.kind is Kind.JSON:
        return _json_text
    if element.kind is Kind.JSONB:
        return _jsonb_text
    scalar = _ENCODERS[element.kind]
    if element.kind is Kind.BYTEA:
        return lambda value: _unescape_bytea(scalar(value))

    def text(value: Any) -> str:
        if type(value) is str:
            if "\x00" in value:
                raise NulInTextError
            return value
        return scalar(value)

    return text


def _array(element: PgType) -> Encoder:
    element_text = _element_text(element)

    def literal(values: Any) -> str:
        parts = []
        for value in values:
            if value is None:
                parts.append("NULL")
            elif isinstance(value, (list, tuple)):
                parts.append(literal(value))
            else:
                text = element_text(value)
                parts.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
        return "{" + ",".join(parts) + "}"

    return lambda values: escape(literal(values))


def encoder(type_: PgType) -> Encoder:
    """Encoder of one non-NULL value of the type into COPY text."""
    if type_.kind is Kind.ARRAY:
        assert type_.element is not None
        return _array(type_.element)
    return _ENCODERS[type_.kind]


def row_encoder(types: Sequence[PgType]) -> RowEncoder:
    """Encoder of a whole row, given as a sequence in column order, into one COPY line."""
    encoders = tuple(encoder(type_) for type_ in types)
    width = len(encoders)

    def encode(row: Sequence[Any]) -> str:
        if len(row) != width:
            raise ValueError(f"the row has {len(row)} values but the table has {width} columns")
        return "\t".join([NULL if v is None else e(v) for e, v in zip(encoders, row)]) + "\n"

    return encode


def failing_column(types: Sequence[PgType], row: Sequence[Any]) -> tuple[int | None, Exception]:
    """Which column of a row that failed to encode is at fault, and why (the slow path)."""
    if len(row) != len(types):
        return None, ValueError(
            f"the row has {len(row)} values but the table has {len(types)} columns"
        )
    for index, (type_, value) in enumerate(zip(types, row)):
        if value is None:
            continue
        try:
            encoder(type_)(value)
        except Exception as error:
            return index, error
    return None, ValueError("the row could not be encoded")
