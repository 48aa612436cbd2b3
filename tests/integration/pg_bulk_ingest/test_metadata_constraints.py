"""The rest of the metadata: server defaults, identities, CHECK and FOREIGN KEY constraints and
comments are created with a table, and changed in place on a table with rows."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from pg_bulk_ingest import Delete, SchemaError, ingest, migration_plan
from pg_bulk_ingest._plan import PlannedStep

CHECK_VIOLATION = "23514"
FOREIGN_KEY_VIOLATION = "23503"


def table_of(schema: str, *columns: Any, name: str = "items", **options: Any) -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table(name, metadata, *columns, schema=schema, **options)
    return metadata


def load(conn: sa.engine.Connection, metadata: sa.MetaData, rows: list[tuple[Any, ...]]) -> None:
    """One batch of `rows` for the first table of `metadata`."""
    table = next(iter(metadata.tables.values()))

    def batches(_: Any) -> Any:
        yield len(rows), ((table, row) for row in rows)

    ingest(conn, metadata, batches)


def oid(query: Any, schema: str, name: str = "items") -> Any:
    return query(f'SELECT \'"{schema}"."{name}"\'::regclass::oid')[0][0]


def sqlstate(error: BaseException) -> str:
    return str(getattr(error, "sqlstate", None) or getattr(error, "pgcode", None))


def constraints(query: Any, schema: str, name: str = "items") -> list[tuple[Any, ...]]:
    """(name, definition, validated) of the table's CHECK and FOREIGN KEY constraints."""
    return query(
        "SELECT conname::text, pg_get_constraintdef(oid), convalidated FROM pg_constraint "
        f"WHERE conrelid = '\"{schema}\".\"{name}\"'::regclass AND contype IN ('c', 'f') "
        "ORDER BY conname"
    )


def default_of(query: Any, schema: str, column: str) -> Any:
    found = query(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a LEFT JOIN pg_attrdef d "
        "ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        f"WHERE a.attrelid = '\"{schema}\".items'::regclass AND a.attname = '{column}'"
    )
    return found[0][0]


def id_and_v(type_: Any) -> list[sa.Column[Any]]:
    return [sa.Column("id", sa.INTEGER, primary_key=True), sa.Column("v", type_)]


def nothing_to_do(conn: sa.engine.Connection, metadata: sa.MetaData) -> bool:
    return all(step.action == "nothing to do" for step in migration_plan(conn, metadata))


def test_server_defaults_are_created_with_the_table_and_a_second_call_changes_nothing(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata = table_of(
        schema,
        sa.Column("id", sa.INTEGER, primary_key=True),
        sa.Column("v", sa.TEXT, server_default="it's"),
        sa.Column("n", sa.INTEGER, server_default=sa.text("0")),
        sa.Column("at", sa.TIMESTAMP(timezone=True), server_default=sa.func.now()),
    )
    load(conn, metadata, [(1, "a", 1, None)])
    query(f'INSERT INTO "{schema}".items (id) VALUES (2)')
    assert query(f'SELECT v, n, at IS NOT NULL FROM "{schema}".items WHERE id = 2') == [
        ("it's", 0, True)
    ]
    assert nothing_to_do(conn, metadata)


def test_a_not_null_column_with_a_server_default_is_added_in_place_to_a_table_with_rows(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    load(conn, table_of(schema, *id_and_v(sa.TEXT)), [(1, "a")])
    before = oid(query, schema)
    wider = table_of(
        schema,
        *id_and_v(sa.TEXT),
        sa.Column("w", sa.INTEGER, nullable=False, server_default="7"),
    )
    load(conn, wider, [(2, "b", 8)])
    assert oid(query, schema) == before
    assert query(f'SELECT id, v, w FROM "{schema}".items ORDER BY id') == [(1, "a", 7), (2, "b", 8)]
    assert query(
        "SELECT attnotnull FROM pg_attribute "
        f"WHERE attrelid = '\"{schema}\".items'::regclass AND attname = 'w'"
    ) == [(True,)]
    assert nothing_to_do(conn, wider)


def test_a_server_default_is_changed_and_dropped_in_place(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    def metadata(**default: Any) -> sa.MetaData:
        return table_of(
            schema,
            sa.Column("id", sa.INTEGER, primary_key=True),
            sa.Column("v", sa.TEXT, **default),
        )

    load(conn, metadata(server_default="a"), [(1, "x")])
    before = oid(query, schema)
    assert default_of(query, schema, "v") == "'a'::text"
    load(conn, metadata(server_default="b"), [(2, "y")])
    assert default_of(query, schema, "v") == "'b'::text"
    assert nothing_to_do(conn, metadata(server_default="b"))
    load(conn, metadata(), [(3, "z")])
    assert default_of(query, schema, "v") is None
    load(conn, metadata(server_default=sa.text("upper('c')")), [(4, "w")])
    assert default_of(query, schema, "v") == "upper('c'::text)"
    assert nothing_to_do(conn, metadata(server_default=sa.text("upper('c')")))
    assert oid(query, schema) == before
    assert query(f'SELECT count(*) FROM "{schema}".items') == [(4,)]


def test_rows_leave_out_an_always_identity_column_and_give_a_by_default_one(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    always = table_of(
        schema,
        sa.Column("id", sa.BIGINT, sa.Identity(always=True, start=10), primary_key=True),
        sa.Column("v", sa.TEXT),
    )
    load(conn, always, [("a",), ("b",)])
    load(conn, always, [("c",)])
    assert query(f'SELECT id, v FROM "{schema}".items ORDER BY id') == [
        (10, "a"),
        (11, "b"),
        (12, "c"),
    ]
    assert nothing_to_do(conn, always)
    by_default = table_of(
        schema,
        sa.Column("id", sa.BIGINT, sa.Identity(), primary_key=True),
        sa.Column("v", sa.TEXT),
        name="others",
    )
    load(conn, by_default, [(5, "a"), (5, "b")])
    assert query(f'SELECT id, v FROM "{schema}".others') == [(5, "b")]
    assert query(f"INSERT INTO \"{schema}\".others (v) VALUES ('c') RETURNING id") == [(1,)]


def identity_sequence(query: Any, schema: str, name: str = "items") -> Any:
    return query(f"SELECT pg_get_serial_sequence('\"{schema}\".{name}', 'id')")[0][0]


def test_a_table_with_identity_columns_is_rebuilt_keeping_values_and_its_sequences_going_on(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    def always(v_type: Any) -> sa.MetaData:
        return table_of(
            schema,
            sa.Column("id", sa.BIGINT, sa.Identity(always=True, start=10), primary_key=True),
            sa.Column("v", v_type),
        )

    def by_default(v_type: Any) -> sa.MetaData:
        return table_of(
            schema,
            sa.Column("id", sa.BIGINT, sa.Identity(), primary_key=True),
            sa.Column("v", v_type),
            name="others",
        )

    load(conn, always(sa.INTEGER), [(1,), (2,)])
    query(f'INSERT INTO "{schema}".items (v) VALUES (3)')
    load(conn, by_default(sa.INTEGER), [(5, 1), (100, 2)])
    before = (oid(query, schema), oid(query, schema, "others"))
    sequences = (identity_sequence(query, schema), identity_sequence(query, schema, "others"))

    load(conn, always(sa.BIGINT), [(4,)])
    load(conn, by_default(sa.BIGINT), [(7, 3)])

    assert (oid(query, schema), oid(query, schema, "others")) != before
    assert query(f'SELECT id, v FROM "{schema}".items ORDER BY id') == [
        (10, 1),
        (11, 2),
        (12, 3),
        (13, 4),
    ]
    assert query(f'INSERT INTO "{schema}".items (v) VALUES (5) RETURNING id') == [(14,)]
    # A BY DEFAULT identity given its values by the rows goes on past them.
    assert query(f'INSERT INTO "{schema}".others (v) VALUES (4) RETURNING id') == [(101,)]
    assert (
        identity_sequence(query, schema),
        identity_sequence(query, schema, "others"),
    ) == sequences
    assert nothing_to_do(conn, always(sa.BIGINT))


def test_delete_all_on_a_table_with_an_identity_goes_on_with_its_sequence(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata = table_of(
        schema,
        sa.Column("id", sa.BIGINT, sa.Identity(always=True), primary_key=True),
        sa.Column("v", sa.INTEGER),
    )
    load(conn, metadata, [(1,), (2,)])
    (table,) = metadata.tables.values()
    ingest(conn, metadata, lambda _: iter([(2, ((table, (3,)),))]), delete=Delete.ALL)
    assert query(f'SELECT id, v FROM "{schema}".items') == [(3, 3)]


def test_an_identity_is_added_to_a_filled_column_then_changed_and_dropped_in_place(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    def metadata(*identity: Any) -> sa.MetaData:
        return table_of(
            schema,
            sa.Column("id", sa.INTEGER, *identity, primary_key=True),
            sa.Column("v", sa.TEXT),
        )

    load(conn, metadata(), [(1, "a"), (5, "b")])
    before = oid(query, schema)
    load(conn, metadata(sa.Identity()), [(20, "c")])
    # The sequence starts past the values the column had.
    assert query(f"INSERT INTO \"{schema}\".items (v) VALUES ('d') RETURNING id") == [(6,)]
    load(conn, metadata(sa.Identity(always=True, increment=10)), [("e",)])
    assert query(f"SELECT id FROM \"{schema}\".items WHERE v = 'e'") == [(16,)]
    load(conn, metadata(), [(30, "f")])
    assert query(
        "SELECT attidentity FROM pg_attribute "
        f"WHERE attrelid = '\"{schema}\".items'::regclass AND attname = 'id'"
    ) == [("",)]
    assert oid(query, schema) == before
    assert query(f'SELECT count(*) FROM "{schema}".items') == [(6,)]


def test_check_constraints_are_created_with_the_table_and_refuse_rows_through_ingest(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata = table_of(
        schema,
        sa.Column("id", sa.INTEGER, primary_key=True),
        sa.Column("v", sa.INTEGER, sa.CheckConstraint("v > 0")),
        sa.CheckConstraint("v < 100", name="v_small"),
    )
    load(conn, metadata, [(1, 5)])
    assert constraints(query, schema) == [
        ("items_v_check", "CHECK ((v > 0))", True),
        ("v_small", "CHECK ((v < 100))", True),
    ]
    for bad in (-1, 100):
        with pytest.raises(Exception) as raised:
            load(conn, metadata, [(2, bad)])
        assert sqlstate(raised.value) == CHECK_VIOLATION
    assert query(f'SELECT id, v FROM "{schema}".items') == [(1, 5)]
    assert nothing_to_do(conn, metadata)


def test_a_check_added_to_a_table_with_rows_is_added_not_valid_then_validated(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    load(conn, table_of(schema, *id_and_v(sa.INTEGER)), [(1, 5)])
    before = oid(query, schema)
    checked = table_of(schema, *id_and_v(sa.INTEGER), sa.CheckConstraint("v > 0"))
    steps = [step for step in migration_plan(conn, checked) if step.action != "alter" or step.sql]
    table = f"{schema}.items"
    quoted = f'"{schema}"."items"'
    assert (
        PlannedStep(
            table,
            "alter",
            f'ALTER TABLE {quoted} ADD CONSTRAINT "items_check" CHECK (v > 0) NOT VALID',
            "ACCESS EXCLUSIVE",
        )
        in steps
    )
    assert steps[-1] == PlannedStep(
        table,
        "validate constraint",
        f'ALTER TABLE {quoted} VALIDATE CONSTRAINT "items_check"',
        "SHARE UPDATE EXCLUSIVE",
    )
    load(conn, checked, [(2, 6)])
    assert oid(query, schema) == before
    assert constraints(query, schema) == [("items_check", "CHECK ((v > 0))", True)]
    assert nothing_to_do(conn, checked)


def test_a_check_that_rows_already_there_break_is_kept_not_valid_and_the_error_raised(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    load(conn, table_of(schema, *id_and_v(sa.INTEGER)), [(1, -5)])
    checked = table_of(schema, *id_and_v(sa.INTEGER), sa.CheckConstraint("v > 0"))
    with pytest.raises(Exception) as raised:
        load(conn, checked, [(2, 6)])
    assert sqlstate(raised.value) == CHECK_VIOLATION
    # New rows are checked; the rows already there once fixed, the next call validates.
    assert constraints(query, schema) == [("items_check", "CHECK ((v > 0)) NOT VALID", False)]
    query(f'UPDATE "{schema}".items SET v = 5')
    load(conn, checked, [(2, 6)])
    assert constraints(query, schema) == [("items_check", "CHECK ((v > 0))", True)]


def test_a_check_changed_is_replaced_and_one_removed_dropped_but_never_one_made_by_hand(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    def metadata(*checks: sa.CheckConstraint) -> sa.MetaData:
        return table_of(schema, *id_and_v(sa.INTEGER), *checks)

    query(f'CREATE TABLE "{schema}".items (id integer PRIMARY KEY, v integer)')
    # Made by hand: one as the definition will have it (however written), one not defined.
    query(f'ALTER TABLE "{schema}".items ADD CONSTRAINT positive CHECK ((v)>(0))')
    query(f'ALTER TABLE "{schema}".items ADD CONSTRAINT by_hand CHECK (v < 1000)')
    # A new column with a CHECK of its own, which cannot be compared before it exists.
    column_checked = table_of(
        schema,
        *id_and_v(sa.INTEGER),
        sa.Column("w", sa.INTEGER, sa.CheckConstraint("w > 0")),
        sa.CheckConstraint("v > 0"),
    )
    load(conn, column_checked, [(1, 5, 1)])
    assert [name for name, _, _ in constraints(query, schema)] == [
        "by_hand",
        "items_w_check",
        "positive",
    ]
    query(f'ALTER TABLE "{schema}".items DROP COLUMN w')
    before = oid(query, schema)
    changed = metadata(sa.CheckConstraint("v > 1"), sa.CheckConstraint("v <> 3", name="not_3"))
    load(conn, changed, [(2, 6)])
    assert constraints(query, schema) == [
        ("by_hand", "CHECK ((v < 1000))", True),
        ("items_check", "CHECK ((v > 1))", True),
        ("not_3", "CHECK ((v <> 3))", True),
    ]
    load(conn, metadata(sa.CheckConstraint("v > 2")), [(3, 7)])  # the same name, another check
    assert constraints(query, schema) == [
        ("by_hand", "CHECK ((v < 1000))", True),
        ("items_check", "CHECK ((v > 2))", True),
    ]
    load(conn, metadata(), [(4, 8)])
    assert constraints(query, schema) == [("by_hand", "CHECK ((v < 1000))", True)]
    assert oid(query, schema) == before


def test_a_rebuilt_table_has_its_defined_checks_and_keeps_those_made_by_hand(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    def metadata(type_: Any, check: str) -> sa.MetaData:
        return table_of(
            schema,
            *id_and_v(sa.INTEGER),
            sa.Column("w", type_),
            sa.CheckConstraint(check),
        )

    load(conn, metadata(sa.INTEGER, "v > 0"), [(1, 5, 1)])
    query(f'ALTER TABLE "{schema}".items ADD CONSTRAINT by_hand CHECK (w < 100)')
    before = oid(query, schema)
    rebuilt = metadata(sa.BIGINT, "v > 1")
    load(conn, rebuilt, [(2, 6, 2)])
    assert oid(query, schema) != before
    assert constraints(query, schema) == [
        ("by_hand", "CHECK ((w < 100))", True),
        ("items_check", "CHECK ((v > 1))", True),
    ]
    assert query(f'SELECT id, v, w FROM "{schema}".items ORDER BY id') == [(1, 5, 1), (2, 6, 2)]
    assert nothing_to_do(conn, rebuilt)


def _parent_and_child(
    schema: str, *, foreign_key: bool = True, on_delete: str = "CASCADE"
) -> sa.MetaData:
    """`child` first (it holds the watermark), referencing `parent`, defined after it."""
    metadata = sa.MetaData()
    reference = [sa.ForeignKey(f"{schema}.parent.id", ondelete=on_delete)] if foreign_key else []
    sa.Table(
        "child",
        metadata,
        sa.Column("id", sa.INTEGER, primary_key=True),
        sa.Column("parent_id", sa.INTEGER, *reference),
        schema=schema,
    )
    sa.Table("parent", metadata, sa.Column("id", sa.INTEGER, primary_key=True), schema=schema)
    return metadata


def _load_both(
    conn: sa.engine.Connection,
    metadata: sa.MetaData,
    parents: list[int],
    children: list[tuple[int, int]],
) -> None:
    child, parent = metadata.tables.values()

    def batches(_: Any) -> Any:
        yield 1, [*((parent, (p,)) for p in parents), *((child, c) for c in children)]

    ingest(conn, metadata, batches)


def test_a_foreign_key_is_created_after_the_table_it_references_and_refuses_rows(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    metadata = _parent_and_child(schema)
    _load_both(conn, metadata, [1, 2], [(10, 1), (11, 2)])
    assert constraints(query, schema, "child") == [
        (
            "child_parent_id_fkey",
            f"FOREIGN KEY (parent_id) REFERENCES {schema}.parent(id) ON DELETE CASCADE",
            True,
        )
    ]
    with pytest.raises(Exception) as raised:
        _load_both(conn, metadata, [], [(12, 3)])
    assert sqlstate(raised.value) == FOREIGN_KEY_VIOLATION
    query(f'DELETE FROM "{schema}".parent WHERE id = 1')
    assert query(f'SELECT id FROM "{schema}".child') == [(11,)]
    assert nothing_to_do(conn, metadata)


def test_a_foreign_key_is_added_to_tables_with_rows_and_dropped_but_never_one_made_by_hand(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    _load_both(conn, _parent_and_child(schema, foreign_key=False), [1], [(10, 1)])
    query(
        f'ALTER TABLE "{schema}".child ADD CONSTRAINT by_hand '
        f'FOREIGN KEY (id) REFERENCES "{schema}".child (id)'
    )
    before = oid(query, schema, "child")
    _load_both(conn, _parent_and_child(schema), [2], [(11, 2)])
    names = [(name, valid) for name, _, valid in constraints(query, schema, "child")]
    assert names == [("by_hand", True), ("child_parent_id_fkey", True)]
    _load_both(conn, _parent_and_child(schema, on_delete="SET NULL"), [3], [(12, 3)])
    assert constraints(query, schema, "child")[1] == (
        "child_parent_id_fkey",
        f"FOREIGN KEY (parent_id) REFERENCES {schema}.parent(id) ON DELETE SET NULL",
        True,
    )
    _load_both(conn, _parent_and_child(schema, foreign_key=False), [], [(13, 99)])
    names = [(name, valid) for name, _, valid in constraints(query, schema, "child")]
    assert names == [("by_hand", True)]
    assert oid(query, schema, "child") == before


def test_column_and_table_comments_are_set_changed_and_removed_in_place(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    def metadata(column: str | None, table: str | None) -> sa.MetaData:
        found = sa.MetaData()
        sa.Table(
            "state",
            found,
            sa.Column("id", sa.INTEGER, primary_key=True),
            schema=schema,
            comment=table,
        )
        sa.Table(
            "items",
            found,
            sa.Column("id", sa.INTEGER, primary_key=True),
            sa.Column("v", sa.TEXT, comment=column),
            schema=schema,
            comment=table,
        )
        return found

    def comments() -> tuple[Any, Any, Any]:
        found = query(
            f"SELECT obj_description('\"{schema}\".state'::regclass, 'pg_class'), "
            f"obj_description('\"{schema}\".items'::regclass, 'pg_class'), "
            f"col_description('\"{schema}\".items'::regclass, 2)"
        )[0]
        state = json.loads(found[0]) if found[0] else None
        return state, found[1], found[2]

    def load_state(definition: sa.MetaData, watermark: int) -> None:
        state = next(iter(definition.tables.values()))
        ingest(conn, definition, lambda _: [(watermark, [(state, (watermark,))])])

    load_state(metadata("the value", "made by the sink"), 1)
    before = oid(query, schema)
    assert comments() == (
        {"comment": "made by the sink", "pg-bulk-ingest": {"high-watermark": 1}},
        "made by the sink",
        "the value",
    )
    load_state(metadata("the new value", "changed: it's $pg_bulk_ingest$"), 2)
    assert comments() == (
        {"comment": "changed: it's $pg_bulk_ingest$", "pg-bulk-ingest": {"high-watermark": 2}},
        "changed: it's $pg_bulk_ingest$",
        "the new value",
    )
    assert nothing_to_do(conn, metadata("the new value", "changed: it's $pg_bulk_ingest$"))
    load_state(metadata(None, None), 3)  # no comment defined: the live ones are left alone
    assert comments()[1:] == ("changed: it's $pg_bulk_ingest$", "the new value")
    load_state(metadata("", ""), 4)  # an empty comment removes it
    assert comments() == ({"pg-bulk-ingest": {"high-watermark": 4}}, None, None)
    assert oid(query, schema) == before


def test_a_column_name_longer_than_postgresql_keeps_is_refused(
    conn: sa.engine.Connection, schema: str, query: Any
) -> None:
    long_name = "a_column_name_" + "x" * 50
    metadata = table_of(
        schema, sa.Column("id", sa.INTEGER, primary_key=True), sa.Column(long_name, sa.TEXT)
    )
    with pytest.raises(SchemaError, match=rf"{schema}\.items.*{long_name}.*63 bytes"):
        load(conn, metadata, [(1, "a")])
    assert query(
        f"SELECT count(*) FROM pg_class WHERE relnamespace = '\"{schema}\"'::regnamespace"
    ) == [(0,)]
