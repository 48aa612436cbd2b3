"""`ingest`: prepare the tables, then for each batch write its rows and watermark in one commit."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ContextManager, Optional

import sqlalchemy as sa
from pg_force_execute import pg_force_execute

from . import _catalog, _migrate, _watermark
from ._copy import BatchWriter, Target
from ._db import Db
from ._encode import row_encoder
from ._options import Delete, HighWatermark, Upsert, Visibility, as_option
from ._schema import WantedTable, wanted_tables
from ._sql import ident, qualified
from ._swap import create_new_table, new_table_name, swap_in
from ._upsert import create_staging_sql, drop_staging_sql, staging_name

_LOGGER = logging.getLogger(__name__)

Batch = tuple[Any, Any, Iterable[tuple[sa.Table, Any]]]
OnBeforeVisible = Callable[[sa.engine.Connection, sa.Table, Any], None]


def _default_force_execute(
    conn: sa.engine.Connection, logger: logging.Logger
) -> ContextManager[Any]:
    return pg_force_execute(conn, logger=logger)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class _TableState:
    """One table through an ingest call: its plan, and where its rows go next."""

    wanted: WantedTable
    plan: _migrate.Plan
    swap: bool
    copy_old_rows: bool
    staging: Optional[str]


def _prepare_table(
    db: Db, wanted: WantedTable, delete: Delete, upsert: Upsert, force: Callable[[], Any]
) -> _TableState:
    spec = wanted.spec
    if not _catalog.schema_exists(db, spec.schema):
        db.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(spec.schema)}")
    live = _catalog.live_table(db, spec.schema, spec.name)
    plan = _migrate.plan(live, spec)
    if plan.create:
        for statement in _migrate.create_table_sql(spec):
            db.execute(statement)
    elif plan.in_place:
        with force():
            db.execute(f"LOCK TABLE {qualified(spec.schema, spec.name)} IN ACCESS EXCLUSIVE MODE")
        _migrate.apply_in_place(db, plan.in_place)
    deleting = delete is not Delete.OFF and not plan.create
    swap = plan.rebuild or (deleting and not _catalog.is_empty(db, spec.schema, spec.name))
    staging = None
    if upsert is Upsert.IF_PRIMARY_KEY and spec.primary_key:
        staging = staging_name()
        db.execute(create_staging_sql(spec, staging))
    return _TableState(wanted, plan, swap, copy_old_rows=not deleting, staging=staging)


def _create_indexes_concurrently(conn: sa.engine.Connection, states: list[_TableState]) -> None:
    statements = [
        (statement, qualified(state.wanted.spec.schema, name))
        for state in states
        for statement, name in state.plan.concurrently
    ]
    if not statements:
        return
    with conn.engine.connect() as other:
        db = Db(other.execution_options(isolation_level="AUTOCOMMIT"))
        for statement, index in statements:
            try:
                db.execute(statement)
            except Exception:
                db.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {index}")
                raise


def _batches(batches: Callable[[Any], Iterable[Any]], start: Any) -> Iterator[Batch]:
    for batch in batches(start):
        if len(batch) == 2:
            yield batch[0], None, batch[1]
        else:
            yield batch[0], batch[1], batch[2]


def _start_watermark(high_watermark: Any, stored: Any) -> Any:
    if isinstance(high_watermark, str) and high_watermark in (
        HighWatermark.LATEST.value,
        HighWatermark.EARLIEST.value,
    ):
        return stored if HighWatermark(high_watermark) is HighWatermark.LATEST else None
    return high_watermark


def _targets(db: Db, states: list[_TableState], swapping: bool) -> dict[sa.Table, Target]:
    targets = {}
    for state in states:
        spec = state.wanted.spec
        name = spec.name
        if swapping and state.swap:
            name = new_table_name(spec)
            create_new_table(db, spec, name, copy_rows=state.copy_old_rows)
        encode = row_encoder(state.wanted.types)
        targets[state.wanted.table] = Target(state.wanted, encode, name, state.staging)
    return targets


def _swap_all(
    db: Db,
    targets: dict[sa.Table, Target],
    states: list[_TableState],
    force: Callable[[sa.engine.Connection, logging.Logger], ContextManager[Any]],
    logger: logging.Logger,
) -> list[_TableState]:
    for state in states:
        target = targets[state.wanted.table]
        if state.swap:
            swap_in(db, state.wanted.spec, target.name, force, logger)
    return [dataclasses.replace(state, swap=False) for state in states]


def _save_watermark(db: Db, first: WantedTable, high_watermark: Any) -> None:
    spec = first.spec
    db.execute(f"LOCK TABLE {qualified(spec.schema, spec.name)} IN SHARE UPDATE EXCLUSIVE MODE")
    value = high_watermark() if callable(high_watermark) else high_watermark
    _watermark.save(db, spec.schema, spec.name, value)


def _drop_staging(
    conn: sa.engine.Connection, db: Db, states: list[_TableState], logger: Any
) -> None:
    names = [state.staging for state in states if state.staging]
    if not names:
        return
    try:
        with conn.begin():
            for name in names:
                db.execute(drop_staging_sql(name))
    except Exception:
        logger.warning("Could not drop the staging tables %s", names, exc_info=True)


def ingest(  # noqa: PLR0917 (the positional parameters are the seed's API)
    conn: sa.engine.Connection,
    metadata: sa.MetaData,
    batches: Callable[[Any], Iterable[Any]],
    high_watermark: Any = HighWatermark.LATEST,
    visibility: Visibility = Visibility.AFTER_EACH_BATCH,
    delete: Delete = Delete.OFF,
    *,
    upsert: Upsert = Upsert.IF_PRIMARY_KEY,
    on_before_visible: Optional[OnBeforeVisible] = None,
    max_rows_per_table_buffer: int = 10000,
    get_pg_force_execute: Callable[
        [sa.engine.Connection, logging.Logger], ContextManager[Any]
    ] = _default_force_execute,
    logger: logging.Logger = _LOGGER,
) -> None:
    """Creates or migrates the tables of `metadata`, then ingests each batch in a transaction."""
    as_option(Visibility, visibility)
    delete, upsert = as_option(Delete, delete), as_option(Upsert, upsert)
    if max_rows_per_table_buffer < 1:
        raise ValueError("max_rows_per_table_buffer must be at least 1")
    wanted = wanted_tables(metadata)
    first = wanted[0]
    db = Db(conn)

    def force() -> ContextManager[Any]:
        return get_pg_force_execute(conn, logger)

    states: list[_TableState] = []
    try:
        with conn.begin():
            states = [_prepare_table(db, w, delete, upsert, force) for w in wanted]
            stored = _watermark.watermark(_watermark.load(db, first.spec.schema, first.spec.name))
        _create_indexes_concurrently(conn, states)

        ingested_a_batch = False
        for batch_high_watermark, batch_metadata, rows in _batches(
            batches, _start_watermark(high_watermark, stored)
        ):
            started = time.monotonic()
            with conn.begin():
                swapping = not ingested_a_batch
                targets = _targets(db, states, swapping)
                writer = BatchWriter(db, targets, max_rows_per_table_buffer)
                writer.write(rows)
                if swapping:
                    states = _swap_all(db, targets, states, get_pg_force_execute, logger)
                _save_watermark(db, first, batch_high_watermark)
                if on_before_visible is not None:
                    on_before_visible(conn, first.table, batch_metadata)
            ingested_a_batch = True
            # DEBUG: the caller (a sink) logs its own line per batch; skip the formatting too.
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "Ingested a batch: %s in %.3fs",
                    ", ".join(f"{t.fullname} {n} rows" for t, n in writer.counts.items()),
                    time.monotonic() - started,
                )

        if not ingested_a_batch:
            _finish_without_batches(db, states, delete, get_pg_force_execute, logger)
    finally:
        _drop_staging(conn, db, states, logger)


def _finish_without_batches(
    db: Db,
    states: list[_TableState],
    delete: Delete,
    force: Callable[[sa.engine.Connection, logging.Logger], ContextManager[Any]],
    logger: logging.Logger,
) -> None:
    """Schema changes are made even without a batch; Delete.ALL empties the tables too."""
    pending = [
        dataclasses.replace(state, copy_old_rows=state.copy_old_rows or delete is not Delete.ALL)
        for state in states
        if state.plan.rebuild or (state.swap and delete is Delete.ALL)
    ]
    if not pending:
        return
    with db.conn.begin():
        targets = _targets(db, pending, swapping=True)
        _swap_all(db, targets, pending, force, logger)
