"""The migration plan from the live to the wanted table (pure)."""

from __future__ import annotations

from pg_bulk_ingest._migrate import Plan, plan
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
        indexes=(IndexSpec("i", ("v",)),),
    )
    result = plan(live, wanted)
    assert not result.rebuild
    assert result.in_place == (
        'ALTER TABLE "s"."t" ALTER COLUMN "v" TYPE character varying(9)',
        'ALTER TABLE "s"."t" ALTER COLUMN "v" DROP NOT NULL',
        'ALTER TABLE "s"."t" ALTER COLUMN "n" TYPE numeric',
        'ALTER TABLE "s"."t" ADD COLUMN "w" jsonb',
    )
    assert result.indexes == (
        'CREATE INDEX "i" ON "s"."t" ("v")',
        'COMMENT ON INDEX "s"."i" IS E\'{"pg-bulk-ingest":{}}\'',
    )


def test_other_changes_rebuild() -> None:
    live = spec(ColumnSpec("v", "integer", False))
    for wanted in [
        spec(ColumnSpec("v", "bigint", False)),
        spec(ColumnSpec("v", "integer", False), ColumnSpec("x", "text", True)),
        spec(ColumnSpec("v", "integer", False), pk=("id", "v")),
    ]:
        assert plan(live, wanted).rebuild, wanted


def test_narrowing_a_varchar_rebuilds() -> None:
    live = spec(ColumnSpec("v", "character varying(9)", False))
    assert plan(live, spec(ColumnSpec("v", "character varying(5)", False))).rebuild


def live_index(name: str, *columns: str, **fields: object) -> IndexSpec:
    """An index as the catalog reads it (every operator class named, defaults flagged), made
    by `ingest` unless `marked=False`."""
    fields.setdefault("ops", ("int4_ops",) * len(columns))
    fields.setdefault("default_ops", (True,) * len(columns))
    fields.setdefault("marked", True)
    return IndexSpec(name, columns, **fields)  # type: ignore[arg-type]


def index_plan(live: tuple[IndexSpec, ...], wanted: tuple[IndexSpec, ...]) -> Plan:
    columns = (ColumnSpec("v", "integer", False), ColumnSpec("w", "jsonb", False))
    return plan(spec(*columns, indexes=live), spec(*columns, indexes=wanted))


def test_an_index_matches_whatever_its_name_and_however_its_default_operator_class_is_spelled() -> (
    None
):
    live = (
        live_index("old_name", "v"),
        live_index("w_gin", "w", method="gin", ops=("jsonb_ops",)),
    )
    wanted = (
        IndexSpec("new_name", ("v",)),
        IndexSpec("w_gin", ("w",), method="gin", ops=("jsonb_ops",)),
    )
    assert index_plan(live, wanted).is_noop


def test_an_index_made_by_hand_is_marked_when_defined_and_left_alone_when_not() -> None:
    live = (live_index("by_hand", "v", marked=False), live_index("dba_only", "w", marked=False))
    result = index_plan(live, (IndexSpec("defined", ("v",)),))
    assert result.marks == ('COMMENT ON INDEX "s"."by_hand" IS E\'{"pg-bulk-ingest":{}}\'',)
    assert not (result.drops or result.indexes)


def test_an_index_no_longer_defined_is_dropped_and_a_unique_constraint_too() -> None:
    live = (live_index("i", "v"), live_index("t_v_key", "v", unique=True, constraint=True))
    result = index_plan(live, ())
    assert result.drops == (
        'DROP INDEX "s"."i"',
        'ALTER TABLE "s"."t" DROP CONSTRAINT "t_v_key"',
    )
    assert not (result.in_place or result.indexes or result.attach or result.rebuild)


def test_an_index_whose_options_change_is_dropped_and_made_again_with_them() -> None:
    live = (live_index("i", "w", ops=("jsonb_ops",)),)
    wanted = (
        IndexSpec(
            "i",
            ("w",),
            method="gin",
            ops=("jsonb_path_ops",),
            options=("fastupdate=off",),
            where="v > 1",
        ),
    )
    result = index_plan(live, wanted)
    assert result.drops == ('DROP INDEX "s"."i"',)
    assert result.indexes == (
        'CREATE INDEX "i" ON "s"."t" USING "gin" ("w" jsonb_path_ops) '
        "WITH (fastupdate=off) WHERE v > 1",
        'COMMENT ON INDEX "s"."i" IS E\'{"pg-bulk-ingest":{"where":"v > 1"}}\'',
    )


def test_a_new_unique_constraint_is_built_as_an_index_then_attached() -> None:
    wanted = (IndexSpec("t_v_key", ("v",), unique=True, constraint=True),)
    result = index_plan((), wanted)
    assert result.indexes == (
        'CREATE UNIQUE INDEX "t_v_key" ON "s"."t" ("v")',
        'COMMENT ON INDEX "s"."t_v_key" IS E\'{"pg-bulk-ingest":{}}\'',
    )
    assert result.attach == (
        'ALTER TABLE "s"."t" ADD CONSTRAINT "t_v_key" UNIQUE USING INDEX "t_v_key"',
    )


def test_a_new_index_never_takes_the_name_of_an_index_kept() -> None:
    live = (live_index("i", "v"),)
    wanted = (IndexSpec("kept", ("v",)), IndexSpec("i", ("v", "w")))
    created, _comment = index_plan(live, wanted).indexes
    assert created.startswith('CREATE INDEX "i_') and created.endswith('("v", "w")')


def test_an_invalid_index_left_by_a_failed_build_is_dropped_and_made_again() -> None:
    live = (live_index("i", "v", valid=False),)
    result = index_plan(live, (IndexSpec("i", ("v",)),))
    assert result.drops == ('DROP INDEX "s"."i"',)
    assert result.indexes[0] == 'CREATE INDEX "i" ON "s"."t" ("v")'


def test_a_column_becoming_not_null_is_checked_then_set_in_place() -> None:
    result = plan(spec(ColumnSpec("v", "integer", False)), spec(ColumnSpec("v", "integer", True)))
    assert not result.rebuild
    assert result.not_null == ("v",)
    assert result.in_place == (
        'ALTER TABLE "s"."t" DROP CONSTRAINT IF EXISTS "t_v_pgbi_not_null"',
        'ALTER TABLE "s"."t" ADD CONSTRAINT "t_v_pgbi_not_null" CHECK ("v" IS NOT NULL) NOT VALID',
    )


def test_columns_the_definition_no_longer_has_are_dropped_in_place_after_index_drops() -> None:
    live = spec(ColumnSpec("v", "integer", False), ColumnSpec("w", "text", False))
    assert plan(live, spec(ColumnSpec("w", "text", False))).drop_columns == (
        'ALTER TABLE "s"."t" DROP COLUMN "v"',
    )
    renamed = plan(live, spec(ColumnSpec("w", "text", False), ColumnSpec("x", "text", False)))
    assert not renamed.rebuild
    assert renamed.in_place == ('ALTER TABLE "s"."t" ADD COLUMN "x" text',)
    assert renamed.drop_columns == ('ALTER TABLE "s"."t" DROP COLUMN "v"',)
    reordered = spec(ColumnSpec("w", "text", False), ColumnSpec("v", "integer", False))
    assert plan(live, reordered).rebuild
