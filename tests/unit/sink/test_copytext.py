"""The fast path to COPY text: which forms of a value it takes, the text it gives, and that
everything else is left to the general path (None)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from sink import copytext
from sink.copytext import LineColumn, compile_line, fast_text, native_kind


def fast(type_: Any, value: object, *, key: bool = False) -> str | None:
    path = fast_text(type_, key=key)
    assert path is not None
    return path(value)


@pytest.mark.parametrize(
    ("type_", "value", "text"),
    [
        (sa.BIGINT(), 2**63 - 1, "9223372036854775807"),
        (sa.SMALLINT(), -32768, "-32768"),
        (sa.VARCHAR(5), "héllo", "héllo"),
        (sa.TEXT(), "", ""),
        (sa.BOOLEAN(), False, "f"),
        (sa.NUMERIC(6, 2), "1234.5", "1234.5"),
        (sa.NUMERIC(6, 2), -9999, "-9999"),
        (sa.NUMERIC(), "-123456789012345678901.000001", "-123456789012345678901.000001"),
        # A number read exactly (see sink.mapping), as written.
        (sa.NUMERIC(30, 18), Decimal("0.123456789012345678"), "0.123456789012345678"),
        (sa.NUMERIC(6, 2), Decimal("1.50"), "1.50"),
        (sa.REAL(), 1.5, "1.5"),
        (pg.DOUBLE_PRECISION(), 1e300, "1e+300"),
        (sa.DATE(), "2024-02-29", "2024-02-29"),
        (sa.DATE(), "0001-12-31", "0001-12-31"),
        (sa.TIMESTAMP(timezone=True), "2024-02-29T23:59:59Z", "2024-02-29T23:59:59Z"),
        (sa.TIMESTAMP(timezone=True), "2024-01-31 00:00:00+14", "2024-01-31 00:00:00+14"),
        (sa.TIMESTAMP(timezone=True), "2024-05-01T12:00:00.123456Z", "2024-05-01T12:00:00.123456Z"),
        (sa.TIMESTAMP(timezone=True), "2024-05-01 12:00:00-08:00", "2024-05-01 12:00:00-08:00"),
        (sa.TIMESTAMP(timezone=True), "2024-05-01T12:00:00+0530", "2024-05-01T12:00:00+0530"),
        (sa.TIMESTAMP(), "2024-05-01T12:00:00.5", "2024-05-01T12:00:00.5"),
        (sa.TIMESTAMP(), "2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z"),
        (pg.JSONB(), {"a": [1, None, "x\ty\\z"]}, '{"a":[1,null,"x\\\\ty\\\\\\\\z"]}'),
        (pg.JSON(), "text", '"text"'),
        (pg.UUID(), "ABCDEF00-1234-5678-1234-567812345678", "ABCDEF00-1234-5678-1234-567812345678"),
        (pg.ARRAY(sa.TEXT), ["a", "b c", ""], '{"a","b c",""}'),
        (pg.ARRAY(sa.TEXT), [], "{}"),
    ],
)
def test_simple_forms_become_copy_text(type_: Any, value: object, text: str) -> None:
    assert fast(type_, value) == text


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        (sa.INTEGER(), 2**31),  # out of range: the general path names the limit
        (sa.INTEGER(), True),
        (sa.INTEGER(), "12"),
        (sa.INTEGER(), 12.0),
        (sa.VARCHAR(3), "four"),
        (sa.TEXT(), "tab\there"),
        (sa.TEXT(), "back\\slash"),
        (sa.TEXT(), "line\u2028separator"),
        (sa.TEXT(), 12),
        (sa.BOOLEAN(), "true"),
        (sa.NUMERIC(6, 2), "1.234"),  # rounded by the general path
        (sa.NUMERIC(6, 2), "12345.6"),
        (sa.NUMERIC(6, 2), 10_000),
        (sa.NUMERIC(6, 2), " 1.5"),
        (sa.NUMERIC(6, 2), "1e3"),
        (sa.NUMERIC(6, 2), 1.5),  # a float's digits may not be the message's
        (sa.NUMERIC(6, 2), Decimal("1.234")),
        (sa.NUMERIC(6, 2), Decimal("1E+2")),
        (sa.NUMERIC(6, 2), "\u0661\u0662.\u0665"),  # Arabic-Indic digits: PostgreSQL refuses them
        (sa.REAL(), 3.5e38),
        (sa.REAL(), 2),
        (sa.DATE(), "2023-02-29"),
        (sa.DATE(), "20240501"),
        (sa.DATE(), "0000-01-01"),
        (sa.DATE(), "2024-13-01"),
        (sa.DATE(), "\u0662\u0660\u0662\u0664-05-01"),
        (sa.TIMESTAMP(timezone=True), "2024-05-01T12:00:00"),  # no offset: read as UTC
        (sa.TIMESTAMP(timezone=True), "2024-05-01T12:00:00+16:00"),
        (sa.TIMESTAMP(timezone=True), "2024-05-01T12:00:00.1234567Z"),
        (sa.TIMESTAMP(timezone=True), "2024-02-30T12:00:00Z"),
        (sa.TIMESTAMP(timezone=True), "2023-02-29T12:00:00Z"),
        (sa.TIMESTAMP(timezone=True), "2024-04-31T12:00:00Z"),
        (sa.TIMESTAMP(timezone=True), "2024-05-01T24:00:00Z"),
        (sa.TIMESTAMP(timezone=True), "2024-05-01T12:60:00Z"),
        (sa.TIMESTAMP(timezone=True), "2024-05-01T12:00:60Z"),
        (sa.TIMESTAMP(timezone=True), "0000-05-01T12:00:00Z"),
        (sa.TIMESTAMP(timezone=True), "2024-05-01T12:00:00.\u0665Z"),
        (sa.TIMESTAMP(timezone=True), "2024-05-01T12:00Z"),
        (sa.TIMESTAMP(timezone=True), 1_714_564_800_000),
        (sa.TIMESTAMP(), "2024-05-01T12:00:00+02:00"),  # PostgreSQL would drop the offset
        (pg.JSONB(), {"a": "nul\x00"}),
        (pg.JSONB(), None),
        (pg.UUID(), "{12345678-1234-5678-1234-567812345678}"),
        (pg.ARRAY(sa.TEXT), ["a", None]),
        (pg.ARRAY(sa.TEXT), ['q"uote']),
        (pg.ARRAY(sa.TEXT), "not a list"),
    ],
)
def test_other_forms_take_the_general_path(type_: Any, value: object) -> None:
    assert fast(type_, value) is None


@pytest.mark.parametrize(
    "type_",
    [sa.TIME(), pg.INTERVAL(), pg.BYTEA(), pg.ARRAY(sa.BIGINT), pg.ARRAY(sa.VARCHAR(3))],
)
def test_types_without_a_fast_path(type_: Any) -> None:
    assert fast_text(type_, key=False) is None


def test_key_columns_take_it_only_where_the_text_is_the_general_paths() -> None:
    assert fast(sa.BIGINT(), 5, key=True) == "5"
    assert fast(sa.TEXT(), "k", key=True) == "k"
    # A timestamp or a number has other spellings of the same key ("+00:00" for "Z", "1.50"
    # for "1.5"): the batcher compares keys by text, so they take the general path.
    for type_ in (sa.TIMESTAMP(timezone=True), sa.NUMERIC(6, 2), pg.UUID(), sa.DATE()):
        assert fast_text(type_, key=True) is None


@pytest.mark.parametrize(
    ("type_", "key", "kind"),
    [
        (sa.SMALLINT(), True, (copytext.NATIVE_INT, -32768, 32767)),
        (sa.VARCHAR(5), True, (copytext.NATIVE_TEXT, 5, 0)),
        (sa.TEXT(), False, (copytext.NATIVE_TEXT, -1, 0)),
        (sa.NUMERIC(6, 2), False, (copytext.NATIVE_NUMERIC, 4, 2)),
        (sa.NUMERIC(), False, (copytext.NATIVE_NUMERIC, 1000, 1000)),
        (sa.REAL(), False, (copytext.NATIVE_FLOAT, 1, 0)),
        (pg.DOUBLE_PRECISION(), False, (copytext.NATIVE_FLOAT, 0, 0)),
        (pg.JSONB(), False, (copytext.NATIVE_JSONB, 0, 0)),
        (sa.TIMESTAMP(timezone=True), False, (copytext.NATIVE_TIMESTAMPTZ, 0, 0)),
        (sa.TIMESTAMP(), False, (copytext.NATIVE_TIMESTAMP, 0, 0)),
        (pg.ARRAY(sa.TEXT), False, (copytext.NATIVE_TEXT_ARRAY, 0, 0)),
        # json keeps its text as written; no fast path; a key the batcher compares by text.
        (pg.JSON(), False, None),
        (sa.NUMERIC(2, 3), False, None),
        (pg.INTERVAL(), False, None),
        (pg.ARRAY(sa.VARCHAR(3)), False, None),
        (sa.TIMESTAMP(timezone=True), True, None),
        (sa.Enum("a", "b", name="e"), False, None),
    ],
)
def test_native_kinds(type_: Any, key: bool, kind: tuple[int, int, int] | None) -> None:
    assert native_kind(type_, key=key) == kind


MISSING = object()


def _general(value: object) -> str:
    if value == "refused":
        raise ValueError("refused")
    return f"<{value}>"


def test_a_compiled_line_writes_every_column_in_order() -> None:
    weird = 'it\'s {a} "field"\n\\'
    line = compile_line(
        [
            LineColumn(weird, lambda r: None, fast_text(sa.BIGINT(), key=True), _general, True),
            LineColumn("text", lambda r: None, None, _general, False),
            LineColumn(None, lambda record: record["meta"], None, _general, False),
            LineColumn("gone", lambda r: None, None, _general, False),
        ],
        MISSING,
    )
    record = {"meta": 7}
    assert line(record, {weird: 5, "text": "a\tb"}) == "5\t<a\tb>\t<7>\t\\N\n"
    assert line(record, {weird: "5", "text": None}) == "<5>\t\\N\t<7>\t\\N\n"


def test_a_compiled_line_asks_once_whether_the_values_it_doubts_are_as_written() -> None:
    asked: list[tuple[object, bytes | None]] = []

    def round_trip(record: object, raw: bytes | None) -> bool:
        asked.append((record, raw))
        return raw == b"as written"

    def doubt(value: object) -> bool:
        return isinstance(value, float)

    line = compile_line(
        [
            LineColumn("a", lambda r: None, None, _general, False, doubt),
            LineColumn("b", lambda r: None, None, _general, False, doubt),
        ],
        MISSING,
        round_trip,
    )
    assert line("r", {"a": 1, "b": "x"}) == "<1>\t<x>\n"
    assert asked == []
    assert line("r", {"a": 1.5, "b": 2.5}) is None
    assert asked == [("r", None)]
    assert line("r", {"a": 1.5, "b": 2.5}, b"as written") == "<1.5>\t<2.5>\n"
    assert asked[1:] == [("r", b"as written")]


def test_a_compiled_line_gives_up_where_the_step_by_step_path_raises() -> None:
    line = compile_line(
        [
            LineColumn("id", lambda r: None, None, _general, True),
            LineColumn("v", lambda r: None, None, _general, False),
        ],
        MISSING,
    )
    assert line({}, {"v": 1}) is None  # a required value missing
    assert line({}, {"id": None}) is None  # or null
    assert line({}, {"id": 1, "v": "refused"}) is None  # a value the general path refuses
    assert line({}, {"id": 1, "v": "fine"}) == "<1>\t<fine>\n"
