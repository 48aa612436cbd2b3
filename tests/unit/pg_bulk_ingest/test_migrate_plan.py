"""The migration plan from the live to the wanted table (pure)."""

from __future__ import annotations

from pg_bulk_ingest._migrate import plan
from pg_bulk_ingest._schema import ColumnSpec, IndexSpec, TableSpec


def spec(
    *columns: ColumnSpec, pk: tuple[str, ...] = ("id",), indexes: tuple[IndexSpec, ...] = ()
) -> TableSpec:
    return TableSpec("s", "t", (ColumnSpec("id", "integer", True), *columns), pk, indexes)


def test_a_missing_table_is_created() -> None:
    assert plan(None, spec()).create


def test_a_matching_table_needs_nothing() -> None:
    table = spec(ColumnSpec("v", "text", False))
    assert plan(table, table).is_noop


def test_cheap_changes_are_in_place() -> None:
    live = spec(
        ColumnSpec("v", "character varying(5)", True), ColumnSpec("n", "numeric(5,2)", False)
    )
    wanted = spec(
        ColumnSpec("v", "character varying(9)", False),
        ColumnSpec("n", "numeric", False),
        ColumnSpec("w", "jsonb", False),
        indexes=(IndexSpec("i", ("v",), False),),
    )
    result = plan(live, wanted)
    assert not result.rebuild
    assert result.in_place == (
        'ALTER TABLE "s"."t" ALTER COLUMN "v" TYPE character varying(9)',
        'ALTER TABLE "s"."t" ALTER COLUMN "v" DROP NOT NULL',
        'ALTER TABLE "s"."t" ALTER COLUMN "n" TYPE numeric',
        'ALTER TABLE "s"."t" ADD COLUMN "w" jsonb',
    )
    assert result.concurrently == (('CREATE INDEX CONCURRENTLY "i" ON "s"."t" ("v")', "i"),)


def test_other_changes_rebuild() -> None:
    live = spec(ColumnSpec("v", "integer", False))
    for wanted in [
        spec(ColumnSpec("v", "bigint", False)),
        spec(ColumnSpec("v", "integer", True)),
        spec(ColumnSpec("w", "integer", False)),
        spec(ColumnSpec("v", "integer", False), ColumnSpec("x", "text", True)),
        spec(ColumnSpec("v", "integer", False), pk=("id", "v")),
        spec(),
    ]:
        assert plan(live, wanted).rebuild, wanted


def test_narrowing_a_varchar_rebuilds() -> None:
    live = spec(ColumnSpec("v", "character varying(9)", False))
    assert plan(live, spec(ColumnSpec("v", "character varying(5)", False))).rebuild
