"""Mapping: a decoded `Record` becomes a row tuple in its table's column order.

Each table's plan (one extractor and one converter per column) is compiled once, so the
per-message work is a loop of precomputed calls. Values come out as the types the ingest core
encodes: int, float, Decimal, bool, str, datetime (aware UTC for TIMESTAMPTZ, naive UTC for
TIMESTAMP), date, time, timedelta, uuid.UUID, bytes, lists for arrays, JSON values as is.

Choices a user sees: a timestamp without an offset is read as UTC; TIMESTAMP (without time
zone) columns hold UTC wall time; a DATE from a timestamp is its UTC date; numbers for
TIMESTAMP/DATE columns are epoch milliseconds; numbers for INTERVAL are seconds; NUMERIC, JSON
and text columns keep a number's digits as the message wrote them (a message whose floats would
not is read again with exact numbers: Decimal, and int beyond 64 bits).
"""

from __future__ import annotations

import base64
import binascii
import decimal
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Callable

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from pg_bulk_ingest import CopyRow, copy_encoders, copy_tuple_columns
from sink.config import Format, Source, SourceKind
from sink.copytext import (
    NATIVE,
    LineColumn,
    LineFunction,
    compile_line,
    fast_text,
    holds_float,
    native_kind,
)
from sink.errors import ConfigError, MappingError, MessageError, Refused
from sink.exactjson import exact_loads, numbers_round_trip
from sink.kinds import kind_of
from sink.records import Message, Record
from sink.tables import RowValues, Target

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Integers beyond 2**53 do not survive a round trip through a JSON float (orjson reads integers
# beyond 64 bits as floats): refuse them rather than store a rounded value.
_EXACT_FLOAT_LIMIT = 2.0**53
_REAL_MAX = 3.4028234663852886e38
# PostgreSQL NUMERIC limits: digits before and after the decimal point.
_NUMERIC_MAX_WEIGHT = 131_072
_NUMERIC_MAX_SCALE = 16_383
# Decimal context wide enough to quantize any NUMERIC(p, s) PostgreSQL accepts.
_DECIMAL_CONTEXT = decimal.Context(prec=_NUMERIC_MAX_WEIGHT + _NUMERIC_MAX_SCALE + 1)

Converter = Callable[[Any], object]
Extractor = Callable[[Record], object]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def _kind(value: object) -> str:
    """A value's kind in JSON words, for error messages."""
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, (int, float, decimal.Decimal, str)):
        noun = "a string" if isinstance(value, str) else "a number"
        shown = str(value) if isinstance(value, decimal.Decimal) else repr(value)
        return f"{noun} ({shown})" if len(shown) <= 42 else noun
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value)} bytes"
    return _KINDS.get(type(value), type(value).__name__)


_KINDS: Mapping[type, str] = {type(None): "null", dict: "an object", list: "an array"}


def _reject_type(expected: str, value: object) -> Refused:
    return Refused(f"expected {expected}, got {_kind(value)}")


# --- converters: one per column type -------------------------------------------------------


def _integer(type_name: str, bits: int) -> Converter:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def convert(value: Any) -> object:
        kind = type(value)
        if kind is int:
            number = value
        elif kind is str:
            text = value.strip()
            if not text.isascii() or "_" in text:
                raise _reject_type("an integer", value)
            try:
                number = int(text)
            except ValueError:
                raise _reject_type("an integer", value) from None
        elif kind is float:
            if not math.isfinite(value) or not value.is_integer():
                raise _reject_type("a whole number", value)
            number = int(value)
            if low <= number <= high and abs(value) >= _EXACT_FLOAT_LIMIT:
                raise Refused(
                    f"{value!r} is beyond 2**53 and was read as an inexact JSON float; "
                    f"send large integers as JSON strings",
                    "range",
                )
        elif kind is decimal.Decimal:
            if not value.is_finite() or value != value.to_integral_value():
                raise _reject_type("a whole number", value)
            number = int(value)
        else:
            raise _reject_type("an integer", value)
        if not low <= number <= high:
            raise Refused(f"{number} is out of range for {type_name}; use a wider type", "range")
        return number

    return convert


def _float(single: bool) -> Converter:
    def convert(value: Any) -> object:
        kind = type(value)
        try:
            if kind is float:
                number = value
            elif kind is int or kind is str or kind is decimal.Decimal:
                number = float(value)
            else:
                raise _reject_type("a number", value)
        except (ValueError, OverflowError):
            raise _reject_type("a number", value) from None
        if single and abs(number) > _REAL_MAX and number != float("inf"):
            raise Refused(f"{value!r} is out of range for REAL; use DOUBLE PRECISION", "range")
        return number

    return convert


def _numeric(precision: int | None, scale: int | None) -> Converter:
    digits = None if precision is None else precision - (scale or 0)
    exponent = decimal.Decimal(1).scaleb(-(scale or 0))
    name = "NUMERIC" if precision is None else f"NUMERIC({precision},{scale or 0})"

    def convert(value: Any) -> object:
        kind = type(value)
        try:
            if kind is int or kind is decimal.Decimal:
                number = decimal.Decimal(value)
            elif kind is float:
                # repr is the shortest text that reads back as this float: "0.1", not 0.1000..01.
                # A JSON number reaches here as a float only when its text is that repr (see
                # numbers_round_trip), so this is the number as written, however large.
                number = decimal.Decimal(repr(value))
            elif kind is str:
                number = decimal.Decimal(value.strip())
            else:
                raise _reject_type("a number", value)
        except decimal.InvalidOperation:
            raise _reject_type("a number", value) from None
        if not number.is_finite():
            raise Refused(f"{name} takes finite numbers only, got {_kind(value)}")
        if digits is None:
            exponent_ = int(number.as_tuple().exponent)
            if number.adjusted() >= _NUMERIC_MAX_WEIGHT or exponent_ < -_NUMERIC_MAX_SCALE:
                raise Refused(f"{_kind(value)} is beyond PostgreSQL's NUMERIC limits", "range")
            return number
        # PostgreSQL rounds to the scale (half away from zero), then checks the integer digits.
        try:
            number = number.quantize(
                exponent, rounding=decimal.ROUND_HALF_UP, context=_DECIMAL_CONTEXT
            )
        except decimal.InvalidOperation:
            number = decimal.Decimal("Infinity")
        if not number.is_finite() or (number and number.adjusted() >= digits):
            raise Refused(
                f"{_kind(value)} does not fit {name}: at most {digits} digits before the "
                f"decimal point; widen the column's precision",
                "range",
            )
        return number

    return convert


_BOOLEANS = {"true": True, "false": False}


def _boolean(value: Any) -> object:
    if value is True or value is False:
        return value
    kind = type(value)
    if kind is str:
        found = _BOOLEANS.get(value.strip().lower())
        if found is not None:
            return found
    elif kind is int and value in (0, 1):
        return value == 1
    raise _reject_type('a boolean (true/false, "true"/"false", 0/1)', value)


def _text(type_name: str, length: int | None) -> Converter:
    def convert(value: Any) -> object:
        kind = type(value)
        if kind is str:
            text = value
        elif kind is int or kind is float or kind is decimal.Decimal:
            text = str(value)
        elif kind is bool:
            text = "true" if value else "false"
        elif kind is dict or kind is list:
            text = _json_text(value)
        elif kind is bytes:
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                raise Refused("bytes are not UTF-8 text; use a BYTEA column") from None
        elif isinstance(value, (datetime, date, time, uuid.UUID)):
            text = value.isoformat() if not isinstance(value, uuid.UUID) else str(value)
        else:
            raise _reject_type("text", value)
        if "\x00" in text:
            raise Refused(
                f"text contains a NUL character at position {text.index(chr(0))}, which "
                f"PostgreSQL text cannot store; use BYTEA, or fix the producer",
                "nul",
            )
        if length is not None and len(text) > length:
            raise Refused(
                f"{len(text)} characters is longer than {type_name}'s limit of {length}; "
                f"widen the column or shorten the value",
                "too-long",
            )
        return text

    return convert


def _json(value: Any) -> object:
    kind = type(value)
    if kind is dict or kind is list or kind is str or kind is int or kind is float:
        return value
    if kind is bool:
        return value
    if kind is decimal.Decimal:
        if not value.is_finite():
            raise Refused(f"{value} is not a JSON number")
        return value  # a JSON number with these exact digits
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        raise Refused('bytes are not JSON; set value_format/key_format = "json" or use BYTEA')
    if isinstance(value, uuid.UUID):
        return str(value)
    raise _reject_type("a JSON value", value)


def _json_text(value: Any) -> str:
    """Compact JSON text, numbers with their exact digits (Decimals, integers beyond 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError: a Decimal or an integer beyond 64 bits
        pass
    try:
        return orjson.dumps(_as_fragments(value)).decode()
    except (TypeError, RecursionError) as error:
        raise Refused(f"cannot be written as JSON text: {error}") from None


def _as_fragments(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {key: _as_fragments(item) for key, item in value.items()}
    if kind is list:
        return [_as_fragments(item) for item in value]
    if kind is decimal.Decimal or kind is int:
        return orjson.Fragment(str(value))
    return value


def _uuid(value: Any) -> object:
    kind = type(value)
    try:
        if kind is str:
            return uuid.UUID(value)
        if kind is bytes and len(value) == 16:
            return uuid.UUID(bytes=value)
    except ValueError:
        pass
    if isinstance(value, uuid.UUID):
        return value
    raise _reject_type("a UUID string", value)


def _bytea(value: Any) -> object:
    kind = type(value)
    if kind is bytes:
        return value
    if kind is str:
        padded = value + "=" * (-len(value) % 4)  # producers often drop the padding
        try:
            return base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError):
            try:
                return base64.b64decode(padded, altchars=b"-_", validate=True)
            except (binascii.Error, ValueError):
                raise Refused(
                    'expected base64 text for BYTEA; or set value_format = "bytes" to store the '
                    "raw value"
                ) from None
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise _reject_type("base64 text or bytes", value)


_ISO_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}(?::\d{2})?)(?:[.,](\d+))?\s*"
    r"(?:([Zz])|([+-]\d{2})(?::?(\d{2}))?)?"
)


def _parse_datetime(text: str) -> datetime:
    """ISO 8601, with `Z` or an offset, any fraction digits; fast path via fromisoformat."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    match = _ISO_RE.fullmatch(text.strip())
    if match is None:
        raise Refused(
            f"expected an ISO 8601 timestamp (e.g. 2024-05-01T12:00:00Z) or epoch milliseconds, "
            f"got {_kind(text)}"
        )
    day, clock, fraction, zulu, offset_hours, offset_minutes = match.groups()
    normalized = f"{day}T{clock}"
    if fraction:
        normalized += "." + fraction[:6].ljust(6, "0")
    if zulu:
        normalized += "+00:00"
    elif offset_hours:
        normalized += f"{offset_hours}:{offset_minutes or '00'}"
    try:
        return datetime.fromisoformat(normalized)
    except ValueError as error:
        raise Refused(f"{_kind(text)} is not a valid timestamp: {error}") from None


def _from_epoch_ms(value: Any) -> datetime:
    try:
        return _EPOCH + timedelta(milliseconds=value)
    except (OverflowError, ValueError):
        raise Refused(f"{_kind(value)} is out of range as epoch milliseconds", "range") from None


def _instant(value: Any) -> datetime:
    kind = type(value)
    if kind is str:
        return _parse_datetime(value)
    if kind is int or kind is float:
        return _from_epoch_ms(value)
    if kind is decimal.Decimal:
        return _from_epoch_ms(float(value))
    if kind is datetime:
        return value  # type: ignore[no-any-return]
    raise _reject_type("an ISO 8601 timestamp string or epoch milliseconds", value)


def _timestamp(with_time_zone: bool) -> Converter:
    def convert(value: Any) -> object:
        moment = _instant(value)
        try:
            if with_time_zone:
                if moment.tzinfo is None:
                    return moment.replace(tzinfo=UTC)
                return moment.astimezone(UTC)
            if moment.tzinfo is None:
                return moment
            return moment.astimezone(UTC).replace(tzinfo=None)
        except (OverflowError, ValueError):
            raise Refused(f"{_kind(value)} is out of range in UTC", "range") from None

    return convert


def _date(value: Any) -> object:
    kind = type(value)
    if kind is str:
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    if kind is date:
        return value
    moment = _instant(value)
    try:
        return (moment.astimezone(UTC) if moment.tzinfo else moment).date()
    except (OverflowError, ValueError):
        raise Refused(f"{_kind(value)} is out of range in UTC", "range") from None


def _time(value: Any) -> object:
    kind = type(value)
    if kind is str:
        text = value.strip()
        if text[-1:] in ("Z", "z"):
            text = text[:-1]
        try:
            parsed = time.fromisoformat(text)
        except ValueError:
            raise _reject_type("an ISO 8601 time of day (e.g. 13:45:00)", value) from None
        # As PostgreSQL does for TIME (without time zone): an offset is ignored.
        return parsed.replace(tzinfo=None)
    if kind is time:
        return value
    raise _reject_type("an ISO 8601 time of day (e.g. 13:45:00)", value)


_DURATION_RE = re.compile(
    r"([+-])?P(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?"
)
_CLOCK_RE = re.compile(r"([+-])?(\d+):(\d{2})(?::(\d{2}(?:\.\d+)?))?")


def _interval(value: Any) -> object:
    kind = type(value)
    try:
        if kind is int or kind is float:
            return timedelta(seconds=value)
        if kind is decimal.Decimal:
            return timedelta(seconds=float(value))
        if kind is str:
            return _parse_duration(value.strip())
    except (OverflowError, ValueError):
        raise Refused(f"{_kind(value)} is out of range for INTERVAL", "range") from None
    if kind is timedelta:
        return value
    raise _reject_type("seconds, or an ISO 8601 duration (e.g. PT1H30M)", value)


def _parse_duration(text: str) -> timedelta:
    iso = _DURATION_RE.fullmatch(text)
    if iso is not None and text.rstrip("T") not in ("P", "+P", "-P") and not text.endswith("T"):
        sign, weeks, days, hours, minutes, seconds = iso.groups()
        delta = timedelta(
            weeks=float(weeks or 0),
            days=float(days or 0),
            hours=float(hours or 0),
            minutes=float(minutes or 0),
            seconds=float(seconds or 0),
        )
        return -delta if sign == "-" else delta
    clock = _CLOCK_RE.fullmatch(text)
    if clock is not None:
        sign, hours, minutes, seconds = clock.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes), seconds=float(seconds or 0))
        return -delta if sign == "-" else delta
    raise Refused(
        f"expected seconds, an ISO 8601 duration without years or months (e.g. P1DT2H) or "
        f"HH:MM:SS, got {_kind(text)}"
    )


def _array(element: Converter) -> Converter:
    def convert(value: Any) -> object:
        if type(value) is not list:
            raise _reject_type("an array", value)
        out: list[object] = []
        for index, item in enumerate(value):
            try:
                out.append(None if item is None else element(item))
            except Refused as error:
                raise Refused(f"element {index}: {error.reason}", error.code) from None
        return out

    return convert


def _passthrough(value: Any) -> object:
    return value


def converter(type_: sa.types.TypeEngine[Any]) -> Converter:
    """The converter for a column type (its kind's, see sink.kinds): JSON-ish input in, a value
    the ingest core encodes out. Unknown types pass values through unchanged."""
    kind = kind_of(type_)
    return _passthrough if kind is None else kind.convert(type_)


_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def _type_name(type_: sa.types.TypeEngine[Any]) -> str:
    try:
        return str(type_.compile(dialect=_DIALECT))
    except Exception:  # an exotic user type that cannot compile outside a database
        return type(type_).__name__


def keeps_digits(type_: sa.types.TypeEngine[Any]) -> bool:
    """NUMERIC, JSON and text columns store a number with the digits the message wrote (a
    float read from them may not keep them); float, integer and time columns take its value."""
    if isinstance(type_, sa.ARRAY):
        return keeps_digits(sa.types.to_instance(type_.item_type))
    kind = kind_of(type_)
    return kind is not None and kind.keeps_digits


def _is_json(type_: sa.types.TypeEngine[Any]) -> bool:
    if isinstance(type_, sa.ARRAY):
        return _is_json(type_.item_type)
    return isinstance(type_, sa.JSON)


def _nul_path(value: object) -> str | None:
    """Where a JSON value holds a NUL character (jsonb cannot store one), or None."""
    stack: list[tuple[str, object]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path or "the value"
        elif isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in str(key):
                    return f"{path}.{key!r}"
                stack.append((f"{path}.{key}", child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))
    return None


# --- extractors: one per column source ------------------------------------------------------


def headers_object(message: Message) -> dict[str, str | None]:
    """Headers as a JSON object: UTF-8 values as text, others base64; a repeated name keeps
    its last value."""
    out: dict[str, str | None] = {}
    for name, value in message.headers:
        if value is None:
            out[name] = None
            continue
        try:
            out[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            out[name] = base64.b64encode(value).decode("ascii")
    return out


def kafka_instant(timestamp_ms: int | None) -> datetime | None:
    """A Kafka timestamp as an aware UTC datetime; None without one, or beyond the years 1 to
    9999 a datetime holds (see `kafka_timestamp_out_of_range`)."""
    if timestamp_ms is None:
        return None
    try:
        return _EPOCH + timedelta(milliseconds=timestamp_ms)
    except (OverflowError, ValueError):
        return None


def kafka_timestamp_out_of_range(timestamp_ms: int) -> str:
    """Why a Kafka timestamp has no datetime: a producer that sets CreateTime in microseconds
    or nanoseconds, rather than milliseconds, lands after the year 9999."""
    when = "after the year 9999" if timestamp_ms > 0 else "before the year 1"
    return (
        f"the Kafka timestamp {timestamp_ms} (milliseconds since 1970) is {when}, out of range "
        f"for a timestamp; the producer may set it in micro- or nanoseconds"
    )


def _kafka_timestamp(record: Record) -> object:
    ms = record.message.timestamp_ms
    if ms is None:
        return None
    moment = kafka_instant(ms)
    if moment is None:
        raise Refused(kafka_timestamp_out_of_range(ms), "range")
    return moment


_METADATA: Mapping[SourceKind, Extractor] = {
    SourceKind.TOPIC: lambda r: r.message.topic,
    SourceKind.PARTITION: lambda r: r.message.partition,
    SourceKind.OFFSET: lambda r: r.message.offset,
    SourceKind.TIMESTAMP: _kafka_timestamp,
    SourceKind.RAW_KEY: lambda r: r.message.key,
    SourceKind.HEADERS: lambda r: headers_object(r.message),
}


def extractor(source: Source) -> Extractor:
    """Reads a source from a record; `MISSING` when a field is absent."""
    if source.kind in _METADATA:
        return _METADATA[source.kind]
    from_value = source.kind is SourceKind.VALUE
    path = source.path
    if not path:
        return (lambda r: r.value) if from_value else (lambda r: r.key)
    if len(path) == 1:
        (field,) = path

        def one(record: Record) -> object:
            data = record.value if from_value else record.key
            if type(data) is dict:
                return data.get(field, MISSING)
            return _walk(data, path, source)

        return one
    return lambda r: _walk(r.value if from_value else r.key, path, source)


def _walk(data: object, path: tuple[str, ...], source: Source) -> object:
    where = source.kind.value
    for field in path:
        if isinstance(data, dict):
            data = data.get(field, MISSING)
        elif isinstance(data, list) and field.isdigit():
            index = int(field)
            data = data[index] if index < len(data) else MISSING
        elif data is None or data is MISSING:
            return MISSING
        else:
            raise Refused(
                f"cannot read {source}: {where} is {_kind(data)}, not an object", "structure"
            )
        where = f"{where}.{field}"
    return data


# --- compiled mappers -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    name: str
    source: Source
    extract: Extractor
    convert: Converter
    required: bool
    type_name: str


class Mapper:
    """Maps records to rows of one target table; build it with `compile_mapper`."""

    def __init__(self, target: Target) -> None:
        table = target.table
        if len(target.sources) != len(table.columns):
            raise ConfigError(
                f"{target.name}: {len(target.sources)} sources for {len(table.columns)} columns"
            )
        self.target = target
        self.table = table
        self._columns = tuple(
            _Column(
                name=column.name,
                source=source,
                extract=extractor(source),
                convert=converter(column.type),
                required=not column.nullable or column.primary_key,
                type_name=_type_name(column.type),
            )
            for column, source in zip(table.columns, target.sources)
        )
        self._plan = tuple((c.extract, c.convert, c.required) for c in self._columns)
        # The common case, a top-level field of a JSON object value, is read inline (no call):
        # (field name or None, extractor, converter, required) per column.
        self._fast_plan = tuple(
            (
                c.source.path[0]
                if c.source.kind is SourceKind.VALUE and len(c.source.path) == 1
                else None,
                c.extract,
                c.convert,
                c.required,
            )
            for c in self._columns
        )
        self._json_columns = tuple(
            i for i, column in enumerate(table.columns) if _is_json(column.type)
        )
        # Whether a JSON column may hold a NUL character: what the tests' row of Python values
        # (tests/oracle.py) checks before it walks the JSON values.
        self._may_hold_nul = _nul_screen(target, [self._columns[i] for i in self._json_columns])
        self._key_columns = tuple(i for i, c in enumerate(table.columns) if c.primary_key)
        encoders = copy_encoders(table)
        # For `line`: (field name or None, extractor, fast path or None, general path, required)
        self._line_plan = tuple(
            (
                field,
                extract,
                fast_text(column.type, key=column.primary_key),
                self._general(index, convert, encoders[index]),
                required,
            )
            for index, (column, (field, extract, convert, required)) in enumerate(
                zip(table.columns, self._fast_plan)
            )
        )
        # NUMERIC, JSON and text columns keep the digits the message wrote: where a float read
        # from the key or value would not, `_exact` reads it again with exact numbers. (A
        # change event's row is not the value: the pipeline reads its value exactly first.)
        value_json = target.value_format is Format.JSON and target.envelope is None
        key_json = target.key_format is Format.JSON
        doubts = [
            keeps_digits(column.type)
            and (
                (c.source.kind is SourceKind.VALUE and value_json)
                or (c.source.kind is SourceKind.KEY and key_json)
            )
            for column, c in zip(table.columns, self._columns)
        ]
        self._screen_value = any(
            d and c.source.kind is SourceKind.VALUE for d, c in zip(doubts, self._columns)
        )
        self._screen_key = any(
            d and c.source.kind is SourceKind.KEY for d, c in zip(doubts, self._columns)
        )
        self._screens = self._screen_value or self._screen_key
        self._compiled_line = compile_line(
            [
                LineColumn(
                    *step,
                    doubt=holds_float if doubt else None,
                    # The JSON fast path takes floats: ask before it.
                    doubt_first=doubt and _is_json(column.type),
                )
                for step, doubt, column in zip(self._line_plan, doubts, table.columns)
            ],
            MISSING,
            self._round_trips,
        )
        # When every column reads a top-level field of the value, a line needs the value alone;
        # else `beyond_value_fields` names the first column that reads something more.
        beyond = next((c for c, step in zip(self._columns, self._line_plan) if not step[0]), None)
        self.beyond_value_fields: str | None = (
            None if beyond is None else f"column {beyond.name} reads {beyond.source}"
        )
        self.value_line: LineFunction | None = self._compiled_line if beyond is None else None
        # The same line for the native code, (field, kind, a, b, required) per column, where
        # every column reads a top-level field and has a native kind.
        native = [native_kind(column.type, key=column.primary_key) for column in table.columns]
        self.native_columns: tuple[tuple[str, int, int, int, bool], ...] | None = (
            tuple(
                (step[0], *kind, step[4])
                for step, kind in zip(self._line_plan, native)
                if step[0] is not None and kind is not None
            )
            if self.value_line is not None and None not in native
            else None
        )
        # Where the ingest core writes the table in binary COPY, the native line writes each
        # row as a CopyTuple, and every other way gives value tuples (`row`), which the core
        # encodes in binary: a CopyRow would end the table's binary COPY. Per column, what a
        # binary field needs beyond the native kind (see sink/_copyline.c's Column.binary).
        # (Only for a table the native line writes: the others' ways are as they were.)
        oids = copy_tuple_columns(table) if NATIVE and self.native_columns is not None else None
        self.binary_columns: tuple[int, ...] | None = (
            None
            if oids is None
            else tuple(_binary_parameter(c.type, oid) for c, oid in zip(table.columns, oids))
        )
        self.binary = self.binary_columns is not None

    def _general(
        self, index: int, convert: Converter, encode: Callable[[Any], str]
    ) -> Callable[[Any], str]:
        """A column's general path to COPY text: its converter, then the core's encoder."""
        json_column = index in self._json_columns

        def general(value: Any) -> str:
            converted = convert(value)
            if json_column:
                where = _nul_path(converted)
                if where is not None:
                    raise _nul_reject(where)
            try:
                return encode(converted)
            except (TypeError, ValueError) as error:  # e.g. a JSON integer beyond 64 bits
                raise Refused(
                    f"cannot be written as {self._columns[index].type_name}: {error}"
                ) from None

        return general

    def _round_trips(self, record: Record | None, raw: bytes | None) -> bool:
        """Whether the floats of a record are the numbers its message wrote (`raw`: the bytes
        of the value alone). Without either, a float may be anything: no."""
        if raw is not None:
            return numbers_round_trip(raw)
        if record is None:
            return False
        message = record.message
        value, key = message.value, message.key
        return (not self._screen_value or value is None or numbers_round_trip(value)) and (
            not self._screen_key or key is None or numbers_round_trip(key)
        )

    def _exact(self, record: Record) -> Record:
        """The record, its JSON key or value read again with exact numbers (Decimal for a number
        with a fraction or an exponent, int for any integer) where a float orjson read would
        not keep the digits written. Raises MappingError where they cannot be read so."""
        message = record.message
        key, value = record.key, record.value
        raw_value, raw_key = message.value, message.key
        if self._screen_value and raw_value is not None and not numbers_round_trip(raw_value):
            value = self._read_exactly(record, "value", raw_value)
        if self._screen_key and raw_key is not None and not numbers_round_trip(raw_key):
            key = self._read_exactly(record, "key", raw_key)
        if key is record.key and value is record.value:
            return record
        return Record(message, key, value)

    def _read_exactly(self, record: Record, part: str, data: bytes) -> object:
        try:
            return exact_loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as error:
            raise MappingError(
                record.coordinates,
                f"the numbers of the {part} cannot be read exactly: {error}",
                table=self.target.name,
                code="not-exact",
            ) from None

    def line(self, record: Record) -> CopyRow:
        """The row for a (non-tombstone) record as one line of COPY text, its values converted
        by their columns' types and encoded as the ingest core would; common values skip the
        Python objects in between (see sink.copytext). Raises MappingError.

        A float that reaches a column keeping digits makes the line check the message's
        numbers (`_round_trips`); where one is not as written, the record is read again with
        exact numbers (`_exact`), and mapped from those."""
        data = record.value
        if type(data) is dict and data:
            row = self._compiled_line(record, data)
            if row is not None:
                return row
        if self._screens:
            exact = self._exact(record)
            if exact is not record:
                record, data = exact, exact.value
                if type(data) is dict and data:
                    row = self._compiled_line(record, data)
                    if row is not None:
                        return row
        return self._line_step_by_step(record)

    def row(self, record: Record) -> RowValues:
        """The row for a (non-tombstone) record: its line (`line`), or where the table is
        written in binary COPY, its values (`values`)."""
        return self.values(record) if self.binary else self.line(record)

    def values(self, record: Record) -> tuple[object, ...]:
        """The row for a (non-tombstone) record as its values, converted by their columns'
        types, which the ingest core encodes; the same values as `line`'s text. Raises
        MappingError."""
        if self._screens:
            record = self._exact(record)
        data = record.value
        if type(data) is not dict:
            data = {}  # every column then reads through its extractor
        row: list[object] = []
        append = row.append
        try:
            for field, extract, convert, required in self._fast_plan:
                value = data.get(field, MISSING) if field is not None and data else extract(record)
                if value is None or value is MISSING:
                    if required:
                        raise self._absent(len(row), value)
                    append(None)
                else:
                    append(convert(value))
        except Refused as error:
            raise self._error(record, len(row), error) from None
        if self._json_columns:
            self._check_json_nul(record, row)
        return tuple(row)

    def _line_step_by_step(self, record: Record) -> CopyRow:
        """`line` as a loop over the columns: for the rows the compiled function gives up on,
        and to name the column at fault."""
        data = record.value
        if type(data) is not dict:
            data = {}  # every column then reads through its extractor
        parts: list[str] = []
        append = parts.append
        try:
            for field, extract, fast, general, required in self._line_plan:
                value = data.get(field, MISSING) if field is not None and data else extract(record)
                if value is None or value is MISSING:
                    if required:
                        raise self._absent(len(parts), value)
                    append("\\N")
                    continue
                text = None if fast is None else fast(value)
                append(general(value) if text is None else text)
        except Refused as error:
            raise self._error(record, len(parts), error) from None
        return CopyRow("\t".join(parts) + "\n")

    def coerce(self, record: Record, values: Sequence[object]) -> tuple[object, ...]:
        """Check and convert a row a tables module's `map_record` produced."""
        if len(values) != len(self._columns):
            raise MappingError(
                record.coordinates,
                f"map_record gave {len(values)} values for {len(self._columns)} columns",
                table=self.target.name,
                code="map-record",
            )
        row: list[object] = []
        try:
            for (_, convert, required), value in zip(self._plan, values):
                if value is None:
                    if required:
                        raise self._absent(len(row), value)
                    row.append(None)
                else:
                    row.append(convert(value))
        except Refused as error:
            raise self._error(record, len(row), error) from None
        if self._json_columns:
            self._check_json_nul(record, row)
        return tuple(row)

    def key_values(self, record: Record) -> tuple[object, ...]:
        """The primary-key tuple of a tombstone, read from its key: a JSON object with the
        key columns by name, or a scalar key for a one-column key."""
        if not self._key_columns:
            raise MappingError(
                record.coordinates,
                'has no primary key to delete by; set tombstones = "ignore"',
                table=self.target.name,
                code="no-key",
            )
        if self._screen_key:
            record = self._exact(record)
        values: list[object] = []
        try:
            for index in self._key_columns:
                column = self._columns[index]
                value = self._key_field(record, column)
                if value is None or value is MISSING:
                    raise self._absent(index, value, deleting=True)
                values.append(column.convert(value))
        except Refused as error:
            raise self._error(record, self._key_columns[len(values)], error) from None
        return tuple(values)

    def _key_field(self, record: Record, column: _Column) -> object:
        if column.source.kind is not SourceKind.VALUE:
            return column.extract(record)
        key = record.key
        if isinstance(key, dict):
            value = key.get(column.name, MISSING)
            if value is MISSING and column.source.path:
                value = key.get(column.source.path[-1], MISSING)
            return value
        if len(self._key_columns) == 1 and not isinstance(key, list):
            return key
        names = ", ".join(self._columns[i].name for i in self._key_columns)
        raise Refused(
            f"a tombstone's key must be a JSON object with the primary key fields ({names})"
            f"{' or a scalar' if len(self._key_columns) == 1 else ''}, got {_kind(key)}; "
            f'set key_format = "json" and key the messages by their primary key',
            "key",
        )

    def _absent(self, index: int, value: object, *, deleting: bool = False) -> Refused:
        column = self._columns[index]
        what = "missing" if value is MISSING else "null"
        if deleting:
            return Refused(
                f"the tombstone's key has no value for primary key column {column.name}", "key"
            )
        if column.name in self.target.primary_key:
            return Refused(f"{column.source} is {what}; every row needs its primary key", "null")
        return Refused(
            f"{column.source} is {what} but the column is NOT NULL; send the field, or declare "
            f"the column nullable",
            "missing" if value is MISSING else "null",
        )

    def _error(self, record: Record, index: int, error: Refused) -> MappingError:
        column = self._columns[index]
        return MappingError(
            record.coordinates,
            f"{error.reason} (source {column.source}, type {column.type_name})",
            table=self.target.name,
            column=column.name,
            code=error.code,
        )

    def _check_json_nul(self, record: Record, row: list[object]) -> None:
        for index in self._json_columns:
            where = _nul_path(row[index])
            if where is not None:
                raise self._error(record, index, _nul_reject(where))


def _nul_reject(where: str) -> Refused:
    return Refused(
        f"JSON holds a NUL character (\\u0000) at {where}, which jsonb cannot store", "nul"
    )


def _nul_screen(target: Target, json_columns: Iterable[_Column]) -> Callable[[Message], bool]:
    """A cheap test of the raw message: False when no JSON column can hold a NUL character,
    which spares walking every JSON value. Valid JSON text holds NUL only as the escape
    `\\u0000`; string-format text holds it as the byte itself."""
    kinds = {column.source.kind for column in json_columns}
    checks: list[Callable[[Message], bool]] = []
    for kind, fmt, part in (
        (SourceKind.VALUE, target.value_format, _VALUE),
        (SourceKind.KEY, target.key_format, _KEY),
    ):
        if kind in kinds:
            checks.append(_contains(part, b"\\u0000" if fmt is Format.JSON else b"\x00"))
    if kinds - {SourceKind.VALUE, SourceKind.KEY}:
        checks.append(lambda m: True)  # metadata and headers are short: always walk them
    if len(checks) == 1:
        return checks[0]
    return lambda message: any(check(message) for check in checks)


def _contains(part: int, needle: bytes) -> Callable[[Message], bool]:
    def check(message: Message) -> bool:
        data = message[part]
        return data is not None and needle in data  # type: ignore[operator]

    return check


# Positions of key and value in a Message (a NamedTuple).
_KEY = Message._fields.index("key")
_VALUE = Message._fields.index("value")


def _binary_parameter(type_: sa.types.TypeEngine[Any], element_oid: int) -> int:
    """What the native line's binary field of a column needs beyond its kind: a NUMERIC(p, s)'s
    scale s (its values' display scale; -1 for a NUMERIC, whose values keep theirs), an array's
    element OID."""
    if isinstance(type_, sa.ARRAY):
        return element_oid
    if isinstance(type_, sa.Numeric) and not isinstance(type_, sa.Float):
        return -1 if type_.precision is None else type_.scale or 0
    return 0


def compile_mapper(target: Target) -> Mapper:
    """Compile a target's per-column plan once; reuse the Mapper for every message."""
    return Mapper(target)


# --- dead letters ---------------------------------------------------------------------------


def dead_letter_row(
    message: Message, error: MessageError, failed_at: datetime
) -> tuple[object, ...]:
    """A row of the dead-letter table (sink.tables.dead_letter_table) for a rejected message.

    Every value is one PostgreSQL stores whatever the message holds: a row it refused would be
    refused again each time the batch is retried. So the headers are `storable_headers`, text
    has NUL and lone surrogates escaped, and a Kafka timestamp a datetime cannot hold is NULL,
    the reason saying why."""
    reason = storable_text(str(error))
    timestamp = kafka_instant(message.timestamp_ms)
    if timestamp is None and message.timestamp_ms is not None:
        reason += f"; the timestamp is NULL: {kafka_timestamp_out_of_range(message.timestamp_ms)}"
    return (
        storable_text(message.topic),
        message.partition,
        message.offset,
        timestamp,
        message.key,
        message.value,
        storable_headers(message),
        storable_text(error.code),
        reason,
        failed_at,
    )


def storable_text(text: str) -> str:
    """Text PostgreSQL can store: NUL written as `\\x00`, a lone surrogate as `\\udcff`."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _is_storable(text: str) -> bool:
    """Text PostgreSQL's text and jsonb can hold as it is: UTF-8, without NUL."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


_UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def _stored_header_value(value: bytes | None) -> str | dict[str, str] | None:
    if value is None:
        return None
    if b"\x00" not in value:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"base64": base64.b64encode(value).decode("ascii")}


def storable_headers(message: Message) -> dict[str, object]:
    """Headers as a JSON object that jsonb stores whatever they hold, every byte kept, for the
    dead-letter table.

    A name maps to its value: its UTF-8 text, null for no value, or `{"base64": ...}` for bytes
    that are not text PostgreSQL can store (not UTF-8, or with NUL). A name given more than
    once maps to the list of its values, in order. A name PostgreSQL cannot store (with NUL or a
    lone surrogate) is only stood in for by its key (those characters as U+FFFD): its value is
    then an object with the name's UTF-8 bytes in "name_base64", and the value in "text" or
    "base64" (neither for no value)."""
    values: dict[str, list[object]] = {}
    for name, value in message.headers:
        stored: object = _stored_header_value(value)
        key = name
        if not _is_storable(name):
            exact = name.encode("utf-8", "surrogatepass")
            entry = {"name_base64": base64.b64encode(exact).decode("ascii")}
            if isinstance(stored, str):
                entry["text"] = stored
            elif isinstance(stored, dict):
                entry.update(stored)
            stored = entry
            key = _UNSTORABLE_CHARACTER.sub("\ufffd", name)
        values.setdefault(key, []).append(stored)
    return {key: found[0] if len(found) == 1 else found for key, found in values.items()}
