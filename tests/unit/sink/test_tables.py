"""Tables and routing: SQLAlchemy tables from the config or a module, and topic routes."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from sink.config import (
    ColumnSettings,
    ErrorPolicy,
    ErrorSettings,
    Format,
    IndexSettings,
    KafkaSettings,
    PostgresSettings,
    PythonSettings,
    Settings,
    TableSettings,
    TombstonePolicy,
    parse_column_type,
    parse_source,
)
from sink.errors import ConfigError
from sink.tables import (
    Router,
    load_tables,
    sa_type,
    state_table_name,
    tables_from_config,
    tables_from_module,
)


def compiled(type_text: str) -> str:
    return str(sa_type(parse_column_type(type_text)).compile(dialect=postgresql.dialect()))


@pytest.mark.parametrize(
    ("declared", "ddl"),
    [
        ("BIGINT", "BIGINT"),
        ("INTEGER", "INTEGER"),
        ("SMALLINT", "SMALLINT"),
        ("TEXT", "TEXT"),
        ("VARCHAR(12)", "VARCHAR(12)"),
        ("BOOLEAN", "BOOLEAN"),
        ("NUMERIC(12,2)", "NUMERIC(12, 2)"),
        ("NUMERIC", "NUMERIC"),
        ("REAL", "REAL"),
        ("DOUBLE PRECISION", "DOUBLE PRECISION"),
        ("DATE", "DATE"),
        ("TIME", "TIME WITHOUT TIME ZONE"),
        ("TIMESTAMP", "TIMESTAMP WITHOUT TIME ZONE"),
        ("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"),
        ("TIMESTAMPTZ(3)", "TIMESTAMP(3) WITH TIME ZONE"),
        ("JSONB", "JSONB"),
        ("JSON", "JSON"),
        ("UUID", "UUID"),
        ("BYTEA", "BYTEA"),
        ("INTERVAL", "INTERVAL"),
        ("TEXT[]", "TEXT[]"),
        ("BIGINT[]", "BIGINT[]"),
    ],
)
def test_configured_types_become_postgresql_types(declared: str, ddl: str) -> None:
    assert compiled(declared) == ddl


def table(name: str, *, topics: tuple[str, ...] = (), pattern: str | None = None) -> TableSettings:
    return TableSettings(
        schema="app",
        name=name,
        columns=(
            ColumnSettings("id", parse_column_type("BIGINT"), parse_source("value.id"), False),
            ColumnSettings("ts", parse_column_type("TIMESTAMPTZ"), parse_source("kafka.timestamp")),
        ),
        topics=topics,
        topic_pattern=pattern,
        primary_key=("id",),
        tombstones=TombstonePolicy.DELETE,
        indexes=(IndexSettings(("ts",)),),
    )


def test_config_tables_have_schema_key_nullability_and_indexes() -> None:
    (target,) = tables_from_config([table("orders", topics=("orders",))]).targets
    sa_table = target.table
    assert sa_table.fullname == "app.orders"
    assert target.name == "app.orders"
    assert target.primary_key == ("id",)
    assert sa_table.c.id.nullable is False
    assert sa_table.c.ts.nullable is True
    assert [index.name for index in sa_table.indexes] == ["orders_ts_idx"]
    assert [str(s) for s in target.sources] == ["value.id", "kafka.timestamp"]


def test_router_routes_exact_topics_and_patterns_and_lists_the_subscription() -> None:
    table_set = tables_from_config(
        [table("orders", topics=("orders", "orders-eu")), table("audit", pattern=r"^audit\..*")]
    )
    router = Router(table_set)
    assert router.subscription() == ["orders", "orders-eu", r"^audit\..*"]
    assert [t.name for t in router.targets("orders-eu")] == ["app.orders"]
    assert [t.name for t in router.targets("audit.login")] == ["app.audit"]
    assert router.targets("unknown") == ()


def test_a_topic_matching_two_config_tables_is_a_config_error() -> None:
    table_set = tables_from_config(
        [table("orders", topics=("orders",)), table("everything", pattern="^.*")]
    )
    with pytest.raises(ConfigError, match=r"'orders' matches several .*app.orders, app.everything"):
        Router(table_set).targets("orders")


MODULE = """
import sqlalchemy as sa

metadata = sa.MetaData()
orders = sa.Table(
    "orders", metadata,
    sa.Column("id", sa.BIGINT, primary_key=True),
    sa.Column("total", sa.NUMERIC(10, 2), info={"source": "value.amount.total"}),
    schema="shop",
)
lines = sa.Table(
    "lines", metadata,
    sa.Column("order_id", sa.BIGINT),
    sa.Column("sku", sa.TEXT),
    schema="shop",
)
routes = {"orders": ["shop.orders", "shop.lines"], "^orders-.*": "shop.orders"}
value_format = "json"
key_format = "json"

def map_record(record):
    yield orders, (record.value["id"], record.value["amount"]["total"])
    for line in record.value.get("lines", []):
        yield lines, (record.value["id"], line)
"""


@pytest.fixture
def tables_module(tmp_path: Path) -> Iterator[str]:
    name = f"sink_tables_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE))
    sys.path.insert(0, str(tmp_path))
    yield name
    sys.path.remove(str(tmp_path))
    sys.modules.pop(name, None)


def test_a_tables_module_provides_metadata_routes_and_map_record(tables_module: str) -> None:
    table_set = tables_from_module(tables_module)
    assert sorted(table_set.metadata.tables) == ["shop.lines", "shop.orders"]
    assert table_set.map_record is not None
    router = Router(table_set)
    assert sorted(router.subscription()) == ["^orders-.*", "orders"]
    assert [t.name for t in router.targets("orders")] == ["shop.orders", "shop.lines"]
    assert [t.name for t in router.targets("orders-eu")] == ["shop.orders"]
    orders = router.targets("orders-eu")[0]
    assert orders.key_format is Format.JSON
    assert orders.tombstones is TombstonePolicy.DELETE
    assert [str(s) for s in orders.sources] == ["value.id", "value.amount.total"]
    assert router.targets("orders")[1].tombstones is TombstonePolicy.IGNORE


def test_an_unimportable_tables_module_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"python.module 'no_such_mod_xyz': cannot be imported"):
        tables_from_module("no_such_mod_xyz")


def test_a_module_route_to_an_unknown_table_is_a_config_error(
    tables_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = __import__(tables_module)
    monkeypatch.setattr(module, "routes", {"orders": "shop.missing"})
    with pytest.raises(ConfigError, match=r"routes\['orders'\] names 'shop.missing'"):
        tables_from_module(tables_module)


def settings(**errors: object) -> Settings:
    return Settings(
        kafka=KafkaSettings("b:9092"),
        postgres=PostgresSettings(sa.engine.make_url("postgresql+psycopg://u@h/d")),
        tables=(table("orders", topics=("orders",)),),
        errors=ErrorSettings(**errors),  # type: ignore[arg-type]
    )


def test_the_dead_letter_table_joins_the_metadata_with_that_policy() -> None:
    table_set = load_tables(
        settings(policy=ErrorPolicy.DEAD_LETTER_TABLE, dead_letter_table="ops.dead")
    )
    assert table_set.dead_letter_table is not None
    assert table_set.dead_letter_table.fullname == "ops.dead"
    assert list(table_set.metadata.tables) == [
        "app.kafka_sink_state_pg_kafka_sink",
        "app.orders",
        "ops.dead",
    ]
    assert [c.name for c in table_set.dead_letter_table.primary_key] == [
        "topic",
        "partition",
        "offset",
    ]


def test_a_module_that_would_consume_the_dead_letter_topic_is_refused(tables_module: str) -> None:
    base = settings(policy=ErrorPolicy.DEAD_LETTER_TOPIC, dead_letter_topic="orders-dlq")
    with_module = Settings(
        kafka=base.kafka,
        postgres=base.postgres,
        python=PythonSettings(tables_module),
        errors=base.errors,
    )
    with pytest.raises(ConfigError, match=r"'orders-dlq' would be consumed again into shop.orders"):
        load_tables(with_module)


def test_the_state_table_comes_first_named_after_the_group_in_the_tables_schema() -> None:
    table_set = load_tables(settings())
    state = table_set.state_table
    assert state is not None
    assert next(iter(table_set.metadata.tables.values())) is state
    assert (state.schema, state.name, list(state.columns)) == (
        "app",
        "kafka_sink_state_pg_kafka_sink",
        [],
    )
    assert [t.fullname for t in table_set.data_tables] == ["app.orders"]


@pytest.mark.parametrize(
    ("group", "name"),
    [
        ("orders", "kafka_sink_state_orders"),
        ("Orders.EU-1", "kafka_sink_state_orders_eu_1"),
        ("g" * 46, "kafka_sink_state_" + "g" * 46),
    ],
)
def test_state_table_names_need_no_quoting(group: str, name: str) -> None:
    assert state_table_name(group) == name


def test_long_group_names_are_cut_to_63_bytes_and_stay_distinct() -> None:
    a, b = state_table_name("g" * 60 + "a"), state_table_name("g" * 60 + "b")
    assert len(a) == len(b) == 63
    assert a != b


def test_the_state_table_goes_to_public_when_the_tables_span_schemas_or_where_configured() -> None:
    base = settings()
    two = Settings(
        kafka=base.kafka,
        postgres=base.postgres,
        tables=(
            table("orders", topics=("o",)),
            TableSettings(**{**vars(table("x", topics=("x",))), "schema": "other"}),
        ),
    )
    state = load_tables(two).state_table
    assert state is not None and state.fullname == "public.kafka_sink_state_pg_kafka_sink"
    named = Settings(
        kafka=KafkaSettings("b:9092", group_id="g"),
        postgres=PostgresSettings(base.postgres.url, state_table="ops.offsets"),
        tables=base.tables,
    )
    state = load_tables(named).state_table
    assert state is not None and state.fullname == "ops.offsets"


def test_a_tables_module_is_copied_behind_the_state_table_and_its_rows_map_to_the_copies(
    tables_module: str,
) -> None:
    module_settings = Settings(
        kafka=KafkaSettings("b:9092"),
        postgres=PostgresSettings(sa.engine.make_url("postgresql+psycopg://u@h/d")),
        python=PythonSettings(tables_module),
    )
    table_set = load_tables(module_settings)
    assert list(table_set.metadata.tables) == [
        "shop.kafka_sink_state_pg_kafka_sink",
        "shop.orders",
        "shop.lines",
    ]
    originals = sys.modules[tables_module].metadata.tables  # type: ignore[attr-defined]
    for name, original in originals.items():
        assert table_set.copies[original] is table_set.metadata.tables[name]
    assert all(t.table.metadata is table_set.metadata for t in table_set.targets)
