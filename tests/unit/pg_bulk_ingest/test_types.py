"""SQLAlchemy types to the names PostgreSQL's format_type() reports (pure)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from pg_bulk_ingest._types import pg_type


@pytest.mark.parametrize(
    ("types", "name"),
    [
        ((sa.INTEGER(), sa.Integer()), "integer"),
        ((sa.BIGINT(), sa.BigInteger()), "bigint"),
        ((sa.VARCHAR(4), sa.String(4), sa.Unicode(4)), "character varying(4)"),
        ((sa.TEXT(), sa.Text()), "text"),
        ((sa.NUMERIC(10, 2), sa.Numeric(10, 2), sa.DECIMAL(10, 2)), "numeric(10,2)"),
        ((pg.DOUBLE_PRECISION(), sa.Float()), "double precision"),
        ((sa.REAL(), sa.Float(10)), "real"),
        ((sa.TIMESTAMP(timezone=True), sa.DateTime(timezone=True)), "timestamp with time zone"),
        ((sa.TIMESTAMP(), sa.DateTime()), "timestamp without time zone"),
        ((pg.TIMESTAMP(precision=3),), "timestamp(3) without time zone"),
        ((pg.INTERVAL(), sa.Interval()), "interval"),
        ((pg.UUID(),), "uuid"),
        ((pg.BYTEA(), sa.LargeBinary()), "bytea"),
        ((pg.ARRAY(sa.VARCHAR(3)),), "character varying(3)[]"),
    ],
)
def test_every_spelling_maps_to_the_same_postgresql_type(
    types: tuple[sa.types.TypeEngine[object], ...], name: str
) -> None:
    assert {pg_type(t).name for t in types} == {name}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "type_", [sa.JSON(), sa.Enum("a", name="e"), sa.PickleType(), sa.TIME(timezone=True)]
)
def test_types_without_one_postgresql_meaning_are_rejected(
    type_: sa.types.TypeEngine[object],
) -> None:
    assert pg_type(type_) is None
