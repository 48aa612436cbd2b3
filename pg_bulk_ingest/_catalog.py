"""Reads of PostgreSQL's catalog: the live table, its comment, grants and dependent views."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ._db import Db
from ._schema import ColumnSpec, IndexSpec, TableSpec
from ._sql import ident, qualified

# The key of what pg_bulk_ingest keeps in a COMMENT, on the first table as on an index.
COMMENT_KEY = "pg-bulk-ingest"


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


# Every index of the table but its primary key, exclusion constraints and expression indexes
# (which a definition cannot hold); indnkeyatts (PostgreSQL 11) and indnullsnotdistinct (15)
# are read through to_jsonb so that older servers answer too.
_INDEXES_SQL = """
SELECT c.relname, i.indisprimary, i.indisunique, con.contype = 'u', am.amname,
  coalesce((to_jsonb(i) ->> 'indnkeyatts')::int, i.indnatts),
  ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, position)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        ORDER BY k.position),
  ARRAY(SELECT o.opcname::text FROM unnest(i.indclass::oid[]) WITH ORDINALITY k(oid, position)
        JOIN pg_opclass o ON o.oid = k.oid ORDER BY k.position),
  ARRAY(SELECT o.opcdefault FROM unnest(i.indclass::oid[]) WITH ORDINALITY k(oid, position)
        JOIN pg_opclass o ON o.oid = k.oid ORDER BY k.position),
  coalesce(c.reloptions, '{}')::text[],
  pg_get_expr(i.indpred, i.indrelid),
  obj_description(c.oid, 'pg_class'),
  coalesce((to_jsonb(i) ->> 'indnullsnotdistinct')::boolean, false),
  i.indisvalid
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
WHERE i.indrelid = %s::oid AND 0 <> ALL (i.indkey) AND i.indexprs IS NULL
  AND con.contype IS DISTINCT FROM 'x'
"""


def _live_index(row: tuple[Any, ...]) -> IndexSpec:
    name, _, unique, constraint, method, key_count, columns, ops, defaults, options = row[:10]
    predicate, comment, nulls_not_distinct, valid = row[10:]
    marked, written = _read_index_comment(comment)
    return IndexSpec(
        name=name,
        columns=tuple(columns[:key_count]),
        unique=bool(unique),
        constraint=bool(constraint),
        method=method,
        ops=tuple(ops),
        include=tuple(columns[key_count:]),
        options=tuple(options),
        where=None if predicate is None else (written or predicate),
        nulls_not_distinct=bool(nulls_not_distinct),
        default_ops=tuple(bool(default) for default in defaults),
        valid=bool(valid),
        marked=marked,
    )


def index_comment(where: str | None) -> str:
    """The COMMENT `ingest` puts on the indexes of the definition: it marks them as such (to be
    dropped once no longer defined, unlike an index made by hand), and keeps the predicate as
    written, since PostgreSQL gives it back reworded."""
    return orjson.dumps({COMMENT_KEY: {} if where is None else {"where": where}}).decode()


def _read_index_comment(comment: str | None) -> tuple[bool, str | None]:
    """Whether an index's COMMENT is `index_comment`'s, and the predicate it holds."""
    if not comment or not comment.startswith("{"):
        return False, None
    try:
        document = orjson.loads(comment)
    except orjson.JSONDecodeError:
        return False, None
    ours = document.get(COMMENT_KEY) if isinstance(document, dict) else None
    if not isinstance(ours, dict):
        return False, None
    where = ours.get("where")
    return True, where if isinstance(where, str) else None


def live_table(db: Db, schema: str, name: str) -> TableSpec | None:
    oid = table_oid(db, schema, name)
    if oid is None:
        return None
    columns = db.rows(
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
        "WHERE attrelid = %s::oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (oid,),
    )
    indexes = db.rows(_INDEXES_SQL, (oid,))
    primary_key = next((tuple(row[6][: row[5]]) for row in indexes if row[1]), ())
    return TableSpec(
        schema=schema,
        name=name,
        columns=tuple(ColumnSpec(n, t, bool(not_null)) for n, t, not_null in columns),
        primary_key=primary_key,
        indexes=tuple(_live_index(row) for row in indexes if not row[1]),
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


def names_taken_elsewhere(db: Db, schema: str, name: str) -> frozenset[str]:
    """The names in the schema of relations other than the table and its indexes: tables,
    views, sequences and the indexes of other tables, which share one namespace."""
    found = db.rows(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_index i ON i.indexrelid = c.oid "
        "WHERE n.nspname = %s AND c.relname <> %s "
        "AND i.indrelid IS DISTINCT FROM to_regclass(%s)",
        (schema, name, qualified(schema, name)),
    )
    return frozenset(relname for (relname,) in found)


def columns_in_views(db: Db, schema: str, name: str) -> dict[str, str]:
    """Each column of the table that a view or rule reads, with the first such view's name:
    PostgreSQL cannot change the type of such a column in place."""
    found = db.rows(
        "SELECT DISTINCT ON (a.attname) a.attname, r.ev_class::regclass::text "
        "FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid "
        "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        "WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = to_regclass(%s) "
        "AND d.refobjsubid > 0 AND r.ev_class <> d.refobjid "
        "ORDER BY a.attname, r.ev_class",
        (qualified(schema, name),),
    )
    return {column: view for column, view in found}
