"""The upsert's staging table and merge, and the errors of rows PostgreSQL rejects: they name
the user's table, the column, the value and the row of the batch, never an internal table."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from pg_bulk_ingest import DataError, Delete, ingest
from pg_bulk_ingest._db import Db
from pg_bulk_ingest._schema import wanted_table
from pg_bulk_ingest._upsert import (
    SEQUENCE_COLUMN,
    create_staging_sql,
    drop_staging_sql,
    keys_follow_sql,
)

from .test_ingest import keyed, one_batch

# How long a test waits for the ingest under test to block on another transaction's row.
BLOCKED_WITHIN_SECONDS = 10.0


def priced(schema: str, *, key: bool, amount: sa.types.TypeEngine[Any]) -> sa.Table:
    return sa.Table(
        "prices",
        sa.MetaData(),
        sa.Column("id", sa.INTEGER, primary_key=key),
        sa.Column("amount", amount),
        schema=schema,
    )


def test_columns_named_like_the_staging_row_number_are_upserted(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        "events",
        metadata,
        sa.Column("id", sa.INTEGER, primary_key=True),
        sa.Column(SEQUENCE_COLUMN, sa.INTEGER),
        sa.Column(f"{SEQUENCE_COLUMN}_1", sa.TEXT),
        schema=schema,
    )
    ingest(conn, metadata, one_batch(table, 1, [(1, 10, "a"), (2, 20, "b"), (1, 11, "c")]))
    ingest(conn, metadata, one_batch(table, 2, [(2, 21, "d"), (3, 30, "e")]))
    assert query(f'SELECT * FROM "{schema}".events ORDER BY id') == [
        (1, 11, "c"),
        (2, 21, "d"),
        (3, 30, "e"),
    ]


REJECTED = [
    (sa.NUMERIC(), "x1", 'invalid input syntax for type numeric: "x1"'),
    (sa.VARCHAR(3), "abcd", 'value too long for type character varying(3): "abcd"'),
    (
        sa.TIMESTAMP(timezone=True),
        "soon",
        'invalid input syntax for type timestamp with time zone: "soon"',
    ),
]


@pytest.mark.parametrize("key", [True, False], ids=["upsert", "append"])
@pytest.mark.parametrize(("amount", "bad", "reason"), REJECTED, ids=["numeric", "long", "time"])
def test_a_value_postgresql_rejects_names_the_table_column_row_and_value(
    conn: sa.engine.Connection,
    schema: str,
    key: bool,
    amount: sa.types.TypeEngine[Any],
    bad: str,
    reason: str,
) -> None:
    table = priced(schema, key=key, amount=amount)
    with pytest.raises(DataError) as raised:
        ingest(conn, table.metadata, one_batch(table, 1, [(1, None), (2, bad), (3, None)]))
    error = raised.value
    assert (error.table, error.column, error.row) == (f"{schema}.prices", "amount", 1)
    assert str(error) == f"{schema}.prices.amount at row 1 of the batch: {reason}"


def test_the_row_of_a_rejected_value_counts_every_row_of_the_batch(
    conn: sa.engine.Connection, schema: str
) -> None:
    """Rows of other tables, skipped rows and earlier COPYs of the same table all count."""
    metadata = sa.MetaData()
    prices = sa.Table(
        "prices",
        metadata,
        sa.Column("id", sa.INTEGER, primary_key=True),
        sa.Column("amount", sa.NUMERIC),
        schema=schema,
    )
    log = sa.Table("log", metadata, sa.Column("n", sa.INTEGER), schema=schema)
    elsewhere = sa.Table("elsewhere", sa.MetaData(), sa.Column("n", sa.INTEGER))
    rows: list[tuple[sa.Table, Any]] = []
    for i in range(30):
        rows.extend([(prices, (i, i)), (log, (i,)), (elsewhere, (i,)), (log, (i,))])
    bad = 4 * 17
    rows[bad] = (prices, (17, "x1"))

    def batches(_: Any) -> Any:
        yield 1, iter(rows)

    with pytest.raises(DataError) as raised:
        ingest(conn, metadata, batches, max_rows_per_table_buffer=3)
    assert (raised.value.table, raised.value.column, raised.value.row) == (
        f"{schema}.prices",
        "amount",
        bad,
    )


def test_a_null_in_a_not_null_column_of_an_upsert_names_the_table_and_column(
    conn: sa.engine.Connection, schema: str
) -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        "events",
        metadata,
        sa.Column("id", sa.INTEGER, primary_key=True),
        sa.Column("value", sa.TEXT, nullable=False),
        schema=schema,
    )
    with pytest.raises(DataError) as raised:
        ingest(conn, metadata, one_batch(table, 1, [(1, "a"), (2, None)]))
    assert (raised.value.table, raised.value.column) == (f"{schema}.events", "value")
    assert str(raised.value) == (
        f'{schema}.events.value: null value in column "value" of relation "events" violates '
        "not-null constraint (Failing row contains (2, null))"
    )


def test_a_rejected_value_while_filling_a_table_to_swap_in_names_the_live_table(
    conn: sa.engine.Connection, schema: str
) -> None:
    table = priced(schema, key=False, amount=sa.NUMERIC())
    ingest(conn, table.metadata, one_batch(table, 1, [(1, 1)]))
    with pytest.raises(DataError) as raised:
        ingest(conn, table.metadata, one_batch(table, 2, [(2, 2), (3, "x1")]), delete=Delete.ALL)
    assert str(raised.value) == (
        f'{schema}.prices.amount at row 1 of the batch: invalid input syntax for type numeric: "x1"'
    )


def test_a_null_upserted_into_a_table_to_swap_in_names_the_live_table(
    conn: sa.engine.Connection, schema: str
) -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        "events",
        metadata,
        sa.Column("id", sa.INTEGER, primary_key=True),
        sa.Column("value", sa.TEXT, nullable=False),
        schema=schema,
    )
    ingest(conn, metadata, one_batch(table, 1, [(1, "a")]))
    with pytest.raises(DataError) as raised:
        ingest(conn, metadata, one_batch(table, 2, [(2, None)]), delete=Delete.ALL)
    assert str(raised.value) == (
        f'{schema}.events.value: null value in column "value" of relation "events" violates '
        "not-null constraint (Failing row contains (2, null))"
    )


def _wait_until_blocked(query: Callable[[str], list[tuple[Any, ...]]], schema: str) -> None:
    deadline = time.monotonic() + BLOCKED_WITHIN_SECONDS
    while time.monotonic() < deadline:
        if query(
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            f"AND query LIKE 'INSERT INTO \"{schema}\".%%'"
        ):
            return
        time.sleep(0.02)
    raise AssertionError("the ingest never waited for the other transaction's row")


def test_a_row_a_concurrent_writer_adds_during_a_first_load_is_updated(
    conn: sa.engine.Connection,
    driver_engine: sa.engine.Engine,
    schema: str,
    query: Callable[[str], list[tuple[Any, ...]]],
) -> None:
    """The first load's keys all follow the (no) live keys, but another writer inserts one of
    them before the merge: the batch still upserts it, as ON CONFLICT would."""
    metadata, table = keyed(schema)
    ingest(conn, metadata, lambda _: iter(()))
    failures: list[BaseException] = []

    def load() -> None:
        try:
            with driver_engine.connect() as loading:
                ingest(loading, metadata, one_batch(table, 1, [(1, "a"), (2, "ours"), (3, "c")]))
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    with driver_engine.connect() as other:
        other.exec_driver_sql(f"INSERT INTO \"{schema}\".events VALUES (2, 'theirs')")
        loader = threading.Thread(target=load)
        loader.start()
        try:
            _wait_until_blocked(query, schema)
        finally:
            other.commit()
            loader.join()
    assert failures == []
    assert query(f'SELECT id, value FROM "{schema}".events ORDER BY id') == [
        (1, "a"),
        (2, "ours"),
        (3, "c"),
    ]


def test_a_live_key_column_with_a_collation_of_its_own_is_upserted(
    conn: sa.engine.Connection, schema: str, query: Callable[[str], list[tuple[Any, ...]]]
) -> None:
    """The staging table's key has the default collation, the live one another: the merge
    compares them under the live one, without a collation conflict."""
    query(f'CREATE TABLE "{schema}".words (k text COLLATE "C" PRIMARY KEY, v text)')
    query(f"INSERT INTO \"{schema}\".words VALUES ('b', 'old')")
    metadata = sa.MetaData()
    table = sa.Table(
        "words",
        metadata,
        sa.Column("k", sa.TEXT, primary_key=True),
        sa.Column("v", sa.TEXT),
        schema=schema,
    )
    ingest(conn, metadata, one_batch(table, 1, [("c", "new"), ("d", "new")]))
    ingest(conn, metadata, one_batch(table, 2, [("a", "new"), ("b", "new")]))
    assert query(f'SELECT k, v FROM "{schema}".words ORDER BY k') == [
        ("a", "new"),
        ("b", "new"),
        ("c", "new"),
        ("d", "new"),
    ]


@pytest.mark.parametrize(
    ("live", "staged", "follow"),
    [
        ([], [(1, "a"), (1, "a")], True),
        ([(1, "b")], [(1, "c"), (2, "a")], True),
        ([(1, "b")], [(2, "a"), (1, "b")], False),
        ([(1, "b")], [(1, "a"), (3, "a")], False),
        ([(1, "b"), (3, "a")], [(2, "z")], False),
    ],
)
def test_staged_keys_follow_the_live_keys_only_when_each_sorts_after_the_greatest(
    conn: sa.engine.Connection,
    schema: str,
    live: list[tuple[int, str]],
    staged: list[tuple[int, str]],
    follow: bool,
) -> None:
    table = sa.Table(
        "pairs",
        sa.MetaData(),
        sa.Column("a", sa.INTEGER, primary_key=True),
        sa.Column("b", sa.TEXT, primary_key=True),
        sa.Column("c", pg.JSONB),
        schema=schema,
    )
    spec = wanted_table(table).spec
    db = Db(conn)
    with conn.begin():
        table.create(conn)
        for row in live:
            conn.execute(table.insert().values(a=row[0], b=row[1]))
        db.execute(create_staging_sql(spec, "staged"))
        for row in staged:
            db.execute("INSERT INTO pg_temp.staged (a, b) VALUES (%s, %s)", row)
        assert db.value(keys_follow_sql(spec, "pairs", "staged")) is follow
        db.execute(drop_staging_sql("staged"))
