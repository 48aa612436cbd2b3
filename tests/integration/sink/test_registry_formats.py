"""Schema-carrying topics: Avro, Protobuf and JSON Schema values in the Confluent wire format,
produced with confluent-kafka's serializers against the real schema registry (Apicurio's
Confluent-compatible API), land in PostgreSQL exactly; bad bytes are dead letters with a reason
under each errors.policy; an unreachable registry is retried, never a dead letter."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

from .harness import SinkProcess, log_end_offsets, produce, stored_offsets, wait_until
from .test_exactly_once import count_rows

UTC = timezone.utc
ROWS = 300

ORDER_KEY_SCHEMA = {
    "type": "record",
    "name": "OrderKey",
    "namespace": "sinktest",
    "fields": [{"name": "id", "type": "long"}],
}
ORDER_SCHEMA = {
    "type": "record",
    "name": "Order",
    "namespace": "sinktest",
    "fields": [
        {"name": "id", "type": "long"},
        {
            "name": "amount",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
        },
        {
            "name": "big",
            "type": {
                "type": "fixed",
                "name": "Big",
                "size": 16,
                "logicalType": "decimal",
                "precision": 30,
                "scale": 10,
            },
        },
        {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "seen_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "score", "type": ["null", "double"], "default": None},
        {
            "name": "refund",
            "type": [
                "null",
                {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
            ],
            "default": None,
        },
        {"name": "tags", "type": {"type": "array", "items": "string"}},
    ],
}
ORDER_COLUMNS = """
[[tables.columns]]
name = "id"
type = "BIGINT"
[[tables.columns]]
name = "amount"
type = "NUMERIC(12,2)"
[[tables.columns]]
name = "big"
type = "NUMERIC(30,10)"
[[tables.columns]]
name = "placed_at"
type = "TIMESTAMPTZ"
[[tables.columns]]
name = "seen_at"
type = "TIMESTAMPTZ"
[[tables.columns]]
name = "day"
type = "DATE"
[[tables.columns]]
name = "ref"
type = "UUID"
[[tables.columns]]
name = "note"
type = "TEXT"
[[tables.columns]]
name = "score"
type = "DOUBLE PRECISION"
[[tables.columns]]
name = "refund"
type = "NUMERIC(12,2)"
[[tables.columns]]
name = "tags"
type = "TEXT[]"
"""
ORDER_NAMES = [field["name"] for field in ORDER_SCHEMA["fields"]]  # type: ignore[index]


def _order(i: int) -> dict[str, Any]:
    """The i-th order: every logical type, the nullable fields null on every third."""
    base = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    return {
        "id": i,
        "amount": Decimal(f"{i * 37 % 100000}.{i % 100:02d}"),
        "big": Decimal(f"{i}12345678901234567.{i % 10}123456789"),
        "placed_at": base + timedelta(milliseconds=i * 1001),
        "seen_at": base + timedelta(microseconds=i * 1_000_003),
        "day": date(2024, 1, 1) + timedelta(days=i),
        "ref": uuid.UUID(int=i * 7919 + 1),
        "note": None if i % 3 == 0 else f"order {i} ünïcode",
        "score": None if i % 3 == 1 else i / 7,
        "refund": None if i % 3 == 2 else Decimal(f"-{i % 1000}.5{i % 10}"),
        "tags": [f"t{i % 4}", "x"],
    }


def _rows(engine: sa.engine.Engine, schema: str, names: list[str]) -> list[tuple[Any, ...]]:
    columns = ", ".join(f'"{name}"' for name in names)
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(sa.text(f'SELECT {columns} FROM "{schema}".events ORDER BY id'))
        ]


def _registry_config(url: str, policy: str = "fail", where: str = "") -> str:
    errors = f'[errors]\npolicy = "{policy}"\n{where}' if policy != "fail" else ""
    return f'[schema_registry]\nurl = "{url}"\n{errors}'


@pytest.fixture
def registry(schema_registry_url: str) -> Iterator[SchemaRegistryClient]:
    """The producers' registry client: serializers register their schemas through it."""
    with SchemaRegistryClient({"url": schema_registry_url}) as client:
        yield client


def _avro(registry: SchemaRegistryClient, schema: dict[str, Any], topic: str, field: Any) -> Any:
    serializer = AvroSerializer(registry, json.dumps(schema))
    return lambda value: serializer(value, SerializationContext(topic, field))


def test_avro_values_land_exactly_with_logical_types_and_keys_delete_by_tombstone(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    schema_registry_url: str,
    registry: SchemaRegistryClient,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic(partitions=3)
    key = _avro(registry, ORDER_KEY_SCHEMA, topic, MessageField.KEY)
    value = _avro(registry, ORDER_SCHEMA, topic, MessageField.VALUE)
    orders = [_order(i) for i in range(ROWS)]
    deleted = {5, 6, 150}
    produce(kafka_bootstrap, topic, [(key({"id": o["id"]}), value(o)) for o in orders])
    produce(kafka_bootstrap, topic, [(key({"id": i}), None) for i in sorted(deleted)])
    config = sink_config(
        [topic],
        schema,
        primary_key=["id"],
        columns=ORDER_COLUMNS,
        table_extra='key_format = "avro"\nvalue_format = "avro"\n',
        extra=_registry_config(schema_registry_url),
    )
    worker = start_sink(config)
    ends = log_end_offsets(kafka_bootstrap, topic, 3)

    def caught_up() -> bool:
        assert worker.running(), worker.output()[-3000:]
        stored = stored_offsets(engine, schema).get(topic, {})
        return all(stored.get(str(p)) == end for p, end in ends.items())

    wait_until(caught_up, 120, "every Avro message committed")
    assert worker.terminate() == 0, worker.output()[-2000:]
    expected = [tuple(o[name] for name in ORDER_NAMES) for o in orders if o["id"] not in deleted]
    assert _rows(engine, schema, ORDER_NAMES) == expected
    assert "messages take the general path" in worker.messages()


ORDER_V2_SCHEMA = {
    **ORDER_SCHEMA,
    "fields": [
        *ORDER_SCHEMA["fields"],  # type: ignore[misc]
        {"name": "channel", "type": ["null", "string"], "default": None},
    ],
}


def test_avro_values_of_a_schema_and_its_next_version_land_exactly_through_the_native_path(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    schema_registry_url: str,
    registry: SchemaRegistryClient,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic()
    v1 = _avro(registry, ORDER_SCHEMA, topic, MessageField.VALUE)
    v2 = _avro(registry, ORDER_V2_SCHEMA, topic, MessageField.VALUE)
    orders = [_order(i) for i in range(ROWS)]
    for order in orders[ROWS // 2 :]:
        order["channel"] = None if order["id"] % 5 == 0 else f"web\t{order['id']} ünï"
    messages = [(str(o["id"]).encode(), v1(o) if "channel" not in o else v2(o)) for o in orders]
    produce(kafka_bootstrap, topic, messages)
    config = sink_config(
        [topic],
        schema,
        primary_key=["id"],
        columns=ORDER_COLUMNS + '[[tables.columns]]\nname = "channel"\ntype = "TEXT"\n',
        table_extra='value_format = "avro"\n',
        extra=_registry_config(schema_registry_url),
    )
    worker = start_sink(config)
    _run_to_end(engine, kafka_bootstrap, topic, schema, worker)
    names = [*ORDER_NAMES, "channel"]
    expected = [tuple(o.get(name) for name in names) for o in orders]
    assert _rows(engine, schema, names) == expected
    log = worker.messages()
    # Each schema id's first message takes the general way (fetched, checked), then the rest
    # go natively: the test fails if they silently took the general way.
    assert len(re.findall(r"schema id \d+ go straight to COPY text \(native\)", log)) == 2
    native = re.search(r"(\d+) rows came natively from Avro values", log)
    assert native is not None, log[-3000:]
    assert int(native.group(1)) >= ROWS - 2


# --- Protobuf ---------------------------------------------------------------------------------


def _protobuf_classes() -> tuple[Any, Any]:
    """Two messages in one file, built at run time (no protoc): `Other`, then `Order`, so that
    an Order's wire format carries the message index [1]."""
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"sinktest_{uuid.uuid4().hex[:8]}.proto", package="sinktest", syntax="proto3"
    )
    proto.dependency.append("google/protobuf/timestamp.proto")
    other = proto.message_type.add(name="Other")
    other.field.add(name="x", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    order = proto.message_type.add(name="Order")
    status = order.enum_type.add(name="Status")
    for number, name in enumerate(["NEW", "PAID", "SHIPPED"]):
        status.value.add(name=name, number=number)
    line = order.nested_type.add(name="Line")
    line.field.add(name="sku", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    line.field.add(name="qty", number=2, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    add = order.field.add
    add(name="id", number=1, type=field.TYPE_INT64, label=field.LABEL_OPTIONAL)
    add(name="name", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    add(
        name="placed_at",
        number=3,
        type=field.TYPE_MESSAGE,
        type_name=".google.protobuf.Timestamp",
        label=field.LABEL_OPTIONAL,
    )
    add(
        name="status",
        number=4,
        type=field.TYPE_ENUM,
        type_name=".sinktest.Order.Status",
        label=field.LABEL_OPTIONAL,
    )
    order.oneof_decl.add(name="_note")
    add(
        name="note",
        number=5,
        type=field.TYPE_STRING,
        label=field.LABEL_OPTIONAL,
        proto3_optional=True,
        oneof_index=0,
    )
    add(name="tags", number=6, type=field.TYPE_STRING, label=field.LABEL_REPEATED)
    add(name="blob", number=7, type=field.TYPE_BYTES, label=field.LABEL_OPTIONAL)
    add(
        name="lines",
        number=8,
        type=field.TYPE_MESSAGE,
        type_name=".sinktest.Order.Line",
        label=field.LABEL_REPEATED,
    )
    add(name="big", number=9, type=field.TYPE_UINT64, label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    get = message_factory.GetMessageClass
    return get(pool.FindMessageTypeByName("sinktest.Other")), get(
        pool.FindMessageTypeByName("sinktest.Order")
    )


PROTOBUF_COLUMNS = """
[[tables.columns]]
name = "id"
type = "BIGINT"
[[tables.columns]]
name = "name"
type = "TEXT"
[[tables.columns]]
name = "placed_at"
type = "TIMESTAMPTZ"
[[tables.columns]]
name = "status"
type = "TEXT"
[[tables.columns]]
name = "note"
type = "TEXT"
[[tables.columns]]
name = "tags"
type = "TEXT[]"
[[tables.columns]]
name = "blob"
type = "BYTEA"
[[tables.columns]]
name = "lines"
type = "JSONB"
[[tables.columns]]
name = "big"
type = "NUMERIC(20,0)"
"""


def _run_to_end(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    topic: str,
    schema: str,
    worker: SinkProcess,
    partitions: int = 1,
) -> None:
    ends = log_end_offsets(kafka_bootstrap, topic, partitions)

    def caught_up() -> bool:
        assert worker.running(), worker.output()[-3000:]
        stored = stored_offsets(engine, schema).get(topic, {})
        return all(stored.get(str(p)) == end for p, end in ends.items())

    wait_until(caught_up, 120, "every message committed")
    assert worker.terminate() == 0, worker.output()[-2000:]


def test_protobuf_values_land_by_field_name_from_a_message_index_past_the_first(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    schema_registry_url: str,
    registry: SchemaRegistryClient,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic()
    _, order = _protobuf_classes()
    serializer = ProtobufSerializer(order, registry, {"use.deprecated.format": False})
    context = SerializationContext(topic, MessageField.VALUE)
    expected = []
    messages = []
    for i in range(1, ROWS + 1):
        message = order(
            id=i, name=f"n{i}", status=i % 3, tags=[f"t{i}", "x"], blob=bytes([i % 256, 0])
        )
        message.placed_at.FromMicroseconds(1_714_564_800_000_000 + i * 1_000_001)
        if i % 2:
            message.note = ""  # set, though empty: presence says so
        line = message.lines.add(sku=f"s{i}", qty=i)
        del line
        message.big = 2**64 - i
        messages.append((str(i).encode(), serializer(message, context)))
        expected.append(
            (
                i,
                f"n{i}",
                datetime(2024, 5, 1, 12, 0, tzinfo=UTC) + timedelta(microseconds=i * 1_000_001),
                ["NEW", "PAID", "SHIPPED"][i % 3],
                "" if i % 2 else None,
                [f"t{i}", "x"],
                bytes([i % 256, 0]),
                [{"sku": f"s{i}", "qty": i}],
                Decimal(2**64 - i),
            )
        )
    # The message index [1] (Order, the file's second message) follows the schema id.
    assert messages[0][1][5:7] == b"\x02\x02"  # zigzag varints: one index, then 1
    produce(kafka_bootstrap, topic, messages)
    config = sink_config(
        [topic],
        schema,
        primary_key=["id"],
        columns=PROTOBUF_COLUMNS,
        table_extra='value_format = "protobuf"\n',
        extra=_registry_config(schema_registry_url),
    )
    _run_to_end(engine, kafka_bootstrap, topic, schema, start_sink(config))
    names = ["id", "name", "placed_at", "status", "note", "tags", "blob", "lines", "big"]
    assert _rows(engine, schema, names) == expected


# --- JSON Schema ------------------------------------------------------------------------------

JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Reading",
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "sensor": {"type": "string", "maxLength": 20},
        "value": {"type": "number"},
        "at": {"type": "string"},
        "counter": {"type": "integer"},
        "attrs": {"type": "object"},
    },
    "required": ["id", "sensor", "value"],
}
JSON_SCHEMA_COLUMNS = """
[[tables.columns]]
name = "id"
type = "BIGINT"
[[tables.columns]]
name = "sensor"
type = "TEXT"
[[tables.columns]]
name = "value"
type = "NUMERIC"
[[tables.columns]]
name = "at"
type = "TIMESTAMPTZ"
[[tables.columns]]
name = "counter"
type = "NUMERIC(30,0)"
[[tables.columns]]
name = "attrs"
type = "JSONB"
"""


def _json_serializer(registry: SchemaRegistryClient, topic: str) -> Callable[[Any], bytes]:
    serializer = JSONSerializer(json.dumps(JSON_SCHEMA), registry)
    context = SerializationContext(topic, MessageField.VALUE)
    return lambda value: serializer(value, context)  # type: ignore[no-any-return]


def test_json_schema_values_land_with_every_digit_as_written(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    schema_registry_url: str,
    registry: SchemaRegistryClient,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    """Half the values come from confluent-kafka's JSONSerializer; the other half are written
    by hand after its header (as a producer in another language would), with numbers no double
    holds: 21 significant digits, and an integer beyond 64 bits."""
    topic = new_topic()
    serialize = _json_serializer(registry, topic)
    header = serialize({"id": 0, "sensor": "s", "value": 0})[:5]
    messages: list[tuple[bytes | None, bytes | None]] = []
    expected = []
    for i in range(1, ROWS + 1):
        at = f"2024-05-01T12:00:{i % 60:02d}.5+02:00"
        attrs = {"i": i, "deep": {"ok": True}}
        if i % 2:
            reading = {"id": i, "sensor": f"s{i % 5}", "value": i + 0.25, "at": at}
            data = serialize({**reading, "counter": 2**62 + i, "attrs": attrs})
            value, counter = Decimal(f"{i}.25"), Decimal(2**62 + i)
        else:
            digits = f"{i}.{'1234567890' * 2}"
            data = (
                header
                + (
                    f'{{"id": {i}, "sensor": "s{i % 5}", "value": {digits}, "at": "{at}", '
                    f'"counter": {10**22 + i}, "attrs": {{"i": {i}, "deep": {{"ok": true}}}}}}'
                ).encode()
            )
            value, counter = Decimal(digits), Decimal(10**22 + i)
        messages.append((str(i).encode(), data))
        moment = datetime.fromisoformat(at).astimezone(UTC)
        expected.append((i, f"s{i % 5}", value, moment, counter, attrs))
    produce(kafka_bootstrap, topic, messages)
    config = sink_config(
        [topic],
        schema,
        primary_key=["id"],
        columns=JSON_SCHEMA_COLUMNS,
        table_extra='value_format = "json-schema"\n',
        extra=_registry_config(schema_registry_url),
    )
    _run_to_end(engine, kafka_bootstrap, topic, schema, start_sink(config))
    assert _rows(engine, schema, ["id", "sensor", "value", "at", "counter", "attrs"]) == expected


# --- bad input ------------------------------------------------------------------------------


def _bad_avro_stream(
    registry: SchemaRegistryClient, topic: str
) -> tuple[list[tuple[bytes | None, bytes | None]], list[str]]:
    """Good Avro orders with bad values among them; the codes the bad ones must get."""
    value = _avro(registry, ORDER_SCHEMA, topic, MessageField.VALUE)
    good = [value(_order(i)) for i in range(100)]
    other = _protobuf_classes()[1]
    protobuf = ProtobufSerializer(other, registry, {"use.deprecated.format": False})
    wrong_kind = protobuf(other(id=1), SerializationContext(f"{topic}-pb", MessageField.VALUE))
    bad = [
        (b'{"id": 1}', "magic-byte"),  # JSON where Avro was expected
        (b"\x00\x00\x00", "magic-byte"),  # shorter than the header
        (b"\x00" + (10**9).to_bytes(4, "big") + good[0][5:], "unknown-schema"),
        (good[1][:-3], "not-avro"),  # cut short
        (good[2] + b"\x02\x04", "not-avro"),  # bytes left after the value
        (wrong_kind, "schema-type"),  # a Protobuf schema's id
    ]
    stream: list[tuple[bytes | None, bytes | None]] = []
    codes: list[str] = []
    for i, data in enumerate(good):
        stream.append((str(i).encode(), data))
        if i % 15 == 7:
            payload, code = bad[len(codes) % len(bad)]
            stream.append((b"bad", payload))
            codes.append(code)
    return stream, codes


def test_bad_avro_values_go_to_the_dead_letter_topic_with_their_reason(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    schema_registry_url: str,
    registry: SchemaRegistryClient,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic, dlq = new_topic(), new_topic()
    stream, codes = _bad_avro_stream(registry, topic)
    assert set(codes) == {"magic-byte", "unknown-schema", "not-avro", "schema-type"}
    produce(kafka_bootstrap, topic, stream)
    config = sink_config(
        [topic],
        schema,
        primary_key=["id"],
        columns=ORDER_COLUMNS,
        table_extra='value_format = "avro"\n',
        extra=_registry_config(
            schema_registry_url, "dead-letter-topic", f'dead_letter_topic = "{dlq}"\n'
        ),
    )
    _run_to_end(engine, kafka_bootstrap, topic, schema, start_sink(config))
    assert count_rows(engine, schema) == 100
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([dlq])
    letters: list[Any] = []
    try:
        while len(letters) < len(codes):
            batch = consumer.consume(100, 10)
            assert batch, f"only {len(letters)} of {len(codes)} dead letters read back"
            letters.extend(m for m in batch if m.error() is None)
    finally:
        consumer.close()
    headers = [dict(m.headers()) for m in letters]
    assert [h["dlq.error.code"].decode() for h in headers] == codes
    sent = [value for key, value in stream if key == b"bad"]
    assert [m.value() for m in letters] == sent  # the bytes as they were, for a replay
    reasons = [h["dlq.error.reason"].decode() for h in headers]
    assert all(f"{schema}.events" in reason for reason in reasons)
    assert "first byte is 0x7b" in reasons[0] and "schema id 1000000000" in reasons[2]


def _bad_values(
    fmt: str, registry: SchemaRegistryClient, topic: str
) -> tuple[list[tuple[bytes | None, bytes | None]], list[str], str]:
    """(key, value) pairs of good and bad values of `fmt`, the bad ones' codes, the columns."""
    if fmt == "avro":
        stream, codes = _bad_avro_stream(registry, topic)
        return stream, codes, ORDER_COLUMNS
    if fmt == "protobuf":
        _, order = _protobuf_classes()
        serializer = ProtobufSerializer(order, registry, {"use.deprecated.format": False})
        context = SerializationContext(topic, MessageField.VALUE)
        good = serializer(order(id=1, name="one"), context)
        header = good[:7]  # magic, schema id, the message index [1]
        bad = [
            (header + b"\x0a\xff\xff", "not-protobuf"),  # a string longer than the bytes
            (good[:5] + b"\x02\x0a", "not-protobuf"),  # message index 5: no such message
            (b"\x01" + good[1:], "magic-byte"),
        ]
        stream = [(b"1", good), *[(b"bad", data) for data, _ in bad]]
        stream.append((b"2", serializer(order(id=2, name="two"), context)))
        return stream, [code for _, code in bad], PROTOBUF_COLUMNS
    serialize = _json_serializer(registry, topic)
    good = serialize({"id": 1, "sensor": "a", "value": 1.5})
    bad = [
        (good[:5] + b'{"id": 2, "sensor": "b"}', "schema-mismatch"),  # no "value"
        (good[:5] + b'{"id": 3, "sensor": "b", "value": "high"}', "schema-mismatch"),
        (good[:5] + b"{not json", "not-json"),
    ]
    stream = [(b"1", good), *[(b"bad", data) for data, _ in bad]]
    stream.append((b"4", serialize({"id": 4, "sensor": "d", "value": 4})))
    return stream, [code for _, code in bad], JSON_SCHEMA_COLUMNS


@pytest.mark.parametrize("fmt", ["avro", "protobuf", "json-schema"])
def test_bad_values_go_to_the_dead_letter_table_in_the_batch_transaction(
    fmt: str,
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    schema_registry_url: str,
    registry: SchemaRegistryClient,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic()
    stream, codes, columns = _bad_values(fmt, registry, topic)
    produce(kafka_bootstrap, topic, stream)
    config = sink_config(
        [topic],
        schema,
        primary_key=["id"],
        columns=columns,
        table_extra=f'value_format = "{fmt}"\n',
        extra=_registry_config(
            schema_registry_url, "dead-letter-table", f'dead_letter_table = "{schema}.dead"\n'
        ),
    )
    _run_to_end(engine, kafka_bootstrap, topic, schema, start_sink(config))
    assert count_rows(engine, schema) == len(stream) - len(codes)
    with engine.connect() as conn:
        letters = conn.execute(
            sa.text(f'SELECT "offset", error_code, error, value FROM "{schema}".dead ORDER BY 1')
        ).all()
    bad_offsets = [offset for offset, (key, _) in enumerate(stream) if key == b"bad"]
    assert [(o, code) for o, code, _, _ in letters] == list(zip(bad_offsets, codes))
    assert [value for *_, value in letters] == [stream[o][1] for o in bad_offsets]
    assert all(f"{topic}[0]@{o}" in error for o, _, error, _ in letters)


def test_the_fail_policy_stops_at_a_value_that_does_not_read_naming_it(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    schema_registry_url: str,
    registry: SchemaRegistryClient,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic()
    value = _avro(registry, ORDER_SCHEMA, topic, MessageField.VALUE)
    good = [(str(i).encode(), value(_order(i))) for i in range(40)]
    unknown = b"\x00" + (10**9 + 1).to_bytes(4, "big") + good[0][1][5:]
    produce(kafka_bootstrap, topic, [*good[:20], (b"bad", unknown), *good[20:]])
    config = sink_config(
        [topic],
        schema,
        primary_key=["id"],
        columns=ORDER_COLUMNS,
        table_extra='value_format = "avro"\n',
        extra=_registry_config(schema_registry_url),
        max_messages=10,
    )
    worker = start_sink(config)
    assert worker.exit_code() == 2
    output = worker.messages()
    assert f"{topic}[0]@20" in output
    assert "schema id 1000000001" in output and "does not hold" in output
    assert stored_offsets(engine, schema)[topic] == {"0": 20}
    assert count_rows(engine, schema) == 20


# --- an unreachable registry ------------------------------------------------------------------


class _Forwarder:
    """A TCP port that forwards to the registry once `open()` is called: before, nothing
    listens there (connection refused), as when the registry is down. While `refused` is set,
    a connection that sends it (a request for such a path) is cut before it reaches the
    registry."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._server: socket.socket | None = None
        self.refused: bytes | None = None
        self.cuts = 0

    def open(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b, check in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(a, b, check), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, check: bool) -> None:
        try:
            while data := source.recv(65536):
                if check and self.refused is not None and self.refused in data:
                    self.cuts += 1
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


@pytest.fixture
def registry_later(schema_registry_url: str) -> Iterator[_Forwarder]:
    host_port = schema_registry_url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    forwarder = _Forwarder((host, int(port)))
    yield forwarder
    forwarder.close()


def test_an_unreachable_registry_is_retried_and_never_makes_a_dead_letter(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    schema_registry_url: str,
    registry: SchemaRegistryClient,
    registry_later: _Forwarder,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic()
    value = _avro(registry, ORDER_SCHEMA, topic, MessageField.VALUE)
    produce(kafka_bootstrap, topic, [(str(i).encode(), value(_order(i))) for i in range(50)])
    path = schema_registry_url.split("//", 1)[1].split("/", 1)[1]
    config = sink_config(
        [topic],
        schema,
        primary_key=["id"],
        columns=ORDER_COLUMNS,
        table_extra='value_format = "avro"\n',
        extra=_registry_config(
            f"http://127.0.0.1:{registry_later.port}/{path}",
            "dead-letter-table",
            f'dead_letter_table = "{schema}.dead"\n',
        ),
    )
    worker = start_sink(config)
    wait_until(
        lambda: worker.messages().count("is unreachable") >= 2, 60, "two retries of the batch"
    )
    assert worker.running(), worker.output()[-3000:]
    assert "batch abandoned, retrying" in worker.messages()
    assert count_rows(engine, schema) == 0
    assert count_rows(engine, schema, "dead") == 0
    port = int(re.findall(r"on port (\d+)", worker.messages())[0])
    with pytest.raises(urllib.error.HTTPError) as unready:  # 503, naming the cause
        urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
    assert "is unreachable" in unready.value.read().decode()
    registry_later.open()
    _run_to_end(engine, kafka_bootstrap, topic, schema, worker)
    assert count_rows(engine, schema) == 50
    assert count_rows(engine, schema, "dead") == 0
    assert Counter(stored_offsets(engine, schema)[topic].values()) == Counter({50: 1})
