"""Migration of a live table to the wanted definition: a pure plan, then its application.

What PostgreSQL changes without rewriting the table is changed in place; anything else makes
the plan a rebuild, done by `_swap` at the end of the first batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._db import Db
from ._schema import ColumnSpec, IndexSpec, TableSpec, identifier
from ._sql import ident, idents, qualified

_VARCHAR = re.compile(r"character varying(?:\((\d+)\))?")
_NUMERIC = re.compile(r"numeric(?:\((\d+),(\d+)\))?")


@dataclass(frozen=True)
class Plan:
    """What to do to bring one table to its definition."""

    create: bool = False
    rebuild_reasons: tuple[str, ...] = ()
    in_place: tuple[str, ...] = ()
    concurrently: tuple[tuple[str, str], ...] = ()

    @property
    def rebuild(self) -> bool:
        return bool(self.rebuild_reasons)

    @property
    def is_noop(self) -> bool:
        return not (self.create or self.rebuild or self.in_place or self.concurrently)


def _widens(live: str, wanted: str) -> bool:
    """Whether changing the type only relaxes a length or precision limit (no rewrite)."""
    live_varchar, wanted_varchar = _VARCHAR.fullmatch(live), _VARCHAR.fullmatch(wanted)
    if live_varchar and wanted_varchar:
        return wanted_varchar[1] is None or (
            live_varchar[1] is not None and int(wanted_varchar[1]) >= int(live_varchar[1])
        )
    if live_varchar and wanted == "text":
        return True
    live_numeric, wanted_numeric = _NUMERIC.fullmatch(live), _NUMERIC.fullmatch(wanted)
    if live_numeric and wanted_numeric:
        return wanted_numeric[1] is None or (
            live_numeric[1] is not None
            and live_numeric[2] == wanted_numeric[2]
            and int(wanted_numeric[1]) >= int(live_numeric[1])
        )
    return False


def _column_steps(table: str, live: ColumnSpec, wanted: ColumnSpec) -> tuple[list[str], str]:
    """In-place statements for a column, or a reason why only a rebuild can change it."""
    steps = []
    column = ident(wanted.name)
    if live.type != wanted.type:
        if not _widens(live.type, wanted.type):
            return [], f"column {wanted.name!r} changes type from {live.type} to {wanted.type}"
        steps.append(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {wanted.type}")
    if live.not_null and not wanted.not_null:
        steps.append(f"ALTER TABLE {table} ALTER COLUMN {column} DROP NOT NULL")
    if wanted.not_null and not live.not_null:
        return [], f"column {wanted.name!r} becomes NOT NULL"
    return steps, ""


def _rebuild_reasons(live: TableSpec, wanted: TableSpec) -> list[str]:
    reasons = []
    live_names, wanted_names = live.column_names, wanted.column_names
    if wanted_names[: len(live_names)] != live_names:
        reasons.append(f"columns change from {list(live_names)} to {list(wanted_names)}")
    added = wanted.columns[len(live_names) :]
    reasons.extend(f"new column {c.name!r} is NOT NULL" for c in added if c.not_null)
    if live.primary_key != wanted.primary_key:
        reasons.append(
            f"primary key changes from {list(live.primary_key)} to {list(wanted.primary_key)}"
        )
    return reasons


def create_index_sql(table: TableSpec, index: IndexSpec, *, concurrently: bool) -> str:
    unique = "UNIQUE " if index.unique else ""
    how = "CONCURRENTLY " if concurrently else ""
    target = qualified(table.schema, table.name)
    return f"CREATE {unique}INDEX {how}{ident(index.name)} ON {target} ({idents(index.columns)})"


def plan(live: TableSpec | None, wanted: TableSpec) -> Plan:
    """The migration from `live` (None when the table is missing) to `wanted`."""
    if live is None:
        return Plan(create=True)
    reasons = _rebuild_reasons(live, wanted)
    if reasons:
        return Plan(rebuild_reasons=tuple(reasons))
    table = qualified(wanted.schema, wanted.name)
    in_place: list[str] = []
    for live_column, wanted_column in zip(live.columns, wanted.columns):
        steps, reason = _column_steps(table, live_column, wanted_column)
        if reason:
            reasons.append(reason)
        in_place.extend(steps)
    if reasons:
        return Plan(rebuild_reasons=tuple(reasons))
    in_place.extend(
        f"ALTER TABLE {table} ADD COLUMN {ident(c.name)} {c.type}"
        for c in wanted.columns[len(live.columns) :]
    )
    live_keys = {index.key for index in live.indexes}
    concurrently = tuple(
        (create_index_sql(wanted, index, concurrently=True), index.name)
        for index in wanted.indexes
        if index.key not in live_keys
    )
    return Plan(in_place=tuple(in_place), concurrently=concurrently)


def primary_key_name(table_name: str) -> str:
    return identifier(table_name, "pkey")


def create_table_sql(table: TableSpec, name: str | None = None) -> list[str]:
    """CREATE TABLE and CREATE INDEX statements for the definition, under `name` if given."""
    named = TableSpec(table.schema, name or table.name, table.columns, table.primary_key, ())
    columns = [
        f"{ident(c.name)} {c.type}{' NOT NULL' if c.not_null else ''}" for c in table.columns
    ]
    if table.primary_key:
        constraint = ident(primary_key_name(named.name))
        columns.append(f"CONSTRAINT {constraint} PRIMARY KEY ({idents(table.primary_key)})")
    statements = [f"CREATE TABLE {qualified(named.schema, named.name)} ({', '.join(columns)})"]
    for index in table.indexes:
        index_name = index.name if name is None else identifier(name, index.name)
        renamed = IndexSpec(index_name, index.columns, index.unique)
        statements.append(create_index_sql(named, renamed, concurrently=False))
    return statements


def apply_in_place(db: Db, statements: tuple[str, ...] | list[str]) -> None:
    for statement in statements:
        db.execute(statement)
