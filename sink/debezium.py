"""Debezium's change events: the envelope `{"before", "after", "source", "op", ...}` read into a
`Change`, and Debezium's semantic types (a schema name on a Connect or Avro type) read into the
values mapping takes. Pure: the pipeline decides what a change does to its table.
"""

from __future__ import annotations

import decimal
import enum
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, NamedTuple

import orjson

from sink.errors import Mismatch, NotAChange
from sink.exactjson import exact_loads, numbers_round_trip

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = date(1970, 1, 1)
_MIDNIGHT = datetime(1970, 1, 1)
_loads = orjson.loads
# PostgreSQL keeps microseconds: nanoseconds are cut to them.
_NANOS_PER_MICRO = 1000


class Op(enum.Enum):
    """A change event's `op`."""

    CREATE = "c"
    READ = "r"  # a row of the connector's snapshot
    UPDATE = "u"
    DELETE = "d"
    TRUNCATE = "t"
    MESSAGE = "m"  # a logical decoding message: no row of the table


# The ops whose `after` is the row as it now is.
UPSERTS = frozenset({Op.CREATE, Op.READ, Op.UPDATE})
_OPS = {op.value: op for op in Op}


class Change(NamedTuple):
    """One change event: its op, and the row before and after it (None where it has none)."""

    op: Op
    before: dict[str, object] | None
    after: dict[str, object] | None


def change(value: object) -> Change:
    """The change event a decoded value holds; raises NotAChange."""
    if type(value) is not dict or "op" not in value:
        raise NotAChange(
            f"the value is not a Debezium change event (an object with op, before and after), "
            f"got {_kind(value)}{_hint(value)}",
            "not-debezium",
        )
    code = value["op"]
    op = _OPS.get(code) if type(code) is str else None
    if op is None:
        raise NotAChange(
            f"the change event's op is {_shown(code)}, not one of "
            f"{', '.join(repr(known) for known in _OPS)}",
            "debezium-op",
        )
    before, after = value.get("before"), value.get("after")
    for name, row in (("before", before), ("after", after)):
        if row is not None and type(row) is not dict:
            raise NotAChange(
                f"the change event's {name} is {_kind(row)}, not a row (an object) or null",
                "not-debezium",
            )
    if op in UPSERTS and after is None:
        raise NotAChange(
            f'a change event with op "{op.value}" has no after: nothing to write', "not-debezium"
        )
    return Change(op, before, after)


def exact_json(data: bytes) -> object:
    """A JSON value read with every number as written (Decimal, int beyond 64 bits) where a
    float would not keep its digits; raises ValueError (or RecursionError) where it does not
    read."""
    return _loads(data) if numbers_round_trip(data) else exact_loads(data.decode("utf-8"))


def _hint(value: object) -> str:
    if type(value) is dict and value.keys() == {"schema", "payload"}:
        return '; it is Kafka Connect\'s JSON envelope: set value_format = "connect-json"'
    if type(value) is dict:
        return f" with the fields {', '.join(sorted(map(str, value)))[:200]}"
    return ""


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", type(None): "null"}.get(
        type(value), f"a {type(value).__name__}"
    )


# --- semantic types ---------------------------------------------------------------------------


def _whole(value: Any, what: str) -> int:
    if type(value) is not int:
        raise Mismatch(f"{what}, but the value is {_kind(value)}")
    return value


def _micros(unit: str) -> Callable[[int], int]:
    if unit == "milliseconds":
        return lambda count: count * 1000
    if unit == "nanoseconds":
        return lambda count: count // _NANOS_PER_MICRO
    return lambda count: count


def _since_epoch(unit: str) -> Callable[[Any], datetime]:
    to_micros = _micros(unit)

    def convert(value: Any) -> datetime:
        count = _whole(value, f"{unit} since 1970")
        try:
            return _EPOCH + timedelta(microseconds=to_micros(count))
        except OverflowError:
            raise Mismatch(f"{count} {unit} since 1970 is out of range") from None

    return convert


def _of_day(unit: str) -> Callable[[Any], time]:
    to_micros = _micros(unit)

    def convert(value: Any) -> time:
        count = _whole(value, f"{unit} since midnight")
        micros = to_micros(count)
        if not 0 <= micros < 86_400_000_000:
            raise Mismatch(f"{count} {unit} since midnight is not within a day")
        return (_MIDNIGHT + timedelta(microseconds=micros)).time()

    return convert


def _days(value: Any) -> date:
    days = _whole(value, "days since 1970")
    try:
        return _EPOCH_DAY + timedelta(days=days)
    except OverflowError:
        raise Mismatch(f"{days} days since 1970 is out of range") from None


def _duration(value: Any) -> timedelta:
    if type(value) not in (int, float):
        raise Mismatch(f"microseconds, but the value is {_kind(value)}")
    try:
        return timedelta(microseconds=value)
    except OverflowError:
        raise Mismatch(f"{value} microseconds is out of range") from None


def _variable_scale_decimal(value: Any) -> decimal.Decimal:
    if type(value) is not dict or type(value.get("value")) is not bytes:
        raise Mismatch(f"a struct of scale and value bytes, but the value is {_kind(value)}")
    scale = _whole(value.get("scale"), "a whole scale")
    unscaled = int.from_bytes(value["value"], "big", signed=True)
    return decimal.Decimal(unscaled).scaleb(-scale)


def _json_text(value: Any) -> object:
    if type(value) is not str:
        raise Mismatch(f"JSON text, but the value is {_kind(value)}")
    try:
        return exact_json(value.encode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise Mismatch(f"JSON text that does not read: {error}") from None


def _uuid(value: Any) -> uuid.UUID:
    if type(value) is not str:
        raise Mismatch(f"UUID text, but the value is {_kind(value)}")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise Mismatch(f"UUID text, but {_shown(value)} is not a UUID") from None


def _iso_text(value: Any) -> str:
    # ISO 8601 text with its offset: read by the column's type (TIMESTAMPTZ, TIME, TEXT).
    if type(value) is not str:
        raise Mismatch(f"ISO 8601 text, but the value is {_kind(value)}")
    return value


# By schema name (Connect's `name`, Avro's `connect.name`): the value as its Connect type gives
# it (an integer, text, bytes, or a struct as a dict) to the value mapping takes.
SEMANTIC_TYPES: Mapping[str, Callable[[Any], object]] = {
    "io.debezium.time.Date": _days,
    "io.debezium.time.Time": _of_day("milliseconds"),
    "io.debezium.time.MicroTime": _of_day("microseconds"),
    "io.debezium.time.NanoTime": _of_day("nanoseconds"),
    "io.debezium.time.Timestamp": _since_epoch("milliseconds"),
    "io.debezium.time.MicroTimestamp": _since_epoch("microseconds"),
    "io.debezium.time.NanoTimestamp": _since_epoch("nanoseconds"),
    "io.debezium.time.ZonedTimestamp": _iso_text,
    "io.debezium.time.ZonedTime": _iso_text,
    "io.debezium.time.MicroDuration": _duration,
    "io.debezium.data.VariableScaleDecimal": _variable_scale_decimal,
    "io.debezium.data.Uuid": _uuid,
    "io.debezium.data.Json": _json_text,
}
