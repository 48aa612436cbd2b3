"""Schema evolution while running, against the real schema registry: a table whose columns come
from its topic's schemas takes a new version of the value schema (a field added, a type widened,
a field left out) without a restart. The batch before the first message of the new version
commits, the worker derives the columns again from every version registered, the next batch
migrates the table, and no message is lost or written twice."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from .harness import SinkProcess, produce, stored_offsets, wait_until
from .test_registry_formats import (
    _avro,
    _Forwarder,
    _registry_config,
    _rows,
    _run_to_end,
    registry,  # noqa: F401 - the fixture
    registry_later,  # noqa: F401 - the fixture
)
from .test_schema_columns import _types


def _record(*fields: tuple[str, Any]) -> dict[str, Any]:
    return {
        "type": "record",
        "name": "Reading",
        "fields": [
            {"name": name, "type": kind, **({"default": None} if isinstance(kind, list) else {})}
            for name, kind in fields
        ],
    }


V1 = _record(("id", "long"), ("qty", "int"), ("site", "string"))
# Widens qty, adds a nullable note, leaves site out.
V2 = _record(("id", "long"), ("qty", "long"), ("note", ["null", "string"]))
# Adds a probe, later, while the worker is idle.
V3 = _record(("id", "long"), ("qty", "long"), ("note", ["null", "string"]), ("probe", "double"))


def _all_rows(engine: sa.engine.Engine, schema: str, names: list[str]) -> list[tuple[Any, ...]]:
    columns = ", ".join(names)
    with engine.connect() as conn:
        query = f'SELECT {columns} FROM "{schema}".events ORDER BY id'
        return [tuple(row) for row in conn.execute(sa.text(query))]


def _count(engine: sa.engine.Engine, schema: str) -> int:
    """The rows of schema.events; 0 before the worker made it."""
    with engine.connect() as conn:
        if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f'"{schema}".events'}).scalar():
            return int(conn.execute(sa.text(f'SELECT count(*) FROM "{schema}".events')).scalar())
        return 0


def _config(
    sink_config: Callable[..., Path],
    topic: str,
    schema: str,
    registry_url: str,
    value_format: str,
    primary_key: list[str] | None = None,
) -> Path:
    """A table without columns: they come from the topic's value schemas."""
    return sink_config(
        [topic],
        schema,
        primary_key=primary_key,
        columns="",
        table_extra=f'value_format = "{value_format}"\n',
        extra=_registry_config(registry_url),
    )


def _wait_rows(engine: sa.engine.Engine, schema: str, worker: SinkProcess, count: int) -> None:
    def landed() -> bool:
        assert worker.running(), worker.output()[-3000:]
        return _count(engine, schema) >= count

    wait_until(landed, 120, f"{count} rows")


def test_new_avro_schema_versions_migrate_the_table_live_without_a_row_lost_or_repeated(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    schema_registry_url: str,
    registry: SchemaRegistryClient,  # noqa: F811 - the fixture
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic(partitions=2)
    v1, v2, v3 = (_avro(registry, s, topic, MessageField.VALUE) for s in (V1, V2, V3))

    def key(i: int) -> bytes:
        return str(i).encode()

    # Append only (no primary key): a message written twice would be a second row.
    config = _config(sink_config, topic, schema, schema_registry_url, "avro")
    v1_rows = [(key(i), v1({"id": i, "qty": i, "site": f"s{i}"})) for i in range(300)]
    produce(kafka_bootstrap, topic, v1_rows)
    worker = start_sink(config)
    _wait_rows(engine, schema, worker, 300)
    # Live: version 1 from a producer, then version 2 from another, in one go: a batch holds
    # the first when it meets the second.
    produce(
        kafka_bootstrap,
        topic,
        [(key(i), v1({"id": i, "qty": i, "site": f"s{i}"})) for i in range(300, 400)]
        + [(key(i), v2({"id": i, "qty": 2**40 + i, "note": f"n{i}"})) for i in range(400, 700)],
    )
    _wait_rows(engine, schema, worker, 700)
    assert _types(engine, schema) == {
        "id": ("bigint", True),
        "qty": ("bigint", True),
        "site": ("text", False),
        "note": ("text", False),
    }
    # Live: version 3 while the worker waits for messages.
    produce(
        kafka_bootstrap,
        topic,
        [(key(i), v3({"id": i, "qty": i, "note": None, "probe": i / 4})) for i in range(700, 800)],
    )
    _wait_rows(engine, schema, worker, 800)
    assert _types(engine, schema)["probe"] == ("double precision", False)
    rows = _all_rows(engine, schema, ["id", "qty", "site", "note", "probe"])
    expected = (
        [(i, i, f"s{i}", None, None) for i in range(400)]
        + [(i, 2**40 + i, None, f"n{i}", None) for i in range(400, 700)]
        + [(i, i, None, None, i / 4) for i in range(700, 800)]
    )
    assert rows == expected
    output = worker.output()
    assert worker.running(), output[-3000:]  # the same process throughout: no restart
    assert output.count("derived from the topics' schemas replaces") == 2, output[-5000:]
    assert worker.terminate() == 0, output[-2000:]


def _reading_class(file_name: str, *extra: tuple[str, int]) -> Any:
    """Version 1 of a Protobuf message (id, name), or a later one with `extra` int64 fields."""
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name=file_name, package="evolve", syntax="proto3")
    message = proto.message_type.add(name="Reading")
    message.field.add(name="id", number=1, type=field.TYPE_INT64)
    message.field.add(name="name", number=2, type=field.TYPE_STRING)
    for number, (name, kind) in enumerate(extra, 3):
        message.field.add(name=name, number=number, type=kind)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("evolve.Reading"))


def test_a_new_protobuf_schema_version_adds_its_field_as_a_column_live(
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
    file_name = f"{topic}.proto"
    v1 = _reading_class(file_name)
    v2 = _reading_class(file_name, ("score", descriptor_pb2.FieldDescriptorProto.TYPE_INT64))
    context = SerializationContext(topic, MessageField.VALUE)
    options = {"use.deprecated.format": False}
    first = ProtobufSerializer(v1, registry, options)
    second = ProtobufSerializer(v2, registry, options)
    produce(
        kafka_bootstrap,
        topic,
        [(str(i).encode(), first(v1(id=i, name=f"n{i}"), context)) for i in range(100)],
    )
    config = _config(
        sink_config, topic, schema, schema_registry_url, "protobuf", primary_key=["id"]
    )
    worker = start_sink(config)
    _wait_rows(engine, schema, worker, 100)
    # Live: version 2 registered and produced while the worker runs.
    produce(
        kafka_bootstrap,
        topic,
        [
            (str(i).encode(), second(v2(id=i, name=f"n{i}", score=-i), context))
            for i in range(100, 200)
        ],
    )
    _run_to_end(engine, kafka_bootstrap, topic, schema, worker)
    assert _types(engine, schema) == {
        "id": ("bigint", True),
        "name": ("text", False),
        "score": ("bigint", False),
    }
    # Rows written before the column came have it NULL.
    expected = [(i, f"n{i}", None) for i in range(100)]
    expected += [(i, f"n{i}", -i) for i in range(100, 200)]
    assert _rows(engine, schema, ["id", "name", "score"]) == expected
    assert "derived from the topics' schemas replaces" in worker.output()


def _json_schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Reading",
        "type": "object",
        "properties": properties,
        "required": required,
    }


JSON_V1 = _json_schema({"id": {"type": "integer"}, "sensor": {"type": "string"}}, ["id", "sensor"])
# Makes sensor optional and adds a number.
JSON_V2 = _json_schema(
    {"id": {"type": "integer"}, "sensor": {"type": "string"}, "value": {"type": "number"}}, ["id"]
)


def test_a_new_json_schema_version_adds_a_column_and_makes_one_nullable_live(
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
    context = SerializationContext(topic, MessageField.VALUE)
    first = JSONSerializer(json.dumps(JSON_V1), registry)
    second = JSONSerializer(json.dumps(JSON_V2), registry)
    produce(
        kafka_bootstrap,
        topic,
        [(str(i).encode(), first({"id": i, "sensor": f"s{i}"}, context)) for i in range(100)],
    )
    config = _config(
        sink_config, topic, schema, schema_registry_url, "json-schema", primary_key=["id"]
    )
    worker = start_sink(config)
    _wait_rows(engine, schema, worker, 100)
    # Live: version 2 registered and produced while the worker runs.
    produce(
        kafka_bootstrap,
        topic,
        [(str(i).encode(), second({"id": i, "value": i / 2}, context)) for i in range(100, 200)],
    )
    _run_to_end(engine, kafka_bootstrap, topic, schema, worker)
    assert _types(engine, schema) == {
        "id": ("bigint", True),
        "sensor": ("text", False),
        "value": ("double precision", False),
    }
    expected = [(i, f"s{i}", None) for i in range(100)] + [
        (i, None, i / 2) for i in range(100, 200)
    ]
    assert _rows(engine, schema, ["id", "sensor", "value"]) == expected
    assert "derived from the topics' schemas replaces" in worker.output()


def test_workers_of_a_group_that_meet_a_newer_definition_derive_it_instead_of_waiting(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    schema_registry_url: str,
    registry: SchemaRegistryClient,  # noqa: F811 - the fixture
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic(partitions=2)
    v1, v2 = (_avro(registry, s, topic, MessageField.VALUE) for s in (V1, V2))

    def old(ids: range) -> list[tuple[bytes | None, bytes | None]]:
        return [(None, v1({"id": i, "qty": i, "site": f"s{i}"})) for i in ids]

    produce(kafka_bootstrap, topic, old(range(100)), partitions=2)
    config = _config(sink_config, topic, schema, schema_registry_url, "avro")
    workers = [start_sink(config), start_sink(config)]

    def held(worker: SinkProcess) -> int:
        """The partitions the worker holds, as its assignments and revocations say."""
        count = 0
        for line in worker.messages().splitlines():
            if line.startswith(("assigned ", "revoked ")):
                count += line.count(f"{topic}[") * (1 if line.startswith("assigned") else -1)
        return count

    wait_until(lambda: [held(w) for w in workers] == [1, 1], 60, "a partition each")
    _wait_rows(engine, schema, workers[0], 100)
    # Version 2 on partition 0 only: its worker migrates the table. Then version 1 on both:
    # the other worker meets the newer definition when it commits.
    new = [(None, v2({"id": i, "qty": i, "note": f"n{i}"})) for i in range(100, 150)]
    produce(kafka_bootstrap, topic, new, partitions=1)
    _wait_rows(engine, schema, workers[0], 150)
    produce(kafka_bootstrap, topic, old(range(150, 250)), partitions=2)
    _wait_rows(engine, schema, workers[0], 250)
    expected = [(i, i, f"s{i}", None) for i in range(100)]
    expected += [(i, i, None, f"n{i}") for i in range(100, 150)]
    expected += [(i, i, f"s{i}", None) for i in range(150, 250)]
    assert _all_rows(engine, schema, ["id", "qty", "site", "note"]) == expected
    outputs = [w.output() for w in workers]
    assert all(w.running() for w in workers), outputs
    # One derived the columns on the new schema, the other on the newer definition.
    assert sum("derived from the topics' schemas replaces" in o for o in outputs) == 2
    assert any("newer definition than this worker's" in o for o in outputs)
    assert not any("until it is rolled out" in o or "checking again" in o for o in outputs)


def test_a_schema_version_no_column_can_hold_with_the_earlier_ones_stops_the_worker(
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
    v1 = _avro(registry, V1, topic, MessageField.VALUE)
    produce(
        kafka_bootstrap, topic, [(None, v1({"id": i, "qty": i, "site": "a"})) for i in range(50)]
    )
    config = _config(sink_config, topic, schema, schema_registry_url, "avro")
    worker = start_sink(config)
    _wait_rows(engine, schema, worker, 50)
    text_qty = _record(("id", "long"), ("qty", "string"), ("site", "string"))
    v2 = _avro(registry, text_qty, topic, MessageField.VALUE)
    produce(kafka_bootstrap, topic, [(None, v2({"id": 50, "qty": "many", "site": "b"}))])
    assert worker.exit_code() == 2
    assert (
        f"table {schema}.events: {topic}-value versions 1 to 2: field 'qty' changes type from "
        "INTEGER to TEXT"
    ) in worker.messages()
    assert _count(engine, schema) == 50


def test_a_new_schema_version_met_while_the_registry_cannot_list_versions_waits_for_it(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    schema_registry_url: str,
    registry: SchemaRegistryClient,  # noqa: F811 - the fixture
    registry_later: _Forwarder,  # noqa: F811 - the fixture
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    """The new version's schema reads by its id, but the subject's versions, which the columns
    are derived from again, cannot be listed: the worker commits what came before, retries
    without writing a row of the new version, says so in /readyz, and migrates once it can."""
    topic = new_topic()
    v1, v2 = (_avro(registry, s, topic, MessageField.VALUE) for s in (V1, V2))
    path = schema_registry_url.split("//", 1)[1].split("/", 1)[1]
    registry_later.open()
    forwarded = f"http://127.0.0.1:{registry_later.port}/{path}"
    # Append only (no primary key): a message written twice would be a second row.
    config = _config(sink_config, topic, schema, forwarded, "avro")
    produce(
        kafka_bootstrap,
        topic,
        [(str(i).encode(), v1({"id": i, "qty": i, "site": "a"})) for i in range(200)],
    )
    worker = start_sink(config)
    _wait_rows(engine, schema, worker, 200)
    registry_later.refused = b"/versions"
    produce(
        kafka_bootstrap,
        topic,
        [(str(i).encode(), v1({"id": i, "qty": i, "site": "b"})) for i in range(200, 250)]
        + [(str(i).encode(), v2({"id": i, "qty": i, "note": "n"})) for i in range(250, 400)],
    )
    wait_until(
        lambda: worker.messages().count("is unreachable") >= 2, 90, "two tries to derive again"
    )
    assert worker.running(), worker.output()[-3000:]
    assert registry_later.cuts >= 2
    port = int(re.findall(r"on port (\d+)", worker.messages())[0])
    with pytest.raises(urllib.error.HTTPError) as unready:  # 503, naming the cause
        urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
    assert "is unreachable" in unready.value.read().decode()
    # Everything before the first message of version 2 committed; nothing of it.
    assert _all_rows(engine, schema, ["id", "site"]) == [
        (i, "a" if i < 200 else "b") for i in range(250)
    ]
    registry_later.refused = None
    _wait_rows(engine, schema, worker, 400)
    wait_until(lambda: stored_offsets(engine, schema).get(topic) == {"0": 400}, 60, "all offsets")
    assert _all_rows(engine, schema, ["id", "qty", "site", "note"]) == [
        (i, i, "a" if i < 200 else "b", None) for i in range(250)
    ] + [(i, i, None, "n") for i in range(250, 400)]
    assert worker.running(), worker.output()[-3000:]
    assert worker.terminate() == 0, worker.output()[-2000:]


def test_a_schema_registered_only_under_another_subject_stops_the_worker_naming_it(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    schema_registry_url: str,
    registry: SchemaRegistryClient,  # noqa: F811 - the fixture
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    """A producer whose schema is registered under another subject (another naming strategy):
    the table's columns come from <topic>-value, which never holds it, so the worker stops
    and says what to do instead of guessing the columns from one message."""
    topic = new_topic()
    v1 = _avro(registry, V1, topic, MessageField.VALUE)
    elsewhere = _avro(registry, V2, f"elsewhere-{topic}", MessageField.VALUE)
    produce(
        kafka_bootstrap, topic, [(None, v1({"id": i, "qty": i, "site": "a"})) for i in range(50)]
    )
    worker = start_sink(_config(sink_config, topic, schema, schema_registry_url, "avro"))
    _wait_rows(engine, schema, worker, 50)
    produce(
        kafka_bootstrap,
        topic,
        [
            (None, v1({"id": 50, "qty": 50, "site": "a"})),
            (None, elsewhere({"id": 51, "qty": 51, "note": "n"})),
        ],
    )
    assert worker.exit_code() == 2
    messages = worker.messages()
    assert "which no version registered under the subject its table takes" in messages
    assert "register the schema under <topic>-value, or list the table's columns" in messages
    assert _all_rows(engine, schema, ["id"]) == [(i,) for i in range(51)]
    assert stored_offsets(engine, schema)[topic] == {"0": 51}
