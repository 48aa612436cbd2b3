"""Migration of a live table to the wanted definition: a pure plan, then its application.

What PostgreSQL changes without rewriting the table is changed in place; anything else makes
the plan a rebuild, done by `_swap` at the end of the first batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union

import orjson

from . import _catalog
from ._catalog import constraint_comment, index_comment
from ._db import Db
from ._schema import (
    DEFAULT_INDEX_METHOD,
    CheckSpec,
    ColumnSpec,
    ForeignKeySpec,
    IndexSpec,
    TableSpec,
    identifier,
    primary_key_name,
)
from ._sql import ident, idents, literal, qualified
from ._watermark import HUMAN_COMMENT, parse

_VARCHAR = re.compile(r"character varying(?:\((\d+)\))?")
_NUMERIC = re.compile(r"numeric(?:\((\d+),(\d+)\))?")


@dataclass(frozen=True)
class Plan:
    """What to do to bring one table to its definition.

    `in_place` (column changes) and `drops` (indexes and UNIQUE constraints that `ingest` made
    and that are no longer defined) run under an ACCESS EXCLUSIVE lock and change only the
    catalog (milliseconds). Then `indexes` builds the new indexes under a SHARE lock (reads go
    on, writes wait), `attach` turns new unique indexes into UNIQUE constraints (ACCESS
    EXCLUSIVE, milliseconds), and `marks` comments the live indexes that are as defined but
    were made by someone else (or an earlier version), so that they are `ingest`'s from then.

    CHECK and FOREIGN KEY constraints are dropped (those `ingest` made and no longer defined)
    then added NOT VALID in `in_place` (catalog only: new rows are checked from then), and
    `validate` checks the rows already there in a transaction of its own, under a SHARE UPDATE
    EXCLUSIVE lock that lets reads and writes go on. `marks` also sets the COMMENTs of
    columns and of the table.

    `drop_columns` drops the columns the definition no longer has, after `drops` (an index
    `ingest` made on one is dropped first), under the same lock: catalog only, the space the
    values take is reused as rows are updated and vacuumed. A column becoming NOT NULL
    (`not_null`) gets a CHECK (column IS NOT NULL) NOT VALID in
    `in_place`; `not_null_steps` then validates it (reads and writes go on), and under a brief
    ACCESS EXCLUSIVE lock sets NOT NULL, which the valid CHECK spares a scan, and drops it.
    """

    create: bool = False
    rebuild_reasons: tuple[str, ...] = ()
    in_place: tuple[str, ...] = ()
    drops: tuple[str, ...] = ()
    indexes: tuple[str, ...] = ()
    attach: tuple[str, ...] = ()
    marks: tuple[str, ...] = ()
    validate: tuple[str, ...] = ()
    not_null: tuple[str, ...] = ()
    drop_columns: tuple[str, ...] = ()

    @property
    def rebuild(self) -> bool:
        return bool(self.rebuild_reasons)

    @property
    def is_noop(self) -> bool:
        return not (
            self.create
            or self.rebuild
            or self.in_place
            or self.drops
            or self.indexes
            or self.attach
            or self.marks
            or self.validate
            or self.drop_columns
        )


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


def column_sql(column: ColumnSpec) -> str:
    """A column as CREATE TABLE and ADD COLUMN write it."""
    sql = f"{ident(column.name)} {column.type}"
    if column.default is not None:
        sql += f" DEFAULT {column.default}"
    if column.identity is not None:
        sql += f" {column.identity.sql()}"
    return sql + (" NOT NULL" if column.not_null else "")


def _identity_steps(table: TableSpec, live: ColumnSpec, wanted: ColumnSpec) -> list[str]:
    """ALTER COLUMN statements that add, change or drop an identity: catalog only, but for
    the max() of the column that a new identity's sequence is set past (an index scan for a
    primary key, else a scan of the table under the lock)."""
    alter = f"ALTER TABLE {qualified(table.schema, table.name)} ALTER COLUMN {ident(wanted.name)}"
    if wanted.identity is None:
        return [f"{alter} DROP IDENTITY"] if live.identity is not None else []
    if live.identity is None:
        # The new sequence starts past the values the column has, as a filled table needs.
        sequence = (
            f"pg_get_serial_sequence({literal(qualified(table.schema, table.name))}, "
            f"{literal(wanted.name)})"
        )
        steps = [f"{alter} ADD {wanted.identity.sql()}"]
        if (wanted.identity.increment or 1) > 0:
            steps.append(
                f"SELECT setval({sequence}, max({ident(wanted.name)})) "
                f"FROM {qualified(table.schema, table.name)} "
                f"HAVING max({ident(wanted.name)}) >= {wanted.identity.start or 1}"
            )
        return steps
    changes = wanted.identity.differences(live.identity)
    if wanted.identity.always == live.identity.always and not changes:
        return []
    kind = "ALWAYS" if wanted.identity.always else "BY DEFAULT"
    return [f"{alter} SET GENERATED {kind}{''.join(f' SET {c}' for c in changes)}"]


def _column_steps(table: TableSpec, live: ColumnSpec, wanted: ColumnSpec) -> tuple[list[str], str]:
    """In-place statements for a column, or a reason why only a rebuild can change it."""
    steps = []
    alter = f"ALTER TABLE {qualified(table.schema, table.name)} ALTER COLUMN {ident(wanted.name)}"
    if live.type != wanted.type:
        if not _widens(live.type, wanted.type):
            return [], f"column {wanted.name!r} changes type from {live.type} to {wanted.type}"
        steps.append(f"{alter} TYPE {wanted.type}")
    if live.not_null and not wanted.not_null:
        steps.append(f"{alter} DROP NOT NULL")
    if wanted.not_null and not live.not_null:
        steps.extend(_not_null_check_sql(table, wanted.name))
    if live.default != wanted.default:
        steps.append(
            f"{alter} DROP DEFAULT"
            if wanted.default is None
            else f"{alter} SET DEFAULT {wanted.default}"
        )
    steps.extend(_identity_steps(table, live, wanted))
    return steps, ""


def _not_null_check(table: TableSpec, column: str) -> str:
    """The name of the CHECK that stands in for NOT NULL while the rows are checked."""
    return identifier(table.name, column, "pgbi_not_null")


def _not_null_check_sql(table: TableSpec, column: str) -> list[str]:
    """Adds the CHECK standing in for NOT NULL; one left by an interrupted call goes first."""
    target, check = qualified(table.schema, table.name), ident(_not_null_check(table, column))
    return [
        f"ALTER TABLE {target} DROP CONSTRAINT IF EXISTS {check}",
        f"ALTER TABLE {target} ADD CONSTRAINT {check} CHECK ({ident(column)} IS NOT NULL) "
        "NOT VALID",
    ]


def not_null_steps(table: TableSpec, column: str) -> tuple[str, list[str], str]:
    """For a column of `Plan.not_null`: the statement that checks the rows already there
    (SHARE UPDATE EXCLUSIVE), those that then make it NOT NULL (ACCESS EXCLUSIVE, catalog
    only), and the one that drops the CHECK when the rows fail it."""
    target, check = qualified(table.schema, table.name), ident(_not_null_check(table, column))
    drop = f"ALTER TABLE {target} DROP CONSTRAINT IF EXISTS {check}"
    return (
        f"ALTER TABLE {target} VALIDATE CONSTRAINT {check}",
        [f"ALTER TABLE {target} ALTER COLUMN {ident(column)} SET NOT NULL", drop],
        drop,
    )


def _kept_names(live: TableSpec, wanted: TableSpec) -> tuple[str, ...]:
    """The live table's columns that the definition keeps, in the live table's order."""
    wanted_names = set(wanted.column_names)
    return tuple(name for name in live.column_names if name in wanted_names)


def column_pairs(live: TableSpec, wanted: TableSpec) -> list[tuple[ColumnSpec, ColumnSpec]]:
    """Each column the definition keeps: as it is live, and as defined."""
    live_columns = {column.name: column for column in live.columns}
    return [(live_columns[c.name], c) for c in wanted.columns if c.name in live_columns]


def dropped_columns(live: TableSpec, wanted: TableSpec) -> tuple[str, ...]:
    """The live table's columns that the definition no longer has."""
    wanted_names = set(wanted.column_names)
    return tuple(name for name in live.column_names if name not in wanted_names)


def _rebuild_reasons(live: TableSpec, wanted: TableSpec) -> list[str]:
    reasons = []
    kept, wanted_names = _kept_names(live, wanted), wanted.column_names
    if wanted_names[: len(kept)] != kept:
        reasons.append(f"columns change from {list(live.column_names)} to {list(wanted_names)}")
    added = wanted.columns[len(kept) :]
    reasons.extend(
        f"new column {c.name!r} is NOT NULL without a server_default"
        for c in added
        if c.not_null and c.default is None and c.identity is None
    )
    if live.primary_key != wanted.primary_key:
        reasons.append(
            f"primary key changes from {list(live.primary_key)} to {list(wanted.primary_key)}"
        )
    return reasons


def _column_plan(live: TableSpec, wanted: TableSpec) -> tuple[list[str], list[str]]:
    """In-place column statements, and the reasons for a rebuild (then the statements are moot).

    A new column is added with its DEFAULT (and NOT NULL): PostgreSQL 11+ stores a
    non-volatile default once in the catalog; a volatile one (or an identity) fills the
    existing rows, rewriting the table under the lock. A column the definition no longer has
    is dropped in place (`Plan.drop_columns`), the others keeping their order.
    """
    reasons = _rebuild_reasons(live, wanted)
    if reasons:
        return [], reasons
    table = qualified(wanted.schema, wanted.name)
    in_place: list[str] = []
    for live_column, wanted_column in column_pairs(live, wanted):
        steps, reason = _column_steps(wanted, live_column, wanted_column)
        if reason:
            reasons.append(reason)
        in_place.extend(steps)
    in_place.extend(
        f"ALTER TABLE {table} ADD COLUMN {column_sql(c)}"
        for c in wanted.columns[len(_kept_names(live, wanted)) :]
    )
    return in_place, reasons


def _comment_sql(target: str, comment: str | None) -> str:
    return f"COMMENT ON {target} IS {'NULL' if comment is None else literal(comment)}"


def _watermark_table_comment_sql(table: TableSpec, comment: str | None) -> list[str]:
    """Sets the "comment" key of the first table's COMMENT, the JSON that holds the high
    watermark, keeping every other key as written: under the lock that writers of the
    watermark take, the COMMENT is read again, so a watermark saved meanwhile is kept."""
    name = qualified(table.schema, table.name)
    value = "NULL" if comment is None else literal(comment)
    body = f"""DECLARE
  current text := obj_description({literal(name)}::regclass, 'pg_class');
  document json;
BEGIN
  IF coalesce(btrim(current), '') = '' THEN
    current := '{{}}';
  ELSIF ltrim(current) NOT LIKE '{{%' THEN
    current := json_build_object({literal(HUMAN_COMMENT)}, current)::text;
  END IF;
  SELECT json_object_agg(key, value) INTO document FROM (
    SELECT key, value FROM json_each(current::json) WHERE key <> {literal(HUMAN_COMMENT)}
    UNION ALL SELECT {literal(HUMAN_COMMENT)}, to_json({value}::text) WHERE {value} IS NOT NULL
  ) entries;
  EXECUTE format('COMMENT ON TABLE %s IS %L', {literal(name)}, document::text);
END
"""
    tag = "$pg_bulk_ingest$"
    while tag in body:  # a dollar quote that the comment cannot end
        tag = tag[:-1] + "_$"
    return [f"LOCK TABLE {name} IN SHARE UPDATE EXCLUSIVE MODE", f"DO {tag}\n{body}{tag}"]


def _comment_steps(live: TableSpec, wanted: TableSpec) -> list[str]:
    """COMMENT statements for the column and table comments that the definition sets and
    that differ ("" removes a comment; None leaves the live one, maybe a DBA's, alone)."""
    table = qualified(wanted.schema, wanted.name)
    live_comments = {column.name: column.comment for column in live.columns}
    steps = [
        _comment_sql(f"COLUMN {table}.{ident(c.name)}", c.comment or None)
        for c in wanted.columns
        if c.comment is not None and (c.comment or None) != live_comments.get(c.name)
    ]
    if wanted.comment is not None:
        if wanted.holds_watermark:
            current = parse(wanted.display, live.comment).get(HUMAN_COMMENT)
            if current != (wanted.comment or None):
                steps.extend(_watermark_table_comment_sql(wanted, wanted.comment or None))
        elif live.comment != (wanted.comment or None):
            steps.append(_comment_sql(f"TABLE {table}", wanted.comment or None))
    return steps


Constraint = Union[CheckSpec, ForeignKeySpec]


def _constraints(table: TableSpec) -> list[Constraint]:
    return [*table.checks, *table.foreign_keys]


def _constraint_sql(constraint: Constraint) -> str:
    """A CHECK or FOREIGN KEY constraint as CREATE TABLE and ADD CONSTRAINT write it."""
    name = f"CONSTRAINT {ident(constraint.name)}"
    if isinstance(constraint, CheckSpec):
        return f"{name} CHECK ({constraint.expression})"
    sql = (
        f"{name} FOREIGN KEY ({idents(constraint.columns)}) REFERENCES "
        f"{qualified(constraint.ref_schema, constraint.ref_table)} "
        f"({idents(constraint.ref_columns)})"
    )
    if constraint.match == "f":
        sql += " MATCH FULL"
    if constraint.on_update != "a":
        sql += f" ON UPDATE {_ACTIONS[constraint.on_update]}"
    if constraint.on_delete != "a":
        sql += f" ON DELETE {_ACTIONS[constraint.on_delete]}"
    if constraint.deferrable:
        sql += " DEFERRABLE" + (" INITIALLY DEFERRED" if constraint.initially_deferred else "")
    return sql


_ACTIONS = {"r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


def _constraint_mark_sql(table: str, constraint: Constraint) -> str:
    check = constraint.expression if isinstance(constraint, CheckSpec) else None
    return (
        f"COMMENT ON CONSTRAINT {ident(constraint.name)} ON {table} "
        f"IS {literal(constraint_comment(check))}"
    )


def _match_constraints(
    live: list[Constraint], wanted: list[Constraint]
) -> tuple[list[tuple[Constraint, Constraint]], list[Constraint], list[Constraint]]:
    """(live constraints kept, each with the wanted one it is; wanted ones missing; live ones
    left over), matched by what they check: one of the wanted name first, then any."""
    unmatched, missing = list(live), list(wanted)
    kept: list[tuple[Constraint, Constraint]] = []
    for by_name in (True, False):
        for constraint in list(missing):
            found = next(
                (
                    other
                    for other in unmatched
                    if other.definition == constraint.definition
                    and (other.name == constraint.name or not by_name)
                ),
                None,
            )
            if found is not None:
                unmatched.remove(found)
                missing.remove(constraint)
                kept.append((found, constraint))
    return kept, missing, unmatched


def _constraint_plan(live: TableSpec, wanted: TableSpec) -> Plan:
    """Adds the missing CHECK and FOREIGN KEY constraints NOT VALID, then validates them;
    drops those `ingest` made that are no longer defined, never one made by hand."""
    table = qualified(wanted.schema, wanted.name)
    kept, missing, unmatched = _match_constraints(_constraints(live), _constraints(wanted))
    dropped = [constraint for constraint in unmatched if constraint.marked]
    taken = {c.name for c in _constraints(live) if c not in dropped}
    taken.update(index.name for index in live.indexes if index.constraint)
    taken.add(primary_key_name(wanted.name))
    created = [
        dataclasses.replace(c, name=identifier(c.name, _digest(c))) if c.name in taken else c
        for c in missing
    ]
    return Plan(
        in_place=tuple(
            sql
            for c in created
            for sql in (
                f"ALTER TABLE {table} ADD {_constraint_sql(c)} NOT VALID",
                _constraint_mark_sql(table, c),
            )
        ),
        drops=tuple(f"ALTER TABLE {table} DROP CONSTRAINT {ident(c.name)}" for c in dropped),
        validate=tuple(
            f"ALTER TABLE {table} VALIDATE CONSTRAINT {ident(c.name)}"
            for c in (*created, *(found for found, _ in kept if not found.valid))
        ),
        marks=tuple(
            _constraint_mark_sql(table, dataclasses.replace(found, **_written(constraint)))
            for found, constraint in kept
            if not found.marked
        ),
    )


def _written(constraint: Constraint) -> dict[str, Any]:
    return {"expression": constraint.expression} if isinstance(constraint, CheckSpec) else {}


def _digest(constraint: Constraint) -> str:
    return hashlib.sha256(repr(constraint.definition).encode()).hexdigest()[:8]


def _shape(index: IndexSpec) -> tuple[Any, ...]:
    options = tuple(sorted(option.lower() for option in index.options))
    return (
        index.columns,
        index.unique,
        index.constraint,
        index.method,
        index.include,
        options,
        index.where,
        index.nulls_not_distinct,
    )


def same_index(live: IndexSpec, wanted: IndexSpec) -> bool:
    """Whether the live index is the wanted one, whatever their names: an operator class left
    to the default matches a live one that is the default."""
    ops = wanted.ops or ("",) * len(wanted.columns)
    defaults = live.default_ops or (False,) * len(live.ops)
    return (
        live.valid
        and _shape(live) == _shape(wanted)
        and len(live.ops) == len(ops)
        and all(w == o or (not w and d) for w, o, d in zip(ops, live.ops, defaults))
    )


def _match_indexes(
    live: Iterable[IndexSpec], wanted: Iterable[IndexSpec]
) -> tuple[list[tuple[IndexSpec, IndexSpec]], list[IndexSpec], list[IndexSpec]]:
    """(live indexes kept, each with the wanted one it is; wanted indexes missing; live indexes
    left over): a live index of the wanted name is matched first, then any of the same shape."""
    unmatched, missing = list(live), list(wanted)
    kept: list[tuple[IndexSpec, IndexSpec]] = []
    for by_name in (True, False):
        for index in list(missing):
            found = next(
                (
                    other
                    for other in unmatched
                    if same_index(other, index) and (other.name == index.name or not by_name)
                ),
                None,
            )
            if found is not None:
                unmatched.remove(found)
                missing.remove(index)
                kept.append((found, index))
    return kept, missing, unmatched


def _drop_sql(table: TableSpec, index: IndexSpec) -> str:
    if index.constraint:
        return (
            f"ALTER TABLE {qualified(table.schema, table.name)} DROP CONSTRAINT {ident(index.name)}"
        )
    return f"DROP INDEX {qualified(table.schema, index.name)}"


def _attach_sql(table: TableSpec, index: IndexSpec) -> str:
    name = ident(index.name)
    return (
        f"ALTER TABLE {qualified(table.schema, table.name)} "
        f"ADD CONSTRAINT {name} UNIQUE USING INDEX {name}"
    )


def _mark_sql(schema: str, index: IndexSpec) -> str:
    return (
        f"COMMENT ON INDEX {qualified(schema, index.name)} IS {literal(index_comment(index.where))}"
    )


def _index_plan(live: TableSpec, wanted: TableSpec) -> Plan:
    """The steps that drop, create, attach and mark indexes and UNIQUE constraints in place.

    Only what `ingest` made is dropped: an index made by hand (say, by a DBA) is left alone.
    """
    kept, missing, unmatched = _match_indexes(live.indexes, wanted.indexes)
    dropped = [index for index in unmatched if index.marked]
    taken = {index.name for index in live.indexes if index not in dropped}
    taken.add(primary_key_name(wanted.name))
    created = [
        dataclasses.replace(index, name=identifier(index.name, index.digest))
        if index.name in taken
        else index
        for index in missing
    ]
    return Plan(
        drops=tuple(_drop_sql(wanted, index) for index in dropped),
        indexes=tuple(
            sql for index in created for sql in create_index_sql(wanted.schema, wanted.name, index)
        ),
        attach=tuple(_attach_sql(wanted, index) for index in created if index.constraint),
        marks=tuple(
            _mark_sql(wanted.schema, dataclasses.replace(found, where=index.where))
            for found, index in kept
            if not found.marked
        ),
    )


def plan(
    live: TableSpec | None, wanted: TableSpec, in_views: Mapping[str, str] | None = None
) -> Plan:
    """The migration from `live` (None when the table is missing) to `wanted`; `in_views`
    names the view that reads each column read by one (whose type cannot change in place)."""
    if live is None:
        return Plan(create=True)
    columns, reasons = _column_plan(live, wanted)
    if not reasons and in_views:
        # A type changed in place: PostgreSQL refuses it for a column that a view reads.
        reasons = [
            f"column {new.name!r} changes type from {old.type} to {new.type} and is read by "
            f"the view {in_views[new.name]}"
            for old, new in column_pairs(live, wanted)
            if old.type != new.type and new.name in in_views
        ]
    if reasons:
        return Plan(rebuild_reasons=tuple(reasons))
    indexes, constraints = _index_plan(live, wanted), _constraint_plan(live, wanted)
    return dataclasses.replace(
        indexes,
        # A changed constraint is dropped before it is added again, maybe under its name.
        in_place=(*constraints.drops, *columns, *constraints.in_place),
        marks=(*indexes.marks, *constraints.marks, *_comment_steps(live, wanted)),
        validate=constraints.validate,
        not_null=tuple(
            new.name for old, new in column_pairs(live, wanted) if new.not_null and not old.not_null
        ),
        drop_columns=tuple(
            f"ALTER TABLE {qualified(wanted.schema, wanted.name)} DROP COLUMN {ident(name)}"
            for name in dropped_columns(live, wanted)
        ),
    )


def with_free_names(wanted: TableSpec, taken: Iterable[str]) -> TableSpec:
    """The definition with each index whose name another relation of the schema holds (the
    index of another table, a view...) given that name with a digest of the index."""
    taken = frozenset(taken)
    return dataclasses.replace(
        wanted,
        indexes=tuple(
            dataclasses.replace(index, name=identifier(index.name, index.digest))
            if index.name in taken
            else index
            for index in wanted.indexes
        ),
    )


def plan_table(db: Db, wanted: TableSpec) -> tuple[TableSpec, Plan]:
    """The definition as `ingest` builds it (`with_free_names`), and the plan that brings the
    live table to it."""
    live = _catalog.live_table(db, wanted.schema, wanted.name, wanted)
    wanted = with_free_names(wanted, _catalog.names_taken_elsewhere(db, wanted.schema, wanted.name))
    in_views = _catalog.columns_in_views(db, wanted.schema, wanted.name) if live else {}
    return wanted, plan(live, wanted, in_views)


def _index_tail(index: IndexSpec) -> str:
    """What follows the key columns of CREATE INDEX (and of a UNIQUE constraint)."""
    tail = ""
    if index.include:
        tail += f" INCLUDE ({idents(index.include)})"
    if index.nulls_not_distinct:
        tail += " NULLS NOT DISTINCT"
    if index.options:
        tail += f" WITH ({', '.join(index.options)})"
    if index.tablespace:
        tail += f" TABLESPACE {ident(index.tablespace)}"
    if index.where is not None:
        tail += f" WHERE {index.where}"
    return tail


def create_index_sql(schema: str, table: str, index: IndexSpec) -> list[str]:
    """CREATE INDEX, with its dialect options, on `schema`.`table` (as a unique index for a
    UNIQUE constraint), and the COMMENT that marks it as `ingest`'s."""
    unique = "UNIQUE " if index.unique else ""
    using = "" if index.method == DEFAULT_INDEX_METHOD else f" USING {ident(index.method)}"
    ops = index.ops or ("",) * len(index.columns)
    keys = ", ".join(f"{ident(c)} {op}" if op else ident(c) for c, op in zip(index.columns, ops))
    return [
        f"CREATE {unique}INDEX {ident(index.name)} ON {qualified(schema, table)}{using} "
        f"({keys}){_index_tail(index)}",
        _mark_sql(schema, index),
    ]


def _unique_constraint_sql(index: IndexSpec) -> str:
    distinct = " NULLS NOT DISTINCT" if index.nulls_not_distinct else ""
    include = f" INCLUDE ({idents(index.include)})" if index.include else ""
    return f"CONSTRAINT {ident(index.name)} UNIQUE{distinct} ({idents(index.columns)}){include}"


def temporary_name(table_name: str, name: str) -> str:
    """The name of an index or constraint of the table `table_name` built to be swapped in."""
    return identifier(table_name, name)


def create_table_sql(table: TableSpec, name: str | None = None) -> list[str]:
    """CREATE TABLE, with its constraints, and CREATE INDEX statements for the definition.

    Under `name` (a table to swap in later, while the live one keeps its indexes), each index
    and constraint is named `temporary_name(name, ...)`, renamed at the swap.
    """
    target = name or table.name
    indexes = [
        index if name is None else dataclasses.replace(index, name=temporary_name(name, index.name))
        for index in table.indexes
    ]
    elements = [column_sql(c) for c in table.columns]
    if table.primary_key:
        constraint = ident(primary_key_name(target))
        elements.append(f"CONSTRAINT {constraint} PRIMARY KEY ({idents(table.primary_key)})")
    elements.extend(_unique_constraint_sql(index) for index in indexes if index.constraint)
    elements.extend(_constraint_sql(c) for c in _constraints(table))
    statements = [f"CREATE TABLE {qualified(table.schema, target)} ({', '.join(elements)})"]
    for index in indexes:
        if index.constraint:
            statements.append(_mark_sql(table.schema, index))
        else:
            statements.extend(create_index_sql(table.schema, target, index))
    statements.extend(_created_comments(table, target, name is None))
    return statements


def _created_comments(table: TableSpec, target: str, live: bool) -> list[str]:
    """The COMMENTs of a new table: marks of its constraints, comments of its columns and,
    for the live table (a table to swap in keeps the live one's), of the table."""
    name = qualified(table.schema, target)
    statements = [_constraint_mark_sql(name, c) for c in _constraints(table)]
    statements.extend(
        _comment_sql(f"COLUMN {name}.{ident(c.name)}", c.comment)
        for c in table.columns
        if c.comment
    )
    if live and table.comment:
        text = orjson.dumps({HUMAN_COMMENT: table.comment}).decode()
        statements.append(
            _comment_sql(f"TABLE {name}", text if table.holds_watermark else table.comment)
        )
    return statements


def run_all(db: Db, statements: Iterable[str]) -> None:
    for statement in statements:
        db.execute(statement)
