"""The native line in binary mode (sink/_copyline.c): for a table the ingest core writes in
binary COPY, each row it is sure of is the very bytes the core's encoder gives for the values
the general way makes of the message; what it is not sure of takes the general way."""

from __future__ import annotations

import json
import string
from datetime import date, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pg_bulk_ingest import CopyTuple, copy_tuple_columns
from pg_bulk_ingest._binary import binary_row_encoder
from pg_bulk_ingest._errors import NotBinary
from pg_bulk_ingest._types import column_pg_type
from sink import _copyline
from sink.batcher import KeyText
from sink.config import ColumnSettings, Format, TableSettings
from sink.config import parse_column_type as ctype
from sink.config import parse_source as source
from sink.decode import decode
from sink.errors import MappingError
from sink.mapping import Mapper
from sink.path import FastPath
from sink.pipeline import Pipeline
from sink.records import Message
from sink.tables import tables_from_config
from tests.oracle import mapped_row

# Every native kind the ingest core writes in binary (REAL stays text, so it is not here).
COLUMNS = {
    "big": "BIGINT",
    "int": "INTEGER",
    "small": "SMALLINT",
    "label": "VARCHAR(12)",
    "body": "TEXT",
    "flag": "BOOLEAN",
    "price": "NUMERIC(8,3)",
    "whole": "NUMERIC(6,0)",
    "free": "NUMERIC",
    "wide": "DOUBLE PRECISION",
    "day": "DATE",
    "at": "TIMESTAMPTZ",
    "wall": "TIMESTAMP",
    "doc": "JSONB",
    "id": "UUID",
    "tags": "TEXT[]",
}


def _mapper(primary_key: tuple[str, ...] = ()) -> Mapper:
    columns = tuple(
        ColumnSettings(name, ctype(type_text), source(f"value.{name}"), name not in primary_key)
        for name, type_text in COLUMNS.items()
    )
    table = TableSettings(
        schema="s",
        name="t",
        columns=columns,
        topics=("t",),
        primary_key=primary_key,
        key_format=Format.STRING,
        value_format=Format.JSON,
    )
    return Mapper(tables_from_config([table]).targets[0])


MAPPER = _mapper()
assert MAPPER.native_columns is not None and MAPPER.binary_columns is not None
LINE = _copyline.Line(
    MAPPER.native_columns, CopyTuple, lambda k, v: None, 0, binary=MAPPER.binary_columns
)
ENCODE = binary_row_encoder([column_pg_type(MAPPER.table, c) for c in MAPPER.table.columns])


def _general(document: bytes) -> bytes | None:
    """The core's tuple of the general way's values, or None where the general way refuses
    the message or the core would write it in text."""
    assert ENCODE is not None
    message = Message("t", 0, 0, None, None, document)
    try:
        return ENCODE(mapped_row(MAPPER, decode(message, Format.STRING, Format.JSON)))
    except (MappingError, NotBinary):
        return None


def _check(document: bytes) -> bytes | None:
    """The native tuple of a document, checked against the general way's."""
    native = LINE.row(None, document)
    if native is not None:
        assert type(native) is CopyTuple
        assert native == _general(document), document
        assert hash(native) == hash(bytes(native))  # made in C: no stale hash
    return native


def test_a_table_the_core_writes_in_binary_gets_a_binary_line() -> None:
    assert copy_tuple_columns(MAPPER.table) is not None
    # NUMERIC(8,3) holds three fraction digits, NUMERIC(6,0) none, NUMERIC those written;
    # TEXT[] names text elements (OID 25).
    parameters = dict(zip(COLUMNS, MAPPER.binary_columns or ()))
    assert (parameters["price"], parameters["whole"], parameters["free"]) == (3, 0, -1)
    assert parameters["tags"] == 25
    assert MAPPER.value_line is not None
    path = FastPath(
        MAPPER.table,
        MAPPER.value_line,
        Format.STRING,
        MAPPER.native_columns,
        MAPPER.binary_columns,
    )
    assert path.native
    assert type(path.row(None, b'{"big": 1}')) is CopyTuple
    # What it is not sure of takes the general way, whose values the core encodes.
    assert path.row(None, b'{"big": "1"}') is None
    with pytest.raises(ValueError):  # as many binary parameters as columns
        FastPath(MAPPER.table, MAPPER.value_line, Format.STRING, MAPPER.native_columns, ())


def test_a_table_with_a_real_column_keeps_text_lines() -> None:
    table = TableSettings(
        schema="s",
        name="t",
        columns=(
            ColumnSettings("a", ctype("BIGINT"), source("value.a"), True),
            ColumnSettings("r", ctype("REAL"), source("value.r"), True),
        ),
        topics=("t",),
        value_format=Format.JSON,
    )
    mapper = Mapper(tables_from_config([table]).targets[0])
    assert mapper.native_columns is not None
    assert (mapper.binary_columns, mapper.binary) == (None, False)


# (field, JSON text of its value, whether the native line is sure of it)
EDGES: list[tuple[str, str, bool]] = [
    ("big", "-9223372036854775808", True),
    ("big", "9223372036854775807", True),
    ("big", "9223372036854775808", False),
    ("int", "-2147483648", True),
    ("int", "2147483648", False),
    ("small", "32767", True),
    ("small", "-32768", True),
    ("small", "32768", False),
    ("small", "-0", False),
    ("small", "7.0", False),
    ("label", '"ééééééééééé🦆"', True),  # twelve characters, more bytes
    ("label", '"éééééééééééé🦆"', False),  # thirteen
    ("label", r'"t\tb\u00e9\"\/\\"', True),
    ("label", r'"nul \u0000"', False),
    ("body", '"ünïcødé 🦆, ⅓, \\ud83e\\udd86"', True),
    ("body", '""', True),
    ("body", "12", False),
    ("flag", "true", True),
    ("flag", "false", True),
    ("flag", "0", False),
    ("price", '"-0.5"', True),
    ("price", '"12345.678"', True),
    ("price", '"00001.5"', True),
    ("price", "0.125", True),
    ("price", '"-0.0"', True),
    ("price", '"-0"', True),
    ("price", '"1.2345"', False),  # rounded by the general way
    ("price", '"123456"', False),
    ("whole", '"123456"', True),
    ("whole", "-999999", True),
    ("free", '"123456789012345678901234567890.123456789012345678901234567890"', True),
    ("free", '"0.0000001"', True),
    ("free", '"-0.000012300"', True),
    ("free", '"10000"', True),
    ("free", '"0.00"', True),
    ("free", '"1' + "0" * 900 + '"', True),
    ("free", '"0.' + "0" * 900 + '1"', True),
    ("free", "1e-7", False),
    ("free", '"NaN"', False),
    ("wide", "-0.0", True),
    ("wide", "0.1", True),
    ("wide", "1e308", True),
    ("wide", "-4.9e-324", True),
    ("wide", "5", False),
    ("wide", '"NaN"', False),
    ("wide", '"Infinity"', False),
    ("wide", '"-Infinity"', False),
    ("day", '"2000-02-29"', True),
    ("day", '"1600-02-29"', True),
    ("day", '"1999-12-31"', True),
    ("day", '"0001-01-01"', True),
    ("day", '"9999-12-31"', True),
    ("day", '"1900-02-29"', False),
    ("at", '"1969-12-31T23:59:59.999999-01:00"', True),
    ("at", '"1999-12-31 23:59:59Z"', True),
    ("at", '"2000-01-01T00:00:00+14"', True),
    ("at", '"2038-01-19T03:14:08Z"', True),
    ("at", '"2262-04-11T23:47:16.854775+0530"', True),
    ("at", '"2024-02-29T12:00:00.5-03:30"', True),
    ("at", '"2100-02-28T00:00:00-00:00"', True),
    ("at", '"2024-05-01T12:00:00"', False),
    ("at", '"0001-01-01T00:30:00+01:00"', False),  # before year 1 in UTC: refused
    ("at", '"9999-12-31T23:30:00-01:00"', False),
    ("at", '"2024-05-01T12:00:00.1234567Z"', False),
    ("wall", '"1970-01-01T00:00:00"', True),
    ("wall", '"2100-02-28T23:59:59.5Z"', True),
    ("wall", '"2040-02-29 12:00:00+00:00"', True),
    ("wall", '"1901-12-13T20:45:52.000001"', True),
    ("wall", '"2024-05-01T12:00:00+02:00"', False),
    ("doc", '{"a": [1, 2.5, "x", null, true], "b": {}}', True),
    ("doc", '{"a":1,"a":2}', True),
    ("doc", '{"é": "\\"q\\"\\n\\u00e9\\/"}', True),
    ("doc", "[]", True),
    ("doc", '"text"', True),
    ("doc", "-3", True),
    ("doc", "false", True),
    ("doc", ' { "a" : [ 1 , {"b": "x\\ty"} , -0, 1.5 ] } ', True),
    ("doc", "[" * 40 + "1" + "]" * 40, True),
    ("doc", "[9223372036854775807, -9223372036854775808]", True),
    ("doc", "[18446744073709551616]", False),
    ("doc", '{"p": 1.10}', False),  # the general way keeps its digits
    ("doc", '{"n": "\\u0000"}', False),
    ("id", '"ABCDEF00-1234-5678-1234-567812345678"', True),
    ("id", '"12345678-1234-5678-1234-567812345678"', True),
    ("id", '"12345678123456781234567812345678"', False),
    ("tags", "[]", True),
    ("tags", '["a", "é", "", "b c", "NULL"]', True),
    ("tags", '["x", null]', False),
    ("tags", '["q\\"uote"]', False),
]


@pytest.mark.parametrize(("field", "text", "sure"), EDGES)
def test_each_edge_value_is_the_core_s_bytes_or_takes_the_general_way(
    field: str, text: str, sure: bool
) -> None:
    document = f'{{"big": 1, "{field}": {text}}}'.encode()
    native = _check(document)
    assert (native is not None) is sure


def test_jsonb_takes_the_general_way_where_another_number_is_not_as_written() -> None:
    # 1.192092896e-7 reads as a float Python writes 1.192092896e-07: the general way reads the
    # whole value again with exact numbers, and the jsonb then holds Decimal("1E+16").
    assert _check(b'{"big": 1, "wide": 1.192092896e-7, "doc": 1e+16}') is None
    assert _check(b'{"big": 1, "wide": 1.192092896e-07, "doc": 1e+16}') is not None


def test_a_null_and_a_missing_field_are_null_fields() -> None:
    document = b'{"big": null, "label": "x"}'
    native = _check(document)
    assert native is not None
    assert native.count(b"\xff\xff\xff\xff") == len(COLUMNS) - 1


def _offset(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours:02}:{rest:02}"


def _instant(moment: datetime, minutes: int, form: int) -> str:
    text = moment.isoformat(sep="T" if form % 2 else " ")
    if form % 3 == 0:
        return text + "Z"
    offset = _offset(minutes)
    return text + (offset.replace(":", "") if form % 3 == 1 else offset)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
digits = st.text(string.digits, min_size=1, max_size=30)
fields = {
    "big": st.integers(-(2**63), 2**63 - 1),
    "int": st.integers(-(2**31), 2**31 - 1),
    "small": st.integers(-(2**15), 2**15 - 1),
    "label": st.text(max_size=13),
    "body": st.text(),
    "flag": st.booleans(),
    "price": st.decimals("-99999.999", "99999.999", places=3).map(str)
    | st.floats(-99999, 99999).map(lambda f: round(f, 3)),
    "whole": st.integers(-999999, 999999),
    "free": st.builds(lambda s, w, f: f"{s}{w}.{f}", st.sampled_from(["", "-"]), digits, digits)
    | st.builds(lambda w: w, digits),
    "wide": st.floats(allow_nan=False, allow_infinity=False),
    "day": st.dates().map(date.isoformat),
    "at": st.builds(
        _instant,
        st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30)),
        st.integers(-14 * 60, 14 * 60),
        st.integers(0, 5),
    ),
    "wall": st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31)).map(datetime.isoformat),
    "doc": json_values,
    "id": st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()),
    "tags": st.lists(st.text(max_size=4), max_size=4) | st.lists(st.none() | st.text(), max_size=2),
}
documents = st.fixed_dictionaries(
    {"big": fields["big"]}, optional={k: v for k, v in fields.items() if k != "big"}
)


@given(documents, st.booleans())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_each_native_tuple_is_the_core_s_bytes_for_the_general_way_s_values(
    document: dict[str, Any], spaced: bool
) -> None:
    raw = json.dumps(document, indent=1).encode() if spaced else orjson.dumps(document)
    _check(raw)


def test_most_generated_rows_are_native() -> None:
    produced = 0
    for seed in range(200):
        moment = datetime(1990, 1, 1) + timedelta(days=seed * 97, microseconds=seed * 7919)
        document = {
            "big": seed,
            "label": "é" * (seed % 13),
            "price": f"{seed}.{seed % 1000:03}",
            "at": _instant(moment, seed % 600 - 300, seed),
            "wall": moment.isoformat(),
            "day": moment.date().isoformat(),
            "doc": {"n": seed, "s": str(seed)},
            "tags": [str(seed)] * (seed % 3),
        }
        produced += _check(orjson.dumps(document)) is not None
    assert produced >= 180  # all but the labels of twelve characters and more


def test_a_tuple_s_key_is_the_key_of_its_tombstone() -> None:
    mapper = _mapper(primary_key=("big", "label"))
    assert mapper.native_columns is not None and mapper.binary_columns is not None
    line = _copyline.Line(
        mapper.native_columns, CopyTuple, lambda k, v: None, 0, binary=mapper.binary_columns
    )
    keys = KeyText(mapper.table)
    for big, label in [(-(2**63), "ünï\tcødé"), (7, ""), (2**63 - 1, "NULL")]:
        row = line.row(None, orjson.dumps({"big": big, "label": label, "small": -1}))
        assert row is not None
        assert keys.of_row(row) == keys.of_key((big, label))
    assert keys.of_row(row) != keys.of_key((2**63 - 1, "NUL"))


def test_a_pipeline_told_to_write_text_gives_lines_again() -> None:
    settings = TableSettings(
        schema="s",
        name="t",
        columns=tuple(
            ColumnSettings(n, ctype(t), source(f"value.{n}"), True)
            for n, t in (("big", "BIGINT"), ("doc", "JSONB"))
        ),
        topics=("t",),
        value_format=Format.JSON,
    )
    pipeline = Pipeline(tables_from_config([settings]))
    value = b'{"big": 1, "doc": {"a":1}}'
    fast = pipeline.path("t").fast
    assert fast is not None and type(fast.row(None, value)) is CopyTuple
    general = pipeline.path("t").lines(Message("t", 0, 0, None, None, b'{"big": "2"}'))
    assert general.rows[0][1] == (2, None)
    pipeline.write_text()  # a database whose encodings are not UTF8
    fast = pipeline.path("t").fast
    assert fast is not None and fast.row(None, value) == '1\t{"a":1}\n'
    general = pipeline.path("t").lines(Message("t", 0, 0, None, None, b'{"big": "2"}'))
    assert general.rows[0][1] == "2\t\\N\n"
