"""What a rebuild keeps: all that depends on or decorates the live table, given back to the
table swapped in within the swap's transaction (as PostgreSQL prints each definition, naming the
table the new one becomes), or refused before anything changes when it cannot be carried."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Optional

from . import _catalog
from ._db import Db, sqlstate
from ._errors import SchemaError
from ._migrate import same_index, temporary_name
from ._schema import ColumnSpec, TableSpec, primary_key_name
from ._sql import ident, literal, qualified

_KINDS = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW"}
_LOCK_NOT_AVAILABLE = "55P03"
# A wait for one of the swap's locks gives up before PostgreSQL looks for a deadlock
# (deadlock_timeout, 1s by default), then queues again: a reader caught in a lock cycle with
# the swap is let go by the swap's giving up, and is never the deadlock's victim.
_LOCK_WAIT_SHARE_OF_DEADLOCK_TIMEOUT = 0.8
_SAVEPOINT = "pg_bulk_ingest_swap_locks"
_TRIGGER_STATES = {"D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}
_POLICY_COMMANDS = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}
_REPLICA_IDENTITIES = {"n": "NOTHING", "f": "FULL"}


@dataclass(frozen=True)
class Grant:
    """One privilege on a relation (or on one of its columns), as aclexplode gives it."""

    grantor: str
    grantee: Optional[str]  # None: PUBLIC
    privilege: str
    grantable: bool
    column: Optional[str] = None

    @property
    def key(self) -> tuple[str, Optional[str], str, Optional[str]]:
        return self.grantor, self.grantee, self.privilege, self.column


@dataclass(frozen=True)
class Relation:
    """A relation to give back under its name: `create` (for a view) makes it, `after` gives
    it its owner, options, indexes, triggers, ..., and `grants` are its privileges."""

    kind: str
    schema: str
    name: str
    owner: str
    create: Optional[str]
    after: tuple[str, ...]
    grants: frozenset[Grant]
    # A materialized view filled before the swap's locks: its name, and its definition as it
    # must read once the new table has the live table's name. If it reads otherwise, it is
    # dropped and `fallback` (the view made and filled under the locks) given back instead.
    prebuilt: Optional[tuple[str, str]] = None
    fallback: Optional[Relation] = None

    @property
    def qualified(self) -> str:
        return qualified(self.schema, self.name)


@dataclass(frozen=True)
class Kept:
    """Everything a swap gives back: `detach` runs before the live table is dropped (dependent
    views dropped, other tables' foreign keys to it dropped, its sequences freed), then the
    table's own, then `attach` (sequences, other tables' foreign keys), then the views.
    `references` are the other tables' foreign keys (table, name, definition) built before the
    swap, checked to read as they did once renamed."""

    table: Relation
    views: tuple[Relation, ...]
    detach: tuple[str, ...]
    attach: tuple[str, ...]
    references: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class Prebuilt:
    """Indexes and constraints made by hand that `prebuild` built on the table to swap in,
    before the swap's locks (no one else sees that table yet): for each live index or
    constraint name, its definition as read then and the name it was built under."""

    indexes: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    constraints: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    # Other tables' foreign keys to the table, by (table oid, name), built to reference the
    # new table.
    references: dict[tuple[int, str], tuple[str, str]] = dataclasses.field(default_factory=dict)
    # Materialized views reading the table, by oid, made and filled from the new table.
    views: dict[int, PrebuiltView] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class PrebuiltView:
    """A materialized view made from the table to swap in before the swap's locks, as
    `temporary` (qualified): `definition` is the live view's as read then, `expected` what the new
    one's must read once the new table has the live table's name, `indexes` the live view's
    indexes built on it (as `Prebuilt.indexes`)."""

    temporary: str
    definition: str
    expected: str
    indexes: dict[str, tuple[str, str]]


@dataclass(frozen=True)
class _Facts:
    oid: int
    kind: str
    schema: str
    name: str
    owner: str
    rls: tuple[bool, bool]
    options: tuple[str, ...]
    toast_options: tuple[str, ...]
    comment: Optional[str]
    populated: bool
    replica_identity: str
    persistence: str
    tablespace: bool
    partition: bool
    relkind: str

    @property
    def qualified(self) -> str:
        return qualified(self.schema, self.name)

    @property
    def display(self) -> str:
        return f"{self.kind.lower()} {self.schema}.{self.name}"


_FACTS_SQL = """
SELECT c.oid, c.relkind::text, n.nspname, c.relname, pg_get_userbyid(c.relowner),
  c.relrowsecurity, c.relforcerowsecurity, coalesce(c.reloptions, '{}')::text[],
  coalesce(t.reloptions, '{}')::text[], obj_description(c.oid, 'pg_class'), c.relispopulated,
  c.relreplident::text, c.relpersistence::text, c.reltablespace <> 0, c.relispartition
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
WHERE c.oid = %s::oid
"""


def _facts(db: Db, oid: int) -> _Facts:
    (row,) = db.rows(_FACTS_SQL, (oid,))
    return _Facts(
        oid=int(row[0]),
        kind=_KINDS.get(row[1], "TABLE"),
        schema=row[2],
        name=row[3],
        owner=row[4],
        rls=(bool(row[5]), bool(row[6])),
        options=tuple(row[7]),
        toast_options=tuple(row[8]),
        comment=row[9],
        populated=bool(row[10]),
        replica_identity=row[11],
        persistence=row[12],
        tablespace=bool(row[13]),
        partition=bool(row[14]),
        relkind=row[1],
    )


# Views and materialized views on the table, directly or through other views, each once, in
# an order that creates what a view reads before it.
_VIEWS_SQL = """
WITH RECURSIVE dependent(oid, depth) AS (
    SELECT r.ev_class, 1 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid = %s::oid AND r.ev_class <> d.refobjid AND r.rulename = '_RETURN'
    UNION
    SELECT r.ev_class, dependent.depth + 1
    FROM dependent JOIN pg_depend d ON d.refobjid = dependent.oid
      AND d.refclassid = 'pg_class'::regclass
    JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_rewrite'::regclass AND r.ev_class <> d.refobjid
      AND r.rulename = '_RETURN'
)
SELECT oid FROM dependent GROUP BY oid ORDER BY max(depth), oid
"""

# Tables with a foreign key to the table.
_REFERENCING_SQL = """
SELECT DISTINCT con.conrelid FROM pg_constraint con
WHERE con.contype = 'f' AND con.confrelid = %s::oid AND con.conrelid <> con.confrelid
ORDER BY con.conrelid
"""


def _oids(db: Db, sql: str, oid: int) -> tuple[int, ...]:
    return tuple(int(row[0]) for row in db.rows(sql, (oid,)))


def _table_facts(db: Db, table: TableSpec) -> _Facts:
    oid = _catalog.table_oid(db, table.schema, table.name)
    if oid is None:
        raise SchemaError(f"{table.display} no longer exists: it cannot be rebuilt")
    return _facts(db, oid)


# What the swap locks, in the order that cannot deadlock with readers: a reader of a view
# locks the view, then the tables under it; so the swap takes the views from the outermost in,
# then the table, then the tables whose foreign keys it drops. LOCK TABLE on a view would lock
# the tables under it too, at once: a no-op ALTER ... OWNER TO takes the view's lock alone.
def _lock_sql(db: Db, oid: int) -> tuple[tuple[int, ...], tuple[int, ...], list[str]]:
    views = _oids(db, _VIEWS_SQL, oid)
    referencing = _oids(db, _REFERENCING_SQL, oid)
    statements = []
    for view in reversed(views):
        facts = _facts(db, view)
        statements.append(f"ALTER {facts.kind} {facts.qualified} OWNER TO {ident(facts.owner)}")
    for relation in (oid, *referencing):
        facts = _facts(db, relation)
        statements.append(f"LOCK TABLE {facts.qualified} IN ACCESS EXCLUSIVE MODE")
    return views, referencing, statements


def _setting_ms(db: Db, name: str) -> int:
    return int(db.value("SELECT setting::int FROM pg_settings WHERE name = %s", (name,)))


def lock(db: Db, table: TableSpec) -> None:
    """Takes ACCESS EXCLUSIVE on the table's views, the table, and the tables with foreign keys
    to it, in that order, each wait short of deadlock_timeout and retried; a caller's own
    lock_timeout still bounds the whole."""
    oid = _table_facts(db, table).oid
    deadlock_ms = _setting_ms(db, "deadlock_timeout")
    wait_ms = max(1, int(deadlock_ms * _LOCK_WAIT_SHARE_OF_DEADLOCK_TIMEOUT))
    budget_ms = _setting_ms(db, "lock_timeout")
    previous = db.value("SELECT current_setting('lock_timeout')")
    started = time.monotonic()
    while True:
        views, referencing, statements = _lock_sql(db, oid)
        db.execute(f"SAVEPOINT {_SAVEPOINT}")
        db.execute(f"SET LOCAL lock_timeout = {wait_ms}")
        try:
            for statement in statements:
                db.execute(statement)
        except Exception as error:
            db.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
            waited_ms = (time.monotonic() - started) * 1000
            if sqlstate(error) != _LOCK_NOT_AVAILABLE or 0 < budget_ms <= waited_ms:
                raise
            continue
        # A view or foreign key made meanwhile would go unlocked: take the locks again.
        if (views, referencing) == _lock_sql(db, oid)[:2]:
            break
        db.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
    db.execute("SELECT set_config('lock_timeout', %s, true)", (previous,))
    db.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")


# ---------------------------------------------------------------------------------------------
# Reading what a relation has


_COLUMNS_SQL = """
SELECT a.attname, col_description(a.attrelid, a.attnum), pg_get_expr(d.adbin, d.adrelid),
  coalesce(a.attstattarget::int, -1), coalesce(a.attoptions, '{}')::text[],
  a.attidentity::text, a.attgenerated::text, a.attstorage::text <> t.typstorage::text,
  a.attstorage::text, coalesce(to_jsonb(a) ->> 'attcompression', ''),
  format_type(a.atttypid, a.atttypmod), a.attnum
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %s::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""

_STORAGE = {"p": "PLAIN", "e": "EXTERNAL", "m": "MAIN", "x": "EXTENDED"}


@dataclass(frozen=True)
class _Column:
    name: str
    comment: Optional[str]
    default: Optional[str]
    statistics: int
    options: tuple[str, ...]
    identity: str
    generated: str
    storage: Optional[str]
    compression: str
    type: str
    number: int


def _columns(db: Db, oid: int) -> list[_Column]:
    return [
        _Column(
            name=row[0],
            comment=row[1],
            default=row[2],
            statistics=int(row[3]),
            options=tuple(row[4]),
            identity=row[5] or "",
            generated=row[6] or "",
            storage=_STORAGE.get(row[8]) if row[7] else None,
            compression=row[9] or "",
            type=row[10],
            number=int(row[11]),
        )
        for row in db.rows(_COLUMNS_SQL, (oid,))
    ]


def _options(options: Iterable[str], prefix: str = "") -> str:
    """A reloptions array as the list of WITH (...) or SET (...)."""
    pairs = (option.split("=", 1) for option in options)
    return ", ".join(f"{prefix}{name}={literal(value)}" for name, value in pairs)


def _column_sql(facts: _Facts, column: _Column, wanted: Optional[ColumnSpec]) -> Iterator[str]:
    """A column's settings; of a table's column (`wanted`), the default and comment only
    where the definition leaves them alone, as it does in place."""
    alter = f"ALTER {facts.kind} {facts.qualified} ALTER COLUMN {ident(column.name)}"
    same_type = wanted is None or wanted.type == column.type
    # A table's DEFAULT is the definition's (server_default), made with the new table.
    if column.default is not None and wanted is None:
        yield f"{alter} SET DEFAULT {column.default}"
    if column.statistics >= 0:
        yield f"{alter} SET STATISTICS {column.statistics}"
    if column.options:
        yield f"{alter} SET ({_options(column.options)})"
    if same_type and column.storage is not None:
        yield f"{alter} SET STORAGE {column.storage}"
    if same_type and column.compression:
        method = {"p": "pglz", "l": "lz4"}.get(column.compression, column.compression)
        yield f"{alter} SET COMPRESSION {method}"
    if column.comment is not None and (wanted is None or wanted.comment is None):
        yield (
            f"COMMENT ON COLUMN {facts.qualified}.{ident(column.name)} IS {literal(column.comment)}"
        )


_INDEXES_SQL = """
SELECT i.indexrelid, ci.relname, pg_get_indexdef(i.indexrelid),
  obj_description(i.indexrelid, 'pg_class'), i.indisclustered, i.indisreplident,
  i.indisprimary, coalesce(con.contype::text, ''), i.indisvalid, ci.reltablespace <> 0,
  i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL,
  ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, position)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE k.position <= coalesce((to_jsonb(i) ->> 'indnkeyatts')::int, i.indnatts)),
  coalesce(con.oid, 0),
  ARRAY(SELECT a.attnum || ' ' || a.attstattarget FROM pg_attribute a
        WHERE a.attrelid = i.indexrelid AND coalesce(a.attstattarget::int, -1) >= 0
        ORDER BY a.attnum)
FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
  AND con.contype IN ('p', 'u', 'x')
WHERE i.indrelid = %s::oid ORDER BY ci.relname
"""


@dataclass(frozen=True)
class _Index:
    oid: int
    name: str
    definition: str
    comment: Optional[str]
    clustered: bool
    replica_identity: bool
    primary: bool
    constraint: str
    valid: bool
    tablespace: bool
    unique_columns: Optional[frozenset[str]]
    constraint_oid: int
    # "position target" of each column of the index given a statistics target of its own.
    statistics: tuple[str, ...] = ()
    # The name the index has on the new table: its own when carried, the definition's when the
    # definition builds it, None when it is not kept (an index ingest made, no longer defined).
    kept_as: Optional[str] = None
    carried: bool = False


def _indexes(db: Db, facts: _Facts, wanted: Optional[TableSpec]) -> list[_Index]:
    """The relation's indexes, each with what becomes of it; `wanted` for the table (whose
    primary key and defined indexes the new table builds), None for a materialized view."""
    built: dict[str, Optional[str]] = {}
    if wanted is not None:
        live = _catalog.live_table(db, facts.schema, facts.name)
        for spec in live.indexes if live is not None else ():
            match = next((w for w in wanted.indexes if same_index(spec, w)), None)
            if match is not None:
                built[spec.name] = match.name
            elif spec.marked:
                built[spec.name] = None
    found = []
    for row in db.rows(_INDEXES_SQL, (facts.oid,)):
        index = _Index(
            oid=int(row[0]),
            name=row[1],
            definition=row[2],
            comment=row[3],
            clustered=bool(row[4]),
            replica_identity=bool(row[5]),
            primary=bool(row[6]),
            constraint=row[7],
            valid=bool(row[8]),
            tablespace=bool(row[9]),
            unique_columns=frozenset(row[11]) if row[10] else None,
            constraint_oid=int(row[12]),
            statistics=tuple(row[13]),
        )
        if index.primary and wanted is not None:
            new_name = primary_key_name(wanted.name) if wanted.primary_key else None
            index = dataclasses.replace(index, kept_as=new_name)
        elif index.name in built:
            index = dataclasses.replace(index, kept_as=built[index.name])
        elif index.valid:
            index = dataclasses.replace(index, kept_as=index.name, carried=True)
        found.append(index)
    return found


def _index_sql(facts: _Facts, indexes: list[_Index], prebuilt: Prebuilt) -> Iterator[str]:
    """Indexes not built by the definition (UNIQUE and EXCLUDE constraints come with the
    constraints): renamed if built beforehand as they still are, else built; then which index
    clusters the table and is its replica identity."""
    for index in indexes:
        if index.carried and not index.constraint:
            definition, built = prebuilt.indexes.get(index.name, ("", ""))
            if definition == index.definition:
                name = qualified(facts.schema, built)
                yield f"ALTER INDEX {name} RENAME TO {ident(index.name)}"
            else:
                yield index.definition
            if index.comment is not None:
                yield (
                    f"COMMENT ON INDEX {qualified(facts.schema, index.name)} IS "
                    f"{literal(index.comment)}"
                )
    for index in indexes:
        if index.clustered and index.kept_as is not None:
            yield f"ALTER {facts.kind} {facts.qualified} CLUSTER ON {ident(index.kept_as)}"
    if facts.kind == "TABLE" and facts.replica_identity in _REPLICA_IDENTITIES:
        identity = _REPLICA_IDENTITIES[facts.replica_identity]
        yield f"ALTER TABLE {facts.qualified} REPLICA IDENTITY {identity}"
    for index in indexes:
        if index.replica_identity and index.kept_as is not None:
            yield (
                f"ALTER TABLE {facts.qualified} REPLICA IDENTITY USING INDEX {ident(index.kept_as)}"
            )


def _index_statistics_sql(facts: _Facts, indexes: list[_Index]) -> Iterator[str]:
    """The statistics targets given to columns of the indexes kept (expression columns)."""
    for index in indexes:
        if index.kept_as is None:
            continue
        name = qualified(facts.schema, index.kept_as)
        for position, target in (item.split() for item in index.statistics):
            yield f"ALTER INDEX {name} ALTER COLUMN {position} SET STATISTICS {target}"


_CONSTRAINTS_SQL = """
SELECT con.oid, con.conname, con.contype::text, pg_get_constraintdef(con.oid),
  obj_description(con.oid, 'pg_constraint'), con.conindid, con.confrelid = con.conrelid
FROM pg_constraint con
WHERE con.conrelid = %s::oid AND con.contype IN ('p', 'c', 'u', 'x', 'f')
ORDER BY con.contype = 'f', con.conname
"""


def _defined_constraints(db: Db, facts: _Facts, wanted: TableSpec) -> frozenset[str]:
    """The CHECK and FOREIGN KEY constraints not to carry: those of the definition (the new
    table has them) and those `ingest` made that it no longer defines (dropped in place)."""
    live = _catalog.live_table(db, facts.schema, facts.name)
    names = {c.name for c in wanted.checks} | {c.name for c in wanted.foreign_keys}
    if live is not None:
        names.update(c.name for c in live.checks if c.marked)
        names.update(c.name for c in live.foreign_keys if c.marked)
    return frozenset(names)


@dataclass(frozen=True)
class _Constraint:
    name: str
    kind: str
    definition: str
    comment: Optional[str]
    index: Optional[_Index]
    # Not carried: the definition makes it (its primary key, UNIQUE, CHECK and FOREIGN KEY
    # constraints) or `ingest` made it and no longer defines it.
    defined: bool
    to_itself: bool


def _constraints(
    db: Db, facts: _Facts, wanted: TableSpec, indexes: list[_Index]
) -> Iterator[_Constraint]:
    by_oid = {index.oid: index for index in indexes}
    defined = _defined_constraints(db, facts, wanted)
    for _, name, kind, definition, comment, index_oid, to_itself in db.rows(
        _CONSTRAINTS_SQL, (facts.oid,)
    ):
        index = by_oid.get(int(index_oid))
        yield _Constraint(
            name=name,
            kind=kind,
            definition=definition,
            comment=comment,
            index=index,
            defined=(kind in ("c", "f") and name in defined)
            or (kind in ("p", "u") and index is not None and not index.carried),
            to_itself=bool(to_itself),
        )


def _constraint_sql(
    facts: _Facts, constraints: Iterable[_Constraint], prebuilt: Prebuilt
) -> Iterator[str]:
    """The table's CHECK, UNIQUE, EXCLUDE and FOREIGN KEY constraints that the definition does
    not make (renamed if built beforehand as they still are, else added), with their comments;
    the comment of the primary key when there still is one."""
    table = facts.qualified
    for constraint in constraints:
        name, comment, index = constraint.name, constraint.comment, constraint.index
        if constraint.defined:
            kept_as = index.kept_as if index is not None else None
            if constraint.kind == "p" and comment is not None and kept_as is not None:
                yield f"COMMENT ON CONSTRAINT {ident(kept_as)} ON {table} IS {literal(comment)}"
            continue
        definition, built = prebuilt.constraints.get(name, ("", ""))
        if definition == constraint.definition:
            yield f"ALTER TABLE {table} RENAME CONSTRAINT {ident(built)} TO {ident(name)}"
        else:
            yield f"ALTER TABLE {table} ADD CONSTRAINT {ident(name)} {constraint.definition}"
        if comment is not None:
            yield f"COMMENT ON CONSTRAINT {ident(name)} ON {table} IS {literal(comment)}"
        if index is not None and index.comment is not None:
            yield f"COMMENT ON INDEX {qualified(facts.schema, name)} IS {literal(index.comment)}"


def _trigger_sql(db: Db, facts: _Facts) -> Iterator[str]:
    for name, definition, state, comment in db.rows(
        "SELECT t.tgname, pg_get_triggerdef(t.oid), t.tgenabled::text, "
        "obj_description(t.oid, 'pg_trigger') FROM pg_trigger t "
        "WHERE t.tgrelid = %s::oid AND NOT t.tgisinternal ORDER BY t.tgname",
        (facts.oid,),
    ):
        yield definition
        if state in _TRIGGER_STATES:
            yield f"ALTER TABLE {facts.qualified} {_TRIGGER_STATES[state]} TRIGGER {ident(name)}"
        if comment is not None:
            yield f"COMMENT ON TRIGGER {ident(name)} ON {facts.qualified} IS {literal(comment)}"


def _rule_sql(db: Db, facts: _Facts) -> Iterator[str]:
    for name, definition, state, comment in db.rows(
        "SELECT r.rulename, pg_get_ruledef(r.oid), r.ev_enabled::text, "
        "obj_description(r.oid, 'pg_rewrite') FROM pg_rewrite r "
        "WHERE r.ev_class = %s::oid AND r.rulename <> '_RETURN' ORDER BY r.rulename",
        (facts.oid,),
    ):
        yield definition.rstrip().rstrip(";")
        if state in _TRIGGER_STATES:
            yield f"ALTER TABLE {facts.qualified} {_TRIGGER_STATES[state]} RULE {ident(name)}"
        if comment is not None:
            yield f"COMMENT ON RULE {ident(name)} ON {facts.qualified} IS {literal(comment)}"


_POLICIES_SQL = """
SELECT p.polname, p.polcmd::text, p.polpermissive,
  ARRAY(SELECT CASE WHEN r = 0 THEN '' ELSE pg_get_userbyid(r)::text END
        FROM unnest(p.polroles) r),
  pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid),
  obj_description(p.oid, 'pg_policy')
FROM pg_policy p WHERE p.polrelid = %s::oid ORDER BY p.polname
"""


def _policy_sql(db: Db, facts: _Facts) -> Iterator[str]:
    table = facts.qualified
    for name, command, permissive, roles, using, check, comment in db.rows(
        _POLICIES_SQL, (facts.oid,)
    ):
        to = ", ".join("PUBLIC" if not role else ident(role) for role in roles)
        sql = (
            f"CREATE POLICY {ident(name)} ON {table} "
            f"AS {'PERMISSIVE' if permissive else 'RESTRICTIVE'} "
            f"FOR {_POLICY_COMMANDS[command]} TO {to}"
        )
        if using is not None:
            sql += f" USING ({using})"
        if check is not None:
            sql += f" WITH CHECK ({check})"
        yield sql
        if comment is not None:
            yield f"COMMENT ON POLICY {ident(name)} ON {table} IS {literal(comment)}"
    enabled, forced = facts.rls
    if enabled:
        yield f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"
    if forced:
        yield f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY"


def _statistics_sql(db: Db, facts: _Facts) -> Iterator[str]:
    for schema, name, definition, target, comment, owner in db.rows(
        "SELECT n.nspname, s.stxname, pg_get_statisticsobjdef(s.oid), "
        "coalesce(s.stxstattarget::int, -1), obj_description(s.oid, 'pg_statistic_ext'), "
        "pg_get_userbyid(s.stxowner) FROM pg_statistic_ext s "
        "JOIN pg_namespace n ON n.oid = s.stxnamespace WHERE s.stxrelid = %s::oid "
        "ORDER BY s.stxname",
        (facts.oid,),
    ):
        statistics = qualified(schema, name)
        yield definition
        if target >= 0:
            yield f"ALTER STATISTICS {statistics} SET STATISTICS {target}"
        if owner != facts.owner:
            yield f"ALTER STATISTICS {statistics} OWNER TO {ident(owner)}"
        if comment is not None:
            yield f"COMMENT ON STATISTICS {statistics} IS {literal(comment)}"


_GRANTS_SQL = """
SELECT pg_get_userbyid(a.grantor), CASE WHEN a.grantee = 0 THEN NULL
  ELSE pg_get_userbyid(a.grantee)::text END, a.privilege_type, a.is_grantable, NULL::text
FROM pg_class c CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
WHERE c.oid = %s::oid
UNION ALL
SELECT pg_get_userbyid(x.grantor), CASE WHEN x.grantee = 0 THEN NULL
  ELSE pg_get_userbyid(x.grantee)::text END, x.privilege_type, x.is_grantable, a.attname::text
FROM pg_attribute a CROSS JOIN LATERAL aclexplode(a.attacl) x
WHERE a.attrelid = %s::oid AND a.attnum > 0 AND NOT a.attisdropped
"""


def _grants(db: Db, oid: int) -> frozenset[Grant]:
    return frozenset(
        Grant(grantor, grantee, privilege, bool(grantable), column)
        for grantor, grantee, privilege, grantable, column in db.rows(_GRANTS_SQL, (oid, oid))
    )


def _relation(
    db: Db,
    facts: _Facts,
    wanted: Optional[TableSpec],
    create: Optional[str],
    prebuilt: Optional[Prebuilt] = None,
) -> Relation:
    """What to run once the relation of `facts` exists again under its name (the table: the
    new one, renamed; a view: `create`), made by the ingesting role."""
    after = [f"ALTER {facts.kind} {facts.qualified} OWNER TO {ident(facts.owner)}"]
    if facts.kind == "TABLE" and facts.options:
        after.append(f"ALTER TABLE {facts.qualified} SET ({_options(facts.options)})")
    if facts.toast_options:
        after.append(
            f"ALTER {facts.kind} {facts.qualified} SET ({_options(facts.toast_options, 'toast.')})"
        )
    wanted_columns = {c.name: c for c in wanted.columns} if wanted is not None else None
    for column in _columns(db, facts.oid):
        if wanted_columns is None:
            after.extend(_column_sql(facts, column, None))
        elif column.name in wanted_columns:
            after.extend(_column_sql(facts, column, wanted_columns[column.name]))
    indexes = _indexes(db, facts, wanted) if facts.kind != "VIEW" else []
    prebuilt = prebuilt or Prebuilt()
    after.extend(_index_sql(facts, indexes, prebuilt))
    after.extend(_index_statistics_sql(facts, indexes))
    if facts.kind == "TABLE":
        assert wanted is not None
        after.extend(_constraint_sql(facts, _constraints(db, facts, wanted, indexes), prebuilt))
        after.extend(_policy_sql(db, facts))
    after.extend(_trigger_sql(db, facts))
    after.extend(_rule_sql(db, facts))
    after.extend(_statistics_sql(db, facts))
    comment = facts.comment
    if wanted is not None and wanted.comment is not None and not wanted.holds_watermark:
        comment = wanted.comment or None  # the definition's, as set in place
    if comment is not None:
        after.append(f"COMMENT ON {facts.kind} {facts.qualified} IS {literal(comment)}")
    grants = _grants(db, facts.oid)
    if wanted_columns is not None:
        grants = frozenset(g for g in grants if g.column is None or g.column in wanted_columns)
    return Relation(facts.kind, facts.schema, facts.name, facts.owner, create, tuple(after), grants)


def _view_definition(db: Db, oid: int) -> str:
    return str(db.value("SELECT pg_get_viewdef(%s::oid)", (oid,))).rstrip().rstrip(";")


def _create_view_sql(facts: _Facts, name: str, definition: str) -> str:
    options = f" WITH ({_options(facts.options)})" if facts.options else ""
    create = f"CREATE {facts.kind} {qualified(facts.schema, name)}{options} AS {definition}"
    if facts.kind == "MATERIALIZED VIEW" and not facts.populated:
        create += " WITH NO DATA"
    return create


def _view(db: Db, oid: int, prebuilt: Optional[PrebuiltView]) -> Relation:
    facts = _facts(db, oid)
    definition = _view_definition(db, oid)
    made = _relation(db, facts, None, _create_view_sql(facts, facts.name, definition))
    if prebuilt is None or prebuilt.definition != definition:
        return made
    renamed = _relation(db, facts, None, None, Prebuilt(indexes=prebuilt.indexes))
    return dataclasses.replace(
        renamed, prebuilt=(prebuilt.temporary, prebuilt.expected), fallback=made
    )


_REFERENCING_FKS_SQL = """
SELECT con.conrelid, con.conname, pg_get_constraintdef(con.oid),
  obj_description(con.oid, 'pg_constraint')
FROM pg_constraint con
WHERE con.contype = 'f' AND con.confrelid = %s::oid AND con.conrelid <> con.confrelid
  AND con.conparentid = 0
ORDER BY con.conrelid, con.conname
"""

_OWNED_SEQUENCES_SQL = """
SELECT s.oid, a.attname FROM pg_depend d JOIN pg_class s ON s.oid = d.objid
JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.refobjid = %s::oid AND d.deptype = 'a' AND s.relkind = 'S'
ORDER BY s.oid
"""


def _pg_qualified(db: Db, oid: int) -> str:
    """The relation's name as pg_get_indexdef writes it."""
    return str(
        db.value(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s::oid",
            (oid,),
        )
    )


def prebuild(db: Db, table: TableSpec, name: str) -> Prebuilt:
    """Builds the live table's indexes and constraints made by hand on the table `name`, to
    be swapped in, under names of its own: their cost is paid before the swap's locks, not
    under them. One that reads the live table itself (a foreign key to it) is left to the
    swap; so is an index whose definition does not read as expected."""
    facts = _table_facts(db, table)
    new = qualified(table.schema, name)
    built = Prebuilt()
    indexes = _indexes(db, facts, table)
    built.indexes.update(_prebuild_indexes(db, facts, indexes, name))
    for constraint in _constraints(db, facts, table, indexes):
        if constraint.defined or constraint.to_itself:
            continue
        temporary = temporary_name(name, constraint.name)
        db.execute(f"ALTER TABLE {new} ADD CONSTRAINT {ident(temporary)} {constraint.definition}")
        built.constraints[constraint.name] = (constraint.definition, temporary)
    _prebuild_references(db, facts, table, name, built)
    _prebuild_views(db, facts, name, built)
    return built


def _prebuild_indexes(
    db: Db, facts: _Facts, indexes: list[_Index], name: str
) -> dict[str, tuple[str, str]]:
    """Builds the carried indexes of the relation of `facts` on the relation `name` (of the
    same schema), as `Prebuilt.indexes` records them."""
    live, new = _pg_qualified(db, facts.oid), qualified(facts.schema, name)
    built = {}
    for index in indexes:
        if not index.carried or index.constraint:
            continue
        quoted = db.value("SELECT quote_ident(%s)", (index.name,))
        for unique in ("UNIQUE ", ""):
            head = f"CREATE {unique}INDEX {quoted} ON {live} USING "
            if index.definition.startswith(head):
                temporary = temporary_name(name, index.name)
                tail = index.definition[len(head) :]
                try:
                    db.execute(f"CREATE {unique}INDEX {ident(temporary)} ON {new} USING {tail}")
                except Exception as error:
                    raise SchemaError(
                        f"{facts.display}: the index {index.name} cannot be built on the new "
                        f"table ({str(error).strip()}): {index.definition}. Drop it, or make it "
                        "again to suit the new definition, before the migration"
                    ) from error
                built[index.name] = (index.definition, temporary)
                break
    return built


# The materialized views that read the table itself and no other view of it.
_DIRECT_MATERIALIZED_VIEWS_SQL = """
WITH dependent(oid) AS (SELECT unnest(%s::oid[]))
SELECT c.oid FROM pg_class c JOIN dependent USING (oid)
WHERE c.relkind = 'm' AND c.relispopulated
  AND NOT EXISTS (
    SELECT 1 FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass
      AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass
    WHERE r.ev_class = c.oid AND d.refobjid <> c.oid
      AND d.refobjid IN (SELECT oid FROM dependent))
ORDER BY c.oid
"""


def _pointed_at(definition: str, names: Iterable[str], new: Optional[str], alias: str) -> str:
    """`definition` with each FROM or JOIN of the table, as one of `names`, reading `new`
    instead (None: the name as found) followed by `alias`; unchanged when there is none."""
    alternatives = "|".join(re.escape(name) for name in names)
    pattern = re.compile(rf"(\b(?:FROM|JOIN)\s+\(*(?:ONLY\s+)?)({alternatives})(?![\w$.\"])")
    return pattern.sub(lambda found: found.group(1) + (new or found.group(2)) + alias, definition)


def _prebuild_views(db: Db, facts: _Facts, name: str, built: Prebuilt) -> None:
    """Makes and fills, from the new table `name`, each filled materialized view that reads
    the table directly, with its indexes, under names of their own: filling it again is paid
    before the swap's locks. The view's definition is pointed at the new table by its text,
    with the table's own name as alias where that parses; the swap checks that the result
    reads as the live view once renamed, and makes the view under its locks otherwise."""
    dependent = list(_oids(db, _VIEWS_SQL, facts.oid))
    if not dependent:
        return
    names = (_pg_qualified(db, facts.oid), str(db.value("SELECT quote_ident(%s)", (facts.name,))))
    new = qualified(facts.schema, name)
    for (oid,) in db.rows(_DIRECT_MATERIALIZED_VIEWS_SQL, (dependent,)):
        view = _facts(db, int(oid))
        definition = _view_definition(db, view.oid)
        temporary = temporary_name(name, view.name)
        for alias in (f" {names[1]}", ""):
            pointed = _pointed_at(definition, names, new, alias)
            if pointed == definition:
                break
            db.execute(f"SAVEPOINT {_SAVEPOINT}")
            try:
                db.execute(_create_view_sql(view, temporary, pointed))
            except Exception:  # the view is then made under the swap's locks
                db.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                continue
            db.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
            expected = _pointed_at(definition, names, None, alias)
            indexes = _prebuild_indexes(db, view, _indexes(db, view, None), temporary)
            built.views[view.oid] = PrebuiltView(
                qualified(view.schema, temporary), definition, expected, indexes
            )
            break


def _prebuild_references(
    db: Db, facts: _Facts, table: TableSpec, name: str, built: Prebuilt
) -> None:
    """Other tables' foreign keys to the table, added again referencing the new table: the
    check of their rows (SHARE ROW EXCLUSIVE on those tables: their writes wait, reads go on)
    happens before the swap's locks. pg_get_constraintdef names the table qualified or not,
    as the search_path makes it visible; anything else is left to the swap."""
    new = qualified(table.schema, name)
    names = (_pg_qualified(db, facts.oid), str(db.value("SELECT quote_ident(%s)", (facts.name,))))
    for referencing, key, definition, _ in db.rows(_REFERENCING_FKS_SQL, (facts.oid,)):
        found = [n for n in names if definition.count(f") REFERENCES {n}(") == 1]
        if len(found) != 1:
            continue
        rewritten = definition.replace(f") REFERENCES {found[0]}(", f") REFERENCES {new}(")
        temporary = temporary_name(name, key)
        other = _facts(db, int(referencing)).qualified
        db.execute(f"ALTER TABLE {other} ADD CONSTRAINT {ident(temporary)} {rewritten}")
        built.references[(int(referencing), key)] = (definition, temporary)


def _unused(table: TableSpec, kept: Relation, prebuilt: Prebuilt) -> Iterator[str]:
    """Drops what was built beforehand and is no longer as the live table has it."""
    for _, temporary in prebuilt.indexes.values():
        renamed = f"ALTER INDEX {qualified(table.schema, temporary)} RENAME TO "
        if not any(statement.startswith(renamed) for statement in kept.after):
            yield f"DROP INDEX {qualified(table.schema, temporary)}"
    for _, temporary in prebuilt.constraints.values():
        renamed = f"RENAME CONSTRAINT {ident(temporary)} TO "
        if not any(renamed in statement for statement in kept.after):
            yield f"ALTER TABLE {kept.qualified} DROP CONSTRAINT {ident(temporary)}"


def capture(db: Db, table: TableSpec, name: str, prebuilt: Prebuilt) -> Kept:
    """Reads, under the swap's locks, all that the live table has that `table` does not build,
    and all that depends on it. Raises SchemaError for what cannot be carried across."""
    facts = _table_facts(db, table)
    problems = list(_problems(db, table, facts))
    if problems:
        raise SchemaError(_refusal(table, problems))
    kept = _relation(db, facts, table, None, prebuilt)
    view_oids = _oids(db, _VIEWS_SQL, facts.oid)
    views = [_facts(db, oid) for oid in reversed(view_oids)]
    new = dataclasses.replace(kept, name=name)
    detach = [*_unused(table, new, prebuilt)]
    detach.extend(f"DROP {view.kind} {view.qualified}" for view in views)
    attach, references = [], []
    unused = dict(prebuilt.references)
    for referencing, key, definition, comment in db.rows(_REFERENCING_FKS_SQL, (facts.oid,)):
        other = _facts(db, int(referencing)).qualified
        detach.append(f"ALTER TABLE {other} DROP CONSTRAINT {ident(key)}")
        prior, temporary = unused.get((int(referencing), key), ("", ""))
        if prior == definition:
            del unused[(int(referencing), key)]
            attach.append(
                f"ALTER TABLE {other} RENAME CONSTRAINT {ident(temporary)} TO {ident(key)}"
            )
            references.append((other, key, definition))
        else:
            attach.append(f"ALTER TABLE {other} ADD CONSTRAINT {ident(key)} {definition}")
        if comment is not None:
            attach.append(f"COMMENT ON CONSTRAINT {ident(key)} ON {other} IS {literal(comment)}")
    for sequence, column in db.rows(_OWNED_SEQUENCES_SQL, (facts.oid,)):
        owned = _facts(db, int(sequence)).qualified
        detach.append(f"ALTER SEQUENCE {owned} OWNED BY NONE")
        attach.append(f"ALTER SEQUENCE {owned} OWNED BY {facts.qualified}.{ident(column)}")
    for (referencing, _), (_, temporary) in unused.items():
        other = _facts(db, referencing).qualified
        detach.insert(0, f"ALTER TABLE {other} DROP CONSTRAINT {ident(temporary)}")
    given = tuple(_view(db, oid, prebuilt.views.get(oid)) for oid in view_oids)
    taken = {view.prebuilt[0] for view in given if view.prebuilt is not None}
    for view in prebuilt.views.values():
        if view.temporary not in taken:  # the live view went, or changed, meanwhile
            detach.insert(0, f"DROP MATERIALIZED VIEW {view.temporary}")
    return Kept(
        table=kept,
        views=given,
        detach=tuple(detach),
        attach=tuple(attach),
        references=tuple(references),
    )


# ---------------------------------------------------------------------------------------------
# Giving it back


def _current_role(db: Db) -> str:
    return str(db.value("SELECT current_user"))


def _as_grantor(db: Db, owner: str, grantor: str, statement: str) -> None:
    """Runs a GRANT or REVOKE so that `grantor` is recorded as having made it: the owner's are
    recorded as the owner's when made by the owner, a member of it or a superuser."""
    previous = _current_role(db)
    if grantor in (owner, previous):
        db.execute(statement)
        return
    db.execute(f"SET LOCAL ROLE {ident(grantor)}")
    try:
        db.execute(statement)
    finally:
        db.execute(f"SET LOCAL ROLE {ident(previous)}")


def _privilege_sql(verb: str, relation: Relation, grant: Grant) -> str:
    columns = f" ({ident(grant.column)})" if grant.column is not None else ""
    grantee = "PUBLIC" if grant.grantee is None else ident(grant.grantee)
    if verb == "GRANT":
        option = " WITH GRANT OPTION" if grant.grantable else ""
        return (
            f"GRANT {grant.privilege}{columns} ON TABLE {relation.qualified} TO {grantee}{option}"
        )
    only = "GRANT OPTION FOR " if verb == "REVOKE GRANT OPTION" else ""
    return f"REVOKE {only}{grant.privilege}{columns} ON TABLE {relation.qualified} FROM {grantee}"


def _restore_grants(db: Db, relation: Relation) -> None:
    """Makes the privileges of the relation now under the name those it had: what the new one
    has and the old one had not (default privileges) is revoked, then what it lacks granted,
    a grantor's grant option before what it granted."""
    oid = int(db.value("SELECT %s::regclass::oid", (relation.qualified,)))
    wanted = {grant.key: grant for grant in relation.grants}
    present = {grant.key: grant for grant in _grants(db, oid)}
    for key, grant in present.items():
        if key not in wanted:
            _as_grantor(
                db, relation.owner, grant.grantor, _privilege_sql("REVOKE", relation, grant)
            )
        elif grant.grantable and not wanted[key].grantable:
            statement = _privilege_sql("REVOKE GRANT OPTION", relation, grant)
            _as_grantor(db, relation.owner, grant.grantor, statement)
    pending = [g for k, g in wanted.items() if k not in present or g != present[k]]
    while pending:
        able = [
            grant
            for grant in pending
            if grant.grantor == relation.owner
            or any(
                other.grantee == grant.grantor
                and other.privilege == grant.privilege
                and other.grantable
                and other.column in (None, grant.column)
                and other not in pending
                for other in relation.grants
            )
        ]
        if not able:
            raise SchemaError(
                f"{relation.qualified}: cannot give back the privileges {pending} (no grantor "
                "holds their grant option)"
            )
        for grant in able:
            _as_grantor(db, relation.owner, grant.grantor, _privilege_sql("GRANT", relation, grant))
            pending.remove(grant)


def _give_back(db: Db, relation: Relation) -> None:
    if relation.prebuilt is not None:
        temporary, expected = relation.prebuilt
        oid = int(db.value("SELECT %s::regclass::oid", (temporary,)))
        if _view_definition(db, oid) != expected:
            assert relation.fallback is not None
            db.execute(f"DROP MATERIALIZED VIEW {temporary}")
            _give_back(db, relation.fallback)
            return
        db.execute(f"ALTER MATERIALIZED VIEW {temporary} RENAME TO {ident(relation.name)}")
    if relation.create is not None:
        db.execute(relation.create)
    for statement in relation.after:
        db.execute(statement)
    _restore_grants(db, relation)


def detach(db: Db, kept: Kept) -> None:
    """Drops what would stop the live table's DROP (run without CASCADE, so that whatever was
    not read fails the swap rather than disappears)."""
    for statement in kept.detach:
        db.execute(statement)


def give_back(db: Db, kept: Kept) -> None:
    """Gives the table now under the live table's name all that `capture` read."""
    _give_back(db, kept.table)
    for statement in kept.attach:
        db.execute(statement)
    for other, key, definition in kept.references:
        found = db.value(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND conname = %s",
            (other, key),
        )
        if found != definition:
            raise SchemaError(
                f"foreign key {key} of {other} would read {found!r} after the swap, not "
                f"{definition!r}: drop it and add it again after the migration"
            )
    for view in kept.views:
        _give_back(db, view)


# ---------------------------------------------------------------------------------------------
# Refusals


# Objects that depend on the table, its views or their row types and that a swap neither
# recreates nor drops as a part of them: a function with a SQL-standard body, a publication, a
# table inheriting from it, a column or function of its row type, another table's rule or
# policy reading it...
_UNKEPT_DEPENDENTS_SQL = """
WITH kept(oid) AS (SELECT unnest(%s::oid[])),
types(oid) AS (
    SELECT c.reltype FROM pg_class c JOIN kept USING (oid)
    UNION
    SELECT t.typarray FROM pg_class c JOIN kept USING (oid) JOIN pg_type t ON t.oid = c.reltype
),
keys(oid) AS (
    SELECT con.oid FROM pg_constraint con WHERE con.contype = 'f' AND con.confrelid = %s::oid
)
SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid) FROM pg_depend d
WHERE ((d.refclassid = 'pg_class'::regclass AND d.refobjid IN (SELECT oid FROM kept))
    OR (d.refclassid = 'pg_type'::regclass AND d.refobjid IN (SELECT oid FROM types)))
  AND d.deptype <> 'e'
  AND NOT (d.classid = 'pg_class'::regclass AND (
      d.objid IN (SELECT oid FROM kept)
      OR EXISTS (SELECT 1 FROM pg_index i WHERE i.indexrelid = d.objid
                 AND i.indrelid IN (SELECT oid FROM kept))
      OR d.objid IN (SELECT c.reltoastrelid FROM pg_class c JOIN kept USING (oid))
      OR (d.deptype IN ('a', 'i') AND d.objsubid = 0
          AND EXISTS (SELECT 1 FROM pg_class s WHERE s.oid = d.objid AND s.relkind = 'S'))
      OR EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = d.objid
                 AND h.inhparent IN (SELECT oid FROM kept))))
  AND NOT (d.classid = 'pg_type'::regclass AND d.objid IN (SELECT oid FROM types))
  AND NOT (d.classid = 'pg_constraint'::regclass AND (d.objid IN (SELECT oid FROM keys)
      OR EXISTS (SELECT 1 FROM pg_constraint con WHERE con.oid = d.objid
                 AND con.conrelid IN (SELECT oid FROM kept))))
  AND NOT (d.classid = 'pg_attrdef'::regclass AND EXISTS (
      SELECT 1 FROM pg_attrdef a WHERE a.oid = d.objid AND a.adrelid IN (SELECT oid FROM kept)))
  AND NOT (d.classid = 'pg_trigger'::regclass AND EXISTS (
      SELECT 1 FROM pg_trigger t WHERE t.oid = d.objid
      AND (t.tgrelid IN (SELECT oid FROM kept) OR t.tgconstraint IN (SELECT oid FROM keys))))
  AND NOT (d.classid = 'pg_rewrite'::regclass AND EXISTS (
      SELECT 1 FROM pg_rewrite r WHERE r.oid = d.objid AND r.ev_class IN (SELECT oid FROM kept)))
  AND NOT (d.classid = 'pg_policy'::regclass AND EXISTS (
      SELECT 1 FROM pg_policy p WHERE p.oid = d.objid AND p.polrelid IN (SELECT oid FROM kept)))
  AND NOT (d.classid = 'pg_statistic_ext'::regclass AND EXISTS (
      SELECT 1 FROM pg_statistic_ext s WHERE s.oid = d.objid
      AND s.stxrelid IN (SELECT oid FROM kept)))
ORDER BY 1
"""

_EXTENSION_MEMBERS_SQL = """
SELECT pg_describe_object(d.classid, d.objid, d.objsubid),
  pg_describe_object(d.refclassid, d.refobjid, 0)
FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = ANY(%s::oid[])
  AND d.deptype = 'e'
"""

# What uses the table's columns, other than what the new table makes itself.
_COLUMN_USERS_SQL = """
SELECT d.classid::regclass::text, d.objid,
  coalesce(pg_describe_object('pg_class'::regclass, r.ev_class, 0),
           pg_describe_object(d.classid, d.objid, d.objsubid)),
  a.attname
FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
LEFT JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid
  AND r.rulename = '_RETURN'
WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = %s::oid AND d.refobjsubid > 0
  AND d.classid <> 'pg_attrdef'::regclass
  AND NOT (d.classid = 'pg_class'::regclass AND d.deptype = 'i')
  AND NOT (d.classid = 'pg_class'::regclass AND d.objid = d.refobjid)
ORDER BY 3
"""


def _role_check(db: Db) -> str:
    """pg_has_role's privilege that lets a role give an object to another (SET from 16)."""
    return "SET" if db.server_version >= (16, 0) else "MEMBER"


def _cannot_become(db: Db, roles: Iterable[str]) -> list[str]:
    check = _role_check(db)
    return [
        role
        for role in sorted(set(roles))
        if not db.value(
            "SELECT pg_has_role(current_user, %s, 'USAGE') AND pg_has_role(current_user, %s, %s)",
            (role, role, check),
        )
    ]


def _structure_problems(db: Db, facts: _Facts) -> Iterator[str]:
    if facts.relkind == "p" or facts.partition:
        yield (
            f"it is partitioned or a partition: a rebuild would lose the partitioning. "
            f"Change {facts.schema}.{facts.name} by hand"
        )
    for child, parent in db.rows(
        "SELECT inhrelid::regclass::text, inhparent::regclass::text FROM pg_inherits "
        "WHERE inhrelid = %s::oid OR inhparent = %s::oid ORDER BY 1, 2",
        (facts.oid, facts.oid),
    ):
        yield (
            f"table {child} inherits from {parent}: a rebuild would drop the child or leave the "
            f"parent. Remove the inheritance (ALTER TABLE {child} NO INHERIT {parent}) or "
            "change the table by hand"
        )
    if facts.persistence == "u":
        yield (
            "it is UNLOGGED, which the new table would not be. Make it logged first "
            "(ALTER TABLE ... SET LOGGED) or change it by hand"
        )
    if facts.tablespace:
        yield (
            "it is in a tablespace other than the database's default, where the new table would "
            "not be. Move it (ALTER TABLE ... SET TABLESPACE pg_default) or change it by hand"
        )
    for provider, described in db.rows(_SECURITY_LABELS_SQL, (facts.oid, facts.oid)):
        yield (
            f"{described} has a security label of provider {provider!r}, which the swap does "
            "not carry. Remove the label (SECURITY LABEL ... IS NULL), migrate, then label the "
            "table again, or change it by hand"
        )


# Security labels on the table, its columns, and the views and materialized views on it.
_SECURITY_LABELS_SQL = """
SELECT DISTINCT l.provider, pg_describe_object(l.classoid, l.objoid, l.objsubid)
FROM pg_seclabel l
WHERE l.classoid = 'pg_class'::regclass
  AND (l.objoid = %s::oid OR l.objoid IN (
    SELECT r.ev_class FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = %s::oid))
ORDER BY 1, 2
"""


def _column_problems(db: Db, facts: _Facts) -> Iterator[str]:
    """A generated column cannot be carried: the definition cannot make one. (An identity is
    the definition's, as in place: the new table has it, its sequence continued.)"""
    for column in _columns(db, facts.oid):
        if column.generated:
            yield (
                f"column {column.name!r} is a generated column, which the new table would not "
                "have. Drop the expression first (ALTER TABLE ... ALTER COLUMN ... DROP "
                "EXPRESSION) or change the table by hand"
            )


def _view_problems(db: Db, view_oids: tuple[int, ...]) -> Iterator[str]:
    for oid in view_oids:
        facts = _facts(db, oid)
        if facts.persistence == "t":
            yield (
                f"{facts.display} is another session's temporary view and cannot be made again. "
                "End that session first"
            )
        if facts.tablespace:
            yield (
                f"{facts.display} is in a tablespace other than the default. Move it to "
                "pg_default first"
            )


def _dependent_problems(db: Db, facts: _Facts, view_oids: tuple[int, ...]) -> Iterator[str]:
    kept = [facts.oid, *view_oids]
    for (description,) in db.rows(_UNKEPT_DEPENDENTS_SQL, (kept, facts.oid)):
        yield (
            f"{description} depends on it and would be dropped with it. Drop it, or change it "
            "so that it no longer depends on the table (a function: give it a string body, "
            "AS $$ ... $$), then ingest again; or change the table by hand"
        )
    for member, extension in db.rows(_EXTENSION_MEMBERS_SQL, (kept,)):
        yield f"{member} belongs to {extension}. Change the table by hand"


def _index_problems(db: Db, facts: _Facts, wanted: TableSpec) -> Iterator[str]:
    for index in _indexes(db, facts, wanted):
        if index.carried and index.tablespace:
            yield (
                f"index {facts.schema}.{index.name} is in a tablespace other than the default. "
                "Move it (ALTER INDEX ... SET TABLESPACE pg_default) or drop it first"
            )


def _removed_column_problems(db: Db, facts: _Facts, wanted: TableSpec) -> Iterator[str]:
    """Objects that the swap makes again and that use a column the new table has not."""
    indexes = _indexes(db, facts, wanted)
    made = {i.oid for i in indexes if not i.carried} | {
        i.constraint_oid for i in indexes if not i.carried
    }
    made.update(
        int(oid)
        for (oid,) in db.rows(
            "SELECT oid FROM pg_constraint WHERE conrelid = %s::oid AND conname = ANY(%s)",
            (facts.oid, sorted(_defined_constraints(db, facts, wanted))),
        )
    )
    kept = set(wanted.column_names)
    for catalog, oid, description, column in db.rows(_COLUMN_USERS_SQL, (facts.oid,)):
        if column in kept or int(oid) in made:
            continue
        if catalog == "pg_constraint" and db.value(
            "SELECT contype = 'n' FROM pg_constraint WHERE oid = %s::oid", (oid,)
        ):
            continue
        yield (
            f"{description} uses column {column!r}, which the new definition does not have. "
            "Drop or change it first, or keep the column"
        )


def _unique_sets(db: Db, facts: _Facts, wanted: TableSpec) -> list[frozenset[str]]:
    """The sets of columns the new table has a full, plain unique index on."""
    found = [frozenset(wanted.primary_key)] if wanted.primary_key else []
    found.extend(
        frozenset(index.columns) for index in wanted.indexes if index.unique and index.where is None
    )
    found.extend(
        index.unique_columns
        for index in _indexes(db, facts, wanted)
        if index.carried and index.unique_columns is not None
    )
    return found


def _foreign_key_problems(db: Db, facts: _Facts, wanted: TableSpec) -> Iterator[str]:
    unique = _unique_sets(db, facts, wanted)
    for other, name, columns, owner, elsewhere in db.rows(
        "SELECT con.conrelid::regclass::text, con.conname, "
        "ARRAY(SELECT a.attname::text FROM unnest(con.confkey) k(n) JOIN pg_attribute a "
        "  ON a.attrelid = con.confrelid AND a.attnum = k.n), pg_get_userbyid(c.relowner), "
        "con.conrelid <> con.confrelid "
        "FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid "
        "WHERE con.contype = 'f' AND con.confrelid = %s::oid AND con.conparentid = 0 "
        "ORDER BY 1, 2",
        (facts.oid,),
    ):
        if frozenset(columns) not in unique and set(columns) <= set(wanted.column_names):
            yield (
                f"foreign key {name} of {other} references {list(columns)}, which the new "
                "table would not keep unique. Keep them the primary key or a UNIQUE constraint "
                "in the definition, or drop the foreign key first"
            )
        if elsewhere and _cannot_become(db, [owner]):
            yield (
                f"foreign key {name} of {other} must be dropped and added again, and the "
                f"ingesting role cannot alter {other} (owned by {owner}). GRANT {owner} to "
                "the ingesting role, or drop the foreign key first"
            )
    defined = _defined_constraints(db, facts, wanted)
    for name, referenced in db.rows(
        "SELECT con.conname, con.confrelid::regclass::text FROM pg_constraint con "
        "WHERE con.conrelid = %s::oid AND con.contype = 'f' AND con.confrelid <> con.conrelid "
        "AND NOT has_table_privilege(con.confrelid, 'REFERENCES') AND NOT (SELECT "
        "  bool_and(has_column_privilege(con.confrelid, k.n, 'REFERENCES')) "
        "  FROM unnest(con.confkey) k(n)) ORDER BY 1",
        (facts.oid,),
    ):
        if name not in defined:
            yield (
                f"foreign key {name} references {referenced}, on which the ingesting role "
                "lacks the REFERENCES privilege to add it to the new table. GRANT REFERENCES "
                f"ON {referenced} to the ingesting role, or drop the foreign key first"
            )


def _owner_problems(db: Db, facts: _Facts, view_oids: tuple[int, ...]) -> Iterator[str]:
    current = _current_role(db)
    owners: dict[str, list[str]] = {}
    for oid in (facts.oid, *view_oids):
        relation = _facts(db, oid)
        grantors = {g.grantor for g in _grants(db, oid)} - {relation.owner}
        for role in {relation.owner, *grantors} - {current}:
            owners.setdefault(role, []).append(relation.display)
    for role in _cannot_become(db, owners):
        yield (
            f"{', '.join(owners[role])} must keep owner or grants of role {role}, which the "
            f"ingesting role {current} cannot act as. GRANT {ident(role)} TO {ident(current)}, "
            "or change the owner or those grants first"
        )


def _problems(db: Db, wanted: TableSpec, facts: _Facts) -> Iterator[str]:
    view_oids = _oids(db, _VIEWS_SQL, facts.oid)
    yield from _structure_problems(db, facts)
    yield from _column_problems(db, facts)
    yield from _view_problems(db, view_oids)
    yield from _dependent_problems(db, facts, view_oids)
    yield from _index_problems(db, facts, wanted)
    yield from _removed_column_problems(db, facts, wanted)
    yield from _foreign_key_problems(db, facts, wanted)
    yield from _owner_problems(db, facts, view_oids)


def _refusal(wanted: TableSpec, problems: list[str]) -> str:
    listed = "; ".join(f"({n}) {problem}" for n, problem in enumerate(problems, 1))
    return (
        f"{wanted.display} cannot be rebuilt without losing what depends on it, so nothing was "
        f"changed: {listed}. Or keep the table's current definition in the metadata."
    )


def check(db: Db, wanted: TableSpec) -> None:
    """Raises SchemaError, naming each object and the user's choices, when a rebuild of the
    live table into `wanted` could not carry across all that depends on it or decorates it."""
    oid = _catalog.table_oid(db, wanted.schema, wanted.name)
    if oid is None:
        return
    problems = list(_problems(db, wanted, _facts(db, oid)))
    if problems:
        raise SchemaError(_refusal(wanted, problems))


def check_dropped_columns(db: Db, wanted: TableSpec) -> None:
    """Raises SchemaError, naming each object and the user's choices, when dropping the live
    table's columns that `wanted` no longer has would drop something else with them (an index
    or constraint made by hand, statistics) or fail (a view, a trigger)."""
    oid = _catalog.table_oid(db, wanted.schema, wanted.name)
    if oid is None:
        return
    problems = list(_removed_column_problems(db, _facts(db, oid), wanted))
    if problems:
        listed = "; ".join(f"({n}) {problem}" for n, problem in enumerate(problems, 1))
        raise SchemaError(
            f"{wanted.display}: columns cannot be dropped without losing what uses them, so "
            f"nothing was changed: {listed}. Or keep the columns in the definition."
        )
