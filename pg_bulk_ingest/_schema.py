"""Table definitions as plain values: the wanted one from SQLAlchemy, compared to the live one."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ._errors import SchemaError
from ._types import PgType, column_pg_type

DEFAULT_SCHEMA = "public"
DEFAULT_INDEX_METHOD = "btree"
# PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes.
MAX_IDENTIFIER_BYTES = 63


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str
    not_null: bool


@dataclass(frozen=True)
class IndexSpec:
    """An index, or the index of a UNIQUE constraint (`constraint`), as PostgreSQL builds it.

    `ops` has each key column's operator class, "" for the method's default; a live index has
    them all named, and `default_ops` says which are the defaults. `options` are storage
    parameters ("fillfactor=70"). `where` is the predicate as `ingest` wrote it (kept in the
    index's COMMENT, since PostgreSQL gives it back reworded); `tablespace` is only used to
    create the index. For a live index, `valid` is False for what a failed CREATE INDEX
    CONCURRENTLY left, and `marked` says that its COMMENT marks it as one `ingest` made.
    """

    name: str
    columns: tuple[str, ...]
    unique: bool = False
    constraint: bool = False
    method: str = DEFAULT_INDEX_METHOD
    ops: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    where: Optional[str] = None
    nulls_not_distinct: bool = False
    tablespace: Optional[str] = None
    default_ops: tuple[bool, ...] = ()
    valid: bool = True
    marked: bool = False

    @property
    def digest(self) -> str:
        """A short digest of what the index is, whatever its name."""
        definition = dataclasses.replace(
            self, name="", tablespace=None, default_ops=(), valid=True, marked=False
        )
        return hashlib.sha256(repr(definition).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class TableSpec:
    schema: str
    name: str
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...]
    indexes: tuple[IndexSpec, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class WantedTable:
    """A table of the `metadata` passed to ingest, with the types to encode its rows."""

    table: sa.Table
    spec: TableSpec
    types: tuple[PgType, ...]


def identifier(*parts: str) -> str:
    """A name from parts, shortened with a hash when PostgreSQL would truncate it."""
    name = "_".join(parts)
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return name.encode()[: MAX_IDENTIFIER_BYTES - 11].decode(errors="ignore") + "_" + digest


def primary_key_name(table_name: str) -> str:
    return identifier(table_name, "pkey")


def _clause_sql(clause: Any) -> str:
    """SQL text of an index predicate, as SQLAlchemy's CREATE INDEX would write it."""
    if isinstance(clause, str):
        return clause
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    compiled = clause.compile(
        dialect=dialect, compile_kwargs={"literal_binds": True, "include_table": False}
    )
    return str(compiled)


def _names(columns: Iterable[Any]) -> tuple[str, ...]:
    return tuple(column if isinstance(column, str) else column.name for column in columns)


def _index_columns(table: sa.Table, index: sa.Index) -> tuple[str, ...]:
    columns = []
    for expression in index.expressions:
        if not isinstance(expression, sa.Column):
            raise SchemaError(
                f"{table.fullname}: index {index.name!r} is on an expression; "
                "only indexes on plain columns are supported"
            )
        columns.append(expression.name)
    return tuple(columns)


def _index(table: sa.Table, index: sa.Index) -> IndexSpec:
    columns = _index_columns(table, index)
    options = index.dialect_options["postgresql"]
    ops = options.get("ops") or {}
    where = options.get("where")
    return IndexSpec(
        name=identifier(index.name) if isinstance(index.name, str) else "",
        columns=columns,
        unique=bool(index.unique),
        method=str(options.get("using") or DEFAULT_INDEX_METHOD).lower(),
        ops=tuple(str(ops.get(column, "")) for column in columns),
        include=_names(options.get("include") or ()),
        options=tuple(f"{key}={value}" for key, value in (options.get("with") or {}).items()),
        where=_clause_sql(where) if where is not None else None,
        nulls_not_distinct=bool(options.get("nulls_not_distinct")),
        tablespace=options.get("tablespace"),
    )


def _unique_constraint(constraint: sa.UniqueConstraint) -> IndexSpec:
    options = constraint.dialect_options["postgresql"]
    return IndexSpec(
        name=identifier(constraint.name) if isinstance(constraint.name, str) else "",
        columns=_names(constraint.columns),
        unique=True,
        constraint=True,
        include=_names(options.get("include") or ()),
        nulls_not_distinct=bool(options.get("nulls_not_distinct")),
    )


def _distinctly_named(table: sa.Table, indexes: Iterable[IndexSpec]) -> tuple[IndexSpec, ...]:
    """The indexes, each with a name of its own: SQLAlchemy's default naming convention names
    an index after its first column only, and names past 63 bytes would be cut to one."""
    taken = {primary_key_name(table.name)} if table.primary_key.columns else set()
    named: list[IndexSpec] = []
    for index in sorted(set(indexes), key=lambda i: (i.name, i.digest)):
        suffix = "key" if index.constraint else "idx"
        name = index.name or identifier(table.name, *index.columns, suffix)
        if name in taken:
            name = identifier(name, index.digest)
        taken.add(name)
        named.append(dataclasses.replace(index, name=name))
    return tuple(sorted(named, key=lambda i: i.name))


def wanted_table(table: sa.Table) -> WantedTable:
    columns = table.columns
    types = tuple(column_pg_type(table, column) for column in columns)
    indexes = [
        *(_index(table, index) for index in table.indexes),
        *(
            _unique_constraint(constraint)
            for constraint in table.constraints
            if isinstance(constraint, sa.UniqueConstraint) and constraint.columns
        ),
    ]
    spec = TableSpec(
        schema=table.schema or DEFAULT_SCHEMA,
        name=table.name,
        columns=tuple(
            ColumnSpec(column.name, type_.name, not column.nullable)
            for column, type_ in zip(columns, types)
        ),
        primary_key=tuple(column.name for column in table.primary_key.columns),
        indexes=_distinctly_named(table, indexes),
    )
    return WantedTable(table, spec, types)


def wanted_tables(metadata: sa.MetaData) -> tuple[WantedTable, ...]:
    tables = tuple(wanted_table(table) for table in metadata.tables.values())
    if not tables:
        raise SchemaError("the metadata passed to ingest holds no table")
    return tables
