"""`ingest`: read the stored watermark, wait for the first batch, bring the tables to their
definition, then write each batch and its watermark in one commit."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ContextManager, Optional

import sqlalchemy as sa
from pg_force_execute import pg_force_execute

from . import _catalog, _keep, _migrate, _watermark
from ._binary import TableEncoder
from ._copy import BatchWriter, Target
from ._db import Db, sqlstate
from ._errors import MigrationError
from ._lock import migration_locks
from ._options import Delete, HighWatermark, Upsert, Visibility, as_option
from ._schema import WantedTable, creation_order, wanted_tables
from ._sql import ident, qualified
from ._swap import ForceExecute, create_new_table, new_table_name, swap_in
from ._upsert import create_staging_sql, drop_staging_sql, staging_name

_LOGGER = logging.getLogger(__name__)

Batch = tuple[Any, Any, Iterable[tuple[sa.Table, Any]]]
OnBeforeVisible = Callable[[sa.engine.Connection, sa.Table, Any], None]
_CHECK_VIOLATION = "23514"
# Binary COPY sends text as UTF-8 bytes, which PostgreSQL takes as they are only when both the
# connection's and the database's encodings are UTF8 (it converts them otherwise).
_BINARY_ENCODINGS_SQL = (
    "SELECT current_setting('server_encoding') = 'UTF8' "
    "AND current_setting('client_encoding') = 'UTF8'"
)


def _default_force_execute(
    conn: sa.engine.Connection, logger: logging.Logger
) -> ContextManager[Any]:
    return pg_force_execute(conn, logger=logger)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class _Options:
    """The options of one ingest call, as its steps need them."""

    delete: Delete
    upsert: Upsert
    on_before_visible: Optional[OnBeforeVisible]
    max_rows: int
    force_execute: ForceExecute
    logger: logging.Logger

    def force(self, db: Db) -> ContextManager[Any]:
        """The context under which an ACCESS EXCLUSIVE lock is waited for."""
        return self.force_execute(db.conn, self.logger)


@dataclass(frozen=True)
class _TableState:
    """One table through an ingest call: its plan, and where its rows go."""

    wanted: WantedTable
    plan: _migrate.Plan
    swap: bool
    copy_old_rows: bool
    staging: Optional[str]


def _stored_watermark(db: Db, first: WantedTable) -> Any:
    """The watermark stored on the first table; None without one, or without the table."""
    with db.conn.begin():
        return _watermark.watermark(_watermark.load(db, first.spec.schema, first.spec.name))


def _start_watermark(high_watermark: Any, stored: Any) -> Any:
    if isinstance(high_watermark, str) and high_watermark in (
        HighWatermark.LATEST.value,
        HighWatermark.EARLIEST.value,
    ):
        return stored if HighWatermark(high_watermark) is HighWatermark.LATEST else None
    return high_watermark


def _batches(batches: Callable[[Any], Iterable[Any]], start: Any) -> Iterator[Batch]:
    for batch in batches(start):
        if len(batch) == 2:
            yield batch[0], None, batch[1]
        else:
            yield batch[0], batch[1], batch[2]


def _create_table(db: Db, wanted: WantedTable) -> None:
    spec = wanted.spec
    if not _catalog.schema_exists(db, spec.schema):
        db.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(spec.schema)}")
    _migrate.run_all(db, _migrate.create_table_sql(spec))


def _lock_exclusively(db: Db, wanted: WantedTable, options: _Options) -> None:
    """ACCESS EXCLUSIVE on the live table until the transaction ends, blockers terminated
    after the delay of `get_pg_force_execute`."""
    spec = wanted.spec
    with options.force(db):
        db.execute(f"LOCK TABLE {qualified(spec.schema, spec.name)} IN ACCESS EXCLUSIVE MODE")


def _prepare_table(db: Db, wanted: WantedTable, options: _Options) -> _TableState:
    """Creates the table, or changes it in place under a brief ACCESS EXCLUSIVE lock, in the
    caller's transaction; says whether the first batch swaps a new table in."""
    spec, plan = _migrate.plan_table(db, wanted.spec)
    wanted = dataclasses.replace(wanted, spec=spec)
    if plan.create:
        _create_table(db, wanted)
    elif plan.in_place or plan.drops or plan.drop_columns:
        _lock_exclusively(db, wanted, options)
        if plan.drop_columns:
            _keep.check_dropped_columns(db, spec)  # under the lock: nothing new can use them
        _migrate.run_all(db, (*plan.in_place, *plan.drops, *plan.drop_columns))
    deleting = options.delete is not Delete.OFF and not plan.create
    swap = plan.rebuild or (deleting and not _catalog.is_empty(db, spec.schema, spec.name))
    if swap:
        _keep.check(db, spec)  # refuses what a swap would lose, before it changes anything
    upserting = options.upsert is Upsert.IF_PRIMARY_KEY and bool(wanted.written.spec.primary_key)
    staging = staging_name() if upserting else None
    return _TableState(wanted, plan, swap, copy_old_rows=not deleting, staging=staging)


def _build_indexes(db: Db, state: _TableState, options: _Options) -> None:
    """Builds the table's new indexes in a transaction of their own, under a SHARE lock that
    lets reads go on; a new UNIQUE constraint then takes its index in a brief ACCESS EXCLUSIVE."""
    plan = state.plan
    if not (plan.indexes or plan.marks):
        return
    with db.conn.begin():
        _migrate.run_all(db, plan.indexes)
        if plan.attach:
            _lock_exclusively(db, state.wanted, options)
            _migrate.run_all(db, plan.attach)
        _migrate.run_all(db, plan.marks)


def _validate_constraints(db: Db, state: _TableState) -> None:
    """Checks the rows already there against the new CHECK and FOREIGN KEY constraints in a
    transaction of its own, under a SHARE UPDATE EXCLUSIVE lock: reads and writes go on."""
    if state.plan.validate:
        with db.conn.begin():
            _migrate.run_all(db, state.plan.validate)


def _make_not_null(db: Db, state: _TableState, options: _Options) -> None:
    """Makes each column of `Plan.not_null` NOT NULL in a transaction of its own: the rows
    are checked under a SHARE UPDATE EXCLUSIVE lock (reads and writes go on), then NOT NULL is
    set under a brief ACCESS EXCLUSIVE one. Rows holding NULL leave the column as it was."""
    spec = state.wanted.spec
    for column in state.plan.not_null:
        validate, settle, drop = _migrate.not_null_steps(spec, column)
        try:
            with db.conn.begin():
                db.execute(validate)
                _lock_exclusively(db, state.wanted, options)
                _migrate.run_all(db, settle)
        except Exception as error:
            if sqlstate(error) != _CHECK_VIOLATION:
                raise
            with db.conn.begin():
                _lock_exclusively(db, state.wanted, options)
                db.execute(drop)
            raise MigrationError(
                spec.display,
                column,
                "some rows hold NULL, so it cannot become NOT NULL: fill them first, or keep "
                "the column nullable",
            ) from None


def _migrate_tables(db: Db, wanted: Sequence[WantedTable], options: _Options) -> list[_TableState]:
    """Brings each table to its definition but for rebuilds (done by the first batch), each in
    short transactions of its own, committed before the first batch's rows: a table's locks
    never wait for another table's, and readers never wait for a batch. A table is migrated
    after the tables its foreign keys reference; the states keep the metadata's order."""
    states: dict[int, _TableState] = {}
    for position in creation_order(wanted):
        with db.conn.begin():
            state = _prepare_table(db, wanted[position], options)
        _build_indexes(db, state, options)
        _validate_constraints(db, state)
        _make_not_null(db, state, options)
        states[position] = state
    return [states[position] for position in range(len(wanted))]


def takes_copy_tuples(conn: sa.engine.Connection) -> bool:
    """Whether `ingest` writes binary COPY on this connection (the server and client encodings
    are UTF8), so that its rows may be `CopyTuple`s, whose text is UTF-8."""
    return bool(conn.exec_driver_sql(_BINARY_ENCODINGS_SQL).scalar())


def _encoders(db: Db, states: list[_TableState]) -> list[TableEncoder]:
    """Each table's row encoder for the call: binary COPY for a table whose column types all
    have an exact binary encoding (and a UTF8 database), text otherwise."""
    with db.conn.begin():
        binary = bool(db.value(_BINARY_ENCODINGS_SQL))
    return [TableEncoder(state.wanted.written.types, binary=binary) for state in states]


def _targets(
    db: Db, states: list[_TableState], encoders: list[TableEncoder], first_batch: bool
) -> dict[sa.Table, Target]:
    """Where each table's rows go; in the first batch, creates the tables to swap in and the
    staging tables (TEMPORARY, so they never outlive a failed first batch's rollback)."""
    targets = {}
    for state, encoder in zip(states, encoders):
        spec, written = state.wanted.spec, state.wanted.written
        name = spec.name
        if first_batch and state.swap:
            name = new_table_name(spec)
            create_new_table(db, spec, name, copy_rows=state.copy_old_rows)
        if first_batch and state.staging:
            db.execute(create_staging_sql(written.spec, state.staging))
        targets[state.wanted.table] = Target(written, encoder, name, state.staging)
    return targets


def _swap_all(
    db: Db, targets: dict[sa.Table, Target], states: list[_TableState], options: _Options
) -> None:
    for state in states:
        if state.swap:
            name = targets[state.wanted.table].name
            swap_in(db, state.wanted.spec, name, options.force_execute, options.logger)


def _save_watermark(db: Db, first: WantedTable, high_watermark: Any) -> None:
    spec = first.spec
    with _watermark.locked(db, spec.schema, spec.name):
        value = high_watermark() if callable(high_watermark) else high_watermark
        _watermark.save(db, spec.schema, spec.name, value)


def _skipper(logger: logging.Logger) -> Callable[[sa.Table], None]:
    """Takes note of a table whose rows are skipped, and logs it once per ingest call."""
    skipped: set[sa.Table] = set()

    def skip(table: sa.Table) -> None:
        if table not in skipped:
            skipped.add(table)
            logger.debug(
                "Skipping the rows for %s: it is not a table of the metadata passed to ingest",
                table.fullname,
            )

    return skip


def _write_batch(
    db: Db,
    states: list[_TableState],
    batch: Batch,
    encoders: list[TableEncoder],
    *,
    first_batch: bool,
    options: _Options,
    skip: Callable[[sa.Table], None],
) -> dict[sa.Table, int]:
    """Writes one batch's rows and watermark in one transaction; the first batch also fills
    the tables to swap in, and swaps them in at its end, after the watermark and
    `on_before_visible`. Returns the rows written per table."""
    high_watermark, batch_metadata, rows = batch
    first = states[0].wanted
    with db.conn.begin():
        targets = _targets(db, states, encoders, first_batch)
        writer = BatchWriter(db, targets, options.max_rows, skip)
        writer.write(rows)
        # Before any swap, so that the swap's ACCESS EXCLUSIVE lock is held for the swap alone:
        # the swap carries the live table's comment (the watermark) to the table swapped in.
        _save_watermark(db, first, high_watermark)
        if options.on_before_visible is not None:
            ingest_table = _ingest_table(first.table, targets[first.table].name)
            options.on_before_visible(db.conn, ingest_table, batch_metadata)
        if first_batch:
            _swap_all(db, targets, states, options)
    return writer.counts


def _ingest_table(table: sa.Table, name: str) -> sa.Table:
    """The table the rows went into: `table` itself, or, in a rebuild's first batch, the new
    table (named `name` until it is swapped in)."""
    if name == table.name:
        return table
    return table.to_metadata(sa.MetaData(), name=name)


def _log_batch(logger: logging.Logger, counts: dict[sa.Table, int], started: float) -> None:
    # DEBUG: the caller (a sink) logs its own line per batch; skip the formatting too.
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "Ingested a batch: %s in %.3fs",
            ", ".join(f"{t.fullname} {n} rows" for t, n in counts.items()),
            time.monotonic() - started,
        )


def _finish_without_batches(db: Db, states: list[_TableState], options: _Options) -> None:
    """Schema changes are made even without a batch; Delete.ALL empties the tables too."""
    delete_all = options.delete is Delete.ALL
    pending = [s for s in states if s.plan.rebuild or (s.swap and delete_all)]
    if not pending:
        return
    with db.conn.begin():
        for state in pending:
            spec = state.wanted.spec
            name = new_table_name(spec)
            create_new_table(db, spec, name, copy_rows=state.copy_old_rows or not delete_all)
            swap_in(db, spec, name, options.force_execute, options.logger)


def _drop_staging(db: Db, states: list[_TableState], logger: logging.Logger) -> None:
    names = [state.staging for state in states if state.staging]
    if not names:
        return
    try:
        with db.conn.begin():
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
    get_pg_force_execute: ForceExecute = _default_force_execute,
    logger: logging.Logger = _LOGGER,
) -> None:
    """Ingests each batch of `batches` in a transaction, creating or migrating the tables of
    `metadata` once the first batch exists (at the end of the call when there is none)."""
    as_option(Visibility, visibility)
    if max_rows_per_table_buffer < 1:
        raise ValueError("max_rows_per_table_buffer must be at least 1")
    options = _Options(
        delete=as_option(Delete, delete),
        upsert=as_option(Upsert, upsert),
        on_before_visible=on_before_visible,
        max_rows=max_rows_per_table_buffer,
        force_execute=get_pg_force_execute,
        logger=logger,
    )
    wanted = wanted_tables(metadata)
    db = Db(conn)
    stored = _stored_watermark(db, wanted[0])
    remaining = _batches(batches, _start_watermark(high_watermark, stored))
    first_batch = next(remaining, None)  # nothing changes before the first batch exists
    states: list[_TableState] = []
    try:
        with migration_locks(db, (table.spec for table in wanted)) as unlock:
            states = _migrate_tables(db, wanted, options)
            if first_batch is None:
                _finish_without_batches(db, states, options)
                return
            if not any(state.swap for state in states):
                unlock()
            skip = _skipper(logger)
            encoders = _encoders(db, states)
            for number, batch in enumerate(itertools.chain((first_batch,), remaining)):
                started = time.monotonic()
                counts = _write_batch(
                    db,
                    states,
                    batch,
                    encoders,
                    first_batch=number == 0,
                    options=options,
                    skip=skip,
                )
                unlock()  # a rebuilt table swapped in has committed: its migration is over
                _log_batch(logger, counts, started)
    finally:
        _drop_staging(db, states, logger)
