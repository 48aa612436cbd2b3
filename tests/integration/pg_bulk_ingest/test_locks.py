"""Upserts and appends never take an ACCESS EXCLUSIVE lock on the live table."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from pg_bulk_ingest import Upsert, ingest

from .test_ingest import keyed, one_batch


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
