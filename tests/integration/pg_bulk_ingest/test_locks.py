"""Upserts and appends never take an ACCESS EXCLUSIVE lock on the live table, and readers
never wait for a batch, even one that migrates the table."""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

import pytest
import sqlalchemy as sa

from pg_bulk_ingest import Upsert, ingest

from .test_ingest import keyed, one_batch
from .test_migrations import load, shape, table_of

# How long the first batch of a migrating call takes, and the most a reader may wait meanwhile.
SLOW_BATCH_SECONDS = 5.0
MAX_READER_WAIT_SECONDS = 0.2


def _no_force_execute(_conn: Any, _logger: Any) -> Any:
    raise AssertionError("an ACCESS EXCLUSIVE lock was asked for")


@pytest.mark.parametrize("upsert", [Upsert.IF_PRIMARY_KEY, Upsert.OFF])
def test_a_batch_into_an_existing_table_holds_no_access_exclusive_lock_and_waits_for_no_reader(
    upsert: Upsert,
    conn: sa.engine.Connection,
    driver_engine: sa.engine.Engine,
    schema: str,
) -> None:
    metadata, table = keyed(schema)
    ingest(conn, metadata, one_batch(table, 1, [(1, "a"), (2, "b")]))
    held: list[str] = []

    def record_locks(inner: sa.engine.Connection, _table: Any, _metadata: Any) -> None:
        held.extend(
            inner.exec_driver_sql(
                "SELECT mode FROM pg_locks WHERE pid = pg_backend_pid() AND relation = "
                f"'\"{schema}\".events'::regclass"
            ).scalars()
        )

    with driver_engine.connect() as reader:
        # A long-running reader: any ACCESS EXCLUSIVE request would queue behind it.
        reader.exec_driver_sql(f'SELECT count(*) FROM "{schema}".events').all()
        conn.exec_driver_sql("SET lock_timeout = '5s'")
        conn.commit()
        ingest(
            conn,
            metadata,
            # With upsert, key 2 is updated in place; without it, only new keys go in.
            one_batch(
                table,
                2,
                [(2, "c"), (3, "d")] if upsert is Upsert.IF_PRIMARY_KEY else [(3, "c"), (4, "d")],
            ),
            upsert=upsert,
            on_before_visible=record_locks,
            get_pg_force_execute=_no_force_execute,
        )
        assert reader.exec_driver_sql("SELECT 1").scalar() == 1  # still alive, never blocked
        reader.rollback()
    assert held and "AccessExclusiveLock" not in held, held


MIGRATIONS = [
    (
        "adds a column in place",
        lambda: [
            sa.Column("id", sa.INTEGER, primary_key=True),
            sa.Column("v", sa.INTEGER),
            sa.Column("w", sa.TEXT),
        ],
    ),
    (
        "changes a type: a new table swapped in",
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.BIGINT)],
    ),
    (
        "adds an index and a unique constraint",
        lambda: [
            sa.Column("id", sa.INTEGER, primary_key=True),
            sa.Column("v", sa.INTEGER, unique=True),
            sa.Index("items_id_v_idx", "id", "v"),
        ],
    ),
]


@pytest.mark.parametrize("new", [c[1] for c in MIGRATIONS], ids=[c[0] for c in MIGRATIONS])
def test_a_reader_waits_at_most_200_ms_during_a_5_second_batch_of_a_migrating_call(
    conn: sa.engine.Connection,
    driver_engine: sa.engine.Engine,
    schema: str,
    query: Any,
    new: Any,
) -> None:
    old_metadata, _ = table_of(
        schema, sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.INTEGER)
    )
    load(conn, old_metadata, [(1, 10)])
    old_shape = shape(query, schema)
    metadata, table = table_of(schema, *new())
    seen_before_the_batch: list[Any] = []
    reads: list[tuple[float, Any]] = []

    def read_during_the_batch() -> None:
        with driver_engine.connect() as reader:
            reader.exec_driver_sql("SELECT 1").all()  # connected: time the read alone
            time.sleep(SLOW_BATCH_SECONDS / 5)
            started = time.monotonic()
            rows = reader.exec_driver_sql(f'SELECT id, v FROM "{schema}".items').all()
            reads.append((time.monotonic() - started, [tuple(row) for row in rows]))
            reader.rollback()

    def slow_rows(reader: concurrent.futures.Executor) -> Any:
        read = reader.submit(read_during_the_batch)
        yield table, (2, 20, *([None] * (len(table.columns) - 2)))
        time.sleep(SLOW_BATCH_SECONDS)
        read.result()  # the batch lasts until the read is done

    def batches(_: Any) -> Any:
        seen_before_the_batch.append(shape(query, schema))
        with concurrent.futures.ThreadPoolExecutor(1) as reader:
            yield 2, slow_rows(reader)

    ingest(conn, metadata, batches)
    assert seen_before_the_batch == [old_shape]
    ((waited, rows),) = reads
    assert rows == [(1, 10)]
    assert waited <= MAX_READER_WAIT_SECONDS, f"a reader waited {waited:.3f}s"
    assert query(f'SELECT id, v FROM "{schema}".items ORDER BY id') == [(1, 10), (2, 20)]
