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
    """Creates the replacement table, filled from the live one when `copy_rows`."""
    for statement in create_table_sql(table, name):
        db.execute(statement)
    if not copy_rows:
        return
    live = _catalog.live_table(db, table.schema, table.name)
    assert live is not None
    source = qualified(table.schema, table.name)
    db.execute(f"LOCK TABLE {source} IN SHARE MODE")
    _convert.copy_rows(db, table, live, name)


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
