"""Ingest behaviour against the real PostgreSQL: tables, batches, upsert, watermark, errors."""

from __future__ import annotations

import decimal
import logging
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from pg_bulk_ingest import (
    DataError,
    Delete,
    HighWatermark,
    SchemaError,
    Upsert,
    WatermarkError,
    _watermark,
    ingest,
    read_high_watermark,
)


def keyed(schema: str, name: str = "events") -> tuple[sa.MetaData, sa.Table]:
    metadata = sa.MetaData()
    table = sa.Table(
        name,
        metadata,
        sa.Column("id", sa.INTEGER, primary_key=True),
        sa.Column("value", sa.VARCHAR(16), nullable=True),
        sa.Index(None, "value"),
        schema=schema,
    )
    return metadata, table


def unkeyed(schema: str, name: str = "log") -> tuple[sa.MetaData, sa.Table]:
    metadata = sa.MetaData()
    table = sa.Table(
        name,
        metadata,
        sa.Column("id", sa.INTEGER),
        sa.Column("value", sa.VARCHAR(16)),
        schema=schema,
    )
    return metadata, table


def prices(schema: str) -> tuple[sa.MetaData, sa.Table]:
    """A table keyed on `id`, with a NUMERIC `amount` and a `note`."""
    metadata = sa.MetaData()
    table = sa.Table(
        "prices",
        metadata,
        sa.Column("id", sa.INTEGER, primary_key=True),
        sa.Column("amount", sa.NUMERIC),
        sa.Column("note", sa.TEXT),
        schema=schema,
    )
    return metadata, table


def one_batch(table: sa.Table, watermark: Any, rows: list[tuple[Any, ...]]) -> Any:
    def batches(_: Any) -> Any:
        yield watermark, ((table, row) for row in rows)

    return batches


def test_creates_missing_schema_table_and_indexes(conn: sa.engine.Connection, query: Any) -> None:
    schema = f"new_{uuid.uuid4().hex[:8]}"
    metadata, table = keyed(schema)
    try:
        ingest(conn, metadata, one_batch(table, 1, [(1, "a")]))
        assert query(f'SELECT id, value FROM "{schema}".events') == [(1, "a")]
        indexes = query(f"SELECT indexname FROM pg_indexes WHERE schemaname = '{schema}'")
        assert sorted(i for (i,) in indexes) == ["events_pkey", f"ix_{schema}_events_value"]
    finally:
        query(f'DROP SCHEMA "{schema}" CASCADE')


def test_appends_rows_to_a_table_without_primary_key(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata, table = unkeyed(schema)
    ingest(conn, metadata, one_batch(table, 1, [(1, "a"), (1, "a")]))
    ingest(conn, metadata, one_batch(table, 2, [(1, "a")]))
    assert query(f'SELECT count(*) FROM "{schema}".log') == [(3,)]


def test_upsert_keeps_the_last_row_per_key_and_updates_existing_rows(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata, table = keyed(schema)
    ingest(conn, metadata, one_batch(table, 1, [(1, "a"), (2, "b"), (1, "c")]))
    ingest(conn, metadata, one_batch(table, 2, [(2, "d"), (3, "e"), (2, "f")]))
    assert query(f'SELECT * FROM "{schema}".events ORDER BY id') == [
        (1, "c"),
        (2, "f"),
        (3, "e"),
    ]


def test_upsert_leaves_unchanged_rows_alone_and_rewrites_changed_ones(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata, table = prices(schema)
    rows = [(1, decimal.Decimal("1.5"), "a"), (2, decimal.Decimal("2"), None)]
    ingest(conn, metadata, one_batch(table, 1, rows))
    before = dict(query(f'SELECT id, xmin::text FROM "{schema}".prices'))
    replay = [*rows, (3, decimal.Decimal("3"), "c")]
    ingest(conn, metadata, one_batch(table, 2, replay))
    assert dict(query(f'SELECT id, xmin::text FROM "{schema}".prices WHERE id < 3')) == before
    ingest(conn, metadata, one_batch(table, 3, [(1, decimal.Decimal("1.50"), "a")]))
    assert query(f'SELECT id, amount::text, note FROM "{schema}".prices ORDER BY id') == [
        (1, "1.50", "a"),
        (2, "2", None),
        (3, "3", "c"),
    ]


def test_rows_of_interleaved_tables_keep_their_order_across_copies(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata = sa.MetaData()
    first = sa.Table(
        "a",
        metadata,
        sa.Column("id", sa.INTEGER, primary_key=True),
        sa.Column("n", sa.INTEGER),
        schema=schema,
    )
    second = sa.Table("b", metadata, sa.Column("n", sa.INTEGER), schema=schema)
    order = [first if i % 4 else second for i in range(200)]

    def batches(_: Any) -> Any:
        yield 1, ((table, (i % 5, i) if table is first else (i,)) for i, table in enumerate(order))

    ingest(conn, metadata, batches, max_rows_per_table_buffer=3)
    assert query(f'SELECT id, n FROM "{schema}".a ORDER BY id') == [
        (k, max(i for i in range(200) if i % 4 and i % 5 == k)) for k in range(5)
    ]
    assert query(f'SELECT n FROM "{schema}".b ORDER BY n') == [(i,) for i in range(0, 200, 4)]


def test_a_bad_value_after_rows_already_sent_rolls_the_batch_back(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata, table = unkeyed(schema)
    ingest(conn, metadata, one_batch(table, 1, [(0, "a")]))
    rows = [(i, "x" * 100) if i != 20_000 else ("not a number", "x") for i in range(30_000)]
    with pytest.raises(DataError) as raised:
        ingest(conn, metadata, one_batch(table, 2, rows), max_rows_per_table_buffer=25_000)
    assert (raised.value.column, raised.value.row) == ("id", 20_000)
    assert query(f'SELECT count(*) FROM "{schema}".log') == [(1,)]
    assert read_high_watermark(conn, table) == 1


def test_upsert_off_inserts_without_merging(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata, table = keyed(schema)
    ingest(conn, metadata, one_batch(table, 1, [(1, "a")]), upsert=Upsert.OFF)
    with pytest.raises(Exception, match="duplicate key"):
        ingest(conn, metadata, one_batch(table, 2, [(1, "b")]), upsert="__OFF__")
    assert query(f'SELECT * FROM "{schema}".events') == [(1, "a")]


def test_upsert_staging_table_is_temporary_and_dropped_after_the_call(
    conn: sa.engine.Connection, schema: str
) -> None:
    metadata, table = keyed(schema)
    seen: list[Any] = []

    def on_before_visible(
        c: sa.engine.Connection, ingest_table: sa.Table, batch_metadata: Any
    ) -> None:
        seen.extend(
            c.exec_driver_sql(
                "SELECT relpersistence FROM pg_class WHERE relname LIKE 'pg_bulk_ingest_stage%%' "
                "AND relkind = 'r' AND pg_table_is_visible(oid)"
            ).fetchall()
        )

    ingest(conn, metadata, one_batch(table, 1, [(1, "a")]), on_before_visible=on_before_visible)
    assert seen == [("t",)]
    with conn.begin():
        left = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'pg_bulk_ingest_stage%%' "
            "AND pg_table_is_visible(oid)"
        ).scalar()
    assert left == 0


def test_latest_high_watermark_resumes_where_the_last_batch_ended(
    conn: sa.engine.Connection, schema: str
) -> None:
    metadata, table = keyed(schema)
    passed: list[Any] = []

    def batches(high_watermark: Any) -> Any:
        passed.append(high_watermark)
        yield {"offset": 5}, ((table, (1, "a")),)

    ingest(conn, metadata, batches)
    ingest(conn, metadata, batches, high_watermark="__LATEST__")
    ingest(conn, metadata, batches, high_watermark=HighWatermark.EARLIEST)
    ingest(conn, metadata, batches, high_watermark={"offset": 2})
    assert passed == [None, {"offset": 5}, None, {"offset": 2}]
    assert read_high_watermark(conn, table) == {"offset": 5}


def test_batches_with_metadata_are_accepted_and_passed_to_on_before_visible(
    conn: sa.engine.Connection, schema: str
) -> None:
    metadata, table = keyed(schema)
    calls: list[tuple[str, Any]] = []

    def batches(_: Any) -> Any:
        yield 1, {"batch": 1}, ((table, (1, "a")),)
        yield 2, {"batch": 2}, ((table, (2, "b")),)

    def on_before_visible(
        c: sa.engine.Connection, ingest_table: sa.Table, batch_metadata: Any
    ) -> None:
        assert c.in_transaction()
        calls.append((ingest_table.name, batch_metadata))

    ingest(conn, metadata, batches, on_before_visible=on_before_visible)
    assert calls == [("events", {"batch": 1}), ("events", {"batch": 2})]


def test_a_batch_is_invisible_to_other_clients_until_its_commit(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata, table = keyed(schema)
    seen: list[Any] = []

    def batches(_: Any) -> Any:
        yield 1, ((table, (1, "a")),)
        yield 2, ((table, (2, "b")),)

    def on_before_visible(
        c: sa.engine.Connection, ingest_table: sa.Table, batch_metadata: Any
    ) -> None:
        seen.append(query(f'SELECT count(*) FROM "{schema}".events')[0][0])

    ingest(conn, metadata, batches, on_before_visible=on_before_visible)
    assert seen == [0, 1]


def test_an_exception_in_batches_keeps_earlier_batches_and_their_watermark(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata, table = keyed(schema)

    def batches(_: Any) -> Any:
        yield 1, ((table, (1, "a")),)

        def rows() -> Any:
            yield table, (2, "b")
            raise RuntimeError("source failed")

        yield 2, rows()

    with pytest.raises(RuntimeError, match="source failed"):
        ingest(conn, metadata, batches)
    assert query(f'SELECT id FROM "{schema}".events') == [(1,)]
    assert read_high_watermark(conn, table) == 1


def test_a_database_error_keeps_earlier_batches_and_their_watermark(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata, table = keyed(schema)

    def batches(_: Any) -> Any:
        yield 1, ((table, (1, "a")),)
        yield 2, ((table, (2, "far too long for sixteen")),)

    with pytest.raises(DataError, match="events"):
        ingest(conn, metadata, batches)
    assert query(f'SELECT id FROM "{schema}".events') == [(1,)]
    assert read_high_watermark(conn, table) == 1


def test_callable_watermark_is_called_holding_the_comment_lock(
    conn: sa.engine.Connection, schema: str
) -> None:
    metadata, table = keyed(schema)
    modes: list[Any] = []

    def next_watermark() -> Any:
        modes.extend(
            conn.exec_driver_sql(
                "SELECT l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                f"WHERE c.relname = 'events' AND c.relnamespace = '\"{schema}\"'::regnamespace "
                "AND l.pid = pg_backend_pid() AND l.mode = 'ShareUpdateExclusiveLock'"
            ).fetchall()
        )
        return {"merged": True}

    ingest(conn, metadata, one_batch(table, next_watermark, [(1, "a")]))
    assert modes == [("ShareUpdateExclusiveLock",)]
    assert read_high_watermark(conn, table) == {"merged": True}


def test_callable_watermark_that_raises_rolls_the_batch_back_and_propagates(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata, table = keyed(schema)
    ingest(conn, metadata, one_batch(table, 1, [(1, "a")]))

    class Fenced(Exception):
        pass

    def fenced() -> Any:
        raise Fenced

    with pytest.raises(Fenced):
        ingest(conn, metadata, one_batch(table, fenced, [(2, "b")]))
    assert query(f'SELECT id FROM "{schema}".events') == [(1,)]
    assert read_high_watermark(conn, table) == 1


def test_callable_watermark_reads_the_comment_read_with_the_lock(
    conn: sa.engine.Connection, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock and the comment are taken in one round trip; the callable's read and the save
    use that read, and once the batch ends (committed or not) a read asks the table again."""
    metadata, table = keyed(schema)
    ingest(conn, metadata, one_batch(table, {"at": 1}, [(1, "a")]))
    asked: list[Any] = []
    real = _watermark.comment
    monkeypatch.setattr(_watermark, "comment", lambda *a: asked.append(a) or real(*a))
    seen: list[Any] = []

    def next_watermark() -> Any:
        seen.append((read_high_watermark(conn, table), len(asked)))
        return {"at": seen[0][0]["at"] + 1}

    ingest(conn, metadata, one_batch(table, next_watermark, [(2, "b")]))
    ((read, asked_before),) = seen
    assert read == {"at": 1}
    assert len(asked) == asked_before  # neither the callable's read nor the save asked again
    assert read_high_watermark(conn, table) == {"at": 2}
    assert len(asked) == asked_before + 1

    def fenced() -> Any:
        read_high_watermark(conn, table)
        raise RuntimeError("fenced")

    with pytest.raises(RuntimeError, match="fenced"):
        ingest(conn, metadata, one_batch(table, fenced, [(3, "c")]))
    stored = '{"pg-bulk-ingest": {"high-watermark": 9}}'
    with conn.begin():
        conn.exec_driver_sql(f"COMMENT ON TABLE \"{schema}\".events IS '{stored}'")
    assert read_high_watermark(conn, table) == 9


def test_watermark_keeps_other_keys_of_the_comment(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata, table = keyed(schema)
    ingest(conn, metadata, lambda _: iter(()))
    query(
        f'COMMENT ON TABLE "{schema}".events IS '
        '\'{"owner": "team-a", "pg-bulk-ingest": {"high-watermark": 1, "x": 2}}\''
    )
    ingest(conn, metadata, one_batch(table, 2, [(1, "a")]))
    assert query(f"SELECT obj_description('\"{schema}\".events'::regclass)") == [
        ('{"owner":"team-a","pg-bulk-ingest":{"high-watermark":2,"x":2}}',)
    ]


def test_a_human_comment_is_kept_under_the_comment_key(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata, table = keyed(schema)
    ingest(conn, metadata, lambda _: iter(()))
    query(f"COMMENT ON TABLE \"{schema}\".events IS 'Orders: one row each'")
    assert read_high_watermark(conn, table) is None
    ingest(conn, metadata, one_batch(table, "w:1", [(1, "a")]))
    assert query(f"SELECT obj_description('\"{schema}\".events'::regclass)") == [
        ('{"comment":"Orders: one row each","pg-bulk-ingest":{"high-watermark":"w:1"}}',)
    ]


@pytest.mark.parametrize(
    "comment", ['{"pg-bulk-ingest": 3}', '{"pg-bulk-ingest": {"high-wat', '{"a": 1} [']
)
def test_a_corrupt_comment_raises_instead_of_being_replaced(
    conn: sa.engine.Connection, schema: str, query: Any, comment: str
) -> None:
    metadata, table = keyed(schema)
    ingest(conn, metadata, lambda _: iter(()))
    escaped = comment.replace("'", "''")
    query(f"COMMENT ON TABLE \"{schema}\".events IS '{escaped}'")
    with pytest.raises(WatermarkError, match="COMMENT"):
        read_high_watermark(conn, table)
    with pytest.raises(WatermarkError, match="COMMENT"):
        ingest(conn, metadata, one_batch(table, 2, [(1, "a")]))
    assert query(f"SELECT obj_description('\"{schema}\".events'::regclass)") == [(comment,)]


def test_read_high_watermark_is_none_without_table(conn: sa.engine.Connection, schema: str) -> None:
    _, table = keyed(schema)
    assert read_high_watermark(conn, table) is None


def test_several_tables_are_filled_in_one_transaction_with_bounded_buffers(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata = sa.MetaData()
    first = sa.Table("a", metadata, sa.Column("id", sa.INTEGER, primary_key=True), schema=schema)
    second = sa.Table("b", metadata, sa.Column("id", sa.INTEGER), schema=schema)
    counts: list[Any] = []

    def batches(_: Any) -> Any:
        yield 1, ((first if i % 3 else second, (i,)) for i in range(100))

    def on_before_visible(
        c: sa.engine.Connection, ingest_table: sa.Table, batch_metadata: Any
    ) -> None:
        counts.append(query(f'SELECT count(*) FROM "{schema}".a'))

    ingest(
        conn, metadata, batches, max_rows_per_table_buffer=7, on_before_visible=on_before_visible
    )
    assert counts == [[(0,)]]
    assert query(f'SELECT count(*) FROM "{schema}".a') == [(66,)]
    assert query(f'SELECT count(*) FROM "{schema}".b') == [(34,)]
    assert read_high_watermark(conn, first) == 1


def test_delete_all_replaces_existing_rows(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata, table = keyed(schema)
    ingest(conn, metadata, one_batch(table, 1, [(1, "a"), (2, "b")]))
    ingest(conn, metadata, one_batch(table, 2, [(3, "c")]), delete=Delete.ALL)
    assert query(f'SELECT id FROM "{schema}".events') == [(3,)]


def test_delete_all_without_batches_empties_the_table(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata, table = keyed(schema)
    ingest(conn, metadata, one_batch(table, 1, [(1, "a")]))
    ingest(conn, metadata, lambda _: iter(()), delete=Delete.ALL)
    assert query(f'SELECT count(*) FROM "{schema}".events') == [(0,)]
    assert read_high_watermark(conn, table) == 1


def test_delete_before_first_batch_leaves_rows_when_there_is_no_batch(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata, table = keyed(schema)
    ingest(conn, metadata, one_batch(table, 1, [(1, "a")]))
    ingest(conn, metadata, lambda _: iter(()), delete=Delete.BEFORE_FIRST_BATCH)
    assert query(f'SELECT id FROM "{schema}".events') == [(1,)]
    ingest(conn, metadata, one_batch(table, 2, [(2, "b")]), delete="__BEFORE_FIRST_BATCH__")
    assert query(f'SELECT id FROM "{schema}".events') == [(2,)]


def test_first_load_into_an_empty_table_does_not_swap(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata, table = keyed(schema)
    ingest(conn, metadata, lambda _: iter(()))
    oid = query(f"SELECT '\"{schema}\".events'::regclass::oid")
    ingest(conn, metadata, one_batch(table, 1, [(1, "a")]), delete=Delete.BEFORE_FIRST_BATCH)
    assert query(f"SELECT '\"{schema}\".events'::regclass::oid") == oid


def test_awkward_identifiers_are_quoted(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata = sa.MetaData()
    awkward_schema = f'{schema} "Odd" Select'
    table = sa.Table(
        'My "Table"',
        metadata,
        sa.Column("Order", sa.INTEGER, primary_key=True),
        sa.Column("from where", sa.VARCHAR(5)),
        sa.Index('Idx "x"', "from where"),
        schema=awkward_schema,
    )
    quoted = '"' + awkward_schema.replace('"', '""') + '"'
    try:
        ingest(conn, metadata, one_batch(table, "a:b", [(1, "x")]))
        ingest(conn, metadata, one_batch(table, "a:c", [(1, "y")]))
        assert query(f'SELECT * FROM {quoted}."My ""Table"""') == [(1, "y")]
        assert read_high_watermark(conn, table) == "a:c"
    finally:
        query(f"DROP SCHEMA IF EXISTS {quoted} CASCADE")


def test_a_nul_character_raises_naming_table_column_and_row(
    conn: sa.engine.Connection, schema: str
) -> None:
    metadata, table = keyed(schema)
    with pytest.raises(DataError) as raised:
        ingest(conn, metadata, one_batch(table, 1, [(1, "a"), (2, "b\x00")]))
    assert (raised.value.table, raised.value.column, raised.value.row) == (
        f"{schema}.events",
        "value",
        1,
    )
    assert read_high_watermark(conn, table) is None


def test_rows_for_tables_outside_the_metadata_are_skipped_and_logged_once_at_debug(
    conn: sa.engine.Connection, schema: str, query: Any, caplog: pytest.LogCaptureFixture
) -> None:
    metadata, table = keyed(schema)
    _, other = unkeyed(schema)
    _, twin = keyed(schema)  # the same schema and name, but another metadata's table

    def batches(_: Any) -> Any:
        yield 1, [(other, (1, "x")), (table, (1, "a")), (twin, (9, "z")), (other, (2, "y"))]
        yield 2, [(other, (3, "x")), (table, (2, "b"))]

    with caplog.at_level(logging.DEBUG, logger="pg_bulk_ingest"):
        ingest(conn, metadata, batches)
    assert query(f'SELECT id, value FROM "{schema}".events ORDER BY id') == [(1, "a"), (2, "b")]
    assert query(f"SELECT to_regclass('\"{schema}\".log')") == [(None,)]
    skipped = [r.getMessage() for r in caplog.records if "Skipping the rows" in r.getMessage()]
    assert skipped == [
        f"Skipping the rows for {schema}.log: it is not a table of the metadata passed to ingest",
        f"Skipping the rows for {schema}.events: it is not a table of the metadata passed to "
        "ingest",
    ]
    assert all(r.levelno == logging.DEBUG for r in caplog.records if "Skipping" in r.getMessage())
    assert read_high_watermark(conn, table) == 2


def test_a_row_for_something_that_is_not_a_table_raises(
    conn: sa.engine.Connection, schema: str
) -> None:
    metadata, _ = keyed(schema)
    with pytest.raises(SchemaError, match="which is not a table"):
        ingest(conn, metadata, lambda _: iter([(1, [("events", (1, "a"))])]))


def test_a_generic_json_type_is_rejected_up_front(conn: sa.engine.Connection, schema: str) -> None:
    metadata = sa.MetaData()
    sa.Table("j", metadata, sa.Column("doc", sa.JSON), schema=schema)
    with pytest.raises(SchemaError, match="JSON"):
        ingest(conn, metadata, lambda _: iter(()))


@pytest.mark.parametrize(
    "key",
    [False, True],  # binary COPY into the table; COPY text (JSON keeps it) into the staging table
    ids=["append-binary", "upsert-text"],
)
def test_a_value_past_postgresqls_1_gb_limit_is_a_data_error_naming_its_column_and_row(
    conn: sa.engine.Connection, schema: str, query: Any, key: bool
) -> None:
    extra = [sa.Column("meta", postgresql.JSON)] if key else []
    metadata = sa.MetaData()
    table = sa.Table(
        "docs",
        metadata,
        sa.Column("id", sa.BIGINT, primary_key=key),
        sa.Column("doc", sa.TEXT),
        *extra,
        schema=schema,
    )
    nothing = (None,) * len(extra)
    ingest(conn, metadata, one_batch(table, 1, [(0, "kept", *nothing)]))
    huge = "x" * ((1 << 30) + 1)
    with pytest.raises(DataError) as raised:
        ingest(conn, metadata, one_batch(table, 2, [(1, "a", *nothing), (2, huge, *nothing)]))
    del huge
    error = raised.value
    # Binary COPY reads field by field; text COPY fails on the line, naming no column.
    assert (error.table, error.column, error.row) == (f"{schema}.docs", None if key else "doc", 1)
    assert "PostgreSQL holds at most 1 GB in one value" in error.reason
    assert "pg_bulk_ingest" not in str(error)  # the user's table, never the staging table
    assert query(f'SELECT id, doc FROM "{schema}".docs') == [(0, "kept")]
    assert read_high_watermark(conn, table) == 1
