"""SQLAlchemy column types to the PostgreSQL type PostgreSQL itself reports (format_type).

Comparing live and wanted tables on these names means any SQLAlchemy spelling of a type that
matches the live column is a match; types with no single PostgreSQL meaning are rejected.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, Optional

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from ._errors import SchemaError

# Float(p) is REAL up to 24 binary digits of precision, as PostgreSQL decides for FLOAT(p).
_REAL_MAX_PRECISION = 24


class Kind(enum.Enum):
    """How values of a type are encoded into COPY text."""

    INTEGER = "integer"
    FLOAT = "float"
    NUMERIC = "numeric"
    BOOLEAN = "boolean"
    TEXT = "text"
    DATE = "date"
    TIME = "time"
    TIMESTAMP = "timestamp"
    TIMESTAMPTZ = "timestamptz"
    INTERVAL = "interval"
    JSON = "json"
    JSONB = "jsonb"
    UUID = "uuid"
    BYTEA = "bytea"
    ARRAY = "array"


@dataclass(frozen=True)
class PgType:
    """A column type as PostgreSQL's format_type() spells it, and how to encode values."""

    name: str
    kind: Kind
    element: Optional[PgType] = None


def _with_precision(base: str, precision: int | None, suffix: str = "") -> str:
    typmod = f"({precision})" if precision is not None else ""
    return f"{base}{typmod}{suffix}"


_FIXED: tuple[tuple[type[Any], PgType], ...] = (
    (sa.BigInteger, PgType("bigint", Kind.INTEGER)),
    (sa.SmallInteger, PgType("smallint", Kind.INTEGER)),
    (sa.Integer, PgType("integer", Kind.INTEGER)),
    (sa.Boolean, PgType("boolean", Kind.BOOLEAN)),
    (sa.Text, PgType("text", Kind.TEXT)),
    (pg.JSONB, PgType("jsonb", Kind.JSONB)),
    (pg.JSON, PgType("json", Kind.JSON)),
    (pg.UUID, PgType("uuid", Kind.UUID)),
    (getattr(sa, "Uuid", pg.UUID), PgType("uuid", Kind.UUID)),
    (sa.LargeBinary, PgType("bytea", Kind.BYTEA)),
    (sa.Date, PgType("date", Kind.DATE)),
)


def _float(type_: Any) -> PgType:
    precision = type_.precision
    if isinstance(type_, sa.REAL) or (precision is not None and precision <= _REAL_MAX_PRECISION):
        return PgType("real", Kind.FLOAT)
    return PgType("double precision", Kind.FLOAT)


def _numeric(type_: Any) -> PgType:
    if type_.precision is None:
        return PgType("numeric", Kind.NUMERIC)
    return PgType(f"numeric({type_.precision},{type_.scale or 0})", Kind.NUMERIC)


def _char(type_: Any) -> PgType:
    return PgType(f"character({type_.length or 1})", Kind.TEXT)


def _varchar(type_: Any) -> PgType:
    return PgType(_with_precision("character varying", type_.length), Kind.TEXT)


def _timestamp(type_: Any) -> PgType:
    zone = " with time zone" if type_.timezone else " without time zone"
    kind = Kind.TIMESTAMPTZ if type_.timezone else Kind.TIMESTAMP
    return PgType(_with_precision("timestamp", getattr(type_, "precision", None), zone), kind)


def _time(type_: Any) -> PgType | None:
    if type_.timezone:
        return None
    precision = getattr(type_, "precision", None)
    return PgType(_with_precision("time", precision, " without time zone"), Kind.TIME)


def _interval(type_: Any) -> PgType:
    fields = getattr(type_, "fields", None)
    base = f"interval {fields.lower()}" if fields else "interval"
    precision = getattr(type_, "second_precision", getattr(type_, "precision", None))
    return PgType(_with_precision(base, precision), Kind.INTERVAL)


_PARAMETRISED: tuple[tuple[Any, Callable[[Any], Optional[PgType]]], ...] = (
    (sa.Float, _float),
    (sa.Numeric, _numeric),
    (sa.CHAR, _char),
    (sa.String, _varchar),
    (sa.DateTime, _timestamp),
    (sa.Time, _time),
    ((sa.Interval, pg.INTERVAL), _interval),
)


def pg_type(type_: sa.types.TypeEngine[Any]) -> PgType | None:
    """The PostgreSQL type for a SQLAlchemy type, or None when it has no unambiguous one."""
    if isinstance(type_, sa.Enum) or (
        isinstance(type_, sa.types.TypeDecorator) and not isinstance(type_, sa.Interval)
    ):
        return None
    if isinstance(type_, sa.ARRAY):
        element = pg_type(sa.types.to_instance(type_.item_type))
        if element is None or element.kind is Kind.ARRAY:
            return None
        return PgType(element.name + "[]", Kind.ARRAY, element)
    for fixed_class, fixed in _FIXED:
        if isinstance(type_, fixed_class):
            return fixed
    for parametrised_class, build in _PARAMETRISED:
        if isinstance(type_, parametrised_class):
            return build(type_)
    return None


def column_pg_type(table: sa.Table, column: sa.Column[Any]) -> PgType:
    found = pg_type(column.type)
    if found is None:
        raise SchemaError(
            f"{table.fullname}.{column.name}: type {column.type!r} has no single PostgreSQL "
            "type that pg_bulk_ingest can match against the live table; use an UPPERCASE "
            "type (sa.INTEGER, sa.VARCHAR(n), sa.TIMESTAMP(timezone=True), ...) or "
            "sqlalchemy.dialects.postgresql.JSON/JSONB/UUID/BYTEA/ARRAY/INTERVAL"
        )
    return found
