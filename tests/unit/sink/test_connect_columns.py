"""Columns from the Kafka Connect schemas that messages carry (JsonConverter with schemas): the
types of Connect's schemas and Debezium's, the fold of the schemas seen over the columns the
group's state holds, the check that no worker applies columns older than another's, the state
that keeps them, and the watch that notices a schema the table lacks."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest

from sink.carried import CarriedSchemas
from sink.config import Envelope, Format, TableSettings, load_settings
from sink.connect import SchemaWatch
from sink.errors import (
    ConfigError,
    OutdatedDefinitionError,
    SchemaChangedError,
    SchemaEvolutionError,
    StoredStateError,
)
from sink.offsets import StoredState, parse_state
from sink.schema_columns import changes, held_columns, message_columns, no_newer_columns
from sink.tables import with_schema_columns

KEY = {"type": "struct", "fields": [{"type": "int64", "optional": False, "field": "id"}]}
FIELDS: list[dict[str, Any]] = [
    {"type": "int64", "optional": False, "field": "id"},
    {"type": "int8", "optional": True, "field": "tiny"},
    {"type": "int32", "optional": True, "field": "qty"},
    {"type": "float32", "optional": True, "field": "ratio"},
    {"type": "float64", "optional": True, "field": "score"},
    {"type": "boolean", "optional": True, "field": "paid"},
    {"type": "bytes", "optional": True, "field": "blob"},
    {
        "type": "bytes",
        "optional": False,
        "name": "org.apache.kafka.connect.data.Decimal",
        "parameters": {"scale": "2", "connect.decimal.precision": "12"},
        "field": "amount",
    },
    {
        "type": "bytes",
        "optional": True,
        "name": "org.apache.kafka.connect.data.Decimal",
        "parameters": {"scale": "3"},
        "field": "unbounded",
    },
    {
        "type": "int64",
        "optional": True,
        "name": "org.apache.kafka.connect.data.Timestamp",
        "field": "placed_at",
    },
    {"type": "int64", "optional": True, "name": "io.debezium.time.MicroTimestamp", "field": "ts"},
    {"type": "string", "optional": True, "name": "io.debezium.time.ZonedTimestamp", "field": "z"},
    {"type": "int32", "optional": True, "name": "io.debezium.time.Date", "field": "day"},
    {"type": "string", "optional": True, "name": "io.debezium.data.Uuid", "field": "ref"},
    {"type": "string", "optional": True, "name": "io.debezium.data.Json", "field": "doc"},
    {
        "type": "string",
        "optional": True,
        "parameters": {
            "__debezium.source.column.type": "VARCHAR",
            "__debezium.source.column.length": "40",
        },
        "field": "code",
    },
    {"type": "array", "optional": True, "items": {"type": "string"}, "field": "tags"},
    {
        "type": "array",
        "optional": True,
        "items": {"type": "array", "items": {"type": "int32"}},
        "field": "grid",
    },
    {"type": "map", "optional": True, "keys": {"type": "string"}, "field": "attrs"},
    {
        "type": "struct",
        "optional": True,
        "fields": [{"type": "string", "field": "city"}],
        "field": "address",
    },
]
VALUE = {"type": "struct", "name": "shop.orders.Value", "fields": FIELDS}
TYPES = [
    ("id", "BIGINT", False),
    ("tiny", "SMALLINT", True),
    ("qty", "INTEGER", True),
    ("ratio", "REAL", True),
    ("score", "DOUBLE PRECISION", True),
    ("paid", "BOOLEAN", True),
    ("blob", "BYTEA", True),
    ("amount", "NUMERIC(12,2)", False),
    ("unbounded", "NUMERIC", True),
    ("placed_at", "TIMESTAMPTZ", True),
    ("ts", "TIMESTAMP", True),
    ("z", "TIMESTAMPTZ", True),
    ("day", "DATE", True),
    ("ref", "UUID", True),
    ("doc", "JSONB", True),
    ("code", "VARCHAR(40)", True),
    ("tags", "TEXT[]", True),
    ("grid", "JSONB", True),
    ("attrs", "JSONB", True),
    ("address", "JSONB", True),
]


def table(**changes: Any) -> TableSettings:
    base = TableSettings(
        schema="shop",
        name="orders",
        columns=(),
        topics=("orders",),
        key_format=Format.CONNECT_JSON,
        value_format=Format.CONNECT_JSON,
    )
    return dataclasses.replace(base, **changes)


def described(resolved: TableSettings) -> list[tuple[str, str, bool]]:
    return [(c.name, str(c.type), c.nullable) for c in resolved.columns]


def test_connect_and_debezium_types_become_columns_and_the_key_schema_the_primary_key() -> None:
    resolved = message_columns(table(), None, [(KEY, VALUE)])
    assert described(resolved) == TYPES
    assert resolved.primary_key == ("id",)
    assert resolved.columns_from_messages


def test_a_change_events_columns_are_its_after_struct() -> None:
    envelope = {
        "type": "struct",
        "name": "db.shop.orders.Envelope",
        "fields": [
            {**VALUE, "optional": True, "field": "before"},
            {**VALUE, "optional": True, "field": "after"},
            {"type": "string", "optional": False, "field": "op"},
        ],
    }
    resolved = message_columns(table(envelope=Envelope.DEBEZIUM), None, [(KEY, envelope)])
    assert described(resolved) == TYPES
    with pytest.raises(ConfigError, match="no `after`"):
        message_columns(table(envelope=Envelope.DEBEZIUM), None, [(KEY, VALUE)])


def test_later_schemas_widen_the_held_columns_and_the_held_key_stays() -> None:
    first = message_columns(table(), None, [(KEY, VALUE)])
    held = held_columns(first)
    assert message_columns(table(), held, []).columns == first.columns
    wider = {
        **VALUE,
        "fields": [
            {**FIELDS[0]},
            {"type": "int64", "optional": False, "field": "qty"},  # INTEGER to BIGINT
            {"type": "string", "optional": False, "field": "channel"},
        ],
    }
    other_key = {"type": "struct", "fields": [{"type": "string", "field": "channel"}]}
    resolved = message_columns(table(), held, [(other_key, wider)])
    assert resolved.primary_key == ("id",)
    kinds = {name: (kind, nullable) for name, kind, nullable in described(resolved)}
    assert kinds["qty"] == ("BIGINT", True)
    assert kinds["channel"] == ("TEXT", True)  # added after the first schema: nullable
    assert kinds["amount"] == ("NUMERIC(12,2)", True)  # the later schema lacks it
    assert [name for name, *_ in described(resolved)][-1] == "channel"
    narrower = {**VALUE, "fields": [{"type": "string", "optional": True, "field": "qty"}]}
    with pytest.raises(SchemaEvolutionError, match="'qty' changes type from INTEGER to TEXT"):
        message_columns(table(), held, [(KEY, narrower)])


def test_a_configured_primary_key_wins_and_a_table_without_a_schema_seen_has_no_columns() -> None:
    resolved = message_columns(table(primary_key=("qty",)), None, [(None, VALUE)])
    assert resolved.primary_key == ("qty",)
    assert dict((n, null) for n, _, null in described(resolved))["qty"] is False
    with pytest.raises(ConfigError, match="no schema has been seen"):
        message_columns(table(), None, [])
    with pytest.raises(ConfigError, match="names no key columns; set primary_key"):
        message_columns(table(), None, [(None, VALUE)])
    # The first message with a key schema names the key, also after one without a key.
    assert message_columns(table(), None, [(None, VALUE), (KEY, VALUE)]).primary_key == ("id",)


def test_columns_another_worker_applied_make_this_ones_definition_outdated() -> None:
    mine = message_columns(table(), None, [(KEY, VALUE)])
    no_newer_columns([mine], {})
    no_newer_columns([mine], {"shop.orders": held_columns(mine)})
    fewer = held_columns(message_columns(table(), None, [(KEY, {**VALUE, "fields": FIELDS[:3]})]))
    no_newer_columns([mine], {"shop.orders": fewer})
    more = dict(held_columns(mine))
    more["value"] = [*more["value"], ["channel", "TEXT", True]]
    with pytest.raises(OutdatedDefinitionError, match=r"\['channel'\]"):
        no_newer_columns([mine], {"shop.orders": more})
    wider = dict(held_columns(mine))
    wider["value"] = [["id", "BIGINT", False], ["tiny", "INTEGER", True]]
    with pytest.raises(OutdatedDefinitionError, match=r"\['tiny'\]"):
        no_newer_columns([mine], {"shop.orders": wider})
    nullable = dict(held_columns(mine))
    nullable["value"] = [["amount", "NUMERIC(12,2)", True]]
    with pytest.raises(OutdatedDefinitionError, match=r"\['amount'\]"):
        no_newer_columns([mine], {"shop.orders": nullable})
    configured = dataclasses.replace(mine, columns=mine.columns[:1], columns_from_messages=False)
    no_newer_columns([configured], {"shop.orders": more})  # listed columns: not compared


def test_the_stored_state_keeps_the_columns_and_refuses_damaged_ones() -> None:
    held = held_columns(message_columns(table(), None, [(KEY, VALUE)]))
    state = StoredState(group="g", columns={"shop.orders": held})
    document = orjson.loads(orjson.dumps(state.to_json()))
    assert parse_state(document, "here", "g") == state
    assert "columns" not in StoredState(group="g").to_json()
    for damaged in (
        [],
        {"shop.orders": {"value": [["id", "BIGINT"]], "key": []}},
        {"shop.orders": {"value": [["id", 5, True]], "key": []}},
        {"shop.orders": {"value": []}},
    ):
        with pytest.raises(StoredStateError, match="stored columns"):
            parse_state({**document, "columns": damaged}, "here", "g")


def envelope(schema: Any, payload: Any) -> bytes:
    return orjson.dumps({"schema": schema, "payload": payload})


def test_the_watch_raises_once_per_schema_the_table_lacks_with_the_schemas_it_came_with() -> None:
    resolved = message_columns(table(), None, [(KEY, VALUE)])
    asked: list[Any] = []
    change = changes(resolved)

    def counted(schema: Any) -> str | None:
        asked.append(schema)
        return change(schema)

    watch = SchemaWatch({"orders": counted})
    assert watch.watches("orders") and not watch.watches("other")
    key = envelope(KEY, {"id": 1})
    for i in range(3):
        watch.check("orders", key, envelope(VALUE, {"id": i}))
    assert len(asked) == 1  # a schema held is checked once
    wider = {**VALUE, "fields": [*FIELDS, {"type": "string", "optional": True, "field": "x"}]}
    with pytest.raises(SchemaChangedError) as caught:
        watch.check("orders", key, envelope(wider, {"id": 4}))
    assert caught.value.carried == (KEY, wider)
    assert str(caught.value) == "orders: a Connect schema adds field 'x'"
    with pytest.raises(SchemaChangedError):  # still lacked: raised again
        watch.check("orders", None, envelope(wider, {"id": 5}))
    # Not for the watch to judge: bad bytes and schemaless envelopes are read as they are.
    for value in (b"not json", envelope(None, {"id": 1}), b"[1]"):
        watch.check("orders", None, value)


def test_a_table_of_several_topics_takes_the_schemas_met_on_any_of_them(tmp_path: Path) -> None:
    config = tmp_path / "sink.toml"
    config.write_text(
        '[kafka]\nbootstrap_servers = "broker:9092"\n'
        '[postgres]\nurl = "postgresql://sink@db:5432/sink"\n'
        '[[tables]]\nname = "orders"\ntopics = ["eu", "us"]\nvalue_format = "connect-json"\n'
        'key_format = "connect-json"\n'
    )
    settings = load_settings(config, {})
    carried = CarriedSchemas()
    assert carried.wanting(settings.tables, None) == ["eu", "us"]
    assert with_schema_columns(settings).tables[0].columns == ()
    carried.add("us", (KEY, VALUE))
    assert carried.wanting(settings.tables, None) == []
    (resolved,) = with_schema_columns(settings, {}, carried.seen).tables
    assert described(resolved) == TYPES
    wider = {**VALUE, "fields": [*FIELDS, {"type": "string", "optional": True, "field": "x"}]}
    carried.add("eu", (KEY, wider))  # a later schema on the other topic widens them
    (wider_table,) = with_schema_columns(settings, {}, carried.seen).tables
    assert described(wider_table) == [*TYPES, ("x", "TEXT", True)]
    held = {"public.orders": held_columns(resolved)}
    assert carried.wanting(settings.tables, StoredState(columns=held)) == []
    assert CarriedSchemas().wanting(settings.tables, StoredState(columns=held)) == []
    (from_state,) = with_schema_columns(settings, held, {}).tables
    assert from_state.columns == resolved.columns
