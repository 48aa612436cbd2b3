"""COPY text encoding of values and rows (pure)."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql as pg

from pg_bulk_ingest import CopyRow, SchemaError, copy_encoders
from pg_bulk_ingest._encode import encoder, escape, row_encoder
from pg_bulk_ingest._errors import NulInTextError
from pg_bulk_ingest._types import pg_type


def enc(type_: sa.types.TypeEngine[object], value: object) -> str:
    found = pg_type(type_)
    assert found is not None
    return encoder(found)(value)


def unescape(text: str) -> str:
    return (
        text.replace("\\\\", "\0")
        .replace("\\t", "\t")
        .replace("\\n", "\n")
        .replace("\\r", "\r")
        .replace("\0", "\\")
    )


@given(st.text().filter(lambda s: "\x00" not in s))
def test_escaped_text_has_no_raw_separators_and_unescapes_to_itself(text: str) -> None:
    escaped = escape(text)
    assert not {"\t", "\n", "\r"} & set(escaped)
    assert unescape(escaped) == text


def test_nul_in_text_raises() -> None:
    with pytest.raises(NulInTextError):
        escape("a\x00b")


def test_a_row_becomes_one_tab_separated_line_with_nulls() -> None:
    types = [pg_type(sa.INTEGER()), pg_type(sa.TEXT()), pg_type(sa.BOOLEAN())]
    encode = row_encoder([t for t in types if t is not None])
    assert encode((1, "a\tb", None)) == "1\ta\\tb\t\\N\n"


def test_a_row_of_the_wrong_width_raises() -> None:
    integer = pg_type(sa.INTEGER())
    assert integer is not None
    with pytest.raises(ValueError, match="2 values but the table has 1"):
        row_encoder([integer])((1, 2))


@pytest.mark.parametrize(
    ("type_", "value", "text"),
    [
        (sa.BIGINT(), 2**62, str(2**62)),
        (sa.NUMERIC(10, 2), decimal.Decimal("1.50"), "1.50"),
        (pg.DOUBLE_PRECISION(), 0.1, "0.1"),
        (sa.BOOLEAN(), False, "f"),
        (
            sa.TIMESTAMP(timezone=True),
            datetime.datetime(2024, 1, 2, 3, 4, 5),
            "2024-01-02T03:04:05+00:00",
        ),
        (
            sa.TIMESTAMP(),
            datetime.datetime(2024, 1, 2, 4, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
            "2024-01-02T03:00:00",
        ),
        (pg.INTERVAL(), datetime.timedelta(days=1, seconds=2), "1 days 2 seconds 0 microseconds"),
        (pg.UUID(), uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (pg.BYTEA(), b"\x01\xff", "\\\\x01ff"),
        (pg.JSONB(), {"a": "b\\c\n"}, '{"a":"b\\\\\\\\c\\\\n"}'),
        (pg.ARRAY(sa.TEXT), ["a,b", None, '"', "\\"], '{"a,b",NULL,"\\\\"","\\\\\\\\"}'),
        (pg.ARRAY(sa.INTEGER, dimensions=2), [[1, None]], '{{"1",NULL}}'),
    ],
)
def test_values_encode_to_postgresql_text_input(
    type_: sa.types.TypeEngine[object], value: object, text: str
) -> None:
    assert enc(type_, value) == text


def test_a_bool_is_not_an_integer() -> None:
    with pytest.raises(TypeError):
        enc(sa.INTEGER(), True)


def test_nul_in_jsonb_raises() -> None:
    with pytest.raises(NulInTextError):
        enc(pg.JSONB(), {"a": "\x00"})


@pytest.mark.parametrize("type_", [pg.JSONB(), pg.JSON()])
def test_json_numbers_keep_their_exact_digits(type_: sa.types.TypeEngine[object]) -> None:
    value = {
        "d": decimal.Decimal("0.123456789012345678"),
        "scale": decimal.Decimal("1.10"),
        "big": 2**70,
        "low": -(2**63) - 1,
        "plain": [1.5, 7, True, None, "x"],
    }
    assert enc(type_, value) == (
        '{"d":0.123456789012345678,"scale":1.10,"big":1180591620717411303424,'
        '"low":-9223372036854775809,"plain":[1.5,7,true,null,"x"]}'
    )
    assert enc(pg.ARRAY(type_), [decimal.Decimal("1E+2")]) == '{"1E+2"}'


def test_a_json_number_must_be_finite() -> None:
    with pytest.raises(ValueError, match="NaN is not a JSON number"):
        enc(pg.JSONB(), [decimal.Decimal("NaN")])
    with pytest.raises(TypeError):  # what orjson refuses for another reason stays refused
        enc(pg.JSONB(), {"a": object()})


@given(st.lists(st.text().filter(lambda s: "\x00" not in s), max_size=5))
def test_a_text_array_is_quoted_element_by_element_then_copy_escaped(values: list[str]) -> None:
    quoted = ['"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values]
    assert enc(pg.ARRAY(sa.TEXT), values) == escape("{" + ",".join(quoted) + "}")


@given(st.text())
def test_text_takes_the_fast_path_only_when_nothing_needs_escaping(text: str) -> None:
    if "\x00" in text:
        with pytest.raises(NulInTextError):
            enc(sa.TEXT(), text)
    else:
        assert enc(sa.TEXT(), text) == escape(text)


def test_none_encodes_to_null_for_every_column_type() -> None:
    for type_ in (sa.INTEGER(), sa.TEXT(), pg.JSONB(), pg.ARRAY(sa.TEXT), sa.NUMERIC(), pg.UUID()):
        assert enc(type_, None) == "\\N"


def test_a_copy_row_is_sent_as_it_is() -> None:
    encode = row_encoder([pg_type(sa.BIGINT()), pg_type(sa.TEXT())])  # type: ignore[list-item]
    line = CopyRow("7\ttext\n")
    assert encode(line) is line
    assert encode((7, "text")) == line


def test_copy_encoders_are_the_row_encoders_parts() -> None:
    table = sa.Table(
        "t",
        sa.MetaData(),
        sa.Column("id", sa.BIGINT),
        sa.Column("at", sa.TIMESTAMP(timezone=True)),
        sa.Column("doc", pg.JSONB),
    )
    at = datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.timezone.utc)
    row = (1, at, {"a": "b\\c"})
    encoders = copy_encoders(table)
    assert "\t".join(e(v) for e, v in zip(encoders, row)) + "\n" == row_encoder(
        [pg_type(c.type) for c in table.columns]  # type: ignore[misc]
    )(row)
    assert [e(None) for e in encoders] == ["\\N"] * 3


def test_copy_encoders_refuse_a_type_without_a_single_postgresql_type() -> None:
    table = sa.Table("t", sa.MetaData(), sa.Column("mood", sa.Enum("happy", "sad")))
    with pytest.raises(SchemaError, match=r"t\.mood"):
        copy_encoders(table)
