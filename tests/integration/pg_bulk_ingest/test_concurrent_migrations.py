"""Callers that migrate the same table at once take turns: none fails, no row is lost."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from pg_bulk_ingest import ingest

from .test_migrations import load, table_of

CALLERS = 3
ROUNDS = 3

CHANGES = [
    ("creates the table", None),
    (
        "adds a column in place",
        lambda: [*_old(), sa.Column("w", sa.TEXT)],
    ),
    (
        "adds an index and a unique constraint",
        lambda: [*_old(), sa.Index("items_v_idx", "v"), sa.UniqueConstraint("id", "v")],
    ),
    (
        "changes a type: a new table swapped in",
        lambda: [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.BIGINT)],
    ),
]


def _old() -> list[Any]:
    return [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.INTEGER)]


def _ingest_together(
    engine: sa.engine.Engine, schema: str, columns: Any, round_: int
) -> list[BaseException | None]:
    """Every caller plans its migration at the same moment, each with a batch of its own."""
    ready = threading.Barrier(CALLERS)

    def call(caller: int) -> None:
        metadata, table = table_of(schema, *columns())
        key = 1000 + round_ * CALLERS + caller
        row = (key, key, *([None] * (len(table.columns) - 2)))

        def batches(_: Any) -> Any:
            ready.wait(timeout=30)
            yield key, ((table, row),)

        with engine.connect() as conn:
            ingest(conn, metadata, batches)

    with concurrent.futures.ThreadPoolExecutor(CALLERS) as pool:
        calls = [pool.submit(call, caller) for caller in range(CALLERS)]
        return [call.exception() for call in calls]


@pytest.mark.parametrize("new", [c[1] for c in CHANGES], ids=[c[0] for c in CHANGES])
def test_callers_migrating_one_table_at_once_all_succeed_and_keep_every_row(
    conn: sa.engine.Connection,
    driver_engine: sa.engine.Engine,
    schema: str,
    query: Any,
    new: Any,
) -> None:
    expected = []
    for round_ in range(ROUNDS):
        query(f'DROP TABLE IF EXISTS "{schema}".items')
        kept = []
        if new is not None:
            load(conn, table_of(schema, *_old())[0], [(1, 10)])
            kept = [(1, 10)]
        errors = _ingest_together(driver_engine, schema, new or _old, round_)
        assert errors == [None] * CALLERS, errors
        expected = kept + [(1000 + round_ * CALLERS + c,) * 2 for c in range(CALLERS)]
        assert query(f'SELECT id, v FROM "{schema}".items ORDER BY id') == expected
