"""Binary COPY encoding of values and rows (pure); its bytes are checked against PostgreSQL's
own in tests/integration/pg_bulk_ingest/test_binary_copy.py. The C row encoder is checked
against the Python encoders, its specification, value by value."""

from __future__ import annotations

import datetime
import decimal
import struct
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql as pg

from pg_bulk_ingest import CopyRow, _binary, _binrow
from pg_bulk_ingest._binary import (
    DEARER_IN_BINARY,
    DEARER_IN_C,
    HEADER,
    TRAILER,
    TableEncoder,
    binary_pays,
    binary_row_encoder,
    field_encoder,
    native_row_encoder,
    numeric_field,
    python_row_encoder,
)
from pg_bulk_ingest._errors import NotBinary
from pg_bulk_ingest._types import PgType, pg_type

D = decimal.Decimal
UTC = datetime.timezone.utc


def of(type_: Any) -> PgType:
    found = pg_type(sa.types.to_instance(type_))
    assert found is not None
    return found


def field(type_: Any, value: Any) -> bytes:
    encode = field_encoder(of(type_))
    assert encode is not None
    return encode(value)


def numeric_value(data: bytes) -> D:
    """The Decimal a NUMERIC field holds, read as numeric_recv reads it."""
    length, ndigits, weight, sign, scale = struct.unpack_from(">ihhHH", data)
    assert length == 8 + 2 * ndigits
    digits = struct.unpack_from(f">{ndigits}H", data, 12)
    assert all(0 <= digit < 10000 for digit in digits)
    assert not digits or (digits[0] and digits[-1])  # no zero digit leads or ends
    integer = int("".join(f"{digit:04d}" for digit in digits) or "0")
    value = D(integer).scaleb(4 * (weight - ndigits + 1), decimal.Context(prec=10_000))
    value = value.quantize(D(1).scaleb(-scale), context=decimal.Context(prec=10_000))
    return value.copy_negate() if sign == 0x4000 else value


def test_the_header_is_postgresql_s_19_bytes_and_the_trailer_minus_one() -> None:
    assert HEADER == b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
    assert len(HEADER) == 19
    assert TRAILER == b"\xff\xff"


def test_a_row_is_its_field_count_then_each_field_with_its_length() -> None:
    encode = binary_row_encoder([of(sa.BIGINT), of(sa.TEXT), of(sa.BOOLEAN)])
    assert encode is not None
    assert (
        encode((7, "é", None))
        == (
            b"\x00\x03" + b"\x00\x00\x00\x08" + (7).to_bytes(8, "big") + b"\x00\x00\x00\x02\xc3\xa9"
        )
        + b"\xff\xff\xff\xff"
    )


def test_a_table_with_a_real_column_has_no_binary_row_encoder() -> None:
    assert binary_row_encoder([of(sa.BIGINT), of(sa.REAL)]) is None
    assert binary_row_encoder([of(pg.ARRAY(sa.REAL))]) is None


def test_binary_pays_for_all_but_json_with_the_c_row_encoder() -> None:
    assert DEARER_IN_BINARY is DEARER_IN_C  # the tests run with the extension built
    assert binary_pays([of(sa.BIGINT), of(sa.TIMESTAMP(timezone=True)), of(sa.TEXT)])
    cheaper: Any
    for cheaper in (sa.NUMERIC(12, 2), pg.JSONB, pg.ARRAY(sa.TEXT)):
        assert binary_pays([of(sa.BIGINT), of(cheaper)])
    assert not binary_pays([of(sa.BIGINT), of(pg.JSON)])


def test_binary_pays_not_for_numeric_json_or_arrays_in_python_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_binary, "DEARER_IN_BINARY", _binary.DEARER_IN_PYTHON)
    assert binary_pays([of(sa.BIGINT), of(sa.TIMESTAMP(timezone=True)), of(sa.TEXT)])
    dearer: Any
    for dearer in (sa.NUMERIC(12, 2), pg.JSONB, pg.JSON, pg.ARRAY(sa.TEXT)):
        assert not binary_pays([of(sa.BIGINT), of(dearer)])


@given(
    st.decimals(allow_nan=False, allow_infinity=False, places=None)
    | st.decimals(allow_nan=False, allow_infinity=False, places=6)
)
def test_numeric_fields_hold_the_decimal_and_its_display_scale(number: D) -> None:
    data = numeric_field(number)
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    assert numeric_value(data) == number
    assert struct.unpack_from(">H", data, 10) == (max(-exponent, 0),)


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        (sa.INTEGER, "12"),  # a string is PostgreSQL's to read
        (sa.INTEGER, True),  # the text path refuses a bool
        (sa.INTEGER, 2**31),  # out of range: PostgreSQL says so
        (sa.SMALLINT, D(1)),
        (sa.NUMERIC, "1.5"),
        (sa.NUMERIC, D("sNaN")),
        (sa.NUMERIC, D("-NaN")),
        (sa.NUMERIC(4, 2), D("99.995")),  # rounds to 100.00: numeric field overflow
        (sa.NUMERIC(4, 2), D("Infinity")),
        (sa.BOOLEAN, "yes"),
        (sa.TEXT, "nul\x00"),
        (sa.VARCHAR(2), "abc"),
        (sa.CHAR(2), "abc"),
        (sa.DATE, datetime.datetime(2024, 1, 1)),
        (sa.DATE, "2024-01-01"),
        (sa.TIME, datetime.time(1, tzinfo=UTC)),
        (sa.TIMESTAMP, "2024-01-01"),
        (
            sa.TIMESTAMP(timezone=True),
            datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(seconds=30))),
        ),
        (pg.INTERVAL, "1 day"),
        (pg.UUID, "12345678-1234-5678-1234-567812345678"),
        (pg.JSONB, "nul\x00"),
        (pg.ARRAY(sa.INTEGER), [[1, 2], [3]]),  # ragged
        (pg.ARRAY(sa.INTEGER), [1, [2]]),
        (pg.ARRAY(sa.INTEGER), [[], []]),
        (pg.ARRAY(sa.INTEGER), "12"),
        (pg.ARRAY(sa.TEXT), [1]),  # an element's text is the text path's own
        (pg.ARRAY(pg.DOUBLE_PRECISION), ["1.5"]),
        (pg.ARRAY(pg.JSONB), [{"a": 1}, [1, 2]]),  # a sub-array to the text path
        (pg.ARRAY(sa.VARCHAR(1)), ["ab"]),
    ],
)
def test_values_binary_cannot_carry_as_their_text_means_are_refused(type_: Any, value: Any) -> None:
    with pytest.raises((NotBinary, struct.error)):
        field(type_, value)


def test_values_are_taken_as_the_text_path_takes_them() -> None:
    assert field(pg.DOUBLE_PRECISION, "0.5") == field(pg.DOUBLE_PRECISION, 0.5)  # float(str)
    assert field(pg.DOUBLE_PRECISION, 2) == field(pg.DOUBLE_PRECISION, 2.0)
    assert field(sa.BOOLEAN, 5) == field(sa.BOOLEAN, True)  # truthiness
    assert field(sa.TEXT, 42) == field(sa.TEXT, "42")  # str()
    assert field(sa.NUMERIC, 0.1) == field(sa.NUMERIC, D("0.1"))  # the float's shortest digits
    naive = datetime.datetime(2024, 1, 1, 12)
    aware = naive.replace(tzinfo=UTC)
    assert field(sa.TIMESTAMP(timezone=True), naive) == field(sa.TIMESTAMP(timezone=True), aware)
    assert field(
        sa.TIMESTAMP, aware.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
    ) == (field(sa.TIMESTAMP, naive))
    assert field(pg.UUID, uuid.UUID(int=1))[4:] == (1).to_bytes(16, "big")


def test_a_nan_is_the_one_nan_float8in_makes() -> None:
    negative_nan = struct.unpack(">d", bytes.fromhex("fff8000000000001"))[0]
    assert field(pg.DOUBLE_PRECISION, negative_nan) == field(pg.DOUBLE_PRECISION, float("nan"))


def test_a_table_goes_on_in_text_from_the_first_row_binary_cannot_carry() -> None:
    encoder = TableEncoder([of(sa.BIGINT), of(sa.TIMESTAMP(timezone=True))], binary=True)
    at = datetime.datetime(2024, 1, 1, tzinfo=UTC)
    assert isinstance(encoder.encode((1, at)), bytes)
    assert encoder.encode((2, "2024-01-02 00:00Z")) == "2\t2024-01-02 00:00Z\n"
    assert encoder.encode((3, at)) == "3\t2024-01-01T00:00:00+00:00\n"
    assert not encoder.binary


def test_attempt_raises_for_a_row_binary_cannot_carry_and_is_text_once_encode_turned() -> None:
    encoder = TableEncoder([of(sa.BIGINT), of(sa.TIMESTAMP(timezone=True))], binary=True)
    at = datetime.datetime(2024, 1, 1, tzinfo=UTC)
    assert encoder.attempt((1, at)) == encoder.encode((1, at))
    with pytest.raises(NotBinary):
        encoder.attempt((2, "2024-01-02 00:00Z"))
    assert encoder.encode((2, "2024-01-02 00:00Z")) == "2\t2024-01-02 00:00Z\n"
    assert encoder.attempt((3, at)) == "3\t2024-01-01T00:00:00+00:00\n"


def test_a_copy_row_turns_its_table_to_text() -> None:
    encoder = TableEncoder([of(sa.BIGINT), of(sa.TEXT)], binary=True)
    assert isinstance(encoder.encode((1, "a")), bytes)
    assert encoder.encode(CopyRow("2\tb\n")) == "2\tb\n"
    assert encoder.encode((3, "c")) == "3\tc\n"


def test_a_table_is_text_throughout_when_binary_is_not_allowed() -> None:
    encoder = TableEncoder([of(sa.BIGINT)], binary=False)
    assert encoder.encode((1,)) == "1\n"
    assert not encoder.binary


def test_a_row_the_text_path_refuses_raises_its_error() -> None:
    encoder = TableEncoder([of(sa.BIGINT)], binary=True)
    with pytest.raises(TypeError, match="bool"):
        encoder.encode((True,))


# The C row encoder (_binrow.c) against the Python encoders, its specification.

TZ = datetime.timezone
HOUR = datetime.timedelta(hours=1)
# (column type, values): the edges of each kind, and values the C encoder hands to Python.
NATIVE_CASES: list[tuple[Any, list[Any]]] = [
    (sa.SMALLINT, [0, -1, 32767, -32768, 32768, -32769, True, "1", 1.0, None]),
    (sa.INTEGER, [2**31 - 1, -(2**31), 2**31, -(2**31) - 1, None]),
    (sa.BIGINT, [2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 10**40, None]),
    (
        pg.DOUBLE_PRECISION,
        [
            0.0,
            -0.0,
            0.1,
            5e-324,
            1.7976931348623157e308,
            float("inf"),
            float("-inf"),
            float("nan"),
            struct.unpack(">d", bytes.fromhex("fff8000000000001"))[0],
            1,
            "0.5",
            D("1.5"),
            None,
        ],
    ),
    (
        sa.NUMERIC,
        [D(text) for text in ("0", "-0", "-0.00", "1", "10000", "100000000", "99999999")]
        + [D(text) for text in ("12345.6", "0.05", "-0.0010", "123456789.123456789", "1.000")]
        + [D(text) for text in ("1E+5", "12E+3", "1E-7", "-1.5E-10", "1E-1000", "1E+131072")]
        + [D(text) for text in ("NaN", "-NaN", "sNaN", "Infinity", "-Infinity")]
        + [D("9" * 600 + "." + "0123456789" * 40), D("-" + "1" * 1200), D("9" * 131072)]
        + [D("1" + "0" * 131071), D("1" + "0" * 131072)]  # the most digits before the point
        + [D("0." + "0" * 16382 + "1"), D("0." + "0" * 16383 + "1")]  # the largest scale
        + [12, 0.1, 1e16, float("-inf"), "1.5", True, None],
    ),
    (
        sa.NUMERIC(12, 2),
        [D(text) for text in ("-12.50", "1234567890.12", "9999999999.994", "9999999999.995")]
        + [D(text) for text in ("99999999999.99", "0.001", "0", "1E+9", "Infinity", "NaN")]
        + [5, None],
    ),
    (sa.NUMERIC(4, 2), [D("99.995"), D("99.994"), D("-99.995"), D("9.999")]),
    (sa.NUMERIC(5, -3), [D("12345678"), D("123456789"), 1499]),
    (sa.BOOLEAN, [True, False, 0, 5, "yes", [1], None]),
    (sa.TEXT, ["", "ünïcødé 🦆\t\\", "nul\x00", "\ud800", "x" * 5000, 42, None]),
    (sa.VARCHAR(3), ["abc", "abcd", "日本語", "日本語x", "", 1234, None]),
    (sa.CHAR(2), ["ab", "abc"]),
    (
        sa.DATE,
        [
            datetime.date(2000, 1, 1),
            datetime.date(1, 1, 1),
            datetime.date(9999, 12, 31),
            datetime.date(2024, 2, 29),
            datetime.date(1900, 2, 28),
            datetime.date(2400, 2, 29),
            datetime.datetime(2024, 1, 1),
            "2024-01-01",
            None,
        ],
    ),
    (
        sa.TIMESTAMP,
        [
            datetime.datetime(1969, 7, 20, 20, 17, 40, 123456),
            datetime.datetime(1, 1, 1),
            datetime.datetime(2262, 4, 11, 23, 47, 16),
            datetime.datetime(9999, 12, 31, 23, 59),
            datetime.datetime(2024, 1, 1, 3, tzinfo=TZ(3 * HOUR)),
            "2024-01-01",
            None,
        ],
    ),
    (
        sa.TIMESTAMP(timezone=True),
        [
            datetime.datetime(2024, 1, 1, tzinfo=UTC),
            datetime.datetime(1999, 12, 31, 23, 59),
            datetime.datetime(2040, 2, 29, 1, 2, 3, 4, tzinfo=TZ(-5 * HOUR)),
            datetime.datetime(2038, 1, 19, 3, 14, 8),
            datetime.datetime(1, 1, 1, 0, 30, tzinfo=TZ(HOUR)),
            datetime.datetime(2100, 1, 1, tzinfo=TZ(-HOUR * 9.5)),
            datetime.datetime(
                1900, 2, 28, 23, 59, tzinfo=TZ(datetime.timedelta(hours=23, minutes=59))
            ),
            datetime.datetime(2024, 1, 1, tzinfo=TZ(datetime.timedelta(seconds=30))),
            datetime.date(2024, 1, 1),
            "2024-01-01",
            None,
        ],
    ),
    (
        pg.JSONB,
        [
            {"a": [1, "é"]},
            "text",
            1,
            [1, None],
            {"x": "y" * 5000},
            {1: 2},
            None,
            {"a": D("1.5")},
            {"n": 2**70},
            "nul\x00",
            {"a": "\\u0000"},
            {"a": "\\\\u0000"},
            object(),
        ],
    ),
    (pg.JSON, [{"a": 1}, None]),
    (pg.UUID(as_uuid=True), [uuid.UUID(int=1), uuid.UUID(int=2**128 - 1), "x", None]),
    (pg.INTERVAL, [datetime.timedelta(days=-3, seconds=5), None]),
    (pg.BYTEA, [b"\x00\xff", b"", None]),
    (
        pg.ARRAY(sa.TEXT),
        [
            ["a", None, "é"],
            [],
            [None],
            (),
            ("a",),
            ["x" * 5000, "y"],
            None,
            [1],
            ["a", 1],
            ["nul\x00"],
            [["a"], ["b"]],
            [["a"], "b"],
            ["a", ["b"]],
            "ab",
        ],
    ),
    (pg.ARRAY(sa.VARCHAR(2)), [["ab", ""], ["abc"], ["ab", "abc"]]),
    (
        pg.ARRAY(sa.INTEGER),
        [
            [1, 2, None],
            [[1, 2], [3, None]],
            [[1, 2], [3]],
            [1, [2]],
            [[], []],
            [2**31],
            [True],
            "12",
        ],
    ),
    (pg.ARRAY(sa.NUMERIC(6, 2)), [[D("1.005"), None, D("NaN")], [D("10000.5"), 1]]),
    (pg.ARRAY(sa.NUMERIC), [[D("1.50"), D("NaN"), D("1E+5"), D("-Infinity")]]),
    (pg.ARRAY(pg.DOUBLE_PRECISION), [[float("nan"), -0.0, float("-inf")], ["1.5"], [1, 2.5]]),
    (pg.ARRAY(pg.JSONB), [[{"a": "b,c"}, None], [{"a": 1}, [1, 2]]]),
    (pg.ARRAY(sa.DATE), [[datetime.date(2024, 2, 29)], [datetime.datetime(2024, 1, 1)]]),
    (pg.ARRAY(sa.TIMESTAMP(timezone=True)), [[datetime.datetime(2024, 1, 1, tzinfo=UTC), None]]),
    (pg.ARRAY(pg.UUID), [[uuid.UUID(int=1)]]),
    (pg.ARRAY(pg.INTERVAL), [[datetime.timedelta(seconds=1)]]),
    (pg.ARRAY(sa.BOOLEAN), [[True, None], [[True]], [True, [False]]]),
]


def outcome(encode: Any, row: Any) -> tuple[str, Any]:
    try:
        return "bytes", encode(row)
    except Exception as error:
        return "raises", type(error)


def assert_alike(types: list[Any], row: Any) -> None:
    """The C encoder gives the Python encoders' bytes, or refuses what they refuse: NotBinary,
    also where Python's struct says an integer is out of range."""
    pg_types = [of(type_) for type_ in types]
    native = native_row_encoder(pg_types)
    assert isinstance(native, _binrow.RowEncoder)
    expected, got = outcome(python_row_encoder(pg_types), row), outcome(native, row)
    if expected == ("raises", struct.error):
        expected = ("raises", NotBinary)
    assert got == expected


@pytest.mark.parametrize(
    ("type_", "value"),
    [(type_, value) for type_, values in NATIVE_CASES for value in values],
    ids=[f"{of(type_).name}-{i}" for type_, values in NATIVE_CASES for i in range(len(values))],
)
def test_the_c_row_encoder_gives_the_python_encoders_bytes(type_: Any, value: Any) -> None:
    assert_alike([type_], (value,))


def test_the_c_row_encoder_refuses_integers_past_their_type_s_range() -> None:
    for type_, low, high in ((sa.SMALLINT, -(2**15), 2**15 - 1), (sa.INTEGER, -(2**31), 2**31 - 1)):
        encode = native_row_encoder([of(type_)])
        assert encode((low,)) and encode((high,))
        for past in (low - 1, high + 1):
            with pytest.raises(NotBinary):
                encode((past,))
    with pytest.raises(NotBinary):
        native_row_encoder([of(sa.BIGINT)])((2**63,))


def test_the_c_row_encoder_refuses_copy_rows_and_rows_of_another_width() -> None:
    encode = native_row_encoder([of(sa.BIGINT), of(sa.TEXT)])
    for row in (CopyRow("1\ta\n"), (1,), (1, "a", 2)):
        with pytest.raises(NotBinary):
            encode(row)
    assert (
        encode([1, "a"])
        == encode((1, "a"))
        == python_row_encoder([of(sa.BIGINT), of(sa.TEXT)])((1, "a"))
    )


def test_binary_row_encoder_is_the_c_one_when_built() -> None:
    assert isinstance(binary_row_encoder([of(sa.BIGINT)]), _binrow.RowEncoder)


EVENT_TYPES = [
    sa.BIGINT,
    sa.VARCHAR(64),
    sa.TIMESTAMP(timezone=True),
    sa.NUMERIC(12, 2),
    sa.TEXT,
    pg.JSONB,
    pg.ARRAY(sa.TEXT),
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
zones = (
    st.none()
    | st.just(UTC)
    | st.timedeltas(
        min_value=datetime.timedelta(hours=-23, minutes=-59),
        max_value=datetime.timedelta(hours=23, minutes=59),
    ).map(TZ)
)


@given(
    st.tuples(
        st.none() | st.integers(),
        st.none() | st.text(max_size=70),
        st.none() | st.datetimes(timezones=zones),
        st.none() | st.decimals(places=2, max_value=10**11) | st.decimals(),
        st.none() | st.text(),
        json_values,
        st.none() | st.lists(st.none() | st.text(max_size=5), max_size=5),
    )
)
def test_the_c_row_encoder_gives_the_python_encoders_bytes_for_event_rows(row: Any) -> None:
    assert_alike(EVENT_TYPES, row)


@given(st.decimals() | st.decimals(places=12))
def test_the_c_row_encoder_numeric_fields_are_the_python_ones(number: D) -> None:
    assert_alike([sa.NUMERIC], (number,))
    assert_alike([sa.NUMERIC(10, 4)], (number,))
    assert_alike([pg.ARRAY(sa.NUMERIC)], ([number, None],))


@given(
    st.integers(-(2**64), 2**64),
    st.floats(),
    st.dates(),
    st.datetimes(),
    st.booleans(),
)
def test_the_c_row_encoder_scalars_are_the_python_ones(
    integer: int, number: float, day: datetime.date, moment: datetime.datetime, flag: bool
) -> None:
    types = [sa.SMALLINT, sa.INTEGER, sa.BIGINT, pg.DOUBLE_PRECISION, sa.DATE, sa.TIMESTAMP]
    for type_, value in zip(types, (integer, integer, integer, number, day, moment)):
        assert_alike([type_], (value,))
    assert_alike([sa.BOOLEAN, pg.ARRAY(sa.BIGINT)], (flag, [integer, None]))


def test_without_the_extension_rows_are_encoded_in_python_and_numeric_stays_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As `_binary` is set up when `_binrow` fails to import (no C compiler at install)."""
    monkeypatch.setattr(_binary, "_binrow", None)
    monkeypatch.setattr(_binary, "DEARER_IN_BINARY", _binary.DEARER_IN_PYTHON)
    types = [of(sa.BIGINT), of(sa.TEXT)]
    encode = binary_row_encoder(types)
    assert encode is not None and not isinstance(encode, _binrow.RowEncoder)
    assert encode((1, "a")) == b"\x00\x02" + field(sa.BIGINT, 1) + field(sa.TEXT, "a")
    assert TableEncoder([of(sa.BIGINT), of(sa.NUMERIC(12, 2))], binary=True).binary is False
    assert TableEncoder(types, binary=True).binary is True
