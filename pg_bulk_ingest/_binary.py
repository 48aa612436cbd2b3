"""Python values to PostgreSQL binary COPY, for the types whose values it carries with exactly
the meaning their COPY text (`_encode`) has; PostgreSQL parses it far more cheaply than text.

Pure and hot, like `_encode`: each column's encoder is chosen once per table and gives the
field whole (its length, then PostgreSQL's send format of the value). A value it cannot carry
exactly (a string for a timestamp, an integer out of range, text too long for its VARCHAR)
raises: the table then goes on in text, where the value means, or fails, what it always has.
Whole rows are encoded by the C row encoder (`_binrow.c`) when built, to the same bytes.
"""

from __future__ import annotations

import datetime
import decimal
import math
import operator
import re
import struct
import sys
import uuid
from collections.abc import Sequence
from typing import Any, Callable, Optional

import orjson
import sqlalchemy as sa

from ._encode import CopyRow, CopyTuple, RowEncoder, json_text, row_encoder
from ._errors import NotBinary
from ._types import Kind, PgType, column_pg_type

try:  # the C row encoder (setup.py): optional; the Python encoders here are its specification
    from . import _binrow
except ImportError:  # pragma: no cover - built in every test environment
    _binrow = None  # type: ignore[assignment]

FieldEncoder = Callable[[Any], bytes]
BinaryRowEncoder = Callable[[Sequence[Any]], bytes]

# The file header (signature, flags, header extension length) and trailer of binary COPY.
HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
NULL = struct.pack(">i", -1)

_UTC = datetime.timezone.utc
_EPOCH = datetime.datetime(2000, 1, 1)
_EPOCH_UTC = datetime.datetime(2000, 1, 1, tzinfo=_UTC)
_EPOCH_DAY = datetime.date(2000, 1, 1).toordinal()
_MICROSECOND = datetime.timedelta(microseconds=1)
_MINUTE = datetime.timedelta(minutes=1)
_DUMPS = orjson.dumps
_NUL_ESCAPE = b"\\u0000"

_INT2 = struct.Struct(">ih").pack
_INT4 = struct.Struct(">ii").pack
_INT8 = struct.Struct(">iq").pack
_FLOAT8 = struct.Struct(">id").pack
_LENGTH = struct.Struct(">i").pack
_INTERVAL = struct.Struct(">iqii").pack
_ARRAY_HEAD = struct.Struct(">iii").pack
_DIMENSION = struct.Struct(">ii").pack
# float8in("NaN") gives the one NaN of C's NAN; any other NaN would differ in its stored bytes.
_NAN8 = _LENGTH(8) + bytes.fromhex("7ff8000000000000")
_TRUE = _LENGTH(1) + b"\x01"
_FALSE = _LENGTH(1) + b"\x00"
_UUID_LENGTH = _LENGTH(16)
_JSONB_VERSION = b"\x01"
# The length words of short fields, looked up rather than packed.
_PREFIXED = 4096
_PREFIXES = [_LENGTH(size) for size in range(_PREFIXED)]
_JSONB_PREFIXES = [_LENGTH(size + 1) + _JSONB_VERSION for size in range(_PREFIXED)]

# NUMERIC's send format: base-10000 digits, a weight in them, a sign word, a display scale.
_NBASE_DIGITS = 4
_NUMERIC_POS, _NUMERIC_NEG = 0x0000, 0x4000
_NUMERIC_NAN, _NUMERIC_PINF, _NUMERIC_NINF = 0xC000, 0xD000, 0xF000
_NUMERIC_WEIGHT_MAX = 2**15 - 1
_NUMERIC_DSCALE_MAX = 0x3FFF
_INFINITY_DSCALE = 0x20
# Enough digits that no Decimal operation below ever rounds.
_EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
_NUMERIC_HEADS: dict[int, Callable[..., bytes]] = {}
_SHIFTS = (1, 10, 100, 1000)
_TWO_GROUPS = 10000**2
_NUMERIC_0 = struct.Struct(">ihhHH").pack
_NUMERIC_1 = struct.Struct(">ihhHHH").pack
_NUMERIC_2 = struct.Struct(">ihhHHHH").pack

# The OIDs of the element types, as the binary array format names them (fixed for built-ins).
_OIDS = {
    "smallint": 21,
    "integer": 23,
    "bigint": 20,
    "double precision": 701,
    "numeric": 1700,
    "boolean": 16,
    "text": 25,
    "character varying": 1043,
    "character": 1042,
    "bytea": 17,
    "date": 1082,
    "time without time zone": 1083,
    "timestamp without time zone": 1114,
    "timestamp with time zone": 1184,
    "interval": 1186,
    "json": 114,
    "jsonb": 3802,
    "uuid": 2950,
}
_TYPMOD = re.compile(r"\([^)]*\)")

_call: Callable[[FieldEncoder, Any], bytes] = getattr(
    operator, "call", lambda function, value: function(value)
)


# Kinds whose values take Python several times as long to encode in binary as in text, more
# than PostgreSQL then saves (tests/benchmarks `limit` and `ingest`): a Decimal has no fast way
# to its digits, JSON is parsed by jsonb_recv as by jsonb_in, arrays pay per element. A table
# with one of them is written as text, as cheap as ever; its encoders stay exact all the same.
DEARER_IN_PYTHON = frozenset({Kind.NUMERIC, Kind.JSON, Kind.JSONB, Kind.ARRAY})
# The C row encoder takes NUMERIC, JSONB and arrays for less than their text costs in Python;
# JSON stays text: its binary field is its very text, sent through the Python encoder.
DEARER_IN_C = frozenset({Kind.JSON})
DEARER_IN_BINARY = DEARER_IN_C if _binrow is not None else DEARER_IN_PYTHON


def _base_name(type_: PgType) -> str:
    """The type's name without its length, precision or fields: `_OIDS`' key."""
    name = " ".join(_TYPMOD.sub("", type_.name).split())
    return "interval" if name.startswith("interval") else name


# Each encoder below takes one value of any Python type and returns its field, NULL for None,
# or raises NotBinary. The test of the most common type comes first.


def _int2(value: Any) -> bytes:
    if type(value) is int:
        return _INT2(2, value)  # struct.error out of range: the text path says what PG says
    if value is None:
        return NULL
    raise NotBinary


def _int4(value: Any) -> bytes:
    if type(value) is int:
        return _INT4(4, value)
    if value is None:
        return NULL
    raise NotBinary


def _int8(value: Any) -> bytes:
    if type(value) is int:
        return _INT8(8, value)
    if value is None:
        return NULL
    raise NotBinary


def _float8(value: Any) -> bytes:
    if value is None:
        return NULL
    # The text is repr(float(value)), which float8in reads back to this very double.
    number = float(value)
    if math.isnan(number):
        return _NAN8
    return _FLOAT8(8, number)


def _float8_element(value: Any) -> bytes:
    if type(value) is str:
        raise NotBinary  # an array's element text is the string itself, not float(string)
    return _float8(value)


def _numeric_head(ndigits: int) -> Callable[..., bytes]:
    head = _NUMERIC_HEADS.get(ndigits)
    if head is None:
        head = _NUMERIC_HEADS[ndigits] = struct.Struct(f">ihhHH{ndigits}H").pack
    return head


def _special_numeric(number: decimal.Decimal) -> bytes:
    if number.is_snan() or (number.is_nan() and number.is_signed()):
        raise NotBinary  # numeric_in refuses both
    if number.is_nan():
        return _numeric_head(0)(8, 0, 0, _NUMERIC_NAN, 0)
    sign = _NUMERIC_NINF if number.is_signed() else _NUMERIC_PINF
    # numeric_send gives an infinity the display scale its header bits read as; numeric_recv
    # ignores it. Sent alike, the bytes are PostgreSQL's own.
    return _numeric_head(0)(8, 0, 0, sign, _INFINITY_DSCALE)


def numeric_field(number: decimal.Decimal, *, infinity: bool = True) -> bytes:
    """NUMERIC's send format of a Decimal, as numeric_in reads its str(): the display scale is
    the digits after the point (never negative), zero is positive, no zero digit leads or ends.
    Raises NotBinary for what numeric_in refuses, and for an infinity unless `infinity`."""
    text = str(number)  # several times as fast as as_tuple(), and what the text path sends
    point = text.find(".")
    try:
        coefficient = int(text.replace(".", "") if point >= 0 else text)
    except ValueError:  # exponent notation, NaN, Infinity
        return _general_numeric(number, infinity)
    negative = coefficient < 0
    if negative:
        coefficient = -coefficient
    scale = len(text) - point - 1 if point >= 0 else 0
    return _numeric_digits(negative, coefficient, -scale)


def _general_numeric(number: decimal.Decimal, infinity: bool) -> bytes:
    if not number.is_finite():
        if number.is_infinite() and not infinity:
            raise NotBinary  # an infinity overflows any NUMERIC(p, s)
        return _special_numeric(number)
    sign, _, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    coefficient = int(number.scaleb(-exponent, _EXACT).copy_abs())
    return _numeric_digits(bool(sign), coefficient, exponent)


def _numeric_digits(negative: bool, coefficient: int, exponent: int) -> bytes:
    """The send format of (-1 if negative else 1) * coefficient * 10**exponent."""
    # = (coefficient * 10**shift) * 10000**quotient
    quotient, shift = divmod(exponent, _NBASE_DIGITS)
    coefficient *= _SHIFTS[shift]
    scale = -exponent if exponent < 0 else 0
    word = _NUMERIC_NEG if negative else _NUMERIC_POS
    if (
        coefficient < _TWO_GROUPS
        and scale <= _NUMERIC_DSCALE_MAX
        and quotient < _NUMERIC_WEIGHT_MAX
    ):
        # Most numbers: no loop.
        high, low = divmod(coefficient, 10000)
        if high:
            if low:
                return _NUMERIC_2(12, 2, quotient + 1, word, scale, high, low)
            return _NUMERIC_1(10, 1, quotient + 1, word, scale, high)
        if low:
            return _NUMERIC_1(10, 1, quotient, word, scale, low)
        return _NUMERIC_0(8, 0, 0, _NUMERIC_POS, scale)
    groups = []
    while coefficient:
        coefficient, group = divmod(coefficient, 10000)
        groups.append(group)
    trailing = 0
    while groups and groups[0] == 0:
        del groups[0]
        trailing += 1
    ndigits = len(groups)
    groups.reverse()
    weight = ndigits - 1 + quotient + trailing if groups else 0
    if weight > _NUMERIC_WEIGHT_MAX or scale > _NUMERIC_DSCALE_MAX:
        raise NotBinary  # numeric_in says how it overflows
    word = word if groups else _NUMERIC_POS
    return _numeric_head(ndigits)(8 + 2 * ndigits, ndigits, weight, word, scale, *groups)


def _as_decimal(value: Any) -> decimal.Decimal:
    """The Decimal that the value's COPY text (its str()) is, for the values whose text is it."""
    kind = type(value)
    if kind is decimal.Decimal:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return decimal.Decimal(value)
    if kind is float:
        return decimal.Decimal(repr(value))
    raise NotBinary


def _numeric(precision: Optional[int], scale: int) -> FieldEncoder:
    if precision is None:

        def free(value: Any) -> bytes:
            if type(value) is decimal.Decimal:
                return numeric_field(value)
            if value is None:
                return NULL
            return numeric_field(_as_decimal(value))

        return free
    # NUMERIC(p, s) rounds to s digits, then refuses more than p - s before the point: a value
    # that might, once rounded, goes to the text path, which says what PG says.
    integer_digits = precision - scale
    quantum = decimal.Decimal(1).scaleb(-scale)

    def bounded(value: Any) -> bytes:
        number = value
        if type(value) is not decimal.Decimal:
            if value is None:
                return NULL
            number = _as_decimal(value)
        if number.adjusted() >= integer_digits - 1 and number.is_finite() and number:
            rounded = number.quantize(quantum, decimal.ROUND_HALF_UP, _EXACT)
            if rounded and rounded.adjusted() >= integer_digits:
                raise NotBinary
        return numeric_field(number, infinity=False)

    return bounded


def _boolean(value: Any) -> bytes:
    if value is None:
        return NULL
    if type(value) is str:
        raise NotBinary
    return _TRUE if value else _FALSE


def _text(limit: Optional[int], only_str: bool = False) -> FieldEncoder:
    """Text as UTF-8 (the connection's and the database's encoding); longer text than `limit`,
    the length of a VARCHAR(n) or CHAR(n), goes to the text path, which says what PG says."""
    bound = sys.maxsize if limit is None else limit

    def text(value: Any) -> bytes:
        string: str = value
        if type(value) is not str:
            if value is None:
                return NULL
            if only_str:
                raise NotBinary  # an array's element text is not str() of the value
            string = str(value)
        if "\x00" in string or len(string) > bound:
            raise NotBinary  # the text path raises NulInTextError, or PG's error
        data = string.encode()
        size = len(data)
        return (_PREFIXES[size] if size < _PREFIXED else _LENGTH(size)) + data

    return text


def _date(value: Any) -> bytes:
    if type(value) is datetime.date:
        return _INT4(4, value.toordinal() - _EPOCH_DAY)
    if value is None:
        return NULL
    raise NotBinary


def _time(value: Any) -> bytes:
    if type(value) is datetime.time and value.tzinfo is None:
        seconds = (value.hour * 60 + value.minute) * 60 + value.second
        return _INT8(8, seconds * 1_000_000 + value.microsecond)
    if value is None:
        return NULL
    raise NotBinary


def _timestamp(value: Any) -> bytes:
    if type(value) is datetime.datetime:
        if value.tzinfo is not None:  # as the text path converts it, errors included
            value = value.astimezone(_UTC).replace(tzinfo=None)
        return _INT8(8, (value - _EPOCH) // _MICROSECOND)
    if value is None:
        return NULL
    raise NotBinary


def _timestamptz(value: Any) -> bytes:
    if type(value) is datetime.datetime:
        zone = value.tzinfo
        if zone is None:  # taken as UTC
            return _INT8(8, (value - _EPOCH) // _MICROSECOND)
        if zone is not _UTC:
            offset = value.utcoffset()
            # An offset the text's ISO form may not carry exactly (or none: the session's zone).
            if offset is None or offset % _MINUTE:
                raise NotBinary
        return _INT8(8, (value - _EPOCH_UTC) // _MICROSECOND)
    if value is None:
        return NULL
    raise NotBinary


def _interval(value: Any) -> bytes:
    if isinstance(value, datetime.timedelta):
        time = value.seconds * 1_000_000 + value.microseconds
        return _INTERVAL(16, time, value.days, 0)
    if value is None:
        return NULL
    raise NotBinary


def _uuid(value: Any) -> bytes:
    if type(value) is uuid.UUID:
        return _UUID_LENGTH + value.bytes
    if value is None:
        return NULL
    raise NotBinary


def _bytea(value: Any) -> bytes:
    if value is None:
        return NULL
    data = bytes(value)
    return _LENGTH(len(data)) + data


def _json_bytes(value: Any) -> bytes:
    try:
        return _DUMPS(value)
    except TypeError:  # a Decimal, an integer beyond 64 bits: the text path's exact digits
        return json_text(value).encode()


def _json(value: Any) -> bytes:
    if value is None:
        return NULL
    data = _json_bytes(value)
    size = len(data)
    return (_PREFIXES[size] if size < _PREFIXED else _LENGTH(size)) + data


def _jsonb(value: Any) -> bytes:
    if value is None:
        return NULL
    try:
        data = _DUMPS(value)
    except TypeError:
        data = _json_bytes(value)
    if b"\\" in data and _NUL_ESCAPE in data:  # one byte's search first: far the faster
        raise NotBinary  # jsonb cannot hold NUL: the text path raises NulInTextError
    size = len(data)
    if size < _PREFIXED:
        return _JSONB_PREFIXES[size] + data
    return _LENGTH(size + 1) + _JSONB_VERSION + data


def _typmod(type_: PgType) -> tuple[int, ...]:
    found = re.search(r"\(([-\d,]+)\)", type_.name)
    return tuple(int(part) for part in found[1].split(",")) if found else ()


def _scalar(type_: PgType, element: bool = False) -> Optional[FieldEncoder]:
    """The encoder of the type's values, or None where binary COPY is not exact for it."""
    kind, name = type_.kind, _base_name(type_)
    if kind is Kind.INTEGER:
        return {"smallint": _int2, "integer": _int4, "bigint": _int8}[name]
    if kind is Kind.FLOAT:
        # REAL stays text: its text is the double's shortest digits, which float4in rounds to
        # 24 bits from the decimal, not from the double; the two differ at some midpoints.
        if name != "double precision":
            return None
        return _float8_element if element else _float8
    if kind is Kind.NUMERIC:
        typmod = _typmod(type_)
        return _numeric(typmod[0], typmod[1]) if typmod else _numeric(None, 0)
    if kind is Kind.TEXT:
        typmod = _typmod(type_)
        return _text(typmod[0] if typmod else None, only_str=element)
    simple: dict[Kind, FieldEncoder] = {
        Kind.BOOLEAN: _boolean,
        Kind.DATE: _date,
        Kind.TIME: _time,
        Kind.TIMESTAMP: _timestamp,
        Kind.TIMESTAMPTZ: _timestamptz,
        Kind.INTERVAL: _interval,
        Kind.JSON: _json,
        Kind.JSONB: _jsonb,
        Kind.UUID: _uuid,
        Kind.BYTEA: _bytea,
    }
    return simple.get(kind)


def _shape(values: Any) -> tuple[list[int], list[Any]]:
    """The dimensions of a rectangular array of lists or tuples, and its elements in order."""
    dimensions: list[int] = []
    level = [values]
    while True:
        size = len(level[0])
        nested = size and isinstance(level[0][0], (list, tuple))
        if any(len(part) != size for part in level):
            raise NotBinary  # array_in refuses it, or reads it its own way
        dimensions.append(size)
        if not nested:
            if dimensions[-1] == 0 and len(dimensions) > 1:
                raise NotBinary
            for part in level:
                if any(isinstance(item, (list, tuple)) for item in part):
                    raise NotBinary
            return dimensions, [item for part in level for item in part]
        if not all(isinstance(item, (list, tuple)) for part in level for item in part):
            raise NotBinary
        level = [item for part in level for item in part]


def _strings(values: Sequence[str], bound: int) -> list[bytes]:
    """The fields of an array of plain strings (the common text array); raises TypeError or
    IndexError for anything else, which the general path then encodes."""
    joined = "".join(values)  # TypeError for anything but strings
    if "\x00" in joined:
        raise TypeError
    fields = []
    for value in values:
        if len(value) > bound:
            raise TypeError
        data = value.encode()
        fields.append(_PREFIXES[len(data)])  # IndexError for a long one
        fields.append(data)
    return fields


def _array(element: PgType) -> Optional[FieldEncoder]:
    encode = _scalar(element, element=True)
    if encode is None:
        return None
    oid = _OIDS[_base_name(element)]
    # Element encoders that would take a list or tuple as a value, not refuse it.
    loose = element.kind in (Kind.BOOLEAN, Kind.BYTEA, Kind.JSON, Kind.JSONB)
    empty = _LENGTH(12) + _ARRAY_HEAD(0, 0, oid)
    heads = (_ARRAY_HEAD(1, 0, oid), _ARRAY_HEAD(1, 1, oid))
    lower_bound = _LENGTH(1)
    strings = element.kind is Kind.TEXT
    typmod = _typmod(element)
    bound = typmod[0] if typmod else sys.maxsize

    def array(values: Any) -> bytes:
        if values is None:
            return NULL
        if type(values) is not list and type(values) is not tuple:
            raise NotBinary
        if not values:
            return empty
        if isinstance(values[0], (list, tuple)):
            return _matrix(values)
        if loose and any(isinstance(value, (list, tuple)) for value in values):
            raise NotBinary  # the text path reads it as a sub-array
        if strings:
            try:
                fields = _strings(values, bound)
            except (TypeError, IndexError):  # a None, a str subclass, a long string
                fields = list(map(encode, values))
        else:
            fields = list(map(encode, values))
        data = b"".join([heads[NULL in fields], _LENGTH(len(values)), lower_bound, *fields])
        return _LENGTH(len(data)) + data

    def _matrix(values: Any) -> bytes:
        dimensions, elements = _shape(values)
        fields = list(map(encode, elements))
        parts = [_ARRAY_HEAD(len(dimensions), NULL in fields, oid)]
        parts.extend(_DIMENSION(size, 1) for size in dimensions)  # lower bounds 1
        parts.extend(fields)
        data = b"".join(parts)
        return _LENGTH(len(data)) + data

    return array


def field_encoder(type_: PgType) -> Optional[FieldEncoder]:
    """Encoder of one value of the type into its binary COPY field (None is NULL); None for a
    type whose values binary COPY does not carry exactly."""
    if type_.kind is Kind.ARRAY:
        assert type_.element is not None
        return _array(type_.element)
    return _scalar(type_)


def binary_row_encoder(types: Sequence[PgType]) -> Optional[BinaryRowEncoder]:
    """Encoder of a whole row into one binary COPY tuple, or None when a column's type has no
    exact binary encoding. It raises for a row it cannot carry exactly, a `CopyRow` included,
    and gives a `CopyTuple` as it is. The C row encoder when built, giving the same bytes; the
    Python one otherwise."""
    encoders = tuple(field_encoder(type_) for type_ in types)
    if any(encode is None for encode in encoders):
        return None
    if _binrow is not None:
        return native_row_encoder(types)
    return python_row_encoder(types)


def python_row_encoder(types: Sequence[PgType]) -> BinaryRowEncoder:
    """The row encoder in Python, of types that all have an exact binary encoding."""
    encoders = tuple(field_encoder(type_) for type_ in types)
    width = len(encoders)
    count = struct.pack(">h", width)

    def encode(row: Sequence[Any]) -> bytes:
        if type(row) is CopyTuple:
            return row
        if type(row) is CopyRow or len(row) != width:
            raise NotBinary
        return count + b"".join(map(_call, encoders, row))  # type: ignore[arg-type]

    return encode


# The C row encoder's column kinds (pg_bulk_ingest/_binrow.c): the values it encodes itself;
# any other value of the column goes to the column's Python encoder.
_NATIVE_PYTHON = 0
_NATIVE_INTEGERS = {"smallint": 1, "integer": 2, "bigint": 3}
_NATIVE_SIMPLE = {
    Kind.BOOLEAN: 5,
    Kind.TEXT: 6,
    Kind.DATE: 7,
    Kind.TIMESTAMP: 8,
    Kind.TIMESTAMPTZ: 9,
    Kind.NUMERIC: 10,
    Kind.JSONB: 11,
}
_NATIVE_FLOAT8 = 4
_NATIVE_ARRAY = 12
# Element kinds whose encoders would take a list or tuple as a value: their arrays are Python's.
_LOOSE = (Kind.BOOLEAN, Kind.BYTEA, Kind.JSON, Kind.JSONB)
NativeColumn = tuple[int, FieldEncoder, int, Optional[int], int, Any]


def _native_kind(type_: PgType) -> int:
    if type_.kind is Kind.INTEGER:
        return _NATIVE_INTEGERS[_base_name(type_)]
    if type_.kind is Kind.FLOAT:
        return _NATIVE_FLOAT8
    return _NATIVE_SIMPLE.get(type_.kind, _NATIVE_PYTHON)


def _native_scalar(type_: PgType, encode: FieldEncoder) -> NativeColumn:
    """(kind, Python encoder, VARCHAR length or -1, p - s of NUMERIC(p, s), 0, None); the C
    encoder takes only a `str` as text, so the element encoder's `only_str` is Python's."""
    typmod = _typmod(type_)
    limit = typmod[0] if type_.kind is Kind.TEXT and typmod else -1
    integer_digits = typmod[0] - typmod[1] if type_.kind is Kind.NUMERIC and typmod else None
    return (_native_kind(type_), encode, limit, integer_digits, 0, None)


def _native_column(type_: PgType) -> NativeColumn:
    encode = field_encoder(type_)
    assert encode is not None
    element = type_.element
    if type_.kind is not Kind.ARRAY:
        return _native_scalar(type_, encode)
    assert element is not None
    if element.kind in _LOOSE:
        return (_NATIVE_PYTHON, encode, -1, None, 0, None)
    encode_element = _scalar(element, element=True)
    assert encode_element is not None
    inner = _native_scalar(element, encode_element)
    return (_NATIVE_ARRAY, encode, -1, None, _OIDS[_base_name(element)], inner)


def native_row_encoder(types: Sequence[PgType]) -> BinaryRowEncoder:
    """The C row encoder, of types that all have an exact binary encoding: each column's
    common values in C, the others through the column's Python encoder, bytes alike."""
    assert _binrow is not None
    columns = [_native_column(type_) for type_ in types]
    return _binrow.RowEncoder(columns, CopyRow, CopyTuple, NotBinary, decimal.Decimal, _DUMPS)


def binary_pays(types: Sequence[PgType]) -> bool:
    """Whether a table's rows are cheaper to write as binary COPY than as text, all told."""
    return not any(type_.kind in DEARER_IN_BINARY for type_ in types)


def copy_tuple_columns(table: sa.Table) -> Optional[tuple[int, ...]]:
    """None where `ingest` writes the table in text COPY (a column type has no exact binary
    encoding, or binary does not pay for it); else what a `CopyTuple` of the table needs beyond
    PostgreSQL's send formats: per column a row carries, the OID its array field names for its
    elements (0 for a scalar column). A GENERATED ALWAYS identity column is not among them:
    rows leave it out, and PostgreSQL makes its values. On a UTF8 database, `ingest` starts such
    a table in binary COPY."""
    types = [
        column_pg_type(table, column)
        for column in table.columns
        if not getattr(getattr(column, "identity", None), "always", False)
    ]
    if not binary_pays(types) or any(field_encoder(type_) is None for type_ in types):
        return None
    return tuple(
        _OIDS[_base_name(type_.element)] if type_.element is not None else 0 for type_ in types
    )


class TableEncoder:
    """Encodes one table's rows for COPY through an ingest call: as binary tuples (bytes) while
    every row allows it, then, from the first row that does not, as text lines (str) for the
    rest of the call, where that row and every later one mean what they always have.
    `encode` is the function of the moment: it is replaced when the table turns to text.
    `attempt` is the encoder of the moment alone, one Python call less a row: it raises for a
    row binary cannot carry, which `encode` then writes as text."""

    def __init__(self, types: Sequence[PgType], *, binary: bool) -> None:
        # Whether the connection takes binary COPY at all (UTF8 encodings): a CopyTuple's text
        # is UTF-8, which another client encoding would read as something else.
        self.takes_tuples = binary
        self._text: RowEncoder = row_encoder(types)
        found = binary_row_encoder(types) if binary and binary_pays(types) else None
        self.binary = found is not None
        self.encode: Callable[[Sequence[Any]], bytes | str] = self._text
        self.attempt: Callable[[Sequence[Any]], bytes | str] = self._text
        if found is not None:
            self.encode = self._binary_first(found)
            self.attempt = found

    def _binary_first(self, binary: BinaryRowEncoder) -> Callable[[Sequence[Any]], bytes | str]:
        def encode(row: Sequence[Any]) -> bytes | str:
            try:
                return binary(row)
            except Exception:  # the text path raises what it always has, or carries the row
                self.binary = False
                self.encode = self.attempt = self._text
                return self._text(row)

        return encode
