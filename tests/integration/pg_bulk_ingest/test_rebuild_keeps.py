"""A rebuild (a new table swapped in) keeps all that depended on or decorated the table, or
refuses before changing anything; and its locks never make a view's reader fail."""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from pg_bulk_ingest import SchemaError, ingest, migration_plan

from .test_migrations import load

FIRST_ROWS = [(n, n * 10, f"w{n}") for n in range(1, 11)]


def items(
    schema: str,
    v_type: Any = sa.INTEGER,
    *,
    with_w: bool = True,
    v_in_key: bool = False,
    id_default: Any = None,
    checked: bool = False,
) -> sa.MetaData:
    """The table `items`; a `v` of another type than INTEGER, no `w`, or a primary key of
    (id, v) needs a rebuild. `checked` defines a CHECK constraint on `v`."""
    metadata = sa.MetaData()
    columns: list[Any] = [
        sa.Column("id", sa.INTEGER, primary_key=True, server_default=id_default),
        sa.Column("v", v_type, primary_key=v_in_key),
    ]
    if with_w:
        columns.append(sa.Column("w", sa.TEXT))
    if checked:
        columns.append(sa.CheckConstraint("v >= 0", name="v_not_negative"))
    sa.Table("items", metadata, *columns, schema=schema)
    return metadata


def first_load(conn: sa.engine.Connection, schema: str, **definition: Any) -> None:
    load(conn, items(schema, **definition), FIRST_ROWS)


def rebuild(
    conn: sa.engine.Connection, schema: str, *, with_w: bool = True, **definition: Any
) -> None:
    """Changes `v` to BIGINT (and drops `w` unless `with_w`), ingesting one more row."""
    metadata = items(schema, sa.BIGINT, with_w=with_w, **definition)
    load(conn, metadata, [(11, 110, "w11") if with_w else (11, 110)])


def v_type(query: Any, schema: str) -> str:
    return str(
        query(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            f"WHERE attrelid = '\"{schema}\".items'::regclass AND attname = 'v'"
        )[0][0]
    )


@pytest.fixture
def roles(engine: sa.engine.Engine, schema: str) -> Iterator[Callable[[], str]]:
    """Makes roles for one test; drops them, and what they own, afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"r_{uuid.uuid4().hex[:12]}"
        with engine.begin() as c:
            c.exec_driver_sql(f'CREATE ROLE "{name}"')
            c.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{schema}" TO "{name}"')
        made.append(name)
        return name

    yield make
    with engine.begin() as c:
        for name in made:
            c.exec_driver_sql(f'DROP OWNED BY "{name}" CASCADE')
        for name in made:
            c.exec_driver_sql(f'DROP ROLE "{name}"')


@pytest.fixture
def as_role(driver_engine: sa.engine.Engine) -> Callable[[str, str], list[tuple[Any, ...]]]:
    """Runs SQL as a role, in a transaction of its own; returns its rows."""

    def run(role: str, sql: str) -> list[tuple[Any, ...]]:
        with driver_engine.begin() as other:
            other.exec_driver_sql(f'SET LOCAL ROLE "{role}"')
            result = other.exec_driver_sql(sql)
            return [tuple(row) for row in result.fetchall()] if result.returns_rows else []

    return run


# --- Row-level security ----------------------------------------------------------------------


def test_row_level_security_and_its_policies_survive_a_rebuild(
    conn: sa.engine.Connection, schema: str, query: Any, roles: Any, as_role: Any
) -> None:
    first_load(conn, schema)
    reader = roles()
    t = f'"{schema}".items'
    query(f'GRANT SELECT, INSERT ON {t} TO "{reader}"')
    query(f'CREATE POLICY few ON {t} FOR SELECT TO "{reader}" USING (id <= 3)')
    query(f"CREATE POLICY small ON {t} AS RESTRICTIVE FOR INSERT WITH CHECK (v < 1000)")
    query(f"CREATE POLICY anyone ON {t} FOR INSERT WITH CHECK (true)")
    query(f"COMMENT ON POLICY few ON {t} IS 'three rows'")
    query(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY")
    assert as_role(reader, f"SELECT count(*) FROM {t}") == [(3,)]

    rebuild(conn, schema)

    assert v_type(query, schema) == "bigint"
    assert as_role(reader, f"SELECT count(*) FROM {t}") == [(3,)]
    with pytest.raises(sa.exc.DBAPIError, match="row-level security"):
        as_role(reader, f"INSERT INTO {t} VALUES (100, 5000, 'big')")
    assert query(
        f"SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = '{t}'::regclass"
    ) == [(True, True)]
    assert query(
        "SELECT polname, polpermissive, obj_description(oid, 'pg_policy') FROM pg_policy "
        f"WHERE polrelid = '{t}'::regclass ORDER BY polname"
    ) == [("anyone", True, None), ("few", True, "three rows"), ("small", False, None)]


# --- Integrity -------------------------------------------------------------------------------


def test_foreign_keys_to_and_from_the_table_survive_a_rebuild(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    first_load(conn, schema, checked=True)
    s = f'"{schema}"'
    query(f"CREATE TABLE {s}.kinds (w text PRIMARY KEY)")
    query(f"INSERT INTO {s}.kinds SELECT 'w' || n FROM generate_series(1, 11) n")
    query(f"ALTER TABLE {s}.items ADD CONSTRAINT items_w_fk FOREIGN KEY (w) REFERENCES {s}.kinds")
    query(f"CREATE TABLE {s}.orders (item_id int CONSTRAINT orders_item_fk REFERENCES {s}.items)")
    query(f"COMMENT ON CONSTRAINT orders_item_fk ON {s}.orders IS 'orders need items'")
    query(f"INSERT INTO {s}.orders VALUES (1), (2)")

    rebuild(conn, schema, checked=True)  # the definition's CHECK is made once, not carried

    assert v_type(query, schema) == "bigint"
    with pytest.raises(sa.exc.IntegrityError, match="v_not_negative"):
        query(f"INSERT INTO {s}.items VALUES (12, -1, 'w1')")
    with pytest.raises(sa.exc.IntegrityError, match="orders_item_fk"):
        query(f"INSERT INTO {s}.orders VALUES (999)")
    with pytest.raises(sa.exc.IntegrityError, match="items_w_fk"):
        query(f"INSERT INTO {s}.items VALUES (12, 1, 'no such kind')")
    assert query(
        "SELECT conname, conrelid::regclass::text, confrelid::regclass::text, "
        "obj_description(oid, 'pg_constraint') FROM pg_constraint "
        f"WHERE contype = 'f' AND connamespace = '{s}'::regnamespace ORDER BY conname"
    ) == [
        ("items_w_fk", f"{schema}.items", f"{schema}.kinds", None),
        ("orders_item_fk", f"{schema}.orders", f"{schema}.items", "orders need items"),
    ]


def test_indexes_made_by_hand_survive_a_rebuild_and_a_unique_one_still_refuses_duplicates(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    first_load(conn, schema)
    t = f'"{schema}".items'
    query(f"CREATE UNIQUE INDEX items_w_key ON {t} (w)")
    query(f"CREATE INDEX items_v_part ON {t} (v) WITH (fillfactor = 50) WHERE v > 20")
    query(f"CREATE INDEX items_lower_w ON {t} (lower(w))")
    query(f"ALTER TABLE {t} ADD CONSTRAINT items_v_positive CHECK (v > 0)")
    query(f"ALTER TABLE {t} ADD CONSTRAINT items_id_v_key UNIQUE (id, v)")
    query(f"COMMENT ON INDEX \"{schema}\".items_w_key IS 'one row per w'")
    query(f"ALTER TABLE {t} CLUSTER ON items_w_key")
    indexes_sql = (
        "SELECT indexname, indexdef, obj_description(format('%I.%I', schemaname, indexname)"
        f"::regclass, 'pg_class') FROM pg_indexes WHERE schemaname = '{schema}' "
        "AND tablename = 'items' ORDER BY indexname"
    ).replace("%", "%%")
    before = query(indexes_sql)

    rebuild(conn, schema)

    assert v_type(query, schema) == "bigint"
    assert query(indexes_sql) == before
    with pytest.raises(sa.exc.IntegrityError, match="items_w_key"):
        query(f"INSERT INTO {t} VALUES (100, 1, 'w1')")
    with pytest.raises(sa.exc.IntegrityError, match="items_v_positive"):
        query(f"INSERT INTO {t} VALUES (100, -1, 'new')")
    assert query(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        f"WHERE i.indrelid = '{t}'::regclass AND i.indisclustered"
    ) == [("items_w_key",)]


def test_indexes_and_constraints_made_by_hand_are_built_before_the_swap_locks_the_table(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    first_load(conn, schema)
    t = f'"{schema}".items'
    query(f"CREATE UNIQUE INDEX items_w_key ON {t} (w)")
    query(f"CREATE INDEX items_v_idx ON {t} (v)")
    query(f"CREATE INDEX items_gone ON {t} (id, v)")
    query(f"ALTER TABLE {t} ADD CONSTRAINT items_v_positive CHECK (v > 0)")
    query(f'CREATE TABLE "{schema}".orders (item_id int REFERENCES {t})')
    seen_at_the_lock: list[Any] = []

    @contextlib.contextmanager
    def at_the_lock(inner: sa.engine.Connection, _logger: Any) -> Any:
        new_table = "items_pgbi_%%"
        seen_at_the_lock.extend(
            inner.exec_driver_sql(
                "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c "
                f"ON c.oid = i.indrelid WHERE c.relnamespace = '\"{schema}\"'::regnamespace "
                f"AND c.relname LIKE '{new_table}' UNION ALL "
                "SELECT pg_get_constraintdef(n.oid) FROM pg_constraint n JOIN pg_class c "
                f"ON c.oid = n.conrelid WHERE c.relnamespace = '\"{schema}\"'::regnamespace "
                f"AND c.relname LIKE '{new_table}' AND n.contype = 'c' UNION ALL "
                "SELECT pg_get_constraintdef(n.oid) FROM pg_constraint n JOIN pg_class c "
                f"ON c.oid = n.confrelid WHERE c.relnamespace = '\"{schema}\"'::regnamespace "
                f"AND c.relname LIKE '{new_table}' AND n.conrelid <> n.confrelid"
            ).scalars()
        )
        # Meanwhile, one index made by hand goes and another changes.
        inner.exec_driver_sql(f'DROP INDEX "{schema}".items_gone')
        inner.exec_driver_sql(f'DROP INDEX "{schema}".items_v_idx')
        inner.exec_driver_sql(f"CREATE INDEX items_v_idx ON {t} (v DESC)")
        yield

    load_with = items(schema, sa.BIGINT)
    table = load_with.tables[f"{schema}.items"]
    ingest(
        conn,
        load_with,
        lambda _: iter([(11, ((table, (11, 110, "w11")),))]),
        get_pg_force_execute=at_the_lock,
    )

    assert v_type(query, schema) == "bigint"
    built = " ".join(seen_at_the_lock)
    assert "(w)" in built and "(v)" in built and "(id, v)" in built and "(v > 0)" in built
    assert "FOREIGN KEY (item_id) REFERENCES" in built
    assert query(
        f"SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = '{schema}' "
        "ORDER BY indexname"
    ) == [
        ("items_pkey", f"CREATE UNIQUE INDEX items_pkey ON {schema}.items USING btree (id)"),
        ("items_v_idx", f"CREATE INDEX items_v_idx ON {schema}.items USING btree (v DESC)"),
        ("items_w_key", f"CREATE UNIQUE INDEX items_w_key ON {schema}.items USING btree (w)"),
    ]
    assert query(
        f"SELECT conname FROM pg_constraint WHERE conrelid = '{t}'::regclass "
        "AND contype <> 'n' ORDER BY 1"
    ) == [("items_pkey",), ("items_v_positive",)]
    assert query(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        f"WHERE conrelid = '\"{schema}\".orders'::regclass"
    ) == [("orders_item_id_fkey", f"FOREIGN KEY (item_id) REFERENCES {schema}.items(id)")]
    with pytest.raises(sa.exc.IntegrityError, match="orders_item_id_fkey"):
        query(f'INSERT INTO "{schema}".orders VALUES (999)')


# --- Objects ---------------------------------------------------------------------------------


def test_triggers_rules_and_their_states_survive_a_rebuild(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    first_load(conn, schema)
    s = f'"{schema}"'
    query(f"CREATE TABLE {s}.audit (id int, at text)")
    query(
        f"CREATE FUNCTION {s}.audit() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$BEGIN INSERT INTO {s}.audit VALUES (NEW.id, TG_NAME); RETURN NEW; END$$"
    )
    for name in ("audited", "off"):
        query(
            f"CREATE TRIGGER {name} AFTER INSERT ON {s}.items "
            f"FOR EACH ROW EXECUTE FUNCTION {s}.audit()"
        )
    query(f"ALTER TABLE {s}.items DISABLE TRIGGER off")
    query(f"COMMENT ON TRIGGER audited ON {s}.items IS 'who wrote what'")
    query(f"CREATE RULE keep_rows AS ON DELETE TO {s}.items DO INSTEAD NOTHING")

    rebuild(conn, schema)

    assert v_type(query, schema) == "bigint"
    query(f"INSERT INTO {s}.items VALUES (50, 1, 'x')")
    query(f"DELETE FROM {s}.items")
    assert query(f"SELECT * FROM {s}.audit") == [(50, "audited")]
    assert query(f"SELECT count(*) FROM {s}.items") == [(12,)]
    assert query(
        "SELECT tgname, tgenabled::text, obj_description(oid, 'pg_trigger') FROM pg_trigger "
        f"WHERE tgrelid = '{s}.items'::regclass ORDER BY tgname"
    ) == [("audited", "O", "who wrote what"), ("off", "D", None)]


def test_statistics_storage_options_and_comments_survive_a_rebuild(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    first_load(conn, schema)
    t = f'"{schema}".items'
    query(f'CREATE STATISTICS "{schema}".items_vw (dependencies) ON v, w FROM {t}')
    query(f'ALTER STATISTICS "{schema}".items_vw SET STATISTICS 500')
    query(f"ALTER TABLE {t} SET (fillfactor = 70, autovacuum_enabled = false)")
    query(f"ALTER TABLE {t} SET (toast.autovacuum_enabled = false)")
    query(f"ALTER TABLE {t} ALTER COLUMN w SET STATISTICS 900, ALTER COLUMN w SET STORAGE MAIN")
    query(f"ALTER TABLE {t} ALTER COLUMN v SET (n_distinct = 100)")
    query(f"ALTER TABLE {t} REPLICA IDENTITY FULL")
    query(f"COMMENT ON COLUMN {t}.w IS 'the w'")
    query(f"COMMENT ON COLUMN {t}.v IS 'the v'")
    facts = (
        "SELECT c.reloptions::text, t.reloptions::text, c.relreplident::text, "
        "ARRAY(SELECT format('%s %s %s %s %s', attname, attstattarget, attstorage, attoptions, "
        "  col_description(attrelid, attnum)) FROM pg_attribute "
        "  WHERE attrelid = c.oid AND attnum > 0 ORDER BY attnum)::text, "
        "ARRAY(SELECT format('%s %s %s', pg_get_statisticsobjdef(s.oid), s.stxstattarget, "
        "  s.stxkind) FROM pg_statistic_ext s WHERE s.stxrelid = c.oid)::text "
        f"FROM pg_class c JOIN pg_class t ON t.oid = c.reltoastrelid WHERE c.oid = '{t}'::regclass"
    ).replace("%", "%%")
    before = query(facts)

    rebuild(conn, schema)

    assert v_type(query, schema) == "bigint"
    assert query(facts) == before
    assert "the w" in before[0][3] and "fillfactor=70" in before[0][0]


def test_statistics_targets_of_index_columns_survive_a_rebuild(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    first_load(conn, schema)
    s = f'"{schema}"'
    query(f"CREATE INDEX by_lower_w ON {s}.items (lower(w), id)")
    query(f"ALTER INDEX {s}.by_lower_w ALTER COLUMN 1 SET STATISTICS 700")
    query(f"CREATE MATERIALIZED VIEW {s}.shouting AS SELECT id, upper(w) AS w FROM {s}.items")
    query(f"CREATE INDEX by_length ON {s}.shouting (length(w))")
    query(f"ALTER INDEX {s}.by_length ALTER COLUMN 1 SET STATISTICS 300")
    targets = (
        "SELECT c.relname, a.attnum, a.attstattarget FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid "
        f"WHERE c.relnamespace = '{s}'::regnamespace AND c.relkind = 'i' "
        "AND coalesce(a.attstattarget::int, -1) >= 0 ORDER BY 1, 2"
    )
    assert query(targets) == [("by_length", 1, 300), ("by_lower_w", 1, 700)]

    rebuild(conn, schema)

    assert v_type(query, schema) == "bigint"
    assert query(targets) == [("by_length", 1, 300), ("by_lower_w", 1, 700)]


def test_an_index_made_by_hand_that_the_new_type_refuses_is_named_and_nothing_changes(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    first_load(conn, schema)
    s = f'"{schema}"'
    query(
        f"CREATE FUNCTION {s}.halve(integer) RETURNS integer IMMUTABLE LANGUAGE sql "
        "AS 'SELECT $1 / 2'"
    )
    query(f"CREATE INDEX by_half ON {s}.items ({s}.halve(v))")
    with pytest.raises(SchemaError) as raised:
        rebuild(conn, schema)
    assert "by_half" in str(raised.value) and "halve" in str(raised.value)
    assert "Drop it" in str(raised.value)
    assert v_type(query, schema) == "integer"
    assert query(f"SELECT count(*) FROM {s}.items") == [(10,)]


def test_a_sequence_owned_by_a_column_survives_a_rebuild_and_feeds_its_default(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    first_load(conn, schema)
    s = f'"{schema}"'
    query(f"CREATE SEQUENCE {s}.items_id_seq START 1000 OWNED BY {s}.items.id")
    query(f"COMMENT ON SEQUENCE {s}.items_id_seq IS 'ids'")

    rebuild(conn, schema, id_default=sa.text(f"nextval('{s}.items_id_seq'::regclass)"))

    assert v_type(query, schema) == "bigint"
    query(f"INSERT INTO {s}.items (v) VALUES (1)")
    assert query(f"SELECT id FROM {s}.items WHERE v = 1") == [(1000,)]
    assert query(f"SELECT pg_get_serial_sequence('{s}.items', 'id')") == [
        (f"{schema}.items_id_seq",)
    ]
    assert query(f"SELECT obj_description('{s}.items_id_seq'::regclass)") == [("ids",)]


# --- Privileges ------------------------------------------------------------------------------


ACL_SQL = """
SELECT coalesce(NULLIF(a.attname, ''), '-'), pg_get_userbyid(x.grantor),
  CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee) END,
  x.privilege_type, x.is_grantable
FROM (SELECT c.oid, ''::name AS attname, coalesce(c.relacl, acldefault('r', c.relowner)) AS acl
      FROM pg_class c WHERE c.oid = '{relation}'::regclass
      UNION ALL
      SELECT c.oid, a.attname, a.attacl FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
      WHERE c.oid = '{relation}'::regclass AND a.attacl IS NOT NULL) a
CROSS JOIN LATERAL aclexplode(a.acl) x
ORDER BY 1, 2, 3, 4
"""


def test_the_owner_and_all_privileges_with_their_grant_options_survive_a_rebuild(
    conn: sa.engine.Connection, schema: str, query: Any, roles: Any, as_role: Any
) -> None:
    first_load(conn, schema)
    owner, delegate, reader, column_reader = roles(), roles(), roles(), roles()
    t = f'"{schema}".items'
    query(f'GRANT CREATE ON SCHEMA "{schema}" TO "{owner}"')
    query(f'ALTER TABLE {t} OWNER TO "{owner}"')
    query(f'REVOKE TRUNCATE ON {t} FROM "{owner}"')
    query(f'GRANT SELECT, UPDATE ON {t} TO "{delegate}" WITH GRANT OPTION')
    as_role(delegate, f'GRANT SELECT ON {t} TO "{reader}"')
    query(f'GRANT SELECT (id, w), UPDATE (w) ON {t} TO "{column_reader}"')
    query(f'GRANT SELECT (v) ON {t} TO "{column_reader}" WITH GRANT OPTION')
    query(f"GRANT SELECT ON {t} TO PUBLIC")
    acl_sql = ACL_SQL.format(relation=t)
    before = query(acl_sql)

    rebuild(conn, schema)

    assert v_type(query, schema) == "bigint"
    assert query(f"SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = '{t}'::regclass") == [
        (owner,)
    ]
    assert query(acl_sql) == before
    assert as_role(owner, f"SELECT count(*) FROM {t}") == [(11,)]
    as_role(delegate, f'GRANT SELECT ON {t} TO "{column_reader}"')  # still holds the option
    assert as_role(column_reader, f"SELECT v FROM {t} WHERE id = 1") == [(10,)]


def test_default_privileges_do_not_grant_more_on_the_rebuilt_table_than_the_live_one_had(
    conn: sa.engine.Connection, schema: str, query: Any, roles: Any
) -> None:
    first_load(conn, schema)
    snoop = roles()
    t = f'"{schema}".items'
    default = f'ALTER DEFAULT PRIVILEGES IN SCHEMA "{schema}"'
    query(f'{default} GRANT SELECT ON TABLES TO "{snoop}"')
    try:
        rebuild(conn, schema)
    finally:
        query(f'{default} REVOKE SELECT ON TABLES FROM "{snoop}"')
    assert v_type(query, schema) == "bigint"
    assert query(f"SELECT has_table_privilege('{snoop}', '{t}', 'SELECT')") == [(False,)]


# --- Views -----------------------------------------------------------------------------------


def test_views_keep_their_options_comments_owners_and_grants_across_a_rebuild(
    conn: sa.engine.Connection, schema: str, query: Any, roles: Any, as_role: Any
) -> None:
    first_load(conn, schema)
    owner, reader = roles(), roles()
    s = f'"{schema}"'
    query(
        f"CREATE VIEW {s}.small WITH (security_barrier = true) AS "
        f"SELECT id, v FROM {s}.items WHERE v < 50 WITH CASCADED CHECK OPTION"
    )
    query(f"CREATE VIEW {s}.smaller AS SELECT id FROM {s}.small WHERE id > 1")
    query(f"COMMENT ON VIEW {s}.small IS 'small ones'")
    query(f"COMMENT ON COLUMN {s}.small.v IS 'the v'")
    query(f"ALTER VIEW {s}.small ALTER COLUMN v SET DEFAULT 7")
    query(f'GRANT CREATE ON SCHEMA {s} TO "{owner}"')
    query(f'GRANT SELECT ON {s}.items, {s}.small TO "{owner}"')
    query(f'ALTER VIEW {s}.smaller OWNER TO "{owner}"')
    query(f'GRANT SELECT ON {s}.smaller TO "{reader}" WITH GRANT OPTION')
    facts = (
        "SELECT c.relname, c.reloptions::text, pg_get_userbyid(c.relowner), "
        "obj_description(c.oid, 'pg_class'), col_description(c.oid, 2), c.relacl::text, "
        "pg_get_viewdef(c.oid) FROM pg_class c "
        f"WHERE c.relnamespace = '{s}'::regnamespace AND c.relkind = 'v' ORDER BY 1"
    )
    before = query(facts)

    rebuild(conn, schema)

    assert v_type(query, schema) == "bigint"
    assert query(facts) == before
    with pytest.raises(sa.exc.DBAPIError, match="check option"):
        query(f"INSERT INTO {s}.small VALUES (100, 500)")
    query(f"INSERT INTO {s}.small (id) VALUES (100)")  # the column default
    assert as_role(reader, f"SELECT count(*) FROM {s}.smaller") == [(4,)]


def test_triggers_and_rules_of_views_survive_a_rebuild(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    first_load(conn, schema)
    s = f'"{schema}"'
    query(f"CREATE VIEW {s}.joined AS SELECT i.id, i.w, i.v FROM {s}.items i")
    query(f"CREATE TABLE {s}.wishes (id int, w text)")
    query(
        f"CREATE FUNCTION {s}.wish() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$BEGIN INSERT INTO {s}.wishes VALUES (NEW.id, NEW.w); RETURN NEW; END$$"
    )
    query(
        f"CREATE TRIGGER wished INSTEAD OF INSERT ON {s}.joined "
        f"FOR EACH ROW EXECUTE FUNCTION {s}.wish()"
    )
    query(f"CREATE RULE no_deletes AS ON DELETE TO {s}.joined DO INSTEAD NOTHING")

    rebuild(conn, schema)

    assert v_type(query, schema) == "bigint"
    query(f"INSERT INTO {s}.joined (id, w) VALUES (70, 'wish')")
    query(f"DELETE FROM {s}.joined")
    assert query(f"SELECT * FROM {s}.wishes") == [(70, "wish")]
    assert query(f"SELECT count(*) FROM {s}.items") == [(11,)]


def test_materialized_views_keep_their_indexes_options_and_contents_across_a_rebuild(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    first_load(conn, schema)
    s = f'"{schema}"'
    query(f"CREATE VIEW {s}.plain AS SELECT id, v FROM {s}.items")
    query(
        f"CREATE MATERIALIZED VIEW {s}.totals WITH (fillfactor = 60) AS "
        f"SELECT id % 2 AS odd, sum(v) AS total FROM {s}.plain GROUP BY 1".replace("%", "%%")
    )
    query(f"CREATE UNIQUE INDEX totals_odd ON {s}.totals (odd)")
    query(f"COMMENT ON INDEX {s}.totals_odd IS 'for concurrent refreshes'")
    query(f"COMMENT ON MATERIALIZED VIEW {s}.totals IS 'sums'")
    query(f"CREATE MATERIALIZED VIEW {s}.later AS SELECT id FROM {s}.items WITH NO DATA")
    facts = (
        "SELECT c.relname, c.reloptions::text, c.relispopulated, "
        "obj_description(c.oid, 'pg_class'), ARRAY(SELECT pg_get_indexdef(i.indexrelid) "
        "  || ' ' || obj_description(i.indexrelid, 'pg_class') FROM pg_index i "
        "  WHERE i.indrelid = c.oid)::text "
        f"FROM pg_class c WHERE c.relnamespace = '{s}'::regnamespace AND c.relkind = 'm' ORDER BY 1"
    )
    before = query(facts)

    rebuild(conn, schema)

    assert v_type(query, schema) == "bigint"
    assert query(facts) == before
    assert query(f"SELECT odd, total FROM {s}.totals ORDER BY odd") == [(0, 300), (1, 360)]
    query(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {s}.totals")


# --- Refusals --------------------------------------------------------------------------------


REFUSALS = [
    ("a child table", ["CREATE TABLE {s}.child (extra text) INHERITS ({s}.items)"], "NO INHERIT"),
    (
        "a parent table",
        ["CREATE TABLE {s}.parent (id int)", "ALTER TABLE {s}.items INHERIT {s}.parent"],
        "inherits from",
    ),
    (
        "a function with a SQL-standard body",
        [
            "CREATE FUNCTION {s}.how_many() RETURNS bigint BEGIN ATOMIC "
            "SELECT count(*) FROM {s}.items; END"
        ],
        "function {schema}.how_many()",
    ),
    (
        "a column of the table's row type",
        ["CREATE TABLE {s}.copies (item {s}.items)"],
        "column item of table {schema}.copies",
    ),
    ("a publication", ["CREATE PUBLICATION pub_{schema} FOR TABLE {s}.items"], "publication"),
    (
        "a rule of another table",
        [
            "CREATE TABLE {s}.inbox (id int)",
            "CREATE RULE forward AS ON INSERT TO {s}.inbox "
            "DO ALSO INSERT INTO {s}.items (id) VALUES (NEW.id)",
        ],
        "rule forward on table {schema}.inbox",
    ),
    ("an unlogged table", ["ALTER TABLE {s}.items SET UNLOGGED"], "UNLOGGED"),
    (
        "an index on a removed column",
        ["CREATE INDEX items_w ON {s}.items (w)"],
        "index {schema}.items_w uses column 'w'",
    ),
    (
        "a view of a removed column",
        ["CREATE VIEW {s}.ws AS SELECT w FROM {s}.items"],
        "view {schema}.ws uses column 'w'",
    ),
    (
        "a sequence owned by a removed column",
        ["CREATE SEQUENCE {s}.w_seq OWNED BY {s}.items.w"],
        "sequence {schema}.w_seq uses column 'w'",
    ),
    (
        "a foreign key to a primary key that changes",
        ["CREATE TABLE {s}.refs (id int CONSTRAINT refs_id_fk REFERENCES {s}.items)"],
        "foreign key refs_id_fk of {schema}.refs references ['id']",
    ),
]


@pytest.mark.parametrize(
    ("setup", "named"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_what_a_rebuild_cannot_carry_is_refused_before_anything_changes(
    conn: sa.engine.Connection, schema: str, query: Any, setup: list[str], named: str
) -> None:
    first_load(conn, schema)
    s = f'"{schema}"'
    for statement in setup:
        query(statement.format(s=s, schema=schema))
    table_sql = (
        f"SELECT c.oid, c.xmin::text, (SELECT count(*) FROM {s}.items) FROM pg_class c "
        f"WHERE c.oid = '{s}.items'::regclass"
    )
    objects_sql = f"SELECT count(*) FROM pg_class WHERE relnamespace = '{s}'::regnamespace"
    before = query(table_sql), query(objects_sql)
    definition = {"with_w": "column 'w'" not in named, "v_in_key": "refs" in named}
    try:
        with pytest.raises(SchemaError) as planned:  # migration_plan says so beforehand
            migration_plan(conn, items(schema, sa.BIGINT, **definition))
        with pytest.raises(SchemaError) as raised:
            rebuild(conn, schema, **definition)
    finally:
        query(f"DROP PUBLICATION IF EXISTS pub_{schema}")
    message = str(raised.value)
    assert f"{schema}.items cannot be rebuilt" in message
    assert named.format(schema=schema) in message
    assert str(planned.value) == message
    assert (query(table_sql), query(objects_sql)) == before
    assert v_type(query, schema) == "integer"


def test_a_view_owned_by_a_role_the_ingesting_role_cannot_act_as_is_refused(
    conn: sa.engine.Connection,
    schema: str,
    query: Any,
    roles: Any,
    driver_engine: sa.engine.Engine,
) -> None:
    ingester, stranger = roles(), roles()
    s = f'"{schema}"'
    query(f'GRANT CREATE ON SCHEMA {s} TO "{ingester}", "{stranger}"')
    with driver_engine.connect() as mine:
        try:
            mine.exec_driver_sql(f'SET ROLE "{ingester}"')
            mine.commit()
            first_load(mine, schema)
            query(f'GRANT SELECT ON {s}.items TO "{stranger}"')
            query(f"CREATE VIEW {s}.theirs AS SELECT id FROM {s}.items")
            query(f'ALTER VIEW {s}.theirs OWNER TO "{stranger}"')
            with pytest.raises(SchemaError, match=f"view {schema}.theirs.*{stranger}"):
                rebuild(mine, schema)
        finally:
            mine.invalidate()  # its role is not the pool's
    assert v_type(query, schema) == "integer"


def test_a_foreign_key_to_a_table_the_ingesting_role_may_not_reference_is_refused(
    conn: sa.engine.Connection,
    schema: str,
    query: Any,
    roles: Any,
    driver_engine: sa.engine.Engine,
) -> None:
    ingester = roles()
    s = f'"{schema}"'
    query(f'GRANT CREATE ON SCHEMA {s} TO "{ingester}"')
    query(f"CREATE TABLE {s}.kinds (w text PRIMARY KEY)")
    query(f"INSERT INTO {s}.kinds SELECT 'w' || n FROM generate_series(1, 11) n")
    with driver_engine.connect() as mine:
        try:
            mine.exec_driver_sql(f'SET ROLE "{ingester}"')
            mine.commit()
            first_load(mine, schema)
            query(
                f"ALTER TABLE {s}.items ADD CONSTRAINT items_w_fk "
                f"FOREIGN KEY (w) REFERENCES {s}.kinds"
            )
            with pytest.raises(
                SchemaError, match=f"items_w_fk references {schema}.kinds.*REFERENCES"
            ):
                rebuild(mine, schema)
        finally:
            mine.invalidate()  # its role is not the pool's
    assert v_type(query, schema) == "integer"


# --- Locks -----------------------------------------------------------------------------------


SWAP_READERS = 6
SLOW_READ_SECONDS = 3


def test_readers_of_views_never_fail_during_a_swap(
    conn: sa.engine.Connection, schema: str, query: Any, driver_engine: sa.engine.Engine
) -> None:
    first_load(conn, schema)
    s = f'"{schema}"'
    views = ["a", "b", "c"]
    query(f"CREATE VIEW {s}.a AS SELECT id, v FROM {s}.items")
    query(f"CREATE VIEW {s}.b AS SELECT id FROM {s}.items WHERE v > 0")
    query(f"CREATE VIEW {s}.c AS SELECT id FROM {s}.a")
    stop = threading.Event()
    failures: list[BaseException] = []
    reads = [0]

    def read_views(number: int) -> None:
        with driver_engine.connect() as reader:
            while not stop.is_set():
                try:
                    reader.exec_driver_sql(
                        f"SELECT count(*) FROM {s}.{views[number % len(views)]}"
                    ).all()
                    reader.commit()
                    reads[0] += 1
                except sa.exc.DBAPIError as error:
                    failures.append(error)
                    reader.rollback()

    def read_slowly() -> None:
        with driver_engine.connect() as reader:
            reader.exec_driver_sql(
                f"SELECT pg_sleep({SLOW_READ_SECONDS}), count(*) FROM {s}.a"
            ).all()
            reader.commit()

    metadata = items(schema, sa.BIGINT)
    table = metadata.tables[f"{schema}.items"]

    def batches(_: Any) -> Any:
        def rows() -> Any:
            yield table, (11, 110, "w11")
            time.sleep(0.5)  # the slow reader holds view a when the swap starts

        yield 11, rows()

    with concurrent.futures.ThreadPoolExecutor(SWAP_READERS + 1) as pool:
        readers = [pool.submit(read_views, n) for n in range(SWAP_READERS)]
        time.sleep(0.3)
        slow = pool.submit(read_slowly)
        try:
            ingest(conn, metadata, batches)
            time.sleep(0.3)
        finally:
            stop.set()
            slow.result()
            for reader in readers:
                reader.result()

    assert failures == []
    assert reads[0] > 0
    assert v_type(query, schema) == "bigint"
    assert query(f"SELECT count(*) FROM {s}.c") == [(11,)]


def test_a_reader_that_holds_the_table_and_then_reads_a_view_is_let_through_by_the_swap(
    conn: sa.engine.Connection, schema: str, query: Any, driver_engine: sa.engine.Engine
) -> None:
    """The one lock order that views-first cannot avoid: the swap, holding the view, waits
    for the table, which the reader holds while it asks for the view. The swap gives way
    (its waits end before deadlock_timeout) and queues again; neither side fails."""
    first_load(conn, schema)
    s = f'"{schema}"'
    query(f"CREATE VIEW {s}.a AS SELECT id, v FROM {s}.items")
    holding = threading.Event()

    def swap_waits_for_the_table() -> bool:
        return bool(
            query(
                "SELECT count(*) FROM pg_locks WHERE NOT granted "
                f"AND relation = '{s}.items'::regclass"
            )[0][0]
        )

    def read_the_table_then_the_view() -> list[Any]:
        with driver_engine.connect() as reader:
            reader.exec_driver_sql(f"SELECT count(*) FROM {s}.items").all()
            holding.set()
            deadline = time.monotonic() + 30
            while not swap_waits_for_the_table() and time.monotonic() < deadline:
                time.sleep(0.05)
            rows = reader.exec_driver_sql(f"SELECT count(*) FROM {s}.a").all()
            reader.commit()
            return [tuple(row) for row in rows]

    metadata = items(schema, sa.BIGINT)
    table = metadata.tables[f"{schema}.items"]

    def batches(_: Any) -> Any:
        def rows() -> Any:
            yield table, (11, 110, "w11")
            assert holding.wait(10)

        yield 11, rows()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        read = pool.submit(read_the_table_then_the_view)
        ingest(conn, metadata, batches)
        assert read.result() == [(10,)]
    assert v_type(query, schema) == "bigint"
