"""Indexes and UNIQUE constraints follow the definition: created, dropped, with their options."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from pg_bulk_ingest import Upsert, ingest

from .test_migrations import identity, load, table_of

# An index name past PostgreSQL's 63 bytes; two that start with it differ only past the cut.
LONG = "items_an_index_name_long_enough_to_be_cut_by_postgresql_at_63_bytes"


def indexes(query: Any, schema: str) -> dict[str, tuple[Any, ...]]:
    """Each index of the table but the primary key: name -> (method, definition, oid)."""
    found = query(
        "SELECT c.relname, am.amname, "
        "  regexp_replace(pg_get_indexdef(i.indexrelid), '^.* USING ', 'USING '), c.oid "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_am am ON am.oid = c.relam "
        f"WHERE i.indrelid = '\"{schema}\".items'::regclass AND NOT i.indisprimary"
    )
    return {name: (method, definition, oid) for name, method, definition, oid in found}


def definitions(query: Any, schema: str) -> dict[str, str]:
    return {name: definition for name, (_, definition, _) in indexes(query, schema).items()}


def unique_constraints(query: Any, schema: str) -> list[tuple[str, str]]:
    return query(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        f"WHERE conrelid = '\"{schema}\".items'::regclass AND contype = 'u' ORDER BY 1"
    )


def ingest_rows(
    conn: sa.engine.Connection, metadata: sa.MetaData, rows: list[tuple[Any, ...]], **options: Any
) -> None:
    table = next(iter(metadata.tables.values()))
    ingest(conn, metadata, lambda _: iter([(1, ((table, row) for row in rows))]), **options)


# --- UNIQUE constraints ------------------------------------------------------------------------


def test_a_unique_column_of_a_new_table_becomes_a_unique_constraint(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata, _ = table_of(
        schema,
        sa.Column("id", sa.INTEGER, primary_key=True),
        sa.Column("email", sa.TEXT, unique=True),
    )
    load(conn, metadata, [(1, "a@example.com")])
    assert unique_constraints(query, schema) == [("items_email_key", "UNIQUE (email)")]
    with pytest.raises(Exception, match="violates unique constraint"):
        load(conn, metadata, [(2, "a@example.com")])
    assert query(f'SELECT id, email FROM "{schema}".items') == [(1, "a@example.com")]


@pytest.mark.parametrize("upsert", [Upsert.IF_PRIMARY_KEY, Upsert.OFF])
def test_unique_columns_added_by_a_migration_become_unique_constraints_in_place(
    conn: sa.engine.Connection, schema: str, query: Any, upsert: Upsert
) -> None:
    old, _ = table_of(
        schema, sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.INTEGER)
    )
    load(conn, old, [(1, 10), (2, 20)])
    oid = identity(query, schema)[0][0]
    new, _ = table_of(
        schema,
        sa.Column("id", sa.INTEGER, primary_key=True),
        sa.Column("v", sa.INTEGER, unique=True),
        sa.Column("code", sa.TEXT, unique=True),
    )
    ingest_rows(conn, new, [(3, 30, "c")], upsert=upsert)
    assert identity(query, schema)[0][0] == oid
    assert unique_constraints(query, schema) == [
        ("items_code_key", "UNIQUE (code)"),
        ("items_v_key", "UNIQUE (v)"),
    ]
    for duplicate in [(4, 10, "d"), (5, 50, "c")]:
        with pytest.raises(Exception, match="violates unique constraint"):
            ingest_rows(conn, new, [duplicate], upsert=upsert)
    assert query(f'SELECT id, v, code FROM "{schema}".items ORDER BY id') == [
        (1, 10, None),
        (2, 20, None),
        (3, 30, "c"),
    ]


@pytest.mark.parametrize("added_later", [False, True], ids=["with the table", "added later"])
def test_a_unique_constraint_no_longer_defined_is_dropped(
    conn: sa.engine.Connection, schema: str, query: Any, added_later: bool
) -> None:
    def columns(unique: bool) -> list[sa.Column[Any]]:
        return [
            sa.Column("id", sa.INTEGER, primary_key=True),
            sa.Column("v", sa.INTEGER, unique=unique),
        ]

    if added_later:
        load(conn, table_of(schema, *columns(False))[0], [(1, 10)])
    load(conn, table_of(schema, *columns(True))[0], [(1, 10)])
    assert unique_constraints(query, schema) == [("items_v_key", "UNIQUE (v)")]
    load(conn, table_of(schema, *columns(False))[0], [(2, 10)])
    assert unique_constraints(query, schema) == []
    assert query(f'SELECT id, v FROM "{schema}".items ORDER BY id') == [(1, 10), (2, 10)]


# --- indexes -------------------------------------------------------------------------------


def test_an_index_added_is_created_and_one_removed_is_dropped(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    def columns() -> list[sa.Column[Any]]:
        return [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.INTEGER)]

    old, _ = table_of(schema, *columns(), sa.Index("items_v_idx", "v"))
    load(conn, old, [(1, 10)])
    oid = identity(query, schema)[0][0]
    new, _ = table_of(schema, *columns(), sa.Index("items_id_v_idx", "id", "v"))
    load(conn, new, [(2, 20)])
    assert identity(query, schema)[0][0] == oid
    assert definitions(query, schema) == {"items_id_v_idx": "USING btree (id, v)"}


def test_indexes_made_by_hand_are_left_alone_unless_defined_and_then_removed(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    def columns() -> list[sa.Column[Any]]:
        return [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.INTEGER)]

    load(conn, table_of(schema, *columns())[0], [(1, 10)])
    query(f'CREATE INDEX dba_v ON "{schema}".items (v)')
    query(f'CREATE INDEX dba_id_v ON "{schema}".items (id, v)')
    query(f'ALTER TABLE "{schema}".items ADD CONSTRAINT dba_unique UNIQUE (id, v)')
    defined, _ = table_of(schema, *columns(), sa.Index("items_v_idx", "v"))
    load(conn, defined, [(2, 20)])  # dba_v is as defined: it is kept, not made twice
    assert sorted(definitions(query, schema)) == ["dba_id_v", "dba_unique", "dba_v"]
    load(conn, table_of(schema, *columns())[0], [(3, 30)])
    assert sorted(definitions(query, schema)) == ["dba_id_v", "dba_unique"]


@pytest.mark.parametrize("existing", [False, True], ids=["new table", "added to a table"])
def test_gin_indexes_on_jsonb_and_array_columns_are_gin(
    conn: sa.engine.Connection, schema: str, query: Any, existing: bool
) -> None:

    def columns() -> list[sa.Column[Any]]:
        return [
            sa.Column("id", sa.INTEGER, primary_key=True),
            sa.Column("doc", pg.JSONB),
            sa.Column("tags", pg.ARRAY(sa.TEXT)),
        ]

    if existing:
        plain, _ = table_of(schema, *columns(), sa.Index("items_doc", "doc"))
        load(conn, plain, [(1, {"a": 1}, ["x"])])
    metadata, _ = table_of(
        schema,
        *columns(),
        sa.Index("items_doc", "doc", postgresql_using="gin"),
        sa.Index("items_tags", "tags", postgresql_using="gin"),
    )
    load(conn, metadata, [(2, {"a": 2}, ["y"])])
    assert {name: method for name, (method, _, _) in indexes(query, schema).items()} == {
        "items_doc": "gin",
        "items_tags": "gin",
    }
    assert query(f"""SELECT id FROM "{schema}".items WHERE doc @> '{{"a": 2}}'""") == [(2,)]


def test_dialect_options_are_honoured_and_a_second_call_changes_no_index(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    def definition(where: str) -> sa.MetaData:
        metadata, _ = table_of(
            schema,
            sa.Column("id", sa.INTEGER, primary_key=True),
            sa.Column("v", sa.VARCHAR(10)),
            sa.Column("w", sa.INTEGER),
            sa.Column("doc", pg.JSONB),
            sa.Index(
                "items_partial",
                "v",
                postgresql_where=sa.text(where),
                postgresql_include=["w"],
                postgresql_with={"fillfactor": 70},
            ),
            sa.Index(
                "items_path",
                "doc",
                postgresql_using="gin",
                postgresql_ops={"doc": "jsonb_path_ops"},
            ),
            sa.Index(
                "items_default_ops",
                "doc",
                postgresql_using="GIN",
                postgresql_ops={"doc": "jsonb_ops"},
            ),
        )
        return metadata

    load(conn, definition("v IS NOT NULL"), [(1, "a", 1, {})])
    created = indexes(query, schema)
    assert definitions(query, schema) == {
        "items_partial": (
            "USING btree (v) INCLUDE (w) WITH (fillfactor='70') WHERE (v IS NOT NULL)"
        ),
        "items_path": "USING gin (doc jsonb_path_ops)",
        "items_default_ops": "USING gin (doc)",
    }
    load(conn, definition("v IS NOT NULL"), [(2, "b", 2, {})])
    assert indexes(query, schema) == created
    load(conn, definition("v <> 'x'"), [(3, "c", 3, {})])
    assert definitions(query, schema)["items_partial"].endswith("WHERE ((v)::text <> 'x'::text)")
    assert indexes(query, schema)["items_path"] == created["items_path"]


def test_similar_indexes_never_collide_on_names_even_when_a_new_table_is_swapped_in(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    def definition(c_type: Any) -> sa.MetaData:
        metadata, _ = table_of(
            schema,
            sa.Column("a", sa.INTEGER, primary_key=True),
            sa.Column("b", sa.INTEGER, unique=True),
            sa.Column("c", c_type),
            # SQLAlchemy's default naming convention names these three after their first column
            sa.Index(None, "a", "b"),
            sa.Index(None, "a", "c"),
            sa.Index(None, "b", "a"),
            sa.Index(None, "b", "a", unique=True),
            sa.Index(f"{LONG}_1", "c"),
            sa.Index(f"{LONG}_2", "c", "b"),
        )
        return metadata

    load(conn, definition(sa.INTEGER), [(1, 2, 3)])
    created = definitions(query, schema)
    assert sorted(created.values()) == [
        "USING btree (a, b)",
        "USING btree (a, c)",
        "USING btree (b)",
        "USING btree (b, a)",
        "USING btree (b, a)",
        "USING btree (c)",
        "USING btree (c, b)",
    ]
    oid = identity(query, schema)[0][0]
    load(conn, definition(sa.BIGINT), [(4, 5, 6)])  # a new table, built beside the live one
    assert identity(query, schema)[0][0] != oid
    assert definitions(query, schema) == created
    assert unique_constraints(query, schema) == [("items_b_key", "UNIQUE (b)")]
    swapped = indexes(query, schema)
    load(conn, definition(sa.BIGINT), [(7, 8, 9)])
    assert indexes(query, schema) == swapped
    with pytest.raises(Exception, match="violates unique constraint"):
        load(conn, definition(sa.BIGINT), [(10, 8, 0)])


# --- Names held by other relations of the schema ------------------------------------------------


@pytest.mark.parametrize("existing", ["new table", "in place", "new table swapped in"])
def test_an_index_named_like_another_tables_index_gets_a_name_of_its_own(
    conn: sa.engine.Connection, schema: str, query: Any, existing: str
) -> None:
    """The other table's unique index is never touched, and duplicates there stay refused."""
    query(
        f'CREATE TABLE "{schema}".other (v INTEGER); '
        f'CREATE UNIQUE INDEX items_v_idx ON "{schema}".other (v); '
        f'INSERT INTO "{schema}".other VALUES (1)'
    )
    if existing != "new table":
        load(
            conn,
            table_of(
                schema, sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", sa.INTEGER)
            )[0],
            [(1, 10)],
        )
    v_type = sa.BIGINT if existing == "new table swapped in" else sa.INTEGER
    metadata, _ = table_of(
        schema,
        sa.Column("id", sa.INTEGER, primary_key=True),
        sa.Column("v", v_type),
        sa.Index("items_v_idx", "v"),
    )
    load(conn, metadata, [(2, 20)])
    ((name, (_, definition, oid)),) = indexes(query, schema).items()
    assert name.startswith("items_v_idx_") and definition == "USING btree (v)"
    assert query(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index "
        f"WHERE indrelid = '\"{schema}\".other'::regclass"
    ) == [(f"CREATE UNIQUE INDEX items_v_idx ON {schema}.other USING btree (v)",)]
    with pytest.raises(sa.exc.IntegrityError):
        query(f'INSERT INTO "{schema}".other VALUES (1)')
    load(conn, metadata, [(3, 30)])  # the index is found again, as it is, whatever its name
    assert indexes(query, schema)[name][2] == oid
