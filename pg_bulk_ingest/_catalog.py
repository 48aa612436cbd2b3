"""Reads of PostgreSQL's catalog: the live table, its comment, grants and dependent views."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import orjson

from ._db import Db
from ._schema import CheckSpec, ColumnSpec, ForeignKeySpec, IdentitySpec, IndexSpec, TableSpec
from ._sql import ident, literal, qualified

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
    marked, written = _read_mark(comment, "where")
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


def ingest_mark(key: str, written: str | None) -> str:
    """The COMMENT `ingest` puts on the indexes and constraints it makes: it marks them as its
    own (to be dropped once no longer defined, unlike those made by hand), and keeps under
    `key` what PostgreSQL gives back reworded as it was written (an index's predicate, a
    CHECK's expression)."""
    return orjson.dumps({COMMENT_KEY: {} if written is None else {key: written}}).decode()


def index_comment(where: str | None) -> str:
    return ingest_mark("where", where)


def constraint_comment(check: str | None) -> str:
    return ingest_mark("check", check)


def _read_mark(comment: str | None, key: str) -> tuple[bool, str | None]:
    """Whether a COMMENT is `ingest_mark`'s, and what it keeps under `key`."""
    if not comment or not comment.startswith("{"):
        return False, None
    try:
        document = orjson.loads(comment)
    except orjson.JSONDecodeError:
        return False, None
    ours = document.get(COMMENT_KEY) if isinstance(document, dict) else None
    if not isinstance(ours, dict):
        return False, None
    written = ours.get(key)
    return True, written if isinstance(written, str) else None


# Each column with its DEFAULT, its identity and the identity's sequence, and its comment.
_COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
  pg_get_expr(d.adbin, d.adrelid), a.attidentity, s.seqstart, s.seqincrement, s.seqmin,
  s.seqmax, s.seqcache, s.seqcycle, col_description(a.attrelid, a.attnum)
FROM pg_attribute a
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_depend dep ON a.attidentity <> '' AND dep.refclassid = 'pg_class'::regclass
  AND dep.refobjid = a.attrelid AND dep.refobjsubid = a.attnum AND dep.deptype = 'i'
  AND dep.classid = 'pg_class'::regclass
LEFT JOIN pg_sequence s ON s.seqrelid = dep.objid
WHERE a.attrelid = %s::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""

# CHECK and FOREIGN KEY constraints, with their COMMENT (which marks those `ingest` made).
_CONSTRAINTS_SQL = """
SELECT con.contype, con.conname, pg_get_expr(con.conbin, con.conrelid),
  ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(attnum, position)
        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
        ORDER BY k.position),
  fn.nspname, f.relname,
  ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(attnum, position)
        JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum
        ORDER BY k.position),
  con.confupdtype, con.confdeltype, con.confmatchtype, con.condeferrable, con.condeferred,
  con.convalidated, obj_description(con.oid, 'pg_constraint')
FROM pg_constraint con
LEFT JOIN pg_class f ON f.oid = con.confrelid
LEFT JOIN pg_namespace fn ON fn.oid = f.relnamespace
WHERE con.conrelid = %s::oid AND con.contype IN ('c', 'f')
ORDER BY con.conname
"""


def _live_column(row: tuple[Any, ...]) -> ColumnSpec:
    name, type_, not_null, default, identity, start, increment, low, high, cache, cycle = row[:11]
    return ColumnSpec(
        name,
        type_,
        bool(not_null),
        default=default,
        identity=None
        if not identity
        else IdentitySpec(identity == "a", start, increment, low, high, cache, bool(cycle)),
        comment=row[11],
    )


def _live_constraints(
    rows: list[tuple[Any, ...]],
) -> tuple[tuple[CheckSpec, ...], tuple[ForeignKeySpec, ...]]:
    checks, keys = [], []
    for row in rows:
        kind, name, expression, columns, ref_schema, ref_table, ref_columns = row[:7]
        on_update, on_delete, match, deferrable, deferred, valid, comment = row[7:]
        marked, written = _read_mark(comment, "check")
        if kind == "c":
            checks.append(CheckSpec(name, written or expression, marked, bool(valid)))
            continue
        keys.append(
            ForeignKeySpec(
                name,
                tuple(columns),
                ref_schema,
                ref_table,
                tuple(ref_columns),
                on_update,
                on_delete,
                match,
                bool(deferrable),
                bool(deferred),
                marked,
                bool(valid),
            )
        )
    return tuple(checks), tuple(keys)


def live_table(db: Db, schema: str, name: str, wanted: TableSpec | None = None) -> TableSpec | None:
    """The table as the catalog has it, None without it. With `wanted`, a DEFAULT or CHECK
    expression that PostgreSQL reads as the same as the wanted one is given as written there."""
    oid = table_oid(db, schema, name)
    if oid is None:
        return None
    indexes = db.rows(_INDEXES_SQL, (oid,))
    primary_key = next((tuple(row[6][: row[5]]) for row in indexes if row[1]), ())
    checks, foreign_keys = _live_constraints(db.rows(_CONSTRAINTS_SQL, (oid,)))
    live = TableSpec(
        schema=schema,
        name=name,
        columns=tuple(_live_column(row) for row in db.rows(_COLUMNS_SQL, (oid,))),
        primary_key=primary_key,
        indexes=tuple(_live_index(row) for row in indexes if not row[1]),
        checks=checks,
        foreign_keys=foreign_keys,
        comment=comment(db, schema, name),
    )
    return live if wanted is None else _as_written(db, live, wanted)


def _canonical(db: Db, expressions: list[str], source: str = "") -> list[str] | None:
    """The expressions as PostgreSQL's planner writes them (constants folded, casts made
    explicit), without running them; None when one of them is not valid here (say, it reads a
    column not yet added). `source` is a FROM clause for expressions that read columns."""
    if not expressions:
        return []
    select = ", ".join(f"({expression})" for expression in expressions)
    db.execute("SAVEPOINT pg_bulk_ingest_canonical")
    try:
        found = db.value(f"EXPLAIN (VERBOSE, COSTS OFF, FORMAT JSON) SELECT {select}{source}")
    except Exception:  # any error means "not comparable": the change is then made and checked
        db.execute("ROLLBACK TO SAVEPOINT pg_bulk_ingest_canonical")
        return None
    db.execute("RELEASE SAVEPOINT pg_bulk_ingest_canonical")
    document = orjson.loads(found) if isinstance(found, (str, bytes)) else found
    return [str(output) for output in document[0]["Plan"]["Output"]]


def _same(db: Db, pairs: list[tuple[str, str]], source: str = "") -> list[bool]:
    """Whether each pair of expressions is the same once PostgreSQL has rewritten both."""
    canonical = _canonical(db, [e for pair in pairs for e in pair], source)
    if canonical is None:
        # One of them is not valid here yet (say, a CHECK on a column not yet added).
        return [False] if len(pairs) == 1 else [_same(db, [pair], source)[0] for pair in pairs]
    return [canonical[2 * i] == canonical[2 * i + 1] for i in range(len(pairs))]


def _as_written(db: Db, live: TableSpec, wanted: TableSpec) -> TableSpec:
    """`live`, each DEFAULT and CHECK expression that is the wanted one reworded by
    PostgreSQL (`'x'` given back as `'x'::text`) replaced by the wanted text."""
    types = {column.name: column.type for column in wanted.columns}
    defaults = {c.name: c.default for c in wanted.columns if c.default is not None}
    reworded = [
        c
        for c in live.columns
        if c.default is not None and c.name in defaults and c.default != defaults[c.name]
    ]
    pairs = [
        (
            f"CAST(({c.default}) AS {types[c.name]})",
            f"CAST(({defaults[c.name]}) AS {types[c.name]})",
        )
        for c in reworded
    ]
    same_defaults = {c.name for c, same in zip(reworded, _same(db, pairs)) if same}
    columns = tuple(
        dataclasses.replace(c, default=defaults[c.name]) if c.name in same_defaults else c
        for c in live.columns
    )
    written = {check.expression for check in wanted.checks}
    unmatched = [check for check in live.checks if check.expression not in written]
    pairs = [(found.expression, check.expression) for found in unmatched for check in wanted.checks]
    source = f" FROM ONLY {qualified(live.schema, live.name)}"
    same = iter(_same(db, pairs, source))
    matches = {
        found.name: check.expression for found in unmatched for check in wanted.checks if next(same)
    }
    checks = tuple(
        dataclasses.replace(check, expression=matches[check.name])
        if check.name in matches
        else check
        for check in live.checks
    )
    return dataclasses.replace(live, columns=columns, checks=checks)


def schema_exists(db: Db, schema: str) -> bool:
    return bool(db.value("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)))


_COMMENT = (
    "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = {} AND c.relname = {} AND c.relkind IN ('r', 'p')"
)


def comment(db: Db, schema: str, name: str) -> str | None:
    """The table's comment; None without one or without the table (one round trip: per batch)."""
    found = db.value(_COMMENT.format("%s", "%s"), (schema, name))
    return str(found) if found is not None else None


def comment_after(db: Db, statement: str, schema: str, name: str) -> str | None:
    """As `comment`, read once `statement` (without parameters) has run, in the same round
    trip."""
    found = db.last_rows(statement, _COMMENT.format(literal(schema), literal(name)))
    return str(found[0][0]) if found and found[0][0] is not None else None


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
