"""What `ingest` would do to each table of `metadata`, read from the catalog, changing nothing.

Each step names its SQL and the lock it takes, so an operator can judge a migration before a
worker runs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from . import _catalog, _keep, _migrate
from ._db import Db
from ._schema import TableSpec, creation_order, identifier, wanted_tables
from ._sql import ident, qualified

NO_LOCK = "none"
ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
SHARE = "SHARE"
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"


@dataclass(frozen=True)
class PlannedStep:
    """One step of bringing `table` ("schema.name") to its definition.

    `action` is "nothing to do", "create", "alter", "drop index", "create index", "mark index"
    (comment an index made by hand that is as defined: `ingest` drops it once no longer
    defined), "drop constraint", "mark constraint" (the same for a CHECK or FOREIGN KEY),
    "comment" (of a column or the table), "validate constraint" (check the rows already there
    against a constraint just added NOT VALID) or "rebuild"; `sql` the statement (None for
    "nothing to do" and for the summary of a rebuild); `lock` the lock it takes on the live
    table; `rebuild` whether the step belongs to a rebuild that fills a new table and swaps it
    in at the end of the first batch; `reason` why, for rebuilds.
    """

    table: str
    action: str
    sql: str | None = None
    lock: str = NO_LOCK
    rebuild: bool = False
    reason: str | None = None


def migration_plan(conn: sa.engine.Connection, metadata: sa.MetaData) -> list[PlannedStep]:
    """The steps `ingest` would take for each table of `metadata`, in order.

    Reads the catalog in a read-only transaction that is rolled back (`conn` must not be in a
    transaction). Raises SchemaError for a definition that cannot be created.
    """
    wanted = wanted_tables(metadata)
    db = Db(conn)
    with conn.begin() as transaction:
        try:
            db.execute("SET TRANSACTION READ ONLY")
            steps: list[PlannedStep] = []
            for position in creation_order(wanted):
                steps.extend(_table_steps(db, wanted[position].spec))
            return steps
        finally:
            transaction.rollback()


def _table_steps(db: Db, wanted: TableSpec) -> Iterator[PlannedStep]:
    name = wanted.display
    wanted, plan = _migrate.plan_table(db, wanted)
    if plan.is_noop:
        yield PlannedStep(name, "nothing to do")
        return
    if plan.create:
        if not _catalog.schema_exists(db, wanted.schema):
            yield PlannedStep(name, "create", f"CREATE SCHEMA IF NOT EXISTS {ident(wanted.schema)}")
        for statement in _migrate.create_table_sql(wanted):
            yield PlannedStep(name, "create", statement)
        return
    if plan.rebuild:
        _keep.check(db, wanted)  # what ingest would refuse, refused here too
        yield from _rebuild_steps(wanted, plan.rebuild_reasons)
        return
    if plan.drop_columns:
        _keep.check_dropped_columns(db, wanted)
    yield from _in_place_steps(wanted, plan)


def _in_place_steps(wanted: TableSpec, plan: _migrate.Plan) -> Iterator[PlannedStep]:
    name = wanted.display
    lock = f"LOCK TABLE {qualified(wanted.schema, wanted.name)} IN ACCESS EXCLUSIVE MODE"
    if plan.in_place or plan.drops or plan.drop_columns:
        # ingest takes the lock first (terminating blockers after a delay), then alters.
        yield PlannedStep(name, "alter", lock, ACCESS_EXCLUSIVE)
    for statement in plan.in_place:
        yield PlannedStep(name, "alter", statement, ACCESS_EXCLUSIVE)
    for statement in plan.drops:
        action = "drop index" if statement.startswith("DROP INDEX") else "drop constraint"
        yield PlannedStep(name, action, statement, ACCESS_EXCLUSIVE)
    for statement in plan.drop_columns:
        yield PlannedStep(name, "alter", statement, ACCESS_EXCLUSIVE)
    for statement in plan.indexes:
        yield PlannedStep(name, "create index", statement, SHARE)
    if plan.attach:
        yield PlannedStep(name, "alter", lock, ACCESS_EXCLUSIVE)
    for statement in plan.attach:
        yield PlannedStep(name, "alter", statement, ACCESS_EXCLUSIVE)
    for statement in plan.marks:
        yield _comment_step(name, statement)
    for statement in plan.validate:
        yield PlannedStep(name, "validate constraint", statement, SHARE_UPDATE_EXCLUSIVE)
    for column in plan.not_null:
        validate, settle, _ = _migrate.not_null_steps(wanted, column)
        yield PlannedStep(name, "validate constraint", validate, SHARE_UPDATE_EXCLUSIVE)
        yield PlannedStep(name, "alter", lock, ACCESS_EXCLUSIVE)
        for statement in settle:
            yield PlannedStep(name, "alter", statement, ACCESS_EXCLUSIVE)


def _comment_step(name: str, statement: str) -> PlannedStep:
    """A COMMENT: an index's takes no lock on the table, others SHARE UPDATE EXCLUSIVE."""
    if statement.startswith("COMMENT ON INDEX"):
        return PlannedStep(name, "mark index", statement)
    if statement.startswith("COMMENT ON CONSTRAINT"):
        return PlannedStep(name, "mark constraint", statement, SHARE_UPDATE_EXCLUSIVE)
    return PlannedStep(name, "comment", statement, SHARE_UPDATE_EXCLUSIVE)


def _rebuild_steps(wanted: TableSpec, reasons: tuple[str, ...]) -> Iterator[PlannedStep]:
    name = wanted.display
    reason = "; ".join(reasons)
    live_name = qualified(wanted.schema, wanted.name)
    new_name = identifier(wanted.name, "pgbi", "<random>")
    yield PlannedStep(name, "rebuild", None, NO_LOCK, True, reason)
    for statement in _migrate.create_table_sql(wanted, new_name):
        yield PlannedStep(name, "rebuild", statement, NO_LOCK, True)
    yield PlannedStep(
        name,
        "rebuild",
        f"INSERT INTO {qualified(wanted.schema, new_name)} SELECT ... FROM {live_name}",
        SHARE,
        True,
        "copy the live rows (writes to the table wait; reads continue)",
    )
    yield PlannedStep(
        name,
        "rebuild",
        f"DROP TABLE {live_name}; ALTER TABLE {qualified(wanted.schema, new_name)} "
        f"RENAME TO {ident(wanted.name)}",
        ACCESS_EXCLUSIVE,
        True,
        "swap at the end of the first batch, locking the table's views, then the table, then "
        "the tables with foreign keys to it (readers of views never deadlock); dependent views "
        "and those foreign keys are dropped first and made again, and the new table gets all "
        "that decorated the live one: row-level security and policies, indexes and "
        "constraints made by hand, triggers, rules, statistics, storage options, comments, "
        "owner, table and column privileges with grant options, owned sequences; views and "
        "materialized views keep their options, owners, comments, grants and indexes. What "
        "cannot be carried (inheritance, partitions, functions with SQL-standard bodies, "
        "publications, objects using a removed column, ...) makes ingest refuse beforehand",
    )
