"""Binary COPY encoding of values and rows (pure); its bytes are checked against PostgreSQL's
own in tests/integration/pg_bulk_ingest/test_binary_copy.py."""

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

from pg_bulk_ingest import CopyRow
from pg_bulk_ingest._binary import (
    HEADER,
    TRAILER,
    TableEncoder,
    binary_pays,
    binary_row_encoder,
    field_encoder,
    numeric_field,
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


def test_binary_pays_for_timestamps_and_text_not_for_numeric_json_or_arrays() -> None:
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
