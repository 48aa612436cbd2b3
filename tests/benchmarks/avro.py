"""The avro section's topic: the benchmark's events in Avro, in the schema registry's wire format
(magic byte, schema id, Avro binary), with the schema registered as a producer's serializer does,
for the same table as the JSON events: timestamp-micros, decimal(12,2), a nullable string, a
nested record (into JSONB) and an array of strings."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

import fastavro
import orjson
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from tests.events import events
from tests.integration.sink.harness import produce

from .e2e import Source
from .measure import PARTITIONS, create_topic

SCHEMA: dict[str, object] = {
    "type": "record",
    "name": "Event",
    "namespace": "bench",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "key", "type": ["null", "string"], "default": None},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {
            "name": "amount",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
        },
        {"name": "status", "type": ["null", "string"], "default": None},
        {
            "name": "payload",
            "type": {
                "type": "record",
                "name": "Payload",
                "fields": [
                    {"name": "sku", "type": "string"},
                    {"name": "qty", "type": "int"},
                    {"name": "note", "type": "string"},
                    {"name": "ip", "type": "string"},
                ],
            },
        },
        {"name": "tags", "type": {"type": "array", "items": "string"}},
    ],
}


def source(registry_url: str) -> Source:
    """How the sink reads the Avro topic: one row per event, as from the JSON topic."""
    return Source(
        label="-avro",
        settings=f'\n[schema_registry]\nurl = "{registry_url}"\n',
        table_settings='value_format = "avro"\n',
    )


def produce_topic(bootstrap: str, registry_url: str, topic: str, count: int) -> float:
    """Registers the schema under the topic's value subject, creates `topic` and fills it with
    `count` events round-robin; returns seconds taken."""
    started = time.monotonic()
    with SchemaRegistryClient({"url": registry_url}) as registry:
        schema_id = registry.register_schema(f"{topic}-value", Schema(json.dumps(SCHEMA), "AVRO"))
    create_topic(bootstrap, topic)
    produce(bootstrap, topic, _encoded(schema_id, count), partitions=PARTITIONS)
    return time.monotonic() - started


def _encoded(schema_id: int, count: int) -> Iterator[tuple[bytes, bytes]]:
    parsed = fastavro.parse_schema(SCHEMA)
    header = b"\0" + schema_id.to_bytes(4, "big")
    for key, value in events(count):
        record = orjson.loads(value)
        record["ts"] = datetime.fromisoformat(record["ts"].replace("Z", "+00:00"))
        record["amount"] = Decimal(record["amount"])
        out = io.BytesIO()
        out.write(header)
        fastavro.schemaless_writer(out, parsed, record)
        yield key, out.getvalue()
