"""Python values to PostgreSQL COPY text, one specialised encoder per column type.

Pure and hot (most of an ingest's Python time): each column's encoder is chosen once per table
and takes any value, None included, so a row is one C-level `join(map(...))`; the common values
(plain strings, ints, Decimals, UTC datetimes, JSON without backslashes) skip escaping.
"""

from __future__ import annotations

import datetime
import decimal
import operator
import re
import uuid
from collections.abc import Sequence
from typing import Any, Callable

import orjson
import sqlalchemy as sa

from ._errors import NulInTextError
from ._types import Kind, PgType, column_pg_type

Encoder = Callable[[Any], str]
RowEncoder = Callable[[Sequence[Any]], str]

NULL = "\\N"
_UTC = datetime.timezone.utc
_DUMPS = orjson.dumps
_FRAGMENT = orjson.Fragment
# The integers orjson writes itself.
_ORJSON_INT_MIN, _ORJSON_INT_MAX = -(2**63), 2**64 - 1
_NAIVE_AS_UTC = orjson.OPT_NAIVE_UTC
# Values whose str() is already valid COPY text: nothing to escape.
_PLAIN_NUMBERS = (int, decimal.Decimal, float)
# Characters that force the slow path of a text array: quoting, or COPY escaping of the literal.
_ARRAY_SPECIAL = re.compile(r'[\\"\t\n\r\x00]').search
# `operator.call` (Python 3.11+) lets `map` call each column's encoder without a Python frame.
_call: Callable[[Encoder, Any], str] = getattr(
    operator, "call", lambda function, value: function(value)
)


class CopyRow(str):
    """A row already encoded as one line of COPY text: each column's text (as `copy_encoders`
    makes it) joined by tabs, ending in a newline. It is sent as is; PostgreSQL checks it."""

    __slots__ = ()


class CopyTuple(bytes):
    """A row already encoded as one tuple of binary COPY: its field count (int16), then each
    field as its length (int32, -1 for NULL) and PostgreSQL's send format of the value, as
    the binary encoders make it. It is sent as is, in a binary COPY; PostgreSQL checks it."""

    __slots__ = ()


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


# Each encoder below takes one value of any Python type and returns its COPY text, `\\N` for
# None. The test of the most common type comes first: these run once per value.


def _text(value: Any) -> str:
    # isprintable() is False for tab, newline, carriage return and NUL: one C call for the test.
    if type(value) is str and value.isprintable() and "\\" not in value:
        return value
    if value is None:
        return NULL
    return escape(value if type(value) is str else str(value))


def _integer(value: Any) -> str:
    if type(value) is int:
        return str(value)
    if value is None:
        return NULL
    if isinstance(value, bool):
        raise TypeError(f"a bool ({value!r}) is not an integer")
    return str(int(value))


def _plain(value: Any) -> str:
    if type(value) in _PLAIN_NUMBERS:
        return str(value)
    if value is None:
        return NULL
    return escape(str(value))


def _float(value: Any) -> str:
    if value is None:
        return NULL
    return repr(float(value))


def _boolean(value: Any) -> str:
    if value is None:
        return NULL
    if type(value) is str:
        return escape(value)
    return "t" if value else "f"


def _iso(value: Any) -> str:
    if value is None:
        return NULL
    if type(value) is str:
        return escape(value)
    return value.isoformat()  # type: ignore[no-any-return]


def _timestamptz(value: Any) -> str:
    if value is None:
        return NULL
    if type(value) is str:
        return escape(value)
    # orjson writes a UTC or naive datetime several times faster than isoformat().
    if value.tzinfo is None or value.tzinfo is _UTC:
        return _DUMPS(value, option=_NAIVE_AS_UTC)[1:-1].decode()
    return value.isoformat()  # type: ignore[no-any-return]


def _timestamp(value: Any) -> str:
    if value is None:
        return NULL
    if type(value) is str:
        return escape(value)
    if value.tzinfo is not None:
        value = value.astimezone(_UTC).replace(tzinfo=None)
    return value.isoformat()  # type: ignore[no-any-return]


def _interval(value: Any) -> str:
    if value is None:
        return NULL
    if isinstance(value, datetime.timedelta):
        return f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds"
    return escape(str(value))


def _uuid(value: Any) -> str:
    if value is None:
        return NULL
    if type(value) is uuid.UUID:
        return _DUMPS(value)[1:-1].decode()
    return escape(str(value))


def _bytea(value: Any) -> str:
    if value is None:
        return NULL
    return "\\\\x" + bytes(value).hex()


def _exact_dumps(value: Any, refused: TypeError) -> bytes:
    """JSON text of a value orjson refused (`refused`) where it holds Decimals or integers
    beyond 64 bits: their exact digits (json and jsonb keep a number's digits as written).
    Raises orjson's error where it refuses the value for another reason."""
    try:
        fragments = _as_fragments(value)
    except RecursionError:  # nested deeper than orjson writes anyway
        raise refused from None
    return _DUMPS(fragments)


def _as_fragments(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {key: _as_fragments(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_as_fragments(item) for item in value]
    if kind is int and not _ORJSON_INT_MIN <= value <= _ORJSON_INT_MAX:
        return _FRAGMENT(str(value))
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        return _FRAGMENT(str(value))
    return value


def json_text(value: Any) -> str:
    try:
        return _DUMPS(value).decode()
    except TypeError as error:  # orjson.JSONEncodeError: a Decimal, an integer beyond 64 bits
        return _exact_dumps(value, error).decode()


def _jsonb_text(value: Any) -> str:
    text = json_text(value)
    if "\\u0000" in text:
        raise NulInTextError
    return text


def _json(value: Any) -> str:
    if value is None:
        return NULL
    return json_text(value).replace("\\", "\\\\")


def _jsonb(value: Any) -> str:
    if value is None:
        return NULL
    try:
        text = _DUMPS(value).decode()
    except TypeError as error:  # orjson.JSONEncodeError: a Decimal, an integer beyond 64 bits
        text = _exact_dumps(value, error).decode()
    # orjson escapes control characters, so a backslash is the only character COPY cares about.
    if "\\" not in text:
        return text
    if "\\u0000" in text:
        raise NulInTextError
    return text.replace("\\", "\\\\")


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
        return json_text
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


def _text_array(values: Any) -> str | None:
    """A list or tuple of strings as an array literal; None for anything else (the general path)."""
    if type(values) is not list and type(values) is not tuple:
        return None
    try:
        joined = '","'.join(values)
    except TypeError:  # a None, a number or a nested list
        return None
    if not values:
        return "{}"
    if _ARRAY_SPECIAL("".join(values)) is None:
        return '{"' + joined + '"}'
    if "\x00" in joined:
        raise NulInTextError
    quoted = '","'.join([value.replace("\\", "\\\\").replace('"', '\\"') for value in values])
    return escape('{"' + quoted + '"}')


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

    def array(values: Any) -> str:
        if values is None:
            return NULL
        return escape(literal(values))

    if element.kind is not Kind.TEXT:
        return array

    def text_array(values: Any) -> str:
        fast = _text_array(values)
        return array(values) if fast is None else fast

    return text_array


def encoder(type_: PgType) -> Encoder:
    """Encoder of one value of the type into COPY text (None is NULL)."""
    if type_.kind is Kind.ARRAY:
        assert type_.element is not None
        return _array(type_.element)
    return _ENCODERS[type_.kind]


def row_encoder(types: Sequence[PgType]) -> RowEncoder:
    """Encoder of a whole row, given as a sequence in column order, into one COPY line."""
    encoders = tuple(encoder(type_) for type_ in types)
    width = len(encoders)

    def encode(row: Sequence[Any]) -> str:
        if type(row) is CopyRow or type(row) is CopyTuple:
            return row  # type: ignore[return-value]  # a CopyTuple: in a binary COPY (_copy)
        if len(row) != width:
            raise ValueError(f"the row has {len(row)} values but the table has {width} columns")
        return "\t".join(map(_call, encoders, row)) + "\n"

    return encode


def copy_encoders(table: sa.Table) -> tuple[Encoder, ...]:
    """Per column of `table`, in order: the function from a value (None is NULL) to its COPY
    text, as `ingest` encodes it; the parts of a `CopyRow`."""
    return tuple(encoder(column_pg_type(table, column)) for column in table.columns)


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
