"""Rebuilds: the live rows copied into the new table, each changed column converted as a row
with that value (in PostgreSQL's text for it) would be stored, and refused, naming the table,
the column and a value, where such a row would have been refused.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

import orjson

from ._db import Db, sqlstate
from ._errors import MigrationError, SchemaError
from ._migrate import temporary_name
from ._schema import TableSpec, primary_key_name
from ._sql import ident, idents, literal, qualified

# The session settings the rows are converted under, whatever the session's own: times in UTC
# (how ingest stores a naive datetime), and PostgreSQL's default text for intervals and floats
# (an interval as '24:00:00', a float's shortest exact digits).
_SETTINGS = (("TimeZone", "UTC"), ("IntervalStyle", "postgres"), ("extra_float_digits", "1"))
_SAVEPOINT = "pg_bulk_ingest_copy_rows"
# Where the probe of a failed conversion leaves PostgreSQL's reason and the old value.
_PROBE_FAILURE = "pg_bulk_ingest.conversion_failure"
_PROBE_VALUE = "pg_bulk_ingest.conversion_value"
# The longest old value quoted in an error message.
_SHOWN_CHARS = 80
# SQLSTATEs of a copy that failed on the rows, not on the server: data exceptions (class 22)
# and integrity violations (23), of which a NULL in a NOT NULL column and a duplicate key.
_DATA_EXCEPTION = "22"
_ROW_FAILURES = (_DATA_EXCEPTION, "23")
_NOT_NULL_VIOLATION = "23502"
_UNIQUE_VIOLATION = "23505"

_INTEGERS = frozenset({"smallint", "integer", "bigint"})
_FLOATS = frozenset({"real", "double precision"})
_TIMESTAMPS = frozenset({"timestamp without time zone", "timestamp with time zone"})
_TIME = "time without time zone"
_STRING_CATEGORY = "S"


class Path(enum.Enum):
    """How PostgreSQL converts a value of one type to another (its find_coercion_pathway)."""

    ASSIGNMENT = "assignment"  # on INSERT, with no cast written: lengths are checked
    EXPLICIT = "explicit"  # only with CAST
    NONE = "none"


@dataclass(frozen=True)
class CastPair:
    """What the catalog says of a conversion from `source` to `target` (types without their
    length or precision): their categories, and pg_cast's context ('i', 'a', 'e') if any."""

    source: str
    source_category: str
    target: str
    target_category: str
    context: Optional[str]


@dataclass(frozen=True)
class ColumnTypes:
    """A column's old and new type, with what the catalog says of the conversion: `cast_as`
    names the new type without its length or precision, `elements` is the pair of element
    types when both are arrays."""

    column: str
    old: str
    new: str
    cast_as: str
    pair: CastPair
    elements: Optional[CastPair]


@dataclass(frozen=True)
class Conversion:
    """How the old values of a column become values of its new type.

    `expression` and `refused_when` are SQL templates over the old value (`{0}`);
    `refused_when` finds the values PostgreSQL would change where a row would be refused,
    and `refusal` says why they are refused.
    """

    column: str
    old: str
    new: str
    expression: str = "{0}"
    refused_when: Optional[str] = None
    refusal: str = ""

    def sql(self, value: str) -> str:
        return self.expression.format(value)


def path(pair: CastPair, elements: Optional[CastPair] = None) -> Path:
    """PostgreSQL's coercion path for `pair`: a pg_cast entry, else one between the arrays'
    elements, else through text: to a string type on assignment, from one only with CAST."""
    if pair.source == pair.target:
        return Path.ASSIGNMENT
    if pair.context is not None:
        return Path.EXPLICIT if pair.context == "e" else Path.ASSIGNMENT
    if elements is not None:
        found = path(elements)
        if found is not Path.NONE:
            return found
    if pair.target_category == _STRING_CATEGORY:
        return Path.ASSIGNMENT
    if pair.source_category == _STRING_CATEGORY:
        return Path.EXPLICIT
    return Path.NONE


def _refusal(source: str, target: str) -> tuple[Optional[str], str]:
    """A predicate over an old value (`{0}`) of type `source` that PostgreSQL would convert to
    `target` although a row with it would be refused, and why; (None, "") when there is none."""
    if target in _INTEGERS and (source in _FLOATS or source == "numeric"):
        return "{0} <> trunc({0})", f"it has a fraction, which {target} refuses (a cast rounds it)"
    if target in _INTEGERS and source == "jsonb":
        return (
            "CASE WHEN jsonb_typeof({0}) = 'number' "
            "THEN CAST({0} AS numeric) <> trunc(CAST({0} AS numeric)) ELSE false END",
            f"it has a fraction, which {target} refuses (a cast rounds it)",
        )
    if target in _INTEGERS and source == "boolean":
        return "{0} IS NOT NULL", f"a boolean is not an integer ({target} refuses it)"
    if target == _TIME and source in _TIMESTAMPS:
        return (
            "NOT isfinite({0})",
            "it is infinite, which a time of day cannot be (a cast gives NULL)",
        )
    return None, ""


def _through_text(source: str, target: str) -> bool:
    """Whether the old value is converted through its text, as a row carries it: an interval
    is a time of day only as its text reads as one ('24:00:00'; not '1 day', '-01:00:00' or
    '25:00:00', which a cast would wrap), and a float as its shortest exact digits (a cast to
    numeric keeps 15)."""
    return (source == "interval" and target == _TIME) or (source in _FLOATS and target == "numeric")


def conversion(table: str, types: ColumnTypes) -> Conversion:
    """How the column's old values are converted, on the element level for arrays; raises
    SchemaError, naming `table`, where PostgreSQL has no conversion at all."""
    found = path(types.pair, types.elements)
    if found is Path.NONE:
        raise SchemaError(
            f"{table}.{types.column}: PostgreSQL has no conversion from {types.old} to "
            f"{types.new}, so the stored rows cannot be kept; define a type it converts to, "
            "or add a column of the new type (and remove the old one) instead"
        )
    scalars = types.elements or types.pair
    if _through_text(scalars.source, scalars.target):
        text = "text[]" if types.elements else "text"
        expression = f"CAST(CAST({{0}} AS {text}) AS {types.cast_as})"
    elif found is Path.EXPLICIT:
        # Cast to the type without its length: the assignment to the column then checks it,
        # where a cast to character varying(n) would cut the value.
        expression = f"CAST({{0}} AS {types.cast_as})"
    else:
        expression = "{0}"
    refused_when, refusal = _refusal(scalars.source, scalars.target)
    if refused_when is not None and types.elements is not None:
        element = refused_when.format("element.value")
        refused_when = f"EXISTS (SELECT FROM unnest({{0}}) AS element(value) WHERE {element})"
    return Conversion(types.column, types.old, types.new, expression, refused_when, refusal)


# Per column: the old type's and the new type's base names, categories and pg_cast context,
# the same for their elements when both are arrays, and the new type's name without its
# length or precision. A domain is taken as its base type, as PostgreSQL does.
_TYPES_SQL = """
WITH types AS (
  SELECT CASE WHEN old.typtype = 'd' THEN old.typbasetype ELSE old.oid END AS source,
         new.oid AS target
  FROM pg_type old, pg_type new WHERE old.oid = %s::regtype AND new.oid = %s::regtype
), elements AS (
  SELECT source, target, s.typcategory::text AS source_category,
         t.typcategory::text AS target_category,
         CASE WHEN s.typcategory = 'A' AND t.typcategory = 'A' THEN s.typelem END AS source_element,
         CASE WHEN s.typcategory = 'A' AND t.typcategory = 'A' THEN t.typelem END AS target_element,
         quote_ident(n.nspname) || '.' || quote_ident(t.typname) AS cast_as
  FROM types JOIN pg_type s ON s.oid = source JOIN pg_type t ON t.oid = target
  JOIN pg_namespace n ON n.oid = t.typnamespace
)
SELECT format_type(source, NULL), source_category, format_type(target, NULL), target_category,
  (SELECT castcontext::text FROM pg_cast WHERE castsource = source AND casttarget = target),
  format_type(source_element, NULL),
  (SELECT typcategory::text FROM pg_type WHERE oid = source_element),
  format_type(target_element, NULL),
  (SELECT typcategory::text FROM pg_type WHERE oid = target_element),
  (SELECT castcontext::text FROM pg_cast
   WHERE castsource = source_element AND casttarget = target_element),
  cast_as
FROM elements
"""


def column_types(db: Db, column: str, old: str, new: str) -> ColumnTypes:
    row = db.rows(_TYPES_SQL, (old, new))[0]
    pair = CastPair(*row[0:5])
    elements = CastPair(*row[5:10]) if row[5] is not None else None
    return ColumnTypes(column, old, new, row[10], pair, elements)


def _shown(value: Optional[str]) -> str:
    if value is None:
        return "NULL"
    if len(value) > _SHOWN_CHARS:
        return repr(value[:_SHOWN_CHARS]) + "..."
    return repr(value)


def _value_error(
    table: TableSpec, found: Conversion, value: Optional[str], why: str
) -> MigrationError:
    return MigrationError(
        table.display,
        found.column,
        f"the stored value {_shown(value)} cannot become {found.new} (from {found.old}): {why}; "
        "update or delete the rows holding such values, or define a type that holds them "
        "(the table is left as it was)",
    )


def _convert_settings(db: Db) -> list[tuple[str, str]]:
    """Sets `_SETTINGS` until the transaction ends; returns the settings they replace."""
    names = [name for name, _ in _SETTINGS]
    current = db.rows(f"SELECT {', '.join('current_setting(%s)' for _ in names)}", tuple(names))[0]
    _set(db, _SETTINGS)
    return list(zip(names, current))


def _set(db: Db, settings: Iterable[tuple[str, str]]) -> None:
    pairs = list(settings)
    db.execute(
        f"SELECT {', '.join('set_config(%s, %s, true)' for _ in pairs)}",
        tuple(part for pair in pairs for part in pair),
    )


def _check_refusals(db: Db, table: TableSpec, source: str, conversions: list[Conversion]) -> None:
    for found in conversions:
        if found.refused_when is None:
            continue
        column = ident(found.column)
        rows = db.rows(
            f"SELECT CAST({column} AS text) FROM {source} "
            f"WHERE {found.refused_when.format(column)} LIMIT 1"
        )
        if rows:
            raise _value_error(table, found, rows[0][0], found.refusal)


def _probe_sql(source: str, found: Conversion) -> str:
    """A DO block that converts the column's old values one by one as the copy does, and
    leaves the first value that fails, and why, in `_PROBE_VALUE` and `_PROBE_FAILURE`. The
    exception block is around the whole loop: one subtransaction, not one per row."""
    body = f"""
DECLARE
  old_row record;
  old_text text;
  converted {found.new};
BEGIN
  PERFORM set_config('{_PROBE_FAILURE}', '', true);
  BEGIN
    FOR old_row IN SELECT {ident(found.column)} AS value FROM {source} LOOP
      old_text := CAST(old_row.value AS text);
      converted := {found.sql("old_row.value")};
    END LOOP;
  EXCEPTION WHEN data_exception THEN
    PERFORM set_config('{_PROBE_FAILURE}', SQLERRM, true),
      set_config('{_PROBE_VALUE}', coalesce(to_jsonb(old_text), 'null')::text, true);
  END;
END"""
    return f"DO {literal(body)}"


def _failed_value(
    db: Db, table: TableSpec, conversions: list[Conversion]
) -> Optional[MigrationError]:
    """The first old value that fails its conversion, as an error, after a failed copy."""
    source = qualified(table.schema, table.name)
    for found in conversions:
        db.execute(_probe_sql(source, found))
        failure, value = db.rows(
            "SELECT current_setting(%s), current_setting(%s, true)",
            (_PROBE_FAILURE, _PROBE_VALUE),
        )[0]
        if failure:
            return _value_error(table, found, orjson.loads(value), failure)
    return None


def _diag(error: Exception, field: str) -> Optional[str]:
    value = getattr(getattr(error, "diag", None), field, None)
    return str(value) if value is not None else None


def _constraint_columns(table: TableSpec, name: str, constraint: Optional[str]) -> tuple[str, ...]:
    if constraint == primary_key_name(name):
        return table.primary_key
    for index in table.indexes:
        if constraint == temporary_name(name, index.name):
            return index.columns
    return ()


def _copy_error(
    db: Db,
    table: TableSpec,
    name: str,
    error: Exception,
    *,
    live_columns: tuple[str, ...],
    conversions: list[Conversion],
) -> MigrationError:
    """The copy's failure as the user's: their table, the column and a stored value."""
    state = sqlstate(error)
    if state == _NOT_NULL_VIOLATION:
        column = _diag(error, "column_name")
        why = (
            "stored rows hold NULL in it, which the new definition refuses (NOT NULL); fill or "
            "delete those rows, or keep the column nullable"
            if column in live_columns
            else "the column is new and NOT NULL, so the stored rows have no value for it; "
            "add it as nullable"
        )
        return MigrationError(table.display, column, f"{why} (the table is left as it was)")
    if state == _UNIQUE_VIOLATION:
        columns = _constraint_columns(table, name, _diag(error, "constraint_name"))
        unique = f"unique columns ({', '.join(columns)})" if columns else "unique columns"
        return MigrationError(
            table.display,
            columns[0] if len(columns) == 1 else None,
            f"stored rows repeat a key of the new definition's {unique}: "
            f"{_diag(error, 'message_detail')} Remove the duplicates, or change the definition "
            "(the table is left as it was)",
        )
    found = _failed_value(db, table, conversions) if state.startswith(_DATA_EXCEPTION) else None
    if found is not None:
        return found
    return MigrationError(
        table.display,
        None,
        f"the stored rows cannot be copied into the new definition: "
        f"{_diag(error, 'message_primary') or error} (the table is left as it was)",
    )


def copy_rows(db: Db, table: TableSpec, live: TableSpec, name: str) -> None:
    """Copies the rows of the live table into the new table `name`, converting each column
    whose type changes; raises MigrationError or SchemaError, naming the table, the column and a
    value, where the rows cannot be converted, and then leaves the transaction to roll back."""
    old_types = {column.name: column.type for column in live.columns}
    kept = [column for column in table.columns if column.name in old_types]
    conversions = [
        conversion(table.display, column_types(db, c.name, old_types[c.name], c.type))
        for c in kept
        if old_types[c.name] != c.type
    ]
    by_column = {found.column: found for found in conversions}
    source = qualified(table.schema, table.name)
    expressions = [
        by_column[c.name].sql(ident(c.name)) if c.name in by_column else ident(c.name) for c in kept
    ]
    replaced = _convert_settings(db)
    _check_refusals(db, table, source, conversions)
    db.execute(f"SAVEPOINT {_SAVEPOINT}")
    try:
        # The stored values of an identity column are kept, ALWAYS or not.
        overriding = " OVERRIDING SYSTEM VALUE" if any(c.identity for c in kept) else ""
        db.execute(
            f"INSERT INTO {qualified(table.schema, name)} ({idents(c.name for c in kept)})"
            f"{overriding} SELECT {', '.join(expressions)} FROM {source}"
        )
    except Exception as error:
        if not sqlstate(error).startswith(_ROW_FAILURES):
            raise
        db.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        raise _copy_error(
            db, table, name, error, live_columns=live.column_names, conversions=conversions
        ) from error
    db.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
    _set(db, replaced)
