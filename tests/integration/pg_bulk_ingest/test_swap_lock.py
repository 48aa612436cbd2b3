"""A rebuild's ACCESS EXCLUSIVE lock is held for the swap alone: materialized views reading the
table are filled again from the new table before it, and the watermark and `on_before_visible`
come before it too, so a reader of the table never waits for them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from pg_bulk_ingest import ingest, read_high_watermark

from .test_rebuild_keeps import first_load, items, rebuild, v_type

# How long the slow part takes, and the most a reader of the table may wait meanwhile.
SLOW_SECONDS = 3.0
MAX_READER_WAIT_SECONDS = 1.0


@contextmanager
def timed_reads(engine: sa.engine.Engine, sql: str) -> Iterator[list[float]]:
    """Runs `sql` every 50 ms on a connection of its own while the block runs; yields the
    duration of each run."""
    durations: list[float] = []
    done = threading.Event()
    failures: list[BaseException] = []

    def read() -> None:
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as reader:
                while not done.is_set():
                    started = time.monotonic()
                    reader.exec_driver_sql(sql).all()
                    durations.append(time.monotonic() - started)
                    time.sleep(0.05)
        except BaseException as error:  # surfaced by the test
            failures.append(error)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        yield durations
    finally:
        done.set()
        thread.join()
    assert not failures, failures


def view_facts(query: Any, schema: str) -> list[Any]:
    """Each materialized view's name, options, comment, definition, indexes and owner; in the
    definition, the table read as `items items` (its own name as alias, which a view filled
    before the swap gets) reads `items`: it means the same."""
    return [
        (*row[:3], row[3].replace(".items items", ".items"), *row[4:])
        for row in query(
            "SELECT c.relname, c.reloptions::text, obj_description(c.oid, 'pg_class'), "
            "pg_get_viewdef(c.oid), ARRAY(SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indrelid = c.oid ORDER BY 1)::text, pg_get_userbyid(c.relowner) "
            f"FROM pg_class c WHERE c.relnamespace = '\"{schema}\"'::regnamespace "
            "AND c.relkind = 'm' ORDER BY 1"
        )
    ]


SLOW = "(SELECT 1 FROM pg_sleep({seconds})) AS slow"
VIEWS = {
    "reading the table": "SELECT id, v, {slow} FROM {s}.items",
    "with an alias of its own": "SELECT i.id, i.v, {slow} FROM {s}.items i WHERE i.v > 0",
    "joining another table": (
        "SELECT i.id, i.v + o.bonus AS v, {slow} FROM {s}.items i JOIN {s}.bonus o ON o.id = i.id"
    ),
    "reading the table twice": (
        "SELECT a.id, b.v, {slow} FROM {s}.items a JOIN {s}.items b ON b.id = a.id"
    ),
}


@pytest.mark.parametrize("select", list(VIEWS.values()), ids=list(VIEWS))
def test_a_reader_never_waits_for_a_slow_materialized_view_to_fill_again(
    conn: sa.engine.Connection,
    engine: sa.engine.Engine,
    schema: str,
    query: Any,
    select: str,
) -> None:
    first_load(conn, schema)
    s = f'"{schema}"'
    query(f"CREATE TABLE {s}.bonus AS SELECT generate_series(1, 20) AS id, 1 AS bonus")
    slow = SLOW.format(seconds=SLOW_SECONDS)
    query(
        f"CREATE MATERIALIZED VIEW {s}.slow WITH (fillfactor = 70) AS "
        + select.format(s=s, slow=slow)
    )
    query(f"CREATE UNIQUE INDEX slow_id ON {s}.slow (id)")
    query(f"COMMENT ON MATERIALIZED VIEW {s}.slow IS 'three seconds to fill'")
    before = view_facts(query, schema)

    with timed_reads(engine, f"SELECT count(*) FROM {s}.items") as durations:
        rebuild(conn, schema)

    assert v_type(query, schema) == "bigint"
    assert view_facts(query, schema) == before
    assert query(f"SELECT count(*), max(id) FROM {s}.slow") == [(11, 11)]
    longest = max(durations)
    assert longest < MAX_READER_WAIT_SECONDS, f"a reader waited {longest:.2f}s"


def test_a_view_whose_text_names_the_table_elsewhere_is_made_again_under_the_lock(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    """A string that looks like the table's FROM is pointed at the new table by the text
    rewrite too; the swap sees that the view would not read as before and makes it again."""
    first_load(conn, schema)
    s = f'"{schema}"'
    query(
        f"CREATE MATERIALIZED VIEW {s}.tricky AS SELECT id, 'FROM {s}.items' AS note FROM {s}.items"
    )
    before = view_facts(query, schema)

    rebuild(conn, schema)

    assert view_facts(query, schema) == before
    assert query(f"SELECT DISTINCT note FROM {s}.tricky") == [(f"FROM {s}.items",)]
    assert query(f"SELECT count(*) FROM {s}.tricky") == [(11,)]
    left = query(
        "SELECT count(*) FROM pg_class "
        f"WHERE relnamespace = '{s}'::regnamespace AND relname LIKE '%%pgbi%%'"
    )
    assert left == [(0,)]


def test_on_before_visible_runs_before_the_swap_with_the_table_the_rows_went_into(
    conn: sa.engine.Connection, engine: sa.engine.Engine, schema: str, query: Any
) -> None:
    first_load(conn, schema)
    s = f'"{schema}"'
    metadata = items(schema, sa.BIGINT)
    (table,) = metadata.tables.values()
    seen: list[tuple[str, int]] = []

    def on_before_visible(c: sa.engine.Connection, ingest_table: sa.Table, _: Any) -> None:
        count = c.execute(sa.select(sa.func.count()).select_from(ingest_table)).scalar_one()
        seen.append((ingest_table.name, count))
        time.sleep(SLOW_SECONDS)

    def batches(_: Any) -> Any:
        yield {"at": 1}, None, ((table, (11, 110, "w11")),)
        yield {"at": 2}, None, ((table, (12, 120, "w12")),)

    with timed_reads(engine, f"SELECT count(*) FROM {s}.items") as durations:
        ingest(conn, metadata, batches, on_before_visible=on_before_visible)

    assert v_type(query, schema) == "bigint"
    (first_name, first_count), (second_name, second_count) = seen
    assert first_name != "items" and first_name.startswith("items_pgbi_")
    assert (first_count, second_name, second_count) == (11, "items", 12)
    assert read_high_watermark(conn, table) == {"at": 2}
    longest = max(durations)
    assert longest < MAX_READER_WAIT_SECONDS, f"a reader waited {longest:.2f}s"
