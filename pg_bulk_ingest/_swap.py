"""Rebuilds: a new table filled in the first batch, swapped in under a short ACCESS EXCLUSIVE.

All that depends on or decorates the live table is carried over to the new one by `_keep`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, ContextManager

import sqlalchemy as sa

from . import _catalog, _convert, _keep
from ._db import Db
from ._migrate import create_table_sql, temporary_name
from ._schema import TableSpec, identifier, primary_key_name
from ._sql import ident, qualified

ForceExecute = Callable[[sa.engine.Connection, logging.Logger], ContextManager[Any]]


def new_table_name(table: TableSpec) -> str:
    return identifier(table.name, "pgbi", uuid.uuid4().hex[:8])


def create_new_table(db: Db, table: TableSpec, name: str, *, copy_rows: bool) -> None:
    """Creates the replacement table, filled from the live one when `copy_rows`; its identity
    sequences go on from the live table's."""
    for statement in create_table_sql(table, name):
        db.execute(statement)
    live = _catalog.live_table(db, table.schema, table.name)
    assert live is not None
    if copy_rows:
        db.execute(f"LOCK TABLE {qualified(table.schema, table.name)} IN SHARE MODE")
        _convert.copy_rows(db, table, live, name)
    _continue_identities(db, table, live, name)


def _sequence(db: Db, schema: str, table: str, column: str) -> str | None:
    """The sequence of the identity (or serial) column, qualified; None without one."""
    found = db.value("SELECT pg_get_serial_sequence(%s, %s)", (qualified(schema, table), column))
    return None if found is None else str(found)


def _continue_identities(db: Db, table: TableSpec, live: TableSpec, name: str) -> None:
    """Sets each identity sequence of the new table `name` where the live table's stood, and
    past the values copied (for an ascending one), so that no value is given twice."""
    live_identities = {c.name for c in live.columns if c.identity is not None}
    for column in table.columns:
        if column.identity is None:
            continue
        sequence = _sequence(db, table.schema, name, column.name)
        assert sequence is not None
        if column.name in live_identities:
            old = _sequence(db, table.schema, table.name, column.name)
            if old is not None:
                db.execute(f"SELECT setval(%s, last_value, is_called) FROM {old}", (sequence,))
        if (column.identity.increment or 1) > 0:
            top = f"max({ident(column.name)})"
            db.execute(
                f"SELECT setval(%s, {top}) FROM {qualified(table.schema, name)} HAVING {top} >= "
                f"(SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END "
                f"FROM {sequence})",
                (sequence,),
            )


def _rename_into_place(db: Db, table: TableSpec, name: str) -> None:
    """Gives the table `name`, its constraints and its indexes the names of the definition,
    which the live table (now dropped) held while this one was built."""
    live = qualified(table.schema, table.name)
    db.execute(f"ALTER TABLE {qualified(table.schema, name)} RENAME TO {ident(table.name)}")
    if table.primary_key:
        db.execute(
            f"ALTER TABLE {live} RENAME CONSTRAINT {ident(primary_key_name(name))} "
            f"TO {ident(primary_key_name(table.name))}"
        )
    for index in table.indexes:
        built_as = temporary_name(name, index.name)
        if index.constraint:
            db.execute(
                f"ALTER TABLE {live} RENAME CONSTRAINT {ident(built_as)} TO {ident(index.name)}"
            )
        else:
            db.execute(
                f"ALTER INDEX {qualified(table.schema, built_as)} RENAME TO {ident(index.name)}"
            )
    for column in (c for c in table.columns if c.identity is not None):
        # An identity's sequence gets the name PostgreSQL gives it, which the live one's (now
        # dropped) had, when free.
        sequence = _sequence(db, table.schema, table.name, column.name)
        wanted = identifier(table.name, column.name, "seq")
        free = db.value("SELECT to_regclass(%s) IS NULL", (qualified(table.schema, wanted),))
        if sequence is not None and free:
            db.execute(f"ALTER SEQUENCE {sequence} RENAME TO {ident(wanted)}")


def swap_in(
    db: Db,
    table: TableSpec,
    name: str,
    force_execute: ForceExecute,
    logger: logging.Logger,
) -> None:
    """Replaces the live table by the table `name`, which gets all that depended on or
    decorated the live one (see `_keep`), in the caller's transaction. What was made by hand
    on the live table is built on the new one before the locks are taken."""
    prebuilt = _keep.prebuild(db, table, name)
    with force_execute(db.conn, logger):
        _keep.lock(db, table)
    kept = _keep.capture(db, table, name, prebuilt)
    _keep.detach(db, kept)
    # Without CASCADE: anything still depending on the table fails the swap, rather than going.
    db.execute(f"DROP TABLE {qualified(table.schema, table.name)}")
    _rename_into_place(db, table, name)
    _keep.give_back(db, kept)
    logger.info("Swapped a rebuilt %s in", table.display)
