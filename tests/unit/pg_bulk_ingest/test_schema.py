"""The wanted table read from SQLAlchemy (pure): indexes, their options, UNIQUE constraints."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from pg_bulk_ingest import SchemaError
from pg_bulk_ingest._schema import IndexSpec, wanted_table


def test_a_unique_column_and_a_unique_constraint_become_unique_constraints() -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        "t",
        metadata,
        sa.Column("id", sa.INTEGER, primary_key=True),
        sa.Column("a", sa.INTEGER, unique=True),
        sa.Column("b", sa.INTEGER),
        sa.UniqueConstraint("a", "b", name="t_pair"),
    )
    assert wanted_table(table).spec.indexes == (
        IndexSpec("t_a_key", ("a",), unique=True, constraint=True),
        IndexSpec("t_pair", ("a", "b"), unique=True, constraint=True),
    )


def test_postgresql_index_options_are_kept() -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        "t",
        metadata,
        sa.Column("v", sa.INTEGER),
        sa.Column("w", sa.INTEGER),
        sa.Column("doc", pg.JSONB),
        sa.Index(
            "partial",
            "v",
            postgresql_where=sa.column("v") > 1,
            postgresql_include=["w"],
            postgresql_with={"fillfactor": 70},
        ),
        sa.Index("path", "doc", postgresql_using="GIN", postgresql_ops={"doc": "jsonb_path_ops"}),
    )
    assert wanted_table(table).spec.indexes == (
        IndexSpec(
            "partial",
            ("v",),
            ops=("",),
            include=("w",),
            options=("fillfactor=70",),
            where="v > 1",
        ),
        IndexSpec("path", ("doc",), method="gin", ops=("jsonb_path_ops",)),
    )


def test_indexes_that_would_share_a_name_each_get_one_of_their_own() -> None:
    long = "an_index_name_long_enough_to_be_cut_by_postgresql_at_63_bytes_"
    metadata = sa.MetaData()
    table = sa.Table(
        "t",
        metadata,
        sa.Column("a", sa.INTEGER, primary_key=True),
        sa.Column("b", sa.INTEGER),
        # The default naming convention names both "ix_t_a", after their first column.
        sa.Index(None, "a", "b"),
        sa.Index(None, "a"),
        sa.Index(f"{long}1", "b"),
        sa.Index(f"{long}2", "b", "a"),
        sa.Index("t_pkey", "b"),
    )
    names = [index.name for index in wanted_table(table).spec.indexes]
    assert len(set(names)) == 5
    assert all(len(name) <= 63 for name in names)
    assert "t_pkey" not in names  # the primary key's


def test_an_index_on_an_expression_is_rejected() -> None:
    metadata = sa.MetaData()
    table = sa.Table("t", metadata, sa.Column("v", sa.TEXT))
    sa.Index("lower_v", sa.func.lower(table.c.v))
    with pytest.raises(SchemaError, match="expression"):
        wanted_table(table)
