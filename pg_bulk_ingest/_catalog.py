"""Reads of PostgreSQL's catalog: the live table, its comment, grants and dependent views."""

from __future__ import annotations

from dataclasses import dataclass

from ._db import Db
from ._schema import ColumnSpec, IndexSpec, TableSpec
from ._sql import ident, qualified


@dataclass(frozen=True)
class DependentView:
    schema: str
    name: str
    materialized: bool
    definition: str
    acl: tuple[str, ...]


def table_oid(db: Db, schema: str, name: str) -> int | None:
    found = db.value(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, name),
    )
    return int(found) if found is not None else None


def live_table(db: Db, schema: str, name: str) -> TableSpec | None:
    oid = table_oid(db, schema, name)
    if oid is None:
        return None
    columns = db.rows(
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
        "WHERE attrelid = %s::oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (oid,),
    )
    indexes = db.rows(
        "SELECT i.indisprimary, i.indisunique, c.relname, "
        "  ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, position) "
        "        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "        ORDER BY k.position) "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = %s::oid AND 0 <> ALL (i.indkey) AND i.indexprs IS NULL "
        "  AND i.indisvalid",
        (oid,),
    )
    primary_key = next((tuple(cols) for primary, _, _, cols in indexes if primary), ())
    return TableSpec(
        schema=schema,
        name=name,
        columns=tuple(ColumnSpec(n, t, bool(not_null)) for n, t, not_null in columns),
        primary_key=primary_key,
        indexes=tuple(
            IndexSpec(index_name, tuple(cols), bool(unique))
            for primary, unique, index_name, cols in indexes
            if not primary
        ),
    )


def schema_exists(db: Db, schema: str) -> bool:
    return bool(db.value("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)))


def comment(db: Db, schema: str, name: str) -> str | None:
    """The table's comment; None without one or without the table (one round trip: per batch)."""
    found = db.value(
        "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, name),
    )
    return str(found) if found is not None else None


def is_empty(db: Db, schema: str, name: str) -> bool:
    return not db.value(f"SELECT EXISTS (SELECT 1 FROM {qualified(schema, name)})")


def grants(db: Db, schema: str, name: str) -> tuple[str, ...]:
    """GRANT statements that give the table's current privileges to a table of the same name."""
    found = db.rows(
        "SELECT a.privilege_type, a.grantee, r.rolname FROM pg_class c "
        "CROSS JOIN LATERAL aclexplode(c.relacl) a "
        "LEFT JOIN pg_roles r ON r.oid = a.grantee "
        "WHERE c.oid = %s::regclass AND a.grantee <> c.relowner",
        (qualified(schema, name),),
    )
    return tuple(
        f"GRANT {privilege} ON {qualified(schema, name)} TO "
        f"{'PUBLIC' if grantee == 0 else ident(role)}"
        for privilege, grantee, role in found
    )


def dependent_views(db: Db, schema: str, name: str) -> tuple[DependentView, ...]:
    """Views and materialized views on the table, directly or through other views, in order."""
    found = db.rows(
        """
        WITH RECURSIVE dependent(oid, depth) AS (
            SELECT r.ev_class, 1 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
            WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = %s::regclass
              AND r.ev_class <> d.refobjid
            UNION
            SELECT r.ev_class, dependent.depth + 1
            FROM dependent JOIN pg_depend d ON d.refobjid = dependent.oid
            JOIN pg_rewrite r ON r.oid = d.objid
            WHERE d.classid = 'pg_rewrite'::regclass AND r.ev_class <> d.refobjid
        )
        SELECT n.nspname, c.relname, c.relkind = 'm', pg_get_viewdef(c.oid), c.oid
        FROM (SELECT oid, max(depth) AS depth FROM dependent GROUP BY oid) v
        JOIN pg_class c ON c.oid = v.oid JOIN pg_namespace n ON n.oid = c.relnamespace
        ORDER BY v.depth, c.oid
        """,
        (qualified(schema, name),),
    )
    return tuple(
        DependentView(
            view_schema,
            view_name,
            bool(materialized),
            definition,
            grants(db, view_schema, view_name),
        )
        for view_schema, view_name, materialized, definition, _ in found
    )
