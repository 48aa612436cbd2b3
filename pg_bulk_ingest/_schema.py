"""Table definitions as plain values: the wanted one from SQLAlchemy, compared to the live one."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ._errors import SchemaError
from ._sql import literal
from ._types import PgType, column_pg_type

DEFAULT_SCHEMA = "public"
DEFAULT_INDEX_METHOD = "btree"
# PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes.
MAX_IDENTIFIER_BYTES = 63


@dataclass(frozen=True)
class IdentitySpec:
    """GENERATED {ALWAYS|BY DEFAULT} AS IDENTITY, with the options of its sequence.

    In a definition, an option left None is PostgreSQL's default and is not compared; a live
    identity has every option read from its sequence.
    """

    always: bool
    start: Optional[int] = None
    increment: Optional[int] = None
    minvalue: Optional[int] = None
    maxvalue: Optional[int] = None
    cache: Optional[int] = None
    cycle: Optional[bool] = None

    def options(self) -> tuple[str, ...]:
        """The sequence options the definition sets, as CREATE TABLE and ALTER write them."""
        found = []
        for keyword, value in (
            ("START WITH", self.start),
            ("INCREMENT BY", self.increment),
            ("MINVALUE", self.minvalue),
            ("MAXVALUE", self.maxvalue),
            ("CACHE", self.cache),
        ):
            if value is not None:
                found.append(f"{keyword} {int(value)}")
        if self.cycle is not None:
            found.append("CYCLE" if self.cycle else "NO CYCLE")
        return tuple(found)

    def sql(self) -> str:
        kind = "ALWAYS" if self.always else "BY DEFAULT"
        options = self.options()
        return f"GENERATED {kind} AS IDENTITY" + (f" ({' '.join(options)})" if options else "")

    def differences(self, live: IdentitySpec) -> tuple[str, ...]:
        """The options this definition sets that the live identity does not have."""
        return tuple(
            option
            for option, field in zip(self.options(), self._set_fields())
            if getattr(live, field) != getattr(self, field)
        )

    def _set_fields(self) -> tuple[str, ...]:
        fields = ("start", "increment", "minvalue", "maxvalue", "cache", "cycle")
        return tuple(field for field in fields if getattr(self, field) is not None)


@dataclass(frozen=True)
class ColumnSpec:
    """A column. `default` is the DEFAULT expression as the definition writes it (a live one
    as PostgreSQL gives it back, unless it is the same expression); `comment` None leaves the
    live column's comment alone ("" removes it)."""

    name: str
    type: str
    not_null: bool
    default: Optional[str] = None
    identity: Optional[IdentitySpec] = None
    comment: Optional[str] = None

    @property
    def generated_always(self) -> bool:
        """Whether PostgreSQL refuses values for the column: rows leave it out."""
        return self.identity is not None and self.identity.always


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
class CheckSpec:
    """A CHECK constraint. `expression` is as the definition writes it; a live one as its
    COMMENT keeps it when `ingest` made it (`marked`), else as PostgreSQL gives it back.
    `valid` is False until VALIDATE CONSTRAINT has checked the rows it had when added."""

    name: str
    expression: str
    marked: bool = False
    valid: bool = True

    @property
    def definition(self) -> tuple[str, ...]:
        return ("check", self.expression)


@dataclass(frozen=True)
class ForeignKeySpec:
    """A FOREIGN KEY constraint; actions and match type as pg_constraint codes (`a` NO ACTION,
    `r` RESTRICT, `c` CASCADE, `n` SET NULL, `d` SET DEFAULT; `s` SIMPLE, `f` FULL)."""

    name: str
    columns: tuple[str, ...]
    ref_schema: str
    ref_table: str
    ref_columns: tuple[str, ...]
    on_update: str = "a"
    on_delete: str = "a"
    match: str = "s"
    deferrable: bool = False
    initially_deferred: bool = False
    marked: bool = False
    valid: bool = True

    @property
    def definition(self) -> tuple[object, ...]:
        return dataclasses.astuple(dataclasses.replace(self, name="", marked=False, valid=True))


@dataclass(frozen=True)
class TableSpec:
    """A table. `holds_watermark` is set on the first table of the metadata, whose COMMENT is
    the JSON that holds the high watermark: its `comment` is kept in that JSON."""

    schema: str
    name: str
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...]
    indexes: tuple[IndexSpec, ...]
    checks: tuple[CheckSpec, ...] = ()
    foreign_keys: tuple[ForeignKeySpec, ...] = ()
    comment: Optional[str] = None
    holds_watermark: bool = False

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

    @property
    def written(self) -> WantedTable:
        """The table as rows fill it: without the GENERATED ALWAYS identity columns, for which
        PostgreSQL makes every value (no primary key to upsert on if it has one of them)."""
        kept = [i for i, column in enumerate(self.spec.columns) if not column.generated_always]
        if len(kept) == len(self.spec.columns):
            return self
        columns = tuple(self.spec.columns[i] for i in kept)
        names = {column.name for column in columns}
        key = self.spec.primary_key if set(self.spec.primary_key) <= names else ()
        spec = dataclasses.replace(self.spec, columns=columns, primary_key=key)
        return WantedTable(self.table, spec, tuple(self.types[i] for i in kept))


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


def _column_name(table: sa.Table, column: sa.Column[Any]) -> str:
    if len(column.name.encode()) > MAX_IDENTIFIER_BYTES:
        raise SchemaError(
            f"{table.fullname}: the column name {column.name!r} is longer than PostgreSQL's "
            f"{MAX_IDENTIFIER_BYTES} bytes, so it would be cut and never match; shorten it"
        )
    return column.name


def _default_sql(column: sa.Column[Any]) -> Optional[str]:
    """The column's server_default as SQL (a string is a string literal, as in SQLAlchemy)."""
    default = column.server_default
    if not isinstance(default, sa.schema.DefaultClause):
        return None  # none, or an Identity (read on its own)
    if isinstance(default.arg, str):
        return literal(default.arg)
    return _clause_sql(default.arg)


def _identity(column: sa.Column[Any]) -> Optional[IdentitySpec]:
    found = getattr(column, "identity", None)
    if found is None:
        return None
    return IdentitySpec(
        always=bool(found.always),
        start=found.start,
        increment=found.increment,
        minvalue=found.minvalue,
        maxvalue=found.maxvalue,
        cache=found.cache,
        cycle=found.cycle,
    )


def _column(table: sa.Table, column: sa.Column[Any], type_: PgType) -> ColumnSpec:
    return ColumnSpec(
        _column_name(table, column),
        type_.name,
        not column.nullable,
        default=_default_sql(column),
        identity=_identity(column),
        comment=column.comment,
    )


def _free_name(name: str, taken: set[str], digest_of: object) -> str:
    if name in taken:
        name = identifier(name, hashlib.sha256(repr(digest_of).encode()).hexdigest()[:8])
    taken.add(name)
    return name


def _checks(table: sa.Table) -> tuple[CheckSpec, ...]:
    """The CHECK constraints of the table and of its columns; each unnamed one is named as
    PostgreSQL would (`table_column_check`, `table_check`)."""
    found: list[tuple[Any, tuple[str, ...]]] = [
        (c, ()) for c in table.constraints if isinstance(c, sa.CheckConstraint)
    ]
    for column in table.columns:
        found.extend(
            (c, (column.name,)) for c in column.constraints if isinstance(c, sa.CheckConstraint)
        )
    taken: set[str] = set()
    checks = []
    for constraint, columns in found:
        expression = _clause_sql(constraint.sqltext)
        name = constraint.name if isinstance(constraint.name, str) else None
        name = _free_name(name or identifier(table.name, *columns, "check"), taken, expression)
        checks.append(CheckSpec(name, expression))
    return tuple(sorted(checks, key=lambda c: c.name))


_ACTIONS = {"NO ACTION": "a", "RESTRICT": "r", "CASCADE": "c", "SET NULL": "n", "SET DEFAULT": "d"}
_MATCHES = {"SIMPLE": "s", "FULL": "f", "PARTIAL": "p"}


def _code(table: sa.Table, codes: dict[str, str], value: Optional[str], default: str) -> str:
    if value is None:
        return default
    try:
        return codes[value.upper()]
    except KeyError:
        raise SchemaError(
            f"{table.fullname}: a foreign key has {value!r}, which is none of {list(codes)}"
        ) from None


def _referenced(element: sa.ForeignKey) -> tuple[str, str, str]:
    """(schema, table, column) a foreign key element references, whether or not that table
    is in the metadata."""
    try:
        column = element.column
    except sa.exc.NoReferencedTableError:
        parts = element.target_fullname.split(".")
        return (parts[-3] if len(parts) > 2 else DEFAULT_SCHEMA), parts[-2], parts[-1]
    referenced = column.table
    assert isinstance(referenced, sa.Table)
    return referenced.schema or DEFAULT_SCHEMA, referenced.name, column.name


def _foreign_keys(table: sa.Table) -> tuple[ForeignKeySpec, ...]:
    taken: set[str] = set()
    keys = []
    for constraint in table.foreign_key_constraints:
        targets = [_referenced(element) for element in constraint.elements]
        columns = _names(constraint.columns)
        spec = ForeignKeySpec(
            name="",
            columns=columns,
            ref_schema=targets[0][0],
            ref_table=targets[0][1],
            ref_columns=tuple(column for _, _, column in targets),
            on_update=_code(table, _ACTIONS, constraint.onupdate, "a"),
            on_delete=_code(table, _ACTIONS, constraint.ondelete, "a"),
            match=_code(table, _MATCHES, constraint.match, "s"),
            deferrable=bool(constraint.deferrable),
            initially_deferred=str(constraint.initially or "").upper() == "DEFERRED",
        )
        name = constraint.name if isinstance(constraint.name, str) else None
        name = _free_name(name or identifier(table.name, *columns, "fkey"), taken, spec)
        keys.append(dataclasses.replace(spec, name=name))
    return tuple(sorted(keys, key=lambda k: k.name))


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
        columns=tuple(_column(table, column, type_) for column, type_ in zip(columns, types)),
        primary_key=tuple(column.name for column in table.primary_key.columns),
        indexes=_distinctly_named(table, indexes),
        checks=_checks(table),
        foreign_keys=_foreign_keys(table),
        comment=table.comment,
    )
    return WantedTable(table, spec, types)


def wanted_tables(metadata: sa.MetaData) -> tuple[WantedTable, ...]:
    """The tables of the metadata in its order: the first one holds the high watermark."""
    tables = tuple(wanted_table(table) for table in metadata.tables.values())
    if not tables:
        raise SchemaError("the metadata passed to ingest holds no table")
    first = tables[0]
    return (
        dataclasses.replace(first, spec=dataclasses.replace(first.spec, holds_watermark=True)),
        *tables[1:],
    )


def creation_order(tables: Sequence[WantedTable]) -> tuple[int, ...]:
    """The positions of `tables` in the order to create them: a table after the tables of
    the metadata its foreign keys reference, else in the metadata's order."""
    names = {(t.spec.schema, t.spec.name): i for i, t in enumerate(tables)}
    needs = [
        {
            names[(key.ref_schema, key.ref_table)]
            for key in table.spec.foreign_keys
            if (key.ref_schema, key.ref_table) in names
        }
        - {position}
        for position, table in enumerate(tables)
    ]
    order: list[int] = []
    while len(order) < len(tables):
        ready = next(
            (i for i in range(len(tables)) if i not in order and needs[i] <= set(order)), None
        )
        if ready is None:
            cycle = [tables[i].spec.display for i in range(len(tables)) if i not in order]
            raise SchemaError(
                f"the foreign keys of {cycle} reference each other in a cycle, so no table "
                "can be created first; leave one of them out of the metadata and add it by hand"
            )
        order.append(ready)
    return tuple(order)
