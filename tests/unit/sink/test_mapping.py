"""Mapping: decoded records become row tuples, each value coerced to its column's type; a value
that does not fit names the message, table, column, and what to do."""

from __future__ import annotations

import functools
import math
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import orjson
import pytest

from sink import exactjson, mapping
from sink.config import ColumnSettings, Format, TableSettings, TombstonePolicy
from sink.config import parse_column_type as ctype
from sink.config import parse_source as source
from sink.decode import decode
from sink.errors import DecodeError, MappingError
from sink.mapping import Mapper, compile_mapper, dead_letter_row
from sink.records import Message, Record
from sink.tables import tables_from_config
from tests.oracle import mapped_row

UTC = timezone.utc


def mapper(
    *columns: tuple[str, str] | tuple[str, str, str] | tuple[str, str, str, bool],
    primary_key: tuple[str, ...] = (),
    key_format: Format = Format.STRING,
    value_format: Format = Format.JSON,
) -> Mapper:
    settings = []
    for spec in columns:
        name, type_text = spec[0], spec[1]
        src = spec[2] if len(spec) > 2 else f"value.{name}"  # type: ignore[misc]
        nullable = spec[3] if len(spec) > 3 else name not in primary_key  # type: ignore[misc]
        settings.append(ColumnSettings(name, ctype(type_text), source(src), nullable))
    table = TableSettings(
        schema="app",
        name="events",
        columns=tuple(settings),
        topics=("events",),
        primary_key=primary_key,
        tombstones=TombstonePolicy.DELETE if primary_key else TombstonePolicy.IGNORE,
        key_format=key_format,
        value_format=value_format,
    )
    return compile_mapper(tables_from_config([table]).targets[0])


def record(
    value: object,
    key: bytes | None = None,
    *,
    headers: tuple[tuple[str, bytes | None], ...] = (),
    key_format: Format = Format.STRING,
    value_format: Format = Format.JSON,
) -> Record:
    raw = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
    message = Message("events", 2, 77, 1_700_000_000_123, key, raw, headers)
    return decode(message, key_format, value_format)


def one(type_text: str, value: object) -> object:
    """The value a single nullable column of this type gets from {"v": value}."""
    return mapped_row(mapper(("v", type_text)), record({"v": value}))[0]


def refusal(type_text: str, value: object) -> MappingError:
    with pytest.raises(MappingError) as caught:
        one(type_text, value)
    return caught.value


# --- the row ---------------------------------------------------------------------------------


def test_a_seven_column_event_maps_to_a_row_in_column_order() -> None:
    m = mapper(
        ("id", "BIGINT"),
        ("ts", "TIMESTAMPTZ"),
        ("kind", "VARCHAR(16)"),
        ("amount", "NUMERIC(12,2)"),
        ("payload", "JSONB"),
        ("tags", "TEXT[]"),
        ("offset", "BIGINT", "kafka.offset"),
        primary_key=("id",),
    )
    row = mapped_row(
        m,
        record(
            {
                "id": 1,
                "ts": "2024-05-01T12:00:00.5Z",
                "kind": "click",
                "amount": "12.5",
                "payload": {"a": [1, 2]},
                "tags": ["x", "y"],
                "ignored": True,
            }
        ),
    )
    assert row == (
        1,
        datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=UTC),
        "click",
        Decimal("12.50"),
        {"a": [1, 2]},
        ["x", "y"],
        77,
    )


def test_missing_optional_fields_and_nulls_become_null() -> None:
    m = mapper(("a", "TEXT"), ("b", "BIGINT"))
    assert mapped_row(m, record({"b": None})) == (None, None)


def test_nested_paths_whole_values_and_array_indexes_are_read() -> None:
    m = mapper(
        ("city", "TEXT", "value.address.city"),
        ("first", "TEXT", "value.items.0"),
        ("doc", "JSONB", "value"),
        ("deep", "TEXT", "value.a.b.c"),
    )
    value = {"address": {"city": "Oslo"}, "items": ["x"], "a": {}}
    assert mapped_row(m, record(value)) == ("Oslo", "x", value, None)


def test_kafka_metadata_columns() -> None:
    m = mapper(
        ("topic", "TEXT", "kafka.topic"),
        ("partition", "INTEGER", "kafka.partition"),
        ("offset", "BIGINT", "kafka.offset"),
        ("ts", "TIMESTAMPTZ", "kafka.timestamp"),
        ("raw_key", "BYTEA", "kafka.key"),
        ("key_text", "TEXT", "key"),
        ("headers", "JSONB", "kafka.headers"),
    )
    row = mapped_row(
        m, record({}, b"k1", headers=(("trace", b"abc"), ("bin", b"\xff"), ("none", None)))
    )
    assert row == (
        "events",
        2,
        77,
        datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC),
        b"k1",
        "k1",
        {"trace": "abc", "bin": "/w==", "none": None},
    )


def test_a_kafka_timestamp_past_the_year_9999_is_refused_naming_it() -> None:
    m = mapper(("id", "BIGINT"), ("ts", "TIMESTAMPTZ", "kafka.timestamp"))
    late = record({"id": 1})
    late = late._replace(message=late.message._replace(timestamp_ms=1_700_000_000_000_000))
    for path in (functools.partial(mapped_row, m), m.line):
        with pytest.raises(MappingError) as caught:
            path(late)
        assert caught.value.code == "range"
        assert "app.events.ts: the Kafka timestamp 1700000000000000 (milliseconds since 1970) " in (
            str(caught.value)
        )
        assert "after the year 9999" in str(caught.value)


def test_key_fields_are_read_from_a_json_key() -> None:
    m = mapper(("tenant", "TEXT", "key.tenant"), key_format=Format.JSON)
    assert mapped_row(m, record({}, b'{"tenant": "acme"}', key_format=Format.JSON)) == ("acme",)


def test_bytes_values_go_to_bytea() -> None:
    m = mapper(("raw", "BYTEA", "value"), value_format=Format.BYTES)
    assert mapped_row(m, record(b"\x00\x01", value_format=Format.BYTES)) == (b"\x00\x01",)


def test_string_values_go_to_text() -> None:
    m = mapper(("line", "TEXT", "value"), value_format=Format.STRING)
    assert mapped_row(m, record(b"hello", value_format=Format.STRING)) == ("hello",)


# --- coercions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_text", "given", "stored"),
    [
        ("BIGINT", 9_007_199_254_740_993, 9_007_199_254_740_993),
        ("BIGINT", "-42", -42),
        ("BIGINT", 3.0, 3),
        ("INTEGER", 2_147_483_647, 2_147_483_647),
        ("SMALLINT", "-32768", -32768),
        ("NUMERIC(12,2)", "12.345", Decimal("12.35")),
        ("NUMERIC(12,2)", 0.1, Decimal("0.10")),
        ("NUMERIC(12,2)", 7, Decimal("7.00")),
        (
            "NUMERIC",
            "123456789012345678901234567890.000000001",
            Decimal("123456789012345678901234567890.000000001"),
        ),
        ("NUMERIC(5)", "12345.4", Decimal("12345")),
        ("REAL", "1.5", 1.5),
        ("DOUBLE PRECISION", 2, 2.0),
        ("DOUBLE PRECISION", "NaN", None),  # checked below: NaN != NaN
        ("BOOLEAN", True, True),
        ("BOOLEAN", "false", False),
        ("BOOLEAN", "TRUE", True),
        ("BOOLEAN", 1, True),
        ("TEXT", "héllo", "héllo"),
        ("TEXT", 42, "42"),
        ("TEXT", 1.5, "1.5"),
        ("TEXT", True, "true"),
        ("TEXT", {"a": 1}, '{"a":1}'),
        ("VARCHAR(3)", "abc", "abc"),
        (
            "UUID",
            "6f1c3c5e-1b7a-4bb0-9a44-1d2f3b4c5d6e",
            uuid.UUID("6f1c3c5e-1b7a-4bb0-9a44-1d2f3b4c5d6e"),
        ),
        (
            "UUID",
            "6F1C3C5E1B7A4BB09A441D2F3B4C5D6E",
            uuid.UUID("6f1c3c5e-1b7a-4bb0-9a44-1d2f3b4c5d6e"),
        ),
        ("BYTEA", "AAEC", b"\x00\x01\x02"),
        ("BYTEA", "-_8", b"\xfb\xff"),
        ("JSONB", {"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}),
        ("JSONB", [1, 2], [1, 2]),
        ("JSONB", "text", "text"),
        ("JSON", 5, 5),
        ("TIMESTAMPTZ", "2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("TIMESTAMPTZ", "2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        (
            "TIMESTAMPTZ",
            "2024-05-01 12:00:00.123456789Z",
            datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
        ),
        ("TIMESTAMPTZ", "2024-05-01T12:00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("TIMESTAMPTZ", 1_714_564_800_000, datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("TIMESTAMPTZ", 1_714_564_800_000.5, datetime(2024, 5, 1, 12, 0, 0, 500, tzinfo=UTC)),
        ("TIMESTAMP", "2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12)),
        ("TIMESTAMP", "2024-05-01T12:00:00", datetime(2024, 5, 1, 12)),
        ("TIMESTAMP", 0, datetime(1970, 1, 1)),
        ("DATE", "2024-05-01", date(2024, 5, 1)),
        ("DATE", "2024-05-01T23:30:00-02:00", date(2024, 5, 2)),
        ("DATE", 1_714_564_800_000, date(2024, 5, 1)),
        ("TIME", "13:45:00", time(13, 45)),
        ("TIME", "13:45:00.25+02:00", time(13, 45, 0, 250000)),
        ("INTERVAL", 90, timedelta(seconds=90)),
        ("INTERVAL", "PT1H30M", timedelta(hours=1, minutes=30)),
        ("INTERVAL", "P1DT2.5S", timedelta(days=1, seconds=2.5)),
        ("INTERVAL", "-P2W", timedelta(weeks=-2)),
        ("INTERVAL", "01:02:03", timedelta(hours=1, minutes=2, seconds=3)),
        ("BIGINT[]", [1, "2", None], [1, 2, None]),
        ("TEXT[]", ["a", 1], ["a", "1"]),
        (
            "UUID[]",
            ["6f1c3c5e-1b7a-4bb0-9a44-1d2f3b4c5d6e"],
            [uuid.UUID("6f1c3c5e-1b7a-4bb0-9a44-1d2f3b4c5d6e")],
        ),
        ("TIMESTAMPTZ[]", ["2024-05-01T12:00:00Z"], [datetime(2024, 5, 1, 12, tzinfo=UTC)]),
    ],
)
def test_values_are_coerced_to_the_column_type(
    type_text: str, given: object, stored: object
) -> None:
    result = one(type_text, given)
    if stored is None:
        assert isinstance(result, float)
        assert math.isnan(result)
    else:
        assert result == stored
        assert type(result) is type(stored)


def test_timestamps_with_offsets_are_stored_as_utc_instants() -> None:
    result = one("TIMESTAMPTZ", "2024-05-01T23:30:00-05:00")
    assert isinstance(result, datetime)
    assert result.tzinfo is UTC
    assert result == datetime(2024, 5, 2, 4, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("type_text", "given", "reason"),
    [
        ("BIGINT", "12a", "expected an integer, got a string ('12a')"),
        ("BIGINT", "1_000", "expected an integer"),
        ("BIGINT", 1.5, "expected a whole number, got a number (1.5)"),
        ("BIGINT", True, "expected an integer, got a boolean (true)"),
        ("BIGINT", {"a": 1}, "expected an integer, got an object"),
        ("BIGINT", 2**63, "9223372036854775808 is out of range for BIGINT; use a wider type"),
        ("BIGINT", 1e300, "is out of range for BIGINT"),
        ("BIGINT", 2.0**60, "beyond 2**53 and was read as an inexact JSON float"),
        ("INTEGER", 2**31, "out of range for INTEGER"),
        ("SMALLINT", 40000, "out of range for SMALLINT"),
        (
            "NUMERIC(5,2)",
            "1234.5",
            "does not fit NUMERIC(5,2): at most 3 digits before the decimal",
        ),
        ("NUMERIC(5,2)", "999.995", "does not fit NUMERIC(5,2)"),
        ("NUMERIC(5,2)", "abc", "expected a number, got a string ('abc')"),
        ("NUMERIC", "NaN", "NUMERIC takes finite numbers only"),
        ("NUMERIC", "1e999999", "beyond PostgreSQL's NUMERIC limits"),
        ("REAL", 1e39, "out of range for REAL; use DOUBLE PRECISION"),
        ("DOUBLE PRECISION", "fast", "expected a number"),
        ("DOUBLE PRECISION", [1], "expected a number, got an array"),
        ("BOOLEAN", "yes", "expected a boolean"),
        ("BOOLEAN", 2, "expected a boolean"),
        ("TEXT", "a\x00b", "NUL character at position 1"),
        ("VARCHAR(3)", "abcd", "4 characters is longer than VARCHAR(3)'s limit of 3"),
        ("UUID", "not-a-uuid", "expected a UUID string"),
        ("UUID", 5, "expected a UUID string, got a number (5)"),
        ("BYTEA", "not base64!", "expected base64 text for BYTEA"),
        ("BYTEA", 5, "expected base64 text or bytes"),
        ("TIMESTAMPTZ", "yesterday", "expected an ISO 8601 timestamp"),
        ("TIMESTAMPTZ", "2024-13-01T00:00:00Z", "is not a valid timestamp: month must be in 1..12"),
        ("TIMESTAMPTZ", 1e20, "out of range as epoch milliseconds"),
        ("TIMESTAMPTZ", True, "expected an ISO 8601 timestamp string or epoch milliseconds"),
        ("DATE", "May 1st", "expected an ISO 8601 timestamp"),
        ("TIME", "25:00", "expected an ISO 8601 time of day"),
        ("TIME", 5, "expected an ISO 8601 time of day"),
        ("INTERVAL", "P1Y", "ISO 8601 duration without years or months"),
        ("INTERVAL", "P", "expected seconds"),
        ("INTERVAL", 1e300, "out of range for INTERVAL"),
        ("JSONB", {"a": "x\u0000"}, "JSON holds a NUL character (\\u0000) at .a"),
        ("JSONB", ["ok", {"k": ["\u0000"]}], "at [1].k[0]"),
        ("BIGINT[]", [1, "x"], "element 1: expected an integer"),
        ("BIGINT[]", 5, "expected an array, got a number (5)"),
        ("TEXT[]", ["a", "\u0000"], "element 1: text contains a NUL"),
    ],
)
def test_values_that_do_not_fit_are_refused_with_the_reason(
    type_text: str, given: object, reason: str
) -> None:
    error = refusal(type_text, given)
    assert reason in str(error)


def test_an_error_names_coordinates_table_column_source_and_type() -> None:
    m = mapper(("id", "BIGINT"), ("amount", "NUMERIC(5,2)", "value.order.amount"))
    with pytest.raises(MappingError) as caught:
        mapped_row(m, record({"id": 1, "order": {"amount": "1234.5"}}))
    error = caught.value
    assert str(error) == (
        "events[2]@77: app.events.amount: a string ('1234.5') does not fit NUMERIC(5,2): at most "
        "3 digits before the decimal point; widen the column's precision "
        "(source value.order.amount, type NUMERIC(5, 2))"
    )
    assert (error.coordinates, error.table, error.column, error.code) == (
        "events[2]@77",
        "app.events",
        "amount",
        "range",
    )
    assert isinstance(error, DecodeError)


def test_a_missing_required_field_names_its_path() -> None:
    m = mapper(("id", "BIGINT"), ("kind", "TEXT", "value.meta.kind", False))
    with pytest.raises(
        MappingError,
        match=r"app.events.kind: value.meta.kind is missing but the column is NOT NULL; "
        r"send the field, or declare the column nullable",
    ) as caught:
        mapped_row(m, record({"id": 1}))
    assert caught.value.code == "missing"


def test_a_null_required_field_is_refused() -> None:
    m = mapper(("kind", "TEXT", "value.kind", False))
    with pytest.raises(MappingError, match=r"value.kind is null but the column is NOT NULL"):
        mapped_row(m, record({"kind": None}))


def test_a_null_primary_key_is_refused() -> None:
    m = mapper(("id", "BIGINT"), primary_key=("id",))
    with pytest.raises(MappingError, match=r"value.id is null; every row needs its primary key"):
        mapped_row(m, record({"id": None}))


def test_a_field_under_a_non_object_names_the_structure() -> None:
    m = mapper(("city", "TEXT", "value.address.city"))
    with pytest.raises(
        MappingError, match=r"cannot read value.address.city: value.address is a string"
    ):
        mapped_row(m, record({"address": "Main St"}))
    with pytest.raises(MappingError, match=r"cannot read value.address.city: value is an array"):
        mapped_row(m, record([1, 2]))


def test_a_nul_in_a_string_value_for_jsonb_is_found_only_where_it_is() -> None:
    m = mapper(("doc", "JSONB", "value"), value_format=Format.STRING)
    assert mapped_row(m, record(b"plain", value_format=Format.STRING)) == ("plain",)
    with pytest.raises(MappingError, match=r"NUL character"):
        mapped_row(m, record(b"a\x00b", value_format=Format.STRING))


def test_an_escaped_backslash_u0000_is_not_a_nul() -> None:
    text = "C:\\u0000dir"  # a backslash followed by u0000: legal in jsonb
    assert one("JSONB", {"path": text}) == {"path": text}


def test_bytes_into_a_json_column_are_refused() -> None:
    m = mapper(("doc", "JSONB", "value"), value_format=Format.BYTES)
    with pytest.raises(MappingError, match=r"bytes are not JSON"):
        mapped_row(m, record(b"{}", value_format=Format.BYTES))


# --- tombstones ------------------------------------------------------------------------------


def tombstone(key: bytes | None, key_format: Format = Format.STRING) -> Record:
    return decode(Message("events", 2, 78, None, key, None), key_format, Format.JSON)


def test_a_scalar_key_is_the_single_column_primary_key() -> None:
    m = mapper(("id", "BIGINT"), ("v", "TEXT"), primary_key=("id",))
    assert m.key_values(tombstone(b"42")) == (42,)


def test_a_json_object_key_gives_a_composite_key_by_column_name() -> None:
    m = mapper(
        ("tenant", "TEXT"), ("id", "UUID"), primary_key=("tenant", "id"), key_format=Format.JSON
    )
    key = b'{"id": "6f1c3c5e-1b7a-4bb0-9a44-1d2f3b4c5d6e", "tenant": "acme"}'
    assert m.key_values(tombstone(key, Format.JSON)) == (
        "acme",
        uuid.UUID("6f1c3c5e-1b7a-4bb0-9a44-1d2f3b4c5d6e"),
    )


def test_a_key_object_may_name_the_source_field_instead_of_the_column() -> None:
    m = mapper(
        ("order_id", "BIGINT", "value.id"), primary_key=("order_id",), key_format=Format.JSON
    )
    assert m.key_values(tombstone(b'{"id": 5}', Format.JSON)) == (5,)


def test_key_sourced_and_metadata_primary_keys_are_read_as_in_rows() -> None:
    m = mapper(
        ("topic", "TEXT", "kafka.topic"),
        ("k", "TEXT", "key"),
        ("v", "TEXT"),
        primary_key=("topic", "k"),
    )
    assert m.key_values(tombstone(b"abc")) == ("events", "abc")


def test_a_key_that_does_not_fit_the_primary_key_is_refused() -> None:
    m = mapper(("a", "TEXT"), ("b", "TEXT"), primary_key=("a", "b"), key_format=Format.JSON)
    with pytest.raises(
        MappingError,
        match=r"events\[2\]@78: app.events.a: a tombstone's key must be a JSON object "
        r"with the primary key fields \(a, b\)",
    ):
        m.key_values(tombstone(b'"just-a-string"', Format.JSON))
    with pytest.raises(
        MappingError, match=r"the tombstone's key has no value for primary key column b"
    ):
        m.key_values(tombstone(b'{"a": "x"}', Format.JSON))


def test_a_tombstone_without_key_cannot_delete() -> None:
    m = mapper(("id", "BIGINT"), primary_key=("id",))
    with pytest.raises(MappingError, match=r"app.events.id: the tombstone's key has no value"):
        m.key_values(tombstone(None))


def test_a_non_numeric_key_for_a_bigint_key_is_refused() -> None:
    m = mapper(("id", "BIGINT"), primary_key=("id",))
    with pytest.raises(MappingError, match=r"expected an integer, got a string"):
        m.key_values(tombstone(b"abc"))


# --- rows from a tables module ---------------------------------------------------------------


def test_rows_from_map_record_are_coerced_and_checked() -> None:
    m = mapper(("id", "BIGINT"), ("ts", "TIMESTAMPTZ"), primary_key=("id",))
    r = record({})
    assert m.coerce(r, ("7", "2024-05-01T12:00:00Z")) == (7, datetime(2024, 5, 1, 12, tzinfo=UTC))
    with pytest.raises(MappingError, match=r"map_record gave 1 values for 2 columns"):
        m.coerce(r, (7,))
    with pytest.raises(MappingError, match=r"app.events.id: .*every row needs its primary key"):
        m.coerce(r, (None, None))


def test_a_dead_letter_row_keeps_the_message_and_the_reason() -> None:
    message = Message("events", 2, 77, 1_700_000_000_123, b"k", b"{bad", (("h", b"v"),))
    error = DecodeError("events[2]@77", "value is not JSON", code="not-json")
    failed_at = datetime(2024, 1, 1, tzinfo=UTC)
    assert dead_letter_row(message, error, failed_at) == (
        "events",
        2,
        77,
        datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC),
        b"k",
        b"{bad",
        {"h": "v"},
        "not-json",
        "events[2]@77: value is not JSON",
        failed_at,
    )


# --- exact numbers ---------------------------------------------------------------------------

EXACT_COLUMNS = (
    ("amount", "NUMERIC(30,18)"),
    ("free", "NUMERIC"),
    ("doc", "JSONB"),
    ("note", "TEXT"),
    ("ratio", "DOUBLE PRECISION"),
)
# Numbers a float read from the message would round: 0.12345678901234568, 1.5, 1e+29, ...
INEXACT = (
    b'{"amount": 0.123456789012345678, "free": 1.50, "doc": {"big": 123456789012345678901234567890,'
    b' "e": 1e2}, "note": 0.123456789012345678, "ratio": 0.123456789012345678}'
)


@pytest.fixture(params=["native", "python"])
def screen(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """With the C extension's numbers_round_trip, and with its Python form."""
    if request.param == "python":
        monkeypatch.setattr(mapping, "numbers_round_trip", exactjson.python_numbers_round_trip)
    return str(request.param)


def test_numbers_keep_the_digits_the_message_wrote(screen: str) -> None:
    m = mapper(*EXACT_COLUMNS)
    assert mapped_row(m, record(INEXACT)) == (
        Decimal("0.123456789012345678"),
        Decimal("1.50"),
        {"big": 123456789012345678901234567890, "e": Decimal("1E+2")},
        "0.123456789012345678",
        0.12345678901234568,  # a float column takes the float
    )
    assert m.line(record(INEXACT)) == (
        "0.123456789012345678\t1.50\t"
        '{"big":123456789012345678901234567890,"e":1E+2}\t'
        "0.123456789012345678\t0.12345678901234568\n"
    )


def test_numbers_a_float_keeps_are_read_as_floats(screen: str) -> None:
    m = mapper(*EXACT_COLUMNS)
    value = {"amount": 12.5, "free": -0.0, "doc": {"x": [2.5, 1e-4]}, "note": 100.0, "ratio": 0.1}
    assert mapped_row(m, record(value)) == (
        Decimal("12.5"),
        Decimal("-0.0"),
        value["doc"],
        "100.0",
        0.1,
    )
    assert m.line(record(value)) == '12.500000000000000000\t-0.0\t{"x":[2.5,0.0001]}\t100.0\t0.1\n'


def test_a_number_no_exact_decimal_holds_is_a_mapping_error_not_a_crash(screen: str) -> None:
    """orjson reads 0E0000000000001876899999999989902 as 0.0; read exactly, its exponent is
    past Decimal's range: the message is refused (a dead letter), as any unreadable number."""
    m = mapper(*EXACT_COLUMNS)
    bad = record(b'{"amount": 0E0000000000001876899999999989902}')
    with pytest.raises(MappingError, match="cannot be read exactly: a number is out of the range"):
        m.line(bad)
    with pytest.raises(MappingError) as caught:
        mapped_row(m, bad)
    assert caught.value.code == "not-exact"


def test_a_key_keeps_the_digits_the_message_wrote() -> None:
    m = mapper(("id", "NUMERIC(30,18)", "key.id"), primary_key=("id",), key_format=Format.JSON)
    tombstone = record(None, b'{"id": 0.123456789012345678}', key_format=Format.JSON)
    assert m.key_values(tombstone) == (Decimal("0.123456789012345678"),)


def test_the_value_line_gives_up_on_floats_it_cannot_check() -> None:
    m = mapper(("id", "BIGINT"), ("amount", "NUMERIC(6,2)"), ("doc", "JSONB"))
    assert m.value_line is not None
    # No float reaches a column that keeps digits: no need to look at the message.
    assert m.value_line(None, {"id": 1, "amount": "1.5", "doc": {"a": 1}}) == '1\t1.5\t{"a":1}\n'
    # A float does: without the message's bytes, it may not be the number written.
    assert m.value_line(None, {"id": 1, "amount": 1.5}) is None
    assert m.value_line(None, {"id": 1, "doc": [2.5]}) is None
    # With them, the line where every number is as written.
    assert m.value_line(None, {"id": 1, "amount": 1.5}, b'{"id":1,"amount":1.5}') == (
        "1\t1.50\t\\N\n"
    )
    assert m.value_line(None, {"id": 1, "amount": 1.5}, b'{"id":1,"amount":1.50}') is None


def test_numbers_that_cannot_be_read_exactly_are_refused_naming_the_value() -> None:
    m = mapper(("doc", "JSONB"))
    deep = b'{"doc":' + b"[" * 1000 + b"1.50" + b"]" * 1000 + b"}"
    with pytest.raises(MappingError, match=r"app.events: the numbers of the value cannot be read"):
        m.line(record(deep))
