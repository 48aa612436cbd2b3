"""Table definitions as plain values: the wanted one from SQLAlchemy, compared to the live one."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import sqlalchemy as sa

from ._errors import SchemaError
from ._types import PgType, column_pg_type

DEFAULT_SCHEMA = "public"
# PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes.
MAX_IDENTIFIER_BYTES = 63


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str
    not_null: bool


@dataclass(frozen=True)
class IndexSpec:
    name: str
    columns: tuple[str, ...]
    unique: bool

    @property
    def key(self) -> tuple[tuple[str, ...], bool]:
        return self.columns, self.unique


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


def _index(table: sa.Table, index: sa.Index) -> IndexSpec:
    columns = []
    for expression in index.expressions:
        if not isinstance(expression, sa.Column):
            raise SchemaError(
                f"{table.fullname}: index {index.name!r} is on an expression; "
                "only indexes on plain columns are supported"
            )
        columns.append(expression.name)
    name = str(index.name) if index.name else identifier(table.name, *columns, "idx")
    return IndexSpec(name, tuple(columns), bool(index.unique))


def wanted_table(table: sa.Table) -> WantedTable:
    columns = table.columns
    types = tuple(column_pg_type(table, column) for column in columns)
    spec = TableSpec(
        schema=table.schema or DEFAULT_SCHEMA,
        name=table.name,
        columns=tuple(
            ColumnSpec(column.name, type_.name, not column.nullable)
            for column, type_ in zip(columns, types)
        ),
        primary_key=tuple(column.name for column in table.primary_key.columns),
        indexes=tuple(
            sorted((_index(table, index) for index in table.indexes), key=lambda i: i.name)
        ),
    )
    return WantedTable(table, spec, types)


def wanted_tables(metadata: sa.MetaData) -> tuple[WantedTable, ...]:
    tables = tuple(wanted_table(table) for table in metadata.tables.values())
    if not tables:
        raise SchemaError("the metadata passed to ingest holds no table")
    return tables
