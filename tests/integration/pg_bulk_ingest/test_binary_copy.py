"""Binary COPY: each field is the bytes PostgreSQL itself sends, every value ingested reads
back as the same value written with plain SQL, and tables binary cannot carry load as text."""

from __future__ import annotations

import datetime
import decimal
import re
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from pg_bulk_ingest import (
    CopyRow,
    CopyTuple,
    DataError,
    IngestError,
    _binary,
    _ingest,
    copy_encoders,
    copy_tuple_columns,
    ingest,
)
from pg_bulk_ingest._binary import (
    HEADER,
    TRAILER,
    binary_row_encoder,
    field_encoder,
    native_row_encoder,
)
from pg_bulk_ingest._db import Db
from pg_bulk_ingest._types import PgType, column_pg_type, pg_type

D = decimal.Decimal
UTC = datetime.timezone.utc
BEFORE_EPOCH = datetime.datetime(1969, 7, 20, 20, 17, 40, 123456)
AFTER_2038 = datetime.datetime(2262, 4, 11, 23, 47, 16, 854775)
THOUSAND_DIGITS = D("9" * 600 + "." + "0123456789" * 40)

# (SQLAlchemy type, Python value, the same value as an SQL literal)
FIELDS: list[tuple[Any, Any, str]] = [
    (sa.SMALLINT(), -32768, "(-32768)::smallint"),
    (sa.INTEGER(), 2**31 - 1, "2147483647::integer"),
    (sa.BIGINT(), -(2**63), "(-9223372036854775808)::bigint"),
    (pg.DOUBLE_PRECISION(), 0.1, "0.1::float8"),
    (pg.DOUBLE_PRECISION(), -0.0, "'-0'::float8"),
    (pg.DOUBLE_PRECISION(), float("nan"), "'NaN'::float8"),
    (pg.DOUBLE_PRECISION(), float("inf"), "'Infinity'::float8"),
    (pg.DOUBLE_PRECISION(), float("-inf"), "'-Infinity'::float8"),
    (pg.DOUBLE_PRECISION(), 5e-324, "'4.9406564584124654e-324'::float8"),
    (sa.NUMERIC(), D("1234.5600"), "1234.5600::numeric"),
    (sa.NUMERIC(), D("-0.000012300"), "(-0.000012300)::numeric"),
    (sa.NUMERIC(), D("1E+30"), "'1E+30'::numeric"),
    (sa.NUMERIC(), D("-0.00"), "'-0.00'::numeric"),
    (sa.NUMERIC(), D("-0"), "'-0'::numeric"),
    (sa.NUMERIC(), D("1E+5"), "'1E+5'::numeric"),
    (sa.NUMERIC(), D("-123456789.000012345"), "'-123456789.000012345'::numeric"),
    (sa.NUMERIC(), D("0.00001"), "'0.00001'::numeric"),
    (sa.NUMERIC(), D("NaN"), "'NaN'::numeric"),
    (sa.NUMERIC(), D("Infinity"), "'Infinity'::numeric"),
    (sa.NUMERIC(), D("-Infinity"), "'-Infinity'::numeric"),
    (sa.NUMERIC(), THOUSAND_DIGITS, f"'{THOUSAND_DIGITS}'::numeric"),
    (sa.NUMERIC(), 12, "12::numeric"),
    (sa.NUMERIC(), 0.1, "'0.1'::numeric"),
    (sa.NUMERIC(), 1e16, "'1e+16'::numeric"),
    (sa.NUMERIC(), float("-inf"), "'-inf'::numeric"),
    (sa.NUMERIC(12, 2), D("-12.50"), "(-12.50)::numeric(12,2)"),
    (sa.NUMERIC(12, 2), D("9999999999.99"), "9999999999.99::numeric(12,2)"),
    (sa.BIGINT(), 2**63 - 1, "9223372036854775807::bigint"),
    (sa.SMALLINT(), 32767, "32767::smallint"),
    (sa.BOOLEAN(), True, "true"),
    (sa.BOOLEAN(), False, "false"),
    (sa.TEXT(), "ünïcødé 🦆\t\\", "E'ünïcødé 🦆\\t\\\\'::text"),
    (sa.VARCHAR(3), "", "''::varchar(3)"),
    (sa.CHAR(3), "abc", "'abc'::char(3)"),
    (sa.DATE(), datetime.date(2000, 1, 1), "'2000-01-01'::date"),
    (sa.DATE(), datetime.date(1, 1, 1), "'0001-01-01'::date"),
    (sa.DATE(), datetime.date(2024, 2, 29), "'2024-02-29'::date"),
    (sa.TIME(), datetime.time(23, 59, 59, 999999), "'23:59:59.999999'::time"),
    (sa.TIMESTAMP(), BEFORE_EPOCH, f"'{BEFORE_EPOCH}'::timestamp"),
    (sa.TIMESTAMP(), AFTER_2038, f"'{AFTER_2038}'::timestamp"),
    (
        sa.TIMESTAMP(timezone=True),
        datetime.datetime(
            2040, 2, 29, 1, 2, 3, 4, tzinfo=datetime.timezone(-datetime.timedelta(hours=5))
        ),
        "'2040-02-29 01:02:03.000004-05'::timestamptz",
    ),
    (
        sa.TIMESTAMP(timezone=True),
        datetime.datetime(1999, 12, 31, 23, 59),
        "'1999-12-31 23:59Z'::timestamptz",
    ),
    (
        pg.INTERVAL(),
        datetime.timedelta(days=-3, seconds=5, microseconds=7),
        "'-3 days 5.000007 s'::interval",
    ),
    (
        pg.UUID(),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "'12345678-1234-5678-1234-567812345678'::uuid",
    ),
    (pg.JSON(), {"a": [1, "x\ty"]}, """'{"a":[1,"x\\ty"]}'::json"""),
    (pg.BYTEA(), b"\x00\xff\\", "'\\x00ff5c'::bytea"),
    (pg.ARRAY(sa.TEXT), ["a", None, "é"], "ARRAY['a', NULL, 'é']::text[]"),
    (pg.ARRAY(sa.TEXT), [], "'{}'::text[]"),
    (pg.ARRAY(sa.TEXT), [None, None], "ARRAY[NULL, NULL]::text[]"),
    (pg.ARRAY(sa.BIGINT), [1, None, -(2**63)], "ARRAY[1, NULL, -9223372036854775808]::bigint[]"),
    (
        pg.ARRAY(sa.DATE),
        [datetime.date(2024, 2, 29), datetime.date(1999, 12, 31)],
        "ARRAY['2024-02-29', '1999-12-31']::date[]",
    ),
    (pg.ARRAY(pg.DOUBLE_PRECISION), [float("nan"), -0.0], "'{NaN,-0}'::float8[]"),
    (
        sa.TIMESTAMP(timezone=True),
        datetime.datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=UTC),
        "'2262-04-11 23:47:16.854775Z'::timestamptz",
    ),
    (pg.ARRAY(sa.INTEGER), [[1, 2], [3, None]], "'{{1,2},{3,NULL}}'::integer[]"),
    (pg.ARRAY(sa.NUMERIC), [D("1.50"), D("NaN")], "'{1.50,NaN}'::numeric[]"),
    (
        pg.ARRAY(sa.TIMESTAMP(timezone=True)),
        [datetime.datetime(2024, 1, 1, tzinfo=UTC)],
        "'{2024-01-01Z}'::timestamptz[]",
    ),
    (pg.ARRAY(pg.UUID), [uuid.UUID(int=1)], f"ARRAY['{uuid.UUID(int=1)}']::uuid[]"),
]


def _fields(data: bytes, count: int) -> list[bytes]:
    """The fields of the one tuple of a binary COPY's output, each with its length."""
    assert data[: len(HEADER)] == HEADER and data[-len(TRAILER) :] == TRAILER
    position = len(HEADER)
    assert struct.unpack_from(">h", data, position) == (count,)
    position += 2
    fields = []
    for _ in range(count):
        (length,) = struct.unpack_from(">i", data, position)
        end = position + 4 + max(length, 0)
        fields.append(data[position:end])
        position = end
    return fields


@pytest.fixture(scope="module")
def sent_by_postgresql(database_url: str) -> list[bytes]:
    """Every literal of FIELDS as PostgreSQL sends it in binary COPY, read in one COPY."""
    select = ", ".join(literal for _, _, literal in FIELDS)
    sql = f"COPY (SELECT {select}) TO STDOUT (FORMAT binary)"
    with psycopg.connect(database_url) as connection, connection.cursor().copy(sql) as copy:
        data = b"".join(bytes(block) for block in copy)
    return _fields(data, len(FIELDS))


def _type(type_: Any) -> PgType:
    found = pg_type(sa.types.to_instance(type_))
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("index", "type_", "value"),
    [(i, t, v) for i, (t, v, _) in enumerate(FIELDS)],
    ids=[literal[:40] for _, _, literal in FIELDS],
)
def test_each_field_is_the_bytes_postgresql_sends(
    sent_by_postgresql: list[bytes], index: int, type_: Any, value: Any
) -> None:
    encode = field_encoder(_type(type_))
    assert encode is not None
    assert encode(value) == sent_by_postgresql[index]


@pytest.mark.parametrize(
    ("index", "type_", "value"),
    [(i, t, v) for i, (t, v, _) in enumerate(FIELDS)],
    ids=[literal[:40] for _, _, literal in FIELDS],
)
def test_each_field_of_the_c_row_encoder_is_the_bytes_postgresql_sends(
    sent_by_postgresql: list[bytes], index: int, type_: Any, value: Any
) -> None:
    row = native_row_encoder([_type(type_)])((value,))
    assert row == b"\x00\x01" + sent_by_postgresql[index]


def test_jsonb_is_its_version_byte_then_json_text_postgresql_reads_as_the_value(
    database_url: str,
) -> None:
    encode = field_encoder(_type(pg.JSONB))
    assert encode is not None
    field = encode({"a": [1, "é"]})
    assert field[4:5] == b"\x01"
    with psycopg.connect(database_url) as connection:
        same = connection.execute(
            "SELECT convert_from(%s, 'UTF8')::jsonb = jsonb_build_object('a', ARRAY[1]) "
            "|| jsonb_build_object('a', jsonb_build_array(1, 'é'))",
            (field[5:],),
        ).fetchone()
    assert same == (True,)


# (name, SQLAlchemy type, [(Python value, the same value as an SQL literal)])
ROUND_TRIPS: list[tuple[str, Any, list[tuple[Any, str]]]] = [
    ("smallint", sa.SMALLINT, [(-32768, "-32768"), (32767, "32767")]),
    ("integer", sa.INTEGER, [(-(2**31), "-2147483648")]),
    ("bigint", sa.BIGINT, [(2**63 - 1, "9223372036854775807")]),
    (
        "double",
        pg.DOUBLE_PRECISION,
        [
            (float("nan"), "'NaN'"),
            (float("inf"), "'Infinity'"),
            (float("-inf"), "'-Infinity'"),
            (-0.0, "'-0'"),
            (1e-310, "1e-310"),
        ],
    ),
    (
        "numeric",
        sa.NUMERIC,
        [
            (D("NaN"), "'NaN'"),
            (D("Infinity"), "'Infinity'"),
            (D("-Infinity"), "'-Infinity'"),
            (THOUSAND_DIGITS, f"{THOUSAND_DIGITS}"),
            (THOUSAND_DIGITS.copy_negate(), f"-{THOUSAND_DIGITS}"),
            (D("1E-1000"), "1E-1000"),
            (D("-0.0010"), "-0.0010"),
            (D("12E+3"), "12E+3"),
            (D("1E+5"), "1E+5"),
            (D("-0"), "-0"),
            (D("123456789.987654321"), "123456789.987654321"),
            (0.1, "0.1"),
        ],
    ),
    (
        "numeric_scaled",
        sa.NUMERIC(8, 3),
        [(D("1.23456"), "1.23456"), (D("NaN"), "'NaN'"), (7, "7")],
    ),
    ("numeric_negative_scale", sa.NUMERIC(5, -3), [(D("12345678"), "12345678"), (1499, "1499")]),
    ("boolean", sa.BOOLEAN, [(True, "true"), (0, "false")]),
    (
        "text",
        sa.TEXT,
        [("ünïcødé 🦆 tab\there", "E'ünïcødé 🦆 tab\\there'"), ("", "''"), (42, "'42'")],
    ),
    ("varchar", sa.VARCHAR(5), [("ab  ", "'ab  '"), ("日本語", "'日本語'")]),
    ("char", sa.CHAR(4), [("ab", "'ab'"), ("abcd", "'abcd'")]),
    (
        "date",
        sa.DATE,
        [
            (datetime.date(1, 1, 1), "'0001-01-01'"),
            (datetime.date(1900, 2, 28), "'1900-02-28'"),
            (datetime.date(2400, 2, 29), "'2400-02-29'"),
        ],
    ),
    (
        "time",
        sa.TIME,
        [
            (datetime.time(0, 0), "'00:00'"),
            (datetime.time(23, 59, 59, 999999), "'23:59:59.999999'"),
        ],
    ),
    (
        "time_precision",
        pg.TIME(precision=3),
        [(datetime.time(1, 2, 3, 456789), "'01:02:03.456789'")],
    ),
    (
        "timestamp",
        sa.TIMESTAMP,
        [
            (BEFORE_EPOCH, f"'{BEFORE_EPOCH}'"),
            (AFTER_2038, f"'{AFTER_2038}'"),
            (datetime.datetime(2024, 2, 29, 12), "'2024-02-29 12:00'"),
            (
                datetime.datetime(
                    2024, 1, 1, 3, tzinfo=datetime.timezone(datetime.timedelta(hours=3))
                ),
                "'2024-01-01 00:00'",
            ),
        ],
    ),
    (
        "timestamp_precision",
        pg.TIMESTAMP(timezone=True, precision=3),
        [
            (
                datetime.datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC),
                "'2024-01-01 00:00:00.123456Z'",
            )
        ],
    ),
    (
        "timestamptz",
        sa.TIMESTAMP(timezone=True),
        [
            (
                datetime.datetime(1960, 2, 29, 1, 2, 3, 4, tzinfo=UTC),
                "'1960-02-29 01:02:03.000004Z'",
            ),
            (datetime.datetime(9999, 12, 31, 23, 59, 59, 999999), "'9999-12-31 23:59:59.999999Z'"),
            (
                datetime.datetime(
                    1, 1, 1, 0, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=1))
                ),
                "'0001-01-01 00:30+01'",
            ),
            (
                datetime.datetime(
                    2100, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=-9, minutes=-30))
                ),
                "'2100-01-01 00:00-09:30'",
            ),
        ],
    ),
    (
        "interval",
        pg.INTERVAL,
        [
            (datetime.timedelta(days=-3, seconds=5, microseconds=7), "'-3 days 5.000007 s'"),
            (datetime.timedelta(days=999_999_999), "'999999999 days'"),
        ],
    ),
    (
        "uuid",
        pg.UUID(as_uuid=True),
        [(uuid.UUID(int=2**128 - 1), "'ffffffff-ffff-ffff-ffff-ffffffffffff'")],
    ),
    ("json", pg.JSON, [({"b": 1, "a": [None, "\\u0000"]}, """'{"b":1,"a":[null,"\\\\u0000"]}'""")]),
    (
        "jsonb",
        pg.JSONB,
        [({"b": 1, "a": [None, "é"]}, """'{"b": 1, "a": [null, "é"]}'"""), ("text", "'\"text\"'")],
    ),
    ("bytea", pg.BYTEA, [(b"\x00\x01\\\t\xff", "'\\x00015c09ff'::bytea"), (b"", "''::bytea")]),
    (
        "text_array",
        pg.ARRAY(sa.TEXT),
        [
            (["a,b", None, '"q"', "", "ü"], "ARRAY['a,b', NULL, '\"q\"', '', 'ü']"),
            ([], "'{}'"),
            ([None], "ARRAY[NULL]::text[]"),
        ],
    ),
    (
        "int_matrix",
        pg.ARRAY(sa.INTEGER, dimensions=2),
        [([[1, 2], [3, None]], "'{{1,2},{3,NULL}}'")],
    ),
    (
        "numeric_array",
        pg.ARRAY(sa.NUMERIC(6, 2)),
        [([D("1.005"), None, D("NaN")], "ARRAY[1.005, NULL, 'NaN']")],
    ),
    (
        "double_array",
        pg.ARRAY(pg.DOUBLE_PRECISION),
        [([float("nan"), -0.0, float("-inf")], "'{NaN,-0,-Infinity}'")],
    ),
    (
        "jsonb_array",
        pg.ARRAY(pg.JSONB),
        [([{"a": "b,c"}, None], 'ARRAY[\'{"a": "b,c"}\'::jsonb, NULL]')],
    ),
    ("varchar_array", pg.ARRAY(sa.VARCHAR(2)), [(["ab", ""], "'{ab,\"\"}'")]),
    ("date_array", pg.ARRAY(sa.DATE), [([datetime.date(2024, 2, 29)], "'{2024-02-29}'")]),
    ("interval_array", pg.ARRAY(pg.INTERVAL), [([datetime.timedelta(seconds=1)], "'{1 second}'")]),
]


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The COPY statements ingest runs, as it runs them."""
    statements: list[str] = []
    copy_in = Db.copy_in

    def spy(self: Db, sql: str, chunks: Any) -> None:
        statements.append(sql)
        copy_in(self, sql, chunks)

    monkeypatch.setattr(Db, "copy_in", spy)
    yield statements


@pytest.fixture
def binary_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Binary COPY for every table whose types all have an exact binary encoding, also those
    ingest writes as text because they are cheaper so (`DEARER_IN_BINARY`)."""
    monkeypatch.setattr(_binary, "DEARER_IN_BINARY", frozenset())


def _table(
    schema: str, name: str, type_: Any, *, keyed: bool = True
) -> tuple[sa.MetaData, sa.Table]:
    metadata = sa.MetaData()
    table = sa.Table(
        name,
        metadata,
        sa.Column("position", sa.INTEGER, primary_key=keyed),
        sa.Column("value", type_),
        schema=schema,
    )
    return metadata, table


def _one_batch(table: sa.Table, rows: list[Any]) -> Any:
    def batches(_: Any) -> Any:
        yield 1, ((table, row) for row in rows)

    return batches


@pytest.mark.parametrize(("name", "type_", "cases"), ROUND_TRIPS, ids=[c[0] for c in ROUND_TRIPS])
@pytest.mark.parametrize("keyed", [True, False], ids=["upsert", "append"])
def test_values_ingested_in_binary_read_back_as_written_with_sql(
    binary_everywhere: None,
    conn: sa.engine.Connection,
    schema: str,
    query: Any,
    copies: list[str],
    name: str,
    type_: Any,
    cases: list[tuple[Any, str]],
    keyed: bool,
) -> None:
    metadata, table = _table(schema, name, type_, keyed=keyed)
    rows = [(i, value) for i, (value, _) in enumerate(cases)] + [(len(cases), None)]
    ingest(conn, metadata, _one_batch(table, rows))
    column_type = query(
        f"SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        f"WHERE attrelid = '\"{schema}\".\"{name}\"'::regclass AND attname = 'value'"
    )[0][0]
    literals = ", ".join(f"({i}, {literal})" for i, (_, literal) in enumerate(cases))
    query(
        f'CREATE TABLE "{schema}".plain (position integer, value {column_type}); '
        f'INSERT INTO "{schema}".plain VALUES {literals}, ({len(cases)}, NULL)'
    )
    compared = query(
        f'SELECT i.position, i.value::text, p.value::text FROM "{schema}"."{name}" i '
        f'JOIN "{schema}".plain p USING (position) ORDER BY i.position'
    )
    assert [(position, ingested) for position, ingested, _ in compared] == [
        (position, plain) for position, _, plain in compared
    ]
    assert len(compared) == len(rows)
    assert copies and all(sql.endswith("(FORMAT binary)") for sql in copies)


def test_a_table_with_a_real_column_loads_as_text(
    conn: sa.engine.Connection, schema: str, query: Any, copies: list[str]
) -> None:
    metadata, table = _table(schema, "floats", sa.REAL)
    ingest(conn, metadata, _one_batch(table, [(1, 0.1), (2, float("nan")), (3, None)]))
    assert query(f'SELECT position, value::text FROM "{schema}".floats ORDER BY 1') == [
        (1, "0.1"),
        (2, "NaN"),
        (3, None),
    ]
    assert copies and not any("binary" in sql for sql in copies)


@pytest.mark.parametrize(
    ("type_", "binary"),
    [
        (sa.TIMESTAMP(timezone=True), True),
        (sa.TEXT, True),
        (sa.NUMERIC(12, 2), True),
        (pg.JSONB, True),
        (pg.ARRAY(sa.INTEGER), True),
        (pg.JSON, False),
    ],
    ids=["timestamptz", "text", "numeric", "jsonb", "array", "json"],
)
def test_tables_go_binary_unless_a_column_is_cheaper_to_send_as_text(
    conn: sa.engine.Connection, schema: str, copies: list[str], type_: Any, binary: bool
) -> None:
    metadata, table = _table(schema, "chosen", type_)
    ingest(conn, metadata, _one_batch(table, [(1, None)]))
    assert ["binary" in sql for sql in copies] == [binary]


def test_copy_rows_load_as_text_after_the_binary_rows_before_them(
    conn: sa.engine.Connection, schema: str, query: Any, copies: list[str]
) -> None:
    metadata, table = _table(schema, "mixed", sa.TEXT)
    line = CopyRow("\t".join(e(v) for e, v in zip(copy_encoders(table), (2, "b\tc"))) + "\n")
    rows = [(1, "a"), line, (3, "c"), (1, "a again")]
    ingest(conn, metadata, _one_batch(table, rows))
    assert query(f'SELECT position, value FROM "{schema}".mixed ORDER BY 1') == [
        (1, "a again"),
        (2, "b\tc"),
        (3, "c"),
    ]
    assert ["binary" in sql for sql in copies] == [True, False]


def test_a_value_binary_cannot_carry_turns_the_table_to_text_for_the_rest_of_the_call(
    conn: sa.engine.Connection, schema: str, query: Any, copies: list[str]
) -> None:
    metadata, table = _table(schema, "stamps", sa.TIMESTAMP(timezone=True))
    first = [(1, datetime.datetime(2024, 1, 1, tzinfo=UTC)), (2, "2024-01-02 00:00Z")]
    second = [(3, datetime.datetime(2024, 1, 3, tzinfo=UTC))]

    def batches(_: Any) -> Any:
        yield 1, ((table, row) for row in first)
        yield 2, ((table, row) for row in second)

    ingest(conn, metadata, batches)
    assert query(f'SELECT position, value FROM "{schema}".stamps ORDER BY 1') == [
        (1, datetime.datetime(2024, 1, 1, tzinfo=UTC)),
        (2, datetime.datetime(2024, 1, 2, tzinfo=UTC)),
        (3, datetime.datetime(2024, 1, 3, tzinfo=UTC)),
    ]
    assert ["binary" in sql for sql in copies] == [True, False, False]


@pytest.mark.parametrize(
    ("type_", "bad", "shown"),
    [
        (sa.VARCHAR(3), "abcd", "character varying(3)"),
        (sa.NUMERIC(4, 2), D("99.995"), "numeric field overflow"),
        (sa.INTEGER, 2**31, "out of range"),
        (sa.TIMESTAMP, "not a time", "not a time"),
        (pg.ARRAY(sa.VARCHAR(1)), ["ab"], "character varying(1)"),
    ],
    ids=["varchar", "numeric", "integer", "timestamp", "array"],
)
def test_a_value_postgresql_refuses_names_table_column_value_and_row(
    binary_everywhere: None,
    conn: sa.engine.Connection,
    schema: str,
    type_: Any,
    bad: Any,
    shown: str,
) -> None:
    metadata, table = _table(schema, "refused", type_)
    good = None
    with pytest.raises(DataError, match=re.escape(shown)) as raised:
        ingest(conn, metadata, _one_batch(table, [(1, good), (2, good), (3, bad)]))
    assert (raised.value.table, raised.value.column, raised.value.row) == (
        f"{schema}.refused",
        "value",
        2,
    )


def test_a_null_in_a_not_null_column_names_its_row_in_a_binary_copy(
    conn: sa.engine.Connection, schema: str, copies: list[str]
) -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        "required",
        metadata,
        sa.Column("position", sa.INTEGER),
        sa.Column("value", sa.BIGINT, nullable=False),
        schema=schema,
    )
    rows = [(i, i) for i in range(5)] + [(5, None)]
    with pytest.raises(DataError) as raised:
        ingest(conn, metadata, _one_batch(table, rows))
    assert (raised.value.column, raised.value.row) == ("value", 5)
    assert all("binary" in sql for sql in copies)


def test_the_benchmark_s_event_rows_load_in_binary_and_read_back_as_written(
    conn: sa.engine.Connection, schema: str, query: Any, copies: list[str]
) -> None:
    """bigint, varchar, timestamptz, numeric(12, 2), text, jsonb, text[]: the C row encoder's
    table, binary without being told to, under both drivers."""
    metadata = sa.MetaData()
    table = sa.Table(
        "events",
        metadata,
        sa.Column("id", sa.BIGINT, primary_key=True),
        sa.Column("key", sa.VARCHAR(64)),
        sa.Column("at", sa.TIMESTAMP(timezone=True)),
        sa.Column("amount", sa.NUMERIC(12, 2)),
        sa.Column("status", sa.TEXT),
        sa.Column("payload", pg.JSONB),
        sa.Column("tags", pg.ARRAY(sa.TEXT)),
        schema=schema,
    )
    at = datetime.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    rows = [
        (1, "kéy", at, D("-12.50"), "a\tb", {"n": [1, None, "é"]}, ["x,y", None, 'q"']),
        (2, "", at + datetime.timedelta(days=60), D("0.01"), "", [], []),
        (3, None, None, None, None, None, None),
        (2**63 - 1, "k" * 64, at.replace(year=2040), D("9999999999.99"), "", "s", [""]),
    ]
    ingest(conn, metadata, _one_batch(table, rows))
    assert query(f'SELECT * FROM "{schema}".events ORDER BY id') == rows
    assert copies and all(sql.endswith("(FORMAT binary)") for sql in copies)


def _copy_row(table: sa.Table, values: tuple[Any, ...]) -> CopyRow:
    return CopyRow("\t".join(e(v) for e, v in zip(copy_encoders(table), values)) + "\n")


def _copy_tuple(table: sa.Table, values: tuple[Any, ...]) -> CopyTuple:
    encode = binary_row_encoder([column_pg_type(table, c) for c in table.columns])
    assert encode is not None
    return CopyTuple(encode(values))


def _two_tables(schema: str, *, required: bool = False) -> tuple[sa.MetaData, sa.Table, sa.Table]:
    metadata = sa.MetaData()
    columns = ("position", sa.INTEGER), ("value", sa.TEXT)
    main = sa.Table(
        "main",
        metadata,
        *(sa.Column(n, t, nullable=not required) for n, t in columns),
        schema=schema,
    )
    other = sa.Table("other", metadata, *(sa.Column(n, t) for n, t in columns), schema=schema)
    return metadata, main, other


def test_copy_tuples_after_a_table_turned_to_text_load_in_binary_copies_of_their_own(
    conn: sa.engine.Connection, schema: str, query: Any, copies: list[str]
) -> None:
    metadata, main, other = _two_tables(schema)
    rows = [
        (main, (0, "a")),
        (main, _copy_tuple(main, (1, "b"))),
        (other, (100, "o")),
        (main, _copy_row(main, (2, "c\td"))),  # the table turns to text
        (main, _copy_tuple(main, (3, "ünï"))),
        (main, _copy_tuple(main, (4, None))),
        (main, (5, "f")),  # text from now on
        (other, _copy_tuple(other, (101, "p"))),
        (main, _copy_tuple(main, (6, "g"))),
        (main, _copy_row(main, (7, "h"))),
    ]

    def batches(_: Any) -> Any:
        yield 1, iter(rows)

    ingest(conn, metadata, batches)
    assert query(f'SELECT position, value FROM "{schema}".main ORDER BY 1') == [
        (0, "a"),
        (1, "b"),
        (2, "c\td"),
        (3, "ünï"),
        (4, None),
        (5, "f"),
        (6, "g"),
        (7, "h"),
    ]
    assert query(f'SELECT position, value FROM "{schema}".other ORDER BY 1') == [
        (100, "o"),
        (101, "p"),
    ]
    into_main = [sql for sql in copies if ".main " in sql or '."main" ' in sql]
    assert ["binary" in sql for sql in into_main] == [True, False, True, False, True, False]


def test_a_value_refused_in_a_later_binary_copy_names_its_row_of_the_batch(
    conn: sa.engine.Connection, schema: str
) -> None:
    metadata, main, other = _two_tables(schema, required=True)
    rows = [
        (main, (0, "a")),
        (other, (100, "o")),
        (main, _copy_row(main, (1, "b"))),  # the table turns to text
        (main, (2, "c")),
        (other, (101, "p")),
        (main, _copy_tuple(main, (3, "d"))),
        (main, _copy_tuple(main, (4, None))),  # row 6 of the batch
        (main, _copy_tuple(main, (5, "e"))),
    ]

    def batches(_: Any) -> Any:
        yield 1, iter(rows)

    with pytest.raises(DataError) as raised:
        ingest(conn, metadata, batches)
    assert (raised.value.table, raised.value.column, raised.value.row) == (
        f"{schema}.main",
        "value",
        6,
    )


def test_copy_tuples_leave_out_a_generated_always_identity_column_as_rows_do(
    conn: sa.engine.Connection, schema: str, query: Any, copies: list[str]
) -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        "numbered",
        metadata,
        sa.Column("id", sa.BIGINT, sa.Identity(always=True), primary_key=True),
        sa.Column("position", sa.INTEGER),
        sa.Column("tags", pg.ARRAY(sa.TEXT)),
        schema=schema,
    )
    # What a CopyTuple of the table needs: the fields of the columns rows carry, not the id's.
    assert copy_tuple_columns(table) == (0, 25)
    written = [c for c in table.columns if c.name != "id"]
    encode = binary_row_encoder([column_pg_type(table, c) for c in written])
    assert encode is not None
    rows = [(table, CopyTuple(encode((p, ["a", None])))) for p in range(3)]

    def batches(_: Any) -> Any:
        yield 1, iter(rows)

    ingest(conn, metadata, batches)
    assert query(f'SELECT id, position, tags FROM "{schema}".numbered ORDER BY 2') == [
        (1, 0, ["a", None]),
        (2, 1, ["a", None]),
        (3, 2, ["a", None]),
    ]
    assert copies and all(sql.endswith("(FORMAT binary)") for sql in copies)


def test_a_copy_tuple_is_refused_where_the_connection_takes_no_binary_copy(
    conn: sa.engine.Connection, schema: str, query: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_ingest, "_BINARY_ENCODINGS_SQL", "SELECT false")  # as if not UTF8
    metadata, main, _ = _two_tables(schema)
    rows = [(main, (0, "a")), (main, _copy_tuple(main, (1, "ünï")))]

    def batches(_: Any) -> Any:
        yield 1, iter(rows)

    with pytest.raises(IngestError, match="CopyTuple row needs binary COPY"):
        ingest(conn, metadata, batches)
    assert query(f'SELECT count(*) FROM "{schema}".main') == [(0,)]
