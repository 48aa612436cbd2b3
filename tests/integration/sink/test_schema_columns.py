"""Tables from schemas, against the real schema registry: a `[[tables]]` entry without columns
takes them from the topic's value schema (Avro, Protobuf, JSON Schema, as producers' serializers
registered them), and its primary key from the key schema; the worker creates the table with
those types and lands every message."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

from .harness import SinkProcess, produce
from .test_registry_formats import (
    ORDER_KEY_SCHEMA,
    ORDER_NAMES,
    ORDER_SCHEMA,
    _avro,
    _order,
    _registry_config,
    _rows,
    _run_to_end,
    registry,  # noqa: F401 - the fixture
)

UTC = timezone.utc
ROWS = 200


def _types(engine: sa.engine.Engine, schema: str) -> dict[str, tuple[str, bool]]:
    """Each column of schema.events: its type as PostgreSQL spells it, and NOT NULL."""
    with engine.connect() as conn:
        found = conn.execute(
            sa.text(
                "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
                "WHERE attrelid = to_regclass(:t) AND attnum > 0 AND NOT attisdropped "
                "ORDER BY attnum"
            ),
            {"t": f'"{schema}".events'},
        )
        return {name: (type_, not_null) for name, type_, not_null in found}


def _primary_key(engine: sa.engine.Engine, schema: str) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = "
                    "i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass(:t) "
                    "AND i.indisprimary"
                ),
                {"t": f'"{schema}".events'},
            ).scalars()
        )


def test_avro_key_and_value_schemas_give_the_columns_and_primary_key(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    schema_registry_url: str,
    registry: SchemaRegistryClient,  # noqa: F811 - the fixture
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic(partitions=3)
    key = _avro(registry, ORDER_KEY_SCHEMA, topic, MessageField.KEY)
    value = _avro(registry, ORDER_SCHEMA, topic, MessageField.VALUE)
    orders = [_order(i) for i in range(ROWS)]
    changed = {**orders[7], "note": "changed"}
    deleted = {5, 150}
    produce(kafka_bootstrap, topic, [(key({"id": o["id"]}), value(o)) for o in orders])
    produce(kafka_bootstrap, topic, [(key({"id": 7}), value(changed))])
    produce(kafka_bootstrap, topic, [(key({"id": i}), None) for i in sorted(deleted)])
    config = sink_config(
        [topic],
        schema,
        columns="",
        table_extra='key_format = "avro"\nvalue_format = "avro"\n',
        extra=_registry_config(schema_registry_url),
    )
    worker = start_sink(config)
    _run_to_end(engine, kafka_bootstrap, topic, schema, worker, partitions=3)
    assert _types(engine, schema) == {
        "id": ("bigint", True),
        "amount": ("numeric(12,2)", True),
        "big": ("numeric(30,10)", True),
        "placed_at": ("timestamp with time zone", True),
        "seen_at": ("timestamp with time zone", True),
        "day": ("date", True),
        "ref": ("uuid", True),
        "note": ("text", False),
        "score": ("double precision", False),
        "refund": ("numeric(12,2)", False),
        "tags": ("text[]", True),
    }
    assert _primary_key(engine, schema) == ["id"]
    orders[7] = changed  # upserted by the key; tombstones deleted by it
    expected = [tuple(o[name] for name in ORDER_NAMES) for o in orders if o["id"] not in deleted]
    assert _rows(engine, schema, ORDER_NAMES) == expected
    assert f"columns from {topic}-value: id BIGINT NOT NULL" in worker.output()


def _order_class() -> Any:
    """One message (with a nested type) in its own file, built at run time (no protoc)."""
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"columns_{uuid.uuid4().hex[:8]}.proto", package="columns", syntax="proto3"
    )
    proto.dependency.append("google/protobuf/timestamp.proto")
    order = proto.message_type.add(name="Order")
    line = order.nested_type.add(name="Line")
    line.field.add(name="sku", number=1, type=field.TYPE_STRING)
    add = order.field.add
    add(name="id", number=1, type=field.TYPE_INT64)
    add(name="name", number=2, type=field.TYPE_STRING)
    add(name="at", number=3, type=field.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp")
    add(name="tags", number=4, type=field.TYPE_STRING, label=field.LABEL_REPEATED)
    add(name="big", number=5, type=field.TYPE_UINT64)
    add(name="line", number=6, type=field.TYPE_MESSAGE, type_name=".columns.Order.Line")
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("columns.Order"))


def test_a_protobuf_value_schema_gives_the_columns(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    schema_registry_url: str,
    registry: SchemaRegistryClient,  # noqa: F811 - the fixture
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic()
    order = _order_class()
    serializer = ProtobufSerializer(order, registry, {"use.deprecated.format": False})
    context = SerializationContext(topic, MessageField.VALUE)
    messages, expected = [], []
    for i in range(1, ROWS + 1):
        message = order(id=i, name=f"n{i}", tags=[f"t{i}"], big=2**64 - i)
        message.at.FromMicroseconds(1_714_564_800_000_000 + i)
        message.line.sku = f"s{i}"
        messages.append((str(i).encode(), serializer(message, context)))
        at = datetime(2024, 5, 1, 12, 0, tzinfo=UTC) + timedelta(microseconds=i)
        expected.append((i, f"n{i}", at, [f"t{i}"], Decimal(2**64 - i), {"sku": f"s{i}"}))
    produce(kafka_bootstrap, topic, messages)
    config = sink_config(
        [topic],
        schema,
        primary_key=["id"],
        columns="",
        table_extra='value_format = "protobuf"\n',
        extra=_registry_config(schema_registry_url),
    )
    _run_to_end(engine, kafka_bootstrap, topic, schema, start_sink(config))
    assert _types(engine, schema) == {
        "id": ("bigint", True),
        "name": ("text", False),
        "at": ("timestamp with time zone", False),
        "tags": ("text[]", False),
        "big": ("numeric(20,0)", False),
        "line": ("jsonb", False),
    }
    names = ["id", "name", "at", "tags", "big", "line"]
    assert _rows(engine, schema, names) == expected


JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Reading",
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "sensor": {"type": "string"},
        "at": {"type": "string", "format": "date-time"},
        "value": {"type": ["number", "null"]},
        "attrs": {"type": "object"},
    },
    "required": ["id", "sensor", "at"],
}


def test_a_json_schema_value_schema_gives_the_columns(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    schema_registry_url: str,
    registry: SchemaRegistryClient,  # noqa: F811 - the fixture
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic()
    serializer = JSONSerializer(json.dumps(JSON_SCHEMA), registry)
    context = SerializationContext(topic, MessageField.VALUE)
    messages, expected = [], []
    for i in range(1, ROWS + 1):
        at = f"2024-05-01T12:00:{i % 60:02d}+00:00"
        reading = {"id": i, "sensor": f"s{i % 3}", "at": at, "value": i / 4, "attrs": {"i": i}}
        messages.append((str(i).encode(), serializer(reading, context)))
        expected.append((i, f"s{i % 3}", datetime.fromisoformat(at), i / 4, {"i": i}))
    produce(kafka_bootstrap, topic, messages)
    config = sink_config(
        [topic],
        schema,
        primary_key=["id"],
        columns="",
        table_extra='value_format = "json-schema"\n',
        extra=_registry_config(schema_registry_url),
    )
    _run_to_end(engine, kafka_bootstrap, topic, schema, start_sink(config))
    assert _types(engine, schema) == {
        "id": ("bigint", True),
        "sensor": ("text", True),
        "at": ("timestamp with time zone", True),
        "value": ("double precision", False),
        "attrs": ("jsonb", False),
    }
    assert _rows(engine, schema, ["id", "sensor", "at", "value", "attrs"]) == expected
