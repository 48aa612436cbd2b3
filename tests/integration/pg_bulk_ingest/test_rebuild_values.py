"""A rebuild converts the stored rows as rows with those values would be stored: where a row
would have been refused, the migration is refused (naming the table, column and a value) and
nothing changes; times are converted in UTC, whatever the session's time zone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from pg_bulk_ingest import MigrationError, SchemaError, ingest
from pg_bulk_ingest._types import pg_type

SESSION_TIME_ZONE = "America/New_York"


def create_old_table(query: Any, schema: str, old_type: str, values: list[str]) -> None:
    """The live table, made by hand: `id` 1, 2, ... and `v` of `old_type` holding `values`
    (SQL literals)."""
    query(f'CREATE TABLE "{schema}".items (id integer, v {old_type})')
    rows = ", ".join(f"({number}, {value})" for number, value in enumerate(values, 1))
    query(f'INSERT INTO "{schema}".items VALUES {rows}')


def migrate(
    conn: sa.engine.Connection,
    schema: str,
    *columns: Any,
    with_batch: bool = True,
    on_before_visible: Any = None,
) -> None:
    """Ingests into `schema`.items defined as `id` INTEGER and `columns`; with a batch, it holds
    one row of NULLs but for `id` 100."""
    metadata = sa.MetaData()
    table = sa.Table("items", metadata, sa.Column("id", sa.INTEGER), *columns, schema=schema)

    def batches(_: Any) -> Any:
        if with_batch:
            yield 1, ((table, (100, *([None] * len(columns)))),)

    ingest(conn, metadata, batches, on_before_visible=on_before_visible)


def stored(query: Any, schema: str) -> list[tuple[Any, ...]]:
    """The old rows as another client reads them: `v` as text (timestamps in UTC)."""
    return query(f'SELECT id, v::text FROM "{schema}".items WHERE id < 100 ORDER BY id')


def column_type(query: Any, schema: str) -> str:
    rows = query(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        f"WHERE attrelid = '\"{schema}\".items'::regclass AND attname = 'v'"
    )
    return str(rows[0][0])


def type_name(type_: Any) -> str:
    """The new type as PostgreSQL spells it."""
    found = pg_type(sa.types.to_instance(type_))
    assert found is not None
    return found.name


def leftover_tables(query: Any, schema: str) -> list[tuple[Any, ...]]:
    return query(
        f"SELECT relname FROM pg_class WHERE relnamespace = '\"{schema}\"'::regnamespace"
        " AND relname LIKE 'items_pgbi%%'"
    )


@pytest.fixture
def in_new_york(conn: sa.engine.Connection) -> Iterator[None]:
    """The ingest connection's session runs in a time zone other than UTC."""
    conn.exec_driver_sql(f"SET TIME ZONE '{SESSION_TIME_ZONE}'")
    conn.commit()
    yield
    conn.rollback()
    conn.exec_driver_sql("RESET TIME ZONE")
    conn.commit()


REFUSED = [
    (
        "TEXT longer than VARCHAR(5)",
        "text",
        ["'ab'", "'hello world'"],
        sa.VARCHAR(5),
        "hello world",
    ),
    ("VARCHAR(4) longer than CHAR(2)", "varchar(4)", ["'va'", "'val1'"], sa.CHAR(2), "val1"),
    (
        "a TEXT[] element longer than VARCHAR(3)",
        "text[]",
        ["ARRAY['abc']", "ARRAY['abc', 'hello']"],
        pg.ARRAY(sa.VARCHAR(3)),
        "{abc,hello}",
    ),
    ("BIT(4) longer than VARCHAR(2)", "bit(4)", ["B'1010'"], sa.VARCHAR(2), "1010"),
    ("BIT VARYING longer than CHAR(3)", "varbit(8)", ["B'10'", "B'10101'"], sa.CHAR(3), "10101"),
    (
        "NUMERIC beyond NUMERIC(4,2)",
        "numeric(6,2)",
        ["12.34", "1234.56"],
        sa.NUMERIC(4, 2),
        "1234.56",
    ),
    ("a DOUBLE with a fraction for INTEGER", "double precision", ["2", "1.5"], sa.INTEGER, "1.5"),
    ("a NUMERIC with a fraction for BIGINT", "numeric", ["2.0", "2.5"], sa.BIGINT, "2.5"),
    ("a REAL with a fraction for SMALLINT", "real", ["-0.5"], sa.SMALLINT, "-0.5"),
    (
        "a DOUBLE[] element with a fraction for INTEGER[]",
        "double precision[]",
        ["ARRAY[1, 2.5]"],
        pg.ARRAY(sa.INTEGER),
        "{1,2.5}",
    ),
    ("a JSONB number with a fraction for INTEGER", "jsonb", ["'1'", "'1.5'"], sa.INTEGER, "1.5"),
    ("a BOOLEAN for INTEGER", "boolean", ["NULL", "true"], sa.INTEGER, "true"),
    ("a BIGINT beyond INTEGER", "bigint", ["1", "1099511627776"], sa.INTEGER, "1099511627776"),
    ("a DOUBLE beyond REAL", "double precision", ["1", "1e300"], sa.REAL, "1e+300"),
    ("TEXT that is no INTEGER", "text", ["'12'", "'x1'"], sa.INTEGER, "x1"),
    ("TEXT that is no JSON", "text", ["'{}'", "'not json'"], pg.JSONB, "not json"),
    ("an INTERVAL past a day for TIME", "interval", ["'12:00'", "'25:00'"], sa.TIME, "25:00:00"),
    ("an INTERVAL of a day for TIME", "interval", ["'1 day'"], sa.TIME, "1 day"),
    ("a negative INTERVAL for TIME", "interval", ["'-01:00'"], sa.TIME, "-01:00:00"),
    (
        "an infinite TIMESTAMP for TIME",
        "timestamp",
        ["'2024-01-01 12:00'", "'infinity'"],
        sa.TIME,
        "infinity",
    ),
]


@pytest.mark.parametrize(
    ("old_type", "values", "new_type", "example"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_a_value_a_row_could_not_hold_refuses_the_rebuild_naming_table_column_and_value(
    conn: sa.engine.Connection,
    schema: str,
    query: Any,
    old_type: str,
    values: list[str],
    new_type: Any,
    example: str,
) -> None:
    create_old_table(query, schema, old_type, values)
    type_before, rows_before = column_type(query, schema), stored(query, schema)
    with pytest.raises(MigrationError) as raised:
        migrate(conn, schema, sa.Column("v", new_type))
    error = raised.value
    assert (error.table, error.column) == (f"{schema}.items", "v")
    message = str(error)
    assert repr(example) in message
    assert type_before in message
    assert type_name(new_type) in message
    assert "pgbi" not in message
    assert column_type(query, schema) == type_before
    assert stored(query, schema) == rows_before
    assert leftover_tables(query, schema) == []


@pytest.mark.parametrize("with_batch", [True, False], ids=["a batch", "no batch"])
def test_a_failed_conversion_keeps_the_driver_error_and_rolls_everything_back(
    conn: sa.engine.Connection, schema: str, query: Any, with_batch: bool
) -> None:
    create_old_table(query, schema, "text", ["'12'", "'x1'", "NULL"])
    query(f'COMMENT ON TABLE "{schema}".items IS \'{{"pg-bulk-ingest": {{"high-watermark": 7}}}}\'')
    with pytest.raises(MigrationError) as raised:
        migrate(conn, schema, sa.Column("v", sa.INTEGER), with_batch=with_batch)
    assert str(raised.value).startswith(f"{schema}.items.v: the stored value 'x1' ")
    cause = raised.value.__cause__
    assert cause is not None
    assert (getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)) == "22P02"
    assert column_type(query, schema) == "text"
    assert stored(query, schema) == [(1, "12"), (2, "x1"), (3, None)]
    assert query(f"SELECT obj_description('\"{schema}\".items'::regclass)") == [
        ('{"pg-bulk-ingest": {"high-watermark": 7}}',)
    ]
    assert leftover_tables(query, schema) == []


KEPT_IN_UTC = [
    (
        "TIMESTAMPTZ to TIMESTAMP",
        "timestamptz",
        "'2024-01-01 12:00:00+00'",
        sa.TIMESTAMP(),
        "2024-01-01 12:00:00",
    ),
    (
        "TIMESTAMP to TIMESTAMPTZ",
        "timestamp",
        "'2024-01-01 12:00:00'",
        sa.TIMESTAMP(timezone=True),
        "2024-01-01 12:00:00+00",
    ),
    ("TIMESTAMPTZ to DATE", "timestamptz", "'2024-01-02 02:00:00+00'", sa.DATE, "2024-01-02"),
    ("TIMESTAMPTZ to TIME", "timestamptz", "'2024-01-01 12:00:00+00'", sa.TIME, "12:00:00"),
    (
        "TIMESTAMPTZ to TEXT",
        "timestamptz",
        "'2024-01-01 12:00:00+00'",
        sa.TEXT,
        "2024-01-01 12:00:00+00",
    ),
    (
        "TEXT to TIMESTAMPTZ",
        "text",
        "'2024-01-01 12:00:00'",
        sa.TIMESTAMP(timezone=True),
        "2024-01-01 12:00:00+00",
    ),
    (
        "DATE to TIMESTAMPTZ",
        "date",
        "'2024-01-01'",
        sa.TIMESTAMP(timezone=True),
        "2024-01-01 00:00:00+00",
    ),
]


@pytest.mark.usefixtures("in_new_york")
@pytest.mark.parametrize(
    ("old_type", "value", "new_type", "expected"),
    [case[1:] for case in KEPT_IN_UTC],
    ids=[case[0] for case in KEPT_IN_UTC],
)
def test_times_are_converted_in_utc_whatever_the_session_time_zone(
    conn: sa.engine.Connection,
    schema: str,
    query: Any,
    old_type: str,
    value: str,
    new_type: Any,
    expected: str,
) -> None:
    create_old_table(query, schema, old_type, [value])
    time_zones: list[Any] = []

    def on_before_visible(connection: sa.engine.Connection, *_: Any) -> None:
        time_zones.append(connection.exec_driver_sql("SHOW TimeZone").scalar())

    migrate(conn, schema, sa.Column("v", new_type), on_before_visible=on_before_visible)
    assert stored(query, schema) == [(1, expected)]
    assert time_zones == [SESSION_TIME_ZONE]


@pytest.mark.usefixtures("in_new_york")
def test_a_rebuild_without_batches_converts_times_in_utc_too(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    create_old_table(query, schema, "timestamptz", ["'2024-01-01 12:00:00+00'"])
    migrate(conn, schema, sa.Column("v", sa.TIMESTAMP()), with_batch=False)
    assert stored(query, schema) == [(1, "2024-01-01 12:00:00")]
    assert conn.exec_driver_sql("SHOW TimeZone").scalar() == SESSION_TIME_ZONE
    conn.rollback()


KEPT = [
    (
        "a DOUBLE to NUMERIC keeps its shortest exact digits",
        "double precision",
        ["0.30000000000000004", "1e15"],
        sa.NUMERIC(),
        ["0.30000000000000004", "1000000000000000"],
    ),
    ("an INTERVAL of 24 hours to TIME", "interval", ["'24:00'"], sa.TIME, ["24:00:00"]),
    (
        "an INTERVAL[] to TIME[]",
        "interval[]",
        ["ARRAY['01:30'::interval, '24:00']"],
        pg.ARRAY(sa.TIME),
        ["{01:30:00,24:00:00}"],
    ),
]


@pytest.mark.parametrize(
    ("old_type", "values", "new_type", "expected"),
    [case[1:] for case in KEPT],
    ids=[case[0] for case in KEPT],
)
def test_a_value_a_row_would_store_is_stored_as_that_row(
    conn: sa.engine.Connection,
    schema: str,
    query: Any,
    old_type: str,
    values: list[str],
    new_type: Any,
    expected: list[str],
) -> None:
    create_old_table(query, schema, old_type, values)
    migrate(conn, schema, sa.Column("v", new_type))
    assert stored(query, schema) == list(enumerate(expected, 1))


ROUNDED_OR_PADDED = [
    ("NUMERIC rounded to NUMERIC(5,2)", "numeric(6,4)", "1.2345", sa.NUMERIC(5, 2), "1.23"),
    (
        "TIMESTAMP rounded to TIMESTAMP(0)",
        "timestamp",
        "'2024-01-01 12:00:00.6'",
        pg.TIMESTAMP(precision=0),
        "2024-01-01 12:00:01",
    ),
    ("excess spaces dropped from TEXT to VARCHAR(2)", "text", "'ab   '", sa.VARCHAR(2), "ab"),
    ("CHAR(4) padding dropped for TEXT", "char(4)", "'ab'", sa.TEXT, "ab"),
    ("an INTEGER to BOOLEAN", "integer", "5", sa.BOOLEAN, "true"),
]


@pytest.mark.parametrize(
    ("old_type", "value", "new_type", "expected"),
    [case[1:] for case in ROUNDED_OR_PADDED],
    ids=[case[0] for case in ROUNDED_OR_PADDED],
)
def test_rounding_and_padding_stay_what_a_row_would_get(
    conn: sa.engine.Connection,
    schema: str,
    query: Any,
    old_type: str,
    value: str,
    new_type: Any,
    expected: str,
) -> None:
    """Not refused: PostgreSQL rounds a row's extra digits and drops excess spaces on input
    too, and the encoder stores a nonzero integer in a BOOLEAN as true."""
    create_old_table(query, schema, old_type, [value])
    migrate(conn, schema, sa.Column("v", new_type))
    assert stored(query, schema) == [(1, expected)]


def test_a_null_in_a_column_that_becomes_not_null_names_the_table_and_column(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    create_old_table(query, schema, "integer", ["10", "NULL"])
    with pytest.raises(MigrationError) as raised:
        migrate(conn, schema, sa.Column("v", sa.INTEGER, nullable=False))
    assert (raised.value.table, raised.value.column) == (f"{schema}.items", "v")
    assert "NULL" in str(raised.value)
    assert "pgbi" not in str(raised.value)
    assert stored(query, schema) == [(1, "10"), (2, None)]
    assert leftover_tables(query, schema) == []
    checks = query(
        f"SELECT conname FROM pg_constraint WHERE conrelid = '\"{schema}\".items'::regclass "
        "AND contype = 'c'"
    )
    assert checks == []


def test_rows_repeating_a_new_primary_key_name_the_table_column_and_key(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    create_old_table(query, schema, "integer", ["10", "10"])
    with pytest.raises(MigrationError) as raised:
        migrate(conn, schema, sa.Column("v", sa.INTEGER, primary_key=True))
    assert (raised.value.table, raised.value.column) == (f"{schema}.items", "v")
    assert "(v)=(10)" in str(raised.value)
    assert "pgbi" not in str(raised.value)
    assert stored(query, schema) == [(1, "10"), (2, "10")]
    assert leftover_tables(query, schema) == []


def test_a_type_change_postgresql_cannot_convert_is_a_schema_error_naming_both_types(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    create_old_table(query, schema, "uuid", ["'00000000-0000-0000-0000-000000000001'"])
    with pytest.raises(SchemaError) as raised:
        migrate(conn, schema, sa.Column("v", sa.INTEGER))
    message = str(raised.value)
    assert message.startswith(f"{schema}.items.v: ")
    assert "uuid" in message
    assert "integer" in message
    assert column_type(query, schema) == "uuid"
    assert leftover_tables(query, schema) == []
