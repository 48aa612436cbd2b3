"""Migrations: nothing when matching, in place when cheap, otherwise a swap keeping grants/views."""

from __future__ import annotations

import contextlib
import datetime
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from pg_force_execute import pg_force_execute
from sqlalchemy.dialects import postgresql as pg

from pg_bulk_ingest import SchemaError, ingest, migration_plan


def table_of(schema: str, *columns: Any) -> tuple[sa.MetaData, sa.Table]:
    metadata = sa.MetaData()
    return metadata, sa.Table("items", metadata, *columns, schema=schema)


def load(conn: sa.engine.Connection, metadata: sa.MetaData, rows: list[tuple[Any, ...]]) -> None:
    table = next(iter(metadata.tables.values()))

    def batches(_: Any) -> Any:
        yield len(rows), ((table, row) for row in rows)

    ingest(conn, metadata, batches)


def identity(query: Any, schema: str) -> list[tuple[Any, ...]]:
    """The table's oid and the catalog row version: both unchanged when nothing was altered."""
    return query(f"SELECT oid, xmin::text FROM pg_class WHERE oid = '\"{schema}\".items'::regclass")


def columns(query: Any, schema: str) -> list[tuple[Any, ...]]:
    return query(
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
        f"WHERE attrelid = '\"{schema}\".items'::regclass AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum"
    )


def test_a_matching_table_is_left_alone_whatever_the_sqlalchemy_spelling(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    upper, _ = table_of(
        schema,
        sa.Column("id", sa.BIGINT, primary_key=True),
        sa.Column("name", sa.VARCHAR(10)),
        sa.Column("at", sa.TIMESTAMP(timezone=True)),
        sa.Column("amount", sa.NUMERIC(10, 2)),
        sa.Column("ratio", pg.DOUBLE_PRECISION),
        sa.Column("doc", pg.JSONB),
    )
    generic, _ = table_of(
        schema,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("name", sa.String(10)),
        sa.Column("at", sa.DateTime(timezone=True)),
        sa.Column("amount", sa.Numeric(10, 2)),
        sa.Column("ratio", sa.Float()),
        sa.Column("doc", pg.JSONB()),
    )
    load(conn, upper, [(1, "a", None, None, None, None)])
    before = identity(query, schema)
    load(conn, generic, [(2, "b", None, None, None, None)])
    load(conn, upper, [(3, "c", None, None, None, None)])
    assert identity(query, schema) == before
    assert query(f'SELECT count(*) FROM "{schema}".items') == [(3,)]


IN_PLACE = [
    (
        "adds a nullable column at the end",
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.VARCHAR(5))],
        lambda: [
            sa.Column("id", sa.INTEGER, primary_key=True),
            sa.Column("v", sa.VARCHAR(5)),
            sa.Column("w", sa.TEXT),
        ],
    ),
    (
        "drops NOT NULL",
        lambda: [
            sa.Column("id", sa.INTEGER, primary_key=True),
            sa.Column("v", sa.VARCHAR(5), nullable=False),
        ],
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.VARCHAR(5))],
    ),
    (
        "adds NOT NULL",
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.VARCHAR(5))],
        lambda: [
            sa.Column("id", sa.INTEGER, primary_key=True),
            sa.Column("v", sa.VARCHAR(5), nullable=False),
        ],
    ),
    (
        "widens a VARCHAR",
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.VARCHAR(5))],
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.VARCHAR(50))],
    ),
    (
        "turns a VARCHAR into TEXT",
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.VARCHAR(5))],
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.TEXT)],
    ),
    (
        "widens a NUMERIC's precision",
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.NUMERIC(5, 2))],
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.NUMERIC(12, 2))],
    ),
    (
        "adds an index concurrently",
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.VARCHAR(5))],
        lambda: [
            sa.Column("id", sa.INTEGER, primary_key=True),
            sa.Column("v", sa.VARCHAR(5)),
            sa.Index("items_v_idx", "v"),
        ],
    ),
]


@pytest.mark.parametrize(("old", "new"), [c[1:] for c in IN_PLACE], ids=[c[0] for c in IN_PLACE])
def test_cheap_changes_are_made_in_place_keeping_rows(
    conn: sa.engine.Connection, schema: str, query: Any, old: Any, new: Any
) -> None:
    old_metadata, _ = table_of(schema, *old())
    load(conn, old_metadata, [(1, "1")])
    oid = identity(query, schema)[0][0]
    new_metadata, new_table = table_of(schema, *new())
    load(conn, new_metadata, [(2, "2", *([None] * (len(new_table.columns) - 2)))])
    assert identity(query, schema)[0][0] == oid
    assert query(f'SELECT id FROM "{schema}".items ORDER BY id') == [(1,), (2,)]
    wanted = [
        (c.name, pg_name, not c.nullable)
        for c, pg_name in zip(new_table.columns, _format_types(conn, new_table))
    ]
    assert columns(query, schema) == wanted
    indexes = query(f"SELECT indexname FROM pg_indexes WHERE schemaname = '{schema}'")
    assert len(indexes) == 1 + len(new_table.indexes)
    checks = query(
        f"SELECT conname FROM pg_constraint WHERE conrelid = '\"{schema}\".items'::regclass "
        "AND contype = 'c'"
    )
    assert checks == []


def _format_types(conn: sa.engine.Connection, table: sa.Table) -> list[str]:
    from pg_bulk_ingest._types import pg_type

    return [pg_type(c.type).name for c in table.columns]  # type: ignore[union-attr]


SWAPS = [
    (
        "changes a column's type",
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.INTEGER)],
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.BIGINT)],
    ),
    (
        "narrows a VARCHAR",
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.VARCHAR(50))],
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.VARCHAR(10))],
    ),
    (
        "changes the primary key",
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.INTEGER)],
        lambda: [
            sa.Column("id", sa.INTEGER, primary_key=True),
            sa.Column("v", sa.INTEGER, primary_key=True),
        ],
    ),
]


@pytest.mark.parametrize(("old", "new"), [c[1:] for c in SWAPS], ids=[c[0] for c in SWAPS])
def test_other_changes_swap_in_a_new_table_keeping_rows_grants_and_views(
    conn: sa.engine.Connection, schema: str, query: Any, old: Any, new: Any
) -> None:
    old_metadata, _ = table_of(schema, *old())
    load(conn, old_metadata, [(1, 10)])
    oid = identity(query, schema)[0][0]
    query(f'GRANT SELECT ON "{schema}".items TO PUBLIC')
    query(f'CREATE VIEW "{schema}".v1 AS SELECT id FROM "{schema}".items')
    query(f'CREATE VIEW "{schema}".v2 AS SELECT id FROM "{schema}".v1')
    query(f'CREATE MATERIALIZED VIEW "{schema}".m AS SELECT id FROM "{schema}".items')
    query(f'GRANT SELECT ON "{schema}".v2 TO PUBLIC')
    query(f'COMMENT ON TABLE "{schema}".items IS \'{{"keep": true}}\'')
    new_metadata, _ = table_of(schema, *new())
    load(conn, new_metadata, [(2, 20)])
    assert identity(query, schema)[0][0] != oid
    assert query(f'SELECT id, v::text FROM "{schema}".items ORDER BY id') == [
        (1, "10"),
        (2, "20"),
    ]
    assert query(f'SELECT id FROM "{schema}".v2 ORDER BY id') == [(1,), (2,)]
    assert query(f'SELECT id FROM "{schema}".m ORDER BY id') == [(1,), (2,)]
    assert query(
        "SELECT has_table_privilege('public', c.oid, 'SELECT') FROM pg_class c "
        f"WHERE relnamespace = '\"{schema}\"'::regnamespace AND relname IN ('items', 'v2')"
    ) == [(True,), (True,)]
    assert query(f"SELECT obj_description('\"{schema}\".items'::regclass)") == [
        ('{"keep":true,"pg-bulk-ingest":{"high-watermark":1}}',)
    ]
    assert query(
        f"SELECT count(*) FROM pg_class WHERE relnamespace = '\"{schema}\"'::regnamespace"
        " AND relname LIKE 'items_pgbi%%'"
    ) == [(0,)]


def test_a_rebuild_without_batches_still_changes_the_table(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    old_metadata, _ = table_of(schema, sa.Column("id", sa.INTEGER), sa.Column("v", sa.INTEGER))
    load(conn, old_metadata, [(1, 10)])
    new_metadata, _ = table_of(schema, sa.Column("id", sa.BIGINT), sa.Column("v", sa.INTEGER))
    ingest(conn, new_metadata, lambda _: iter(()))
    assert columns(query, schema)[0] == ("id", "bigint", False)
    assert query(f'SELECT id, v FROM "{schema}".items') == [(1, 10)]


def test_the_swap_terminates_blockers_after_the_configured_delay(
    conn: sa.engine.Connection, schema: str, driver_engine: sa.engine.Engine, query: Any
) -> None:
    old_metadata, _ = table_of(schema, sa.Column("id", sa.INTEGER), sa.Column("v", sa.INTEGER))
    load(conn, old_metadata, [(1, 10)])
    new_metadata, _ = table_of(schema, sa.Column("id", sa.BIGINT), sa.Column("v", sa.INTEGER))
    blocker = driver_engine.connect()
    blocker.begin()
    blocker.exec_driver_sql(f'SELECT * FROM "{schema}".items').fetchall()

    def quick(c: sa.engine.Connection, logger: Any) -> Any:
        return pg_force_execute(
            c,
            delay=datetime.timedelta(seconds=0.5),
            check_interval=datetime.timedelta(seconds=0.2),
            logger=logger,
        )

    try:
        ingest(
            conn,
            new_metadata,
            lambda _: iter([(2, ((new_metadata.tables[f"{schema}.items"], (2, 20)),))]),
            get_pg_force_execute=quick,
        )
        assert columns(query, schema)[0] == ("id", "bigint", False)
        with pytest.raises(sa.exc.DBAPIError):
            blocker.exec_driver_sql("SELECT 1").fetchall()
    finally:
        with contextlib.suppress(Exception):
            blocker.close()
    assert threading.active_count() >= 1


def shape(query: Any, schema: str) -> Any:
    """What another client sees of the table: None without it, else its columns and indexes."""
    if not query(f"SELECT to_regclass('\"{schema}\".items') IS NOT NULL")[0][0]:
        return None
    indexes = query(
        "SELECT array_to_string(ARRAY(SELECT a.attname FROM unnest(i.indkey::int2[]) k(n) "
        "  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n), ',') "
        f"FROM pg_index i WHERE i.indrelid = '\"{schema}\".items'::regclass "
        "AND NOT i.indisprimary ORDER BY 1"
    )
    return columns(query, schema), [index_columns for (index_columns,) in indexes]


SHAPE_CHANGES = [
    (
        "adds a column",
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.INTEGER)],
        lambda: [
            sa.Column("id", sa.INTEGER, primary_key=True),
            sa.Column("v", sa.INTEGER),
            sa.Column("w", sa.TEXT),
        ],
    ),
    (
        "changes a column's type",
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.INTEGER)],
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.BIGINT)],
    ),
    (
        "adds an index",
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.INTEGER)],
        lambda: [
            sa.Column("id", sa.INTEGER, primary_key=True),
            sa.Column("v", sa.INTEGER),
            sa.Index("items_v_idx", "v"),
        ],
    ),
    (
        "removes an index",
        lambda: [
            sa.Column("id", sa.INTEGER, primary_key=True),
            sa.Column("v", sa.INTEGER),
            sa.Index("items_v_idx", "v"),
        ],
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.INTEGER)],
    ),
]


@pytest.mark.parametrize("with_batch", [True, False], ids=["a batch", "no batch"])
@pytest.mark.parametrize(
    ("old", "new"), [c[1:] for c in SHAPE_CHANGES], ids=[c[0] for c in SHAPE_CHANGES]
)
def test_a_migration_is_applied_only_once_the_first_batch_exists_or_at_the_end_without_one(
    conn: sa.engine.Connection, schema: str, query: Any, old: Any, new: Any, with_batch: bool
) -> None:
    old_metadata, _ = table_of(schema, *old())
    load(conn, old_metadata, [(1, 10)])
    before = shape(query, schema)
    new_metadata, new_table = table_of(schema, *new())
    seen: list[Any] = []

    def batches(high_watermark: Any) -> Any:
        seen.append((high_watermark, shape(query, schema)))
        if with_batch:
            yield 2, ((new_table, (2, 20, *([None] * (len(new_table.columns) - 2)))),)

    ingest(conn, new_metadata, batches)
    assert seen == [(1, before)]
    fresh, _ = table_of(f"{schema}_fresh", *new())
    try:
        load(conn, fresh, [])
        assert shape(query, schema) == shape(query, f"{schema}_fresh") != before
    finally:
        query(f'DROP SCHEMA IF EXISTS "{schema}_fresh" CASCADE')
    ids = [(1,), (2,)] if with_batch else [(1,)]
    assert query(f'SELECT id FROM "{schema}".items ORDER BY id') == ids


@pytest.mark.parametrize("with_batch", [True, False], ids=["a batch", "no batch"])
def test_a_missing_schema_and_table_are_created_only_once_the_first_batch_exists(
    conn: sa.engine.Connection, schema: str, query: Any, with_batch: bool
) -> None:
    missing = f"{schema}_new"
    metadata, table = table_of(
        missing, sa.Column("id", sa.INTEGER, primary_key=True), sa.Index("items_id", "id")
    )
    seen: list[Any] = []

    def batches(high_watermark: Any) -> Any:
        seen.append((high_watermark, query(f"SELECT to_regnamespace('\"{missing}\"')")))
        if with_batch:
            yield 1, ((table, (1,)),)

    try:
        ingest(conn, metadata, batches)
        assert seen == [(None, [(None,)])]
        assert shape(query, missing) == ([("id", "integer", True)], ["id"])
        assert query(f'SELECT count(*) FROM "{missing}".items') == [(int(with_batch),)]
    finally:
        query(f'DROP SCHEMA IF EXISTS "{missing}" CASCADE')


def test_a_widened_column_that_a_view_reads_is_changed_by_a_swap_not_refused_each_call(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    """PostgreSQL cannot change in place the type of a column a view reads: the plan sees it."""
    old_metadata, _ = table_of(
        schema, sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.VARCHAR(5))
    )
    load(conn, old_metadata, [(1, "abcde")])
    query(f'CREATE VIEW "{schema}".short AS SELECT id, v FROM "{schema}".items')
    new_metadata, _ = table_of(
        schema, sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.VARCHAR(10))
    )
    step = migration_plan(conn, new_metadata)[0]
    assert step.action == "rebuild" and "read by the view" in (step.reason or ""), step
    load(conn, new_metadata, [(2, "abcdefghij")])
    assert columns(query, schema)[1] == ("v", "character varying(10)", False)
    assert query(f'SELECT id, v FROM "{schema}".short ORDER BY id') == [
        (1, "abcde"),
        (2, "abcdefghij"),
    ]


def _three_columns(schema: str, *extra: Any) -> sa.MetaData:
    metadata, _ = table_of(
        schema,
        sa.Column("id", sa.INTEGER, primary_key=True),
        sa.Column("v", sa.INTEGER),
        sa.Column("w", sa.TEXT),
        *extra,
    )
    return metadata


def _without_w(schema: str) -> tuple[sa.MetaData, sa.Table]:
    return table_of(
        schema, sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.INTEGER)
    )


def test_a_column_the_definition_no_longer_has_is_dropped_in_place_with_ingests_index_on_it(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    load(conn, _three_columns(schema, sa.Index("items_w_idx", "w")), [(1, 10, "a")])
    oid = identity(query, schema)[0][0]
    metadata, table = _without_w(schema)
    ingest(conn, metadata, lambda _: iter([(2, ((table, (2, 20)),))]))
    assert identity(query, schema)[0][0] == oid
    assert query(f'SELECT * FROM "{schema}".items ORDER BY id') == [(1, 10), (2, 20)]
    assert query(f"SELECT indexname FROM pg_indexes WHERE schemaname = '{schema}'") == [
        ("items_pkey",)
    ]


@pytest.mark.parametrize(
    ("made_by_hand", "named"),
    [
        ("CREATE INDEX w_by_hand ON {t} (w)", "w_by_hand"),
        ("CREATE VIEW {s}.ws AS SELECT id, w FROM {t}", "ws"),
        ("ALTER TABLE {t} ADD CONSTRAINT w_short CHECK (length(w) < 9)", "w_short"),
    ],
)
def test_a_column_something_made_by_hand_uses_is_not_dropped_and_that_thing_is_named(
    conn: sa.engine.Connection, schema: str, query: Any, made_by_hand: str, named: str
) -> None:
    load(conn, _three_columns(schema), [(1, 10, "a")])
    query(made_by_hand.format(s=f'"{schema}"', t=f'"{schema}".items'))
    metadata, table = _without_w(schema)
    with pytest.raises(SchemaError) as raised:
        ingest(conn, metadata, lambda _: iter([(2, ((table, (2, 20)),))]))
    assert named in str(raised.value) and "'w'" in str(raised.value)
    with pytest.raises(SchemaError, match=named):
        migration_plan(conn, metadata)
    assert query(f'SELECT * FROM "{schema}".items') == [(1, 10, "a")]
