"""The upsert's staging table and merge, and the errors of rows PostgreSQL rejects: they name
the user's table, the column, the value and the row of the batch, never an internal table."""

from __future__ import annotations

import decimal
import threading
import time
from typing import Any, Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from pg_bulk_ingest import CopyRow, DataError, Delete, ingest
from pg_bulk_ingest._db import Db
from pg_bulk_ingest._schema import wanted_table
from pg_bulk_ingest._upsert import (
    SEQUENCE_COLUMN,
    create_staging_sql,
    drop_staging_sql,
    keys_follow_sql,
)

from .test_ingest import keyed, one_batch, prices

# How long a test waits for the ingest under test to block on another transaction's row.
BLOCKED_WITHIN_SECONDS = 10.0

# The merges of a batch whose keys do not all follow the live keys: MERGE (PostgreSQL 15 on),
# and the INSERT ... ON CONFLICT of older servers, had by making the server look like 14.
MERGES = ["merge", "on conflict"]


@pytest.fixture(params=MERGES)
def merging(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "on conflict":
        monkeypatch.setattr(Db, "server_version", property(lambda _: (14, 9)))
    return str(request.param)


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


def _wait_until_blocked(
    query: Callable[[str], list[tuple[Any, ...]]], schema: str, statement: str = "INSERT"
) -> None:
    """Waits until a `statement` (INSERT, MERGE) into `schema` waits for a lock."""
    deadline = time.monotonic() + BLOCKED_WITHIN_SECONDS
    while time.monotonic() < deadline:
        if query(
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            f"AND query LIKE '{statement} INTO \"{schema}\".%%'"
        ):
            return
        time.sleep(0.02)
    raise AssertionError(f"the ingest's {statement} never waited for the other transaction's row")


def _loaded_while_another_writes(
    driver_engine: sa.engine.Engine,
    query: Callable[[str], list[tuple[Any, ...]]],
    schema: str,
    *,
    live: list[tuple[Any, ...]],
    batch: list[tuple[Any, ...]],
    meanwhile: str,
    waits_in: str,
) -> list[tuple[Any, ...]]:
    """The table's rows once `batch` is ingested over `live`, while another transaction has
    run `meanwhile` (on `{table}`) and commits only once the batch's `waits_in` statement
    (INSERT, MERGE) waits for it."""
    metadata, table = keyed(schema)
    with driver_engine.connect() as first:
        ingest(first, metadata, one_batch(table, 1, live))
    failures: list[BaseException] = []

    def load() -> None:
        try:
            with driver_engine.connect() as loading:
                ingest(loading, metadata, one_batch(table, 2, batch))
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    with driver_engine.connect() as other:
        other.exec_driver_sql(meanwhile.format(table=f'"{schema}".events'))
        loader = threading.Thread(target=load)
        loader.start()
        try:
            _wait_until_blocked(query, schema, waits_in)
        finally:
            other.commit()
            loader.join()
    assert failures == []
    return query(f'SELECT id, value FROM "{schema}".events ORDER BY id')


def test_a_row_a_concurrent_writer_adds_during_a_first_load_is_updated(
    driver_engine: sa.engine.Engine,
    schema: str,
    query: Callable[[str], list[tuple[Any, ...]]],
) -> None:
    """The first load's keys all follow the (no) live keys, but another writer inserts one of
    them before the merge: the batch still upserts it, as ON CONFLICT would."""
    rows = _loaded_while_another_writes(
        driver_engine,
        query,
        schema,
        live=[],
        batch=[(1, "a"), (2, "ours"), (3, "c")],
        meanwhile="INSERT INTO {table} VALUES (2, 'theirs')",
        waits_in="INSERT",
    )
    assert rows == [(1, "a"), (2, "ours"), (3, "c")]


def test_a_row_a_concurrent_writer_adds_during_a_merge_is_updated(
    driver_engine: sa.engine.Engine,
    schema: str,
    query: Callable[[str], list[tuple[Any, ...]]],
) -> None:
    """The batch's keys do not all follow the live ones, so it MERGEs; another writer inserts
    one of its new keys meanwhile, which MERGE's INSERT waits for and then fails on: the batch
    still upserts it, as ON CONFLICT would."""
    rows = _loaded_while_another_writes(
        driver_engine,
        query,
        schema,
        live=[(5, "live")],
        batch=[(1, "a"), (2, "ours"), (5, "changed")],
        meanwhile="INSERT INTO {table} VALUES (2, 'theirs')",
        waits_in="MERGE",
    )
    assert rows == [(1, "a"), (2, "ours"), (5, "changed")]


def _merged_while_another_holds_the_row(
    driver_engine: sa.engine.Engine,
    query: Callable[[str], list[tuple[Any, ...]]],
    schema: str,
    merging: str,
    meanwhile: str,
) -> list[tuple[Any, ...]]:
    """Live rows 5 and 9; another transaction runs `meanwhile` on row 5 and commits once the
    batch's merge (MERGE, or INSERT ... ON CONFLICT) waits for it."""
    return _loaded_while_another_writes(
        driver_engine,
        query,
        schema,
        live=[(5, "live"), (9, "nine")],
        batch=[(1, "a"), (5, "ours")],
        meanwhile=meanwhile,
        waits_in="MERGE" if merging == "merge" else "INSERT",
    )


def test_a_row_another_writer_updates_during_the_merge_gets_the_batch_s_row(
    driver_engine: sa.engine.Engine,
    schema: str,
    query: Callable[[str], list[tuple[Any, ...]]],
    merging: str,
) -> None:
    meanwhile = "UPDATE {table} SET value = 'theirs' WHERE id = 5"
    rows = _merged_while_another_holds_the_row(driver_engine, query, schema, merging, meanwhile)
    assert rows == [(1, "a"), (5, "ours"), (9, "nine")]


def test_a_row_another_writer_deletes_during_the_merge_is_inserted_again(
    driver_engine: sa.engine.Engine,
    schema: str,
    query: Callable[[str], list[tuple[Any, ...]]],
    merging: str,
) -> None:
    meanwhile = "DELETE FROM {table} WHERE id = 5"
    rows = _merged_while_another_holds_the_row(driver_engine, query, schema, merging, meanwhile)
    assert rows == [(1, "a"), (5, "ours"), (9, "nine")]


def _merges(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The merge statements ingest runs from now on (INSERT, MERGE), as sent."""
    statements: list[str] = []
    execute = Db.execute

    def spy(self: Db, sql: str, params: Any = None) -> None:
        if sql.startswith(("MERGE", "INSERT")):
            statements.append(sql)
        execute(self, sql, params)

    monkeypatch.setattr(Db, "execute", spy)
    return statements


@pytest.mark.parametrize("isolation", ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"])
def test_merge_runs_at_read_committed_only(
    driver_engine: sa.engine.Engine,
    schema: str,
    query: Callable[[str], list[tuple[Any, ...]]],
    monkeypatch: pytest.MonkeyPatch,
    isolation: str,
) -> None:
    """Under REPEATABLE READ and SERIALIZABLE, a row updated since the snapshot makes ON
    CONFLICT fail with a serialization error, where MERGE skipped it on servers before 15.16."""
    merges = _merges(monkeypatch)
    metadata, table = keyed(schema)
    with driver_engine.connect() as first:
        ingest(first, metadata, one_batch(table, 1, [(5, "live")]))
        merges.clear()
    with driver_engine.connect().execution_options(isolation_level=isolation) as loading:
        ingest(loading, metadata, one_batch(table, 2, [(1, "a"), (5, "ours")]))
    kinds = [sql.split(" ", 1)[0] for sql in merges]
    assert kinds == (["MERGE"] if isolation == "READ COMMITTED" else ["INSERT"])
    assert query(f'SELECT id, value FROM "{schema}".events ORDER BY id') == [(1, "a"), (5, "ours")]


def test_a_reload_of_unchanged_rows_neither_rewrites_nor_locks_them(
    conn: sa.engine.Connection, schema: str, query: Callable[[str], list[tuple[Any, ...]]]
) -> None:
    """ON CONFLICT locked each unchanged live row (its xmax became the ingest's transaction)
    before skipping its update; MERGE only reads it."""
    metadata, table = keyed(schema)
    rows = [(i, f"v{i}") for i in range(100)]
    ingest(conn, metadata, one_batch(table, 1, rows))
    before = query(f'SELECT id, xmin::text, xmax::text FROM "{schema}".events ORDER BY id')
    ingest(conn, metadata, one_batch(table, 2, rows))
    after = query(f'SELECT id, xmin::text, xmax::text FROM "{schema}".events ORDER BY id')
    assert after == before
    assert {xmax for _, _, xmax in after} == {"0"}


@pytest.mark.usefixtures("merging")
def test_a_batch_of_unchanged_changed_new_and_repeated_keys_keeps_the_last_row_per_key(
    conn: sa.engine.Connection, schema: str, query: Callable[[str], list[tuple[Any, ...]]]
) -> None:
    """Only the last staged row of a key counts: a key whose last row equals the live one is
    left as it is even after a differing earlier row, and the other way round. NUMERIC 1.5 and
    1.50 are equal but not the same value."""
    metadata, table = prices(schema)
    d = decimal.Decimal
    live = [(i, d("1.5"), f"n{i}") for i in range(1, 7)] + [(9, d("9"), "n9")]
    ingest(conn, metadata, one_batch(table, 1, live))
    versions = dict(query(f'SELECT id, xmin::text FROM "{schema}".prices'))
    batch = [
        (1, d("1.5"), "n1"),  # unchanged
        (2, d("2"), "n2"),  # changed
        (3, d("1.50"), "n3"),  # the same amount, written otherwise
        (4, d("4"), "x"),  # changed, then back to the live row
        (5, d("1.5"), "n5"),  # unchanged, then changed
        (7, d("7"), "n7"),  # new, between live keys
        (4, d("1.5"), "n4"),
        (5, d("5"), "n5"),
        (7, d("7.0"), "n7"),
        (6, None, None),  # changed to NULLs
    ]
    ingest(conn, metadata, one_batch(table, 2, batch))
    assert query(f'SELECT id, amount::text, note FROM "{schema}".prices ORDER BY id') == [
        (1, "1.5", "n1"),
        (2, "2", "n2"),
        (3, "1.50", "n3"),
        (4, "1.5", "n4"),
        (5, "5", "n5"),
        (6, None, None),
        (7, "7.0", "n7"),
        (9, "9", "n9"),
    ]
    now = query(f'SELECT id, xmin::text FROM "{schema}".prices')
    assert sorted(key for key, xmin in now if xmin != versions.get(key)) == [2, 3, 5, 6, 7]


@pytest.mark.usefixtures("merging")
def test_a_table_of_key_columns_alone_gets_the_new_keys_of_a_batch(
    conn: sa.engine.Connection, schema: str, query: Callable[[str], list[tuple[Any, ...]]]
) -> None:
    table = sa.Table(
        "pairs",
        sa.MetaData(),
        sa.Column("a", sa.INTEGER, primary_key=True),
        sa.Column("b", sa.TEXT, primary_key=True),
        schema=schema,
    )
    ingest(conn, table.metadata, one_batch(table, 1, [(1, "a"), (3, "c")]))
    versions = query(f'SELECT a, xmin::text FROM "{schema}".pairs WHERE a = 1')
    ingest(conn, table.metadata, one_batch(table, 2, [(2, "b"), (1, "a"), (2, "b")]))
    assert query(f'SELECT a, b FROM "{schema}".pairs ORDER BY a') == [(1, "a"), (2, "b"), (3, "c")]
    assert query(f'SELECT a, xmin::text FROM "{schema}".pairs WHERE a = 1') == versions


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


@pytest.mark.parametrize(
    ("rows", "landed", "sorted_"),
    [
        ([(1, "a"), (3, "c"), (2, "b")], [(1, "a"), (2, "b"), (3, "c")], False),
        ([(1, "a"), (2, "b"), (1, "c")], [(1, "c"), (2, "b")], True),
        ([CopyRow("1\ta\n"), CopyRow("2\tb\n")], [(1, "a"), (2, "b")], True),
    ],
    ids=["distinct", "a key twice", "copy lines"],
)
def test_a_first_load_sorts_its_staged_rows_only_where_a_key_may_repeat(
    conn: sa.engine.Connection,
    schema: str,
    query: Callable[[str], list[tuple[Any, ...]]],
    monkeypatch: pytest.MonkeyPatch,
    rows: list[Any],
    landed: list[tuple[Any, ...]],
    sorted_: bool,
) -> None:
    """Keys that all follow the live ones go in with a plain INSERT; where each of the batch's
    rows is a value tuple of its own key, the staged rows go in as staged, without the sort
    that keeps the last row per key."""
    metadata, table = keyed(schema)
    merges = _merges(monkeypatch)
    ingest(conn, metadata, one_batch(table, 1, rows))
    assert [sql.split(" ", 1)[0] for sql in merges] == ["INSERT"]
    assert ("DISTINCT ON" in merges[0]) is sorted_
    assert query(f'SELECT id, value FROM "{schema}".events ORDER BY id') == landed


def test_keys_distinct_in_python_but_equal_in_postgresql_keep_the_last_row(
    conn: sa.engine.Connection,
    schema: str,
    query: Callable[[str], list[tuple[Any, ...]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two NaNs are different keys to Python and one to PostgreSQL: the INSERT of rows taken
    for distinct fails on the second, and the upsert that runs instead keeps the last row."""
    metadata = sa.MetaData()
    table = sa.Table(
        "events",
        metadata,
        sa.Column("id", pg.DOUBLE_PRECISION, primary_key=True),
        sa.Column("value", sa.TEXT),
        schema=schema,
    )
    merges = _merges(monkeypatch)
    rows = [(float("nan"), "first"), (1.5, "b"), (float("nan"), "last")]
    ingest(conn, metadata, one_batch(table, 1, rows))
    assert "DISTINCT ON" not in merges[0] and "ON CONFLICT" in merges[-1]
    landed = query(f'SELECT id::text, value FROM "{schema}".events ORDER BY id')
    assert landed == [("1.5", "b"), ("NaN", "last")]
