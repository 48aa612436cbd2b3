"""The schema registry's wire format read into Python values, against a registry client that
answers from a dict (the real registry is in tests/integration/sink/test_registry_formats.py):
headers, each format's reading, error codes, caching, and which registry failures are transient."""

from __future__ import annotations

import base64
import io
import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryError
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from httpx2 import ConnectError

from pg_bulk_ingest import copy_encoders
from sink.config import ColumnSettings, Format, TableSettings, TombstonePolicy
from sink.config import parse_column_type as ctype
from sink.config import parse_source as source
from sink.decode import decode
from sink.errors import (
    BadPayload,
    DecodeError,
    SchemaChangedError,
    SchemaRegistryRefusedError,
    SchemaRegistryUnavailableError,
    TransientError,
)
from sink.pipeline import Pipeline
from sink.records import Message
from sink.registry import SchemaDecoders
from sink.tables import tables_from_config

UTC = timezone.utc
URL = "http://registry.test/apis/ccompat/v7"


@dataclass
class _Registered:
    schema: Schema


class FakeRegistry:
    """Schemas by id and by (subject, version); `failure` makes every call raise it."""

    def __init__(self) -> None:
        self.by_id: dict[int, Schema] = {}
        self.by_version: dict[tuple[str, int], Schema] = {}
        self.calls: list[tuple[str, object]] = []
        self.failure: Exception | None = None

    def add(self, schema_id: int, schema: Schema) -> int:
        self.by_id[schema_id] = schema
        return schema_id

    def get_schema(
        self, schema_id: int, subject_name: str | None = None, fmt: str | None = None
    ) -> Schema:
        self.calls.append(("id", (schema_id, fmt)))
        if self.failure is not None:
            raise self.failure
        if schema_id not in self.by_id:
            raise SchemaRegistryError(404, 40403, f"Schema {schema_id} not found")
        return self.by_id[schema_id]

    def get_version(
        self, subject_name: str, version: Any, deleted: bool = False, fmt: str | None = None
    ) -> _Registered:
        self.calls.append(("version", (subject_name, version)))
        return _Registered(self.by_version[(subject_name, version)])

    def get_versions(self, subject_name: str) -> list[int]:
        return [version for subject, version in self.by_version if subject == subject_name]


def wire(schema_id: int, payload: bytes, indexes: bytes = b"") -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + indexes + payload


def avro_bytes(schema: dict[str, Any], value: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), value)
    return out.getvalue()


ORDER = {
    "type": "record",
    "name": "Order",
    "fields": [
        {"name": "id", "type": "long"},
        {
            "name": "amount",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 3},
        },
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}
AN_ORDER = {
    "id": 7,
    "amount": Decimal("-12.345"),
    "at": datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC),
    "day": date(2024, 5, 1),
    "ref": uuid.UUID(int=99),
    "note": None,
}


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def decoders(registry: FakeRegistry) -> SchemaDecoders:
    return SchemaDecoders(registry, URL)


def _code(decoders: SchemaDecoders, fmt: Format, data: bytes) -> str:
    with pytest.raises(BadPayload) as caught:
        decoders.read("value", fmt, data)
    return caught.value.code


# --- the header -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "it is empty"),
        (b"\x00\x00\x01", "it is 3 bytes"),
        (b'{"id": 7}', "first byte is 0x7b"),
        (b"\x01\x00\x00\x00\x01\x02", "first byte is 0x01"),
    ],
)
def test_bytes_without_the_magic_byte_and_schema_id_are_refused_saying_what_they_hold(
    decoders: SchemaDecoders, registry: FakeRegistry, data: bytes, says: str
) -> None:
    with pytest.raises(BadPayload) as caught:
        decoders.read("value", Format.AVRO, data)
    assert caught.value.code == "magic-byte"
    assert says in caught.value.reason and 'value_format is "avro"' in caught.value.reason
    assert registry.calls == []  # no registry round trip for bytes that name no schema


def test_an_id_the_registry_does_not_hold_is_unknown_schema(decoders: SchemaDecoders) -> None:
    with pytest.raises(BadPayload) as caught:
        decoders.read("key", Format.AVRO, wire(123456, b"\x02"))
    assert caught.value.code == "unknown-schema"
    assert "key names schema id 123456" in caught.value.reason and URL in caught.value.reason


def test_an_id_of_another_kind_of_schema_is_schema_type(
    decoders: SchemaDecoders, registry: FakeRegistry
) -> None:
    registry.add(3, Schema(json.dumps(ORDER), "AVRO"))
    with pytest.raises(BadPayload) as caught:
        decoders.read("value", Format.JSON_SCHEMA, wire(3, b"{}"))
    assert caught.value.code == "schema-type"
    assert "an Avro schema" in caught.value.reason


# --- Avro -----------------------------------------------------------------------------------


def test_a_value_schema_its_table_lacks_is_a_schema_change_found_once_per_id(
    registry: FakeRegistry,
) -> None:
    registry.add(1, Schema(json.dumps(ORDER), "AVRO"))
    wider = {**ORDER, "fields": [*ORDER["fields"], {"name": "tip", "type": "long"}]}
    registry.add(2, Schema(json.dumps(wider), "AVRO"))
    seen: list[list[str]] = []

    def change(schema: Any) -> str | None:
        names = [field["name"] for field in schema["fields"]]
        seen.append(names)
        return "adds field 'tip'" if "tip" in names else None

    decoders = SchemaDecoders(registry, URL, {"orders": change})
    one = wire(1, avro_bytes(ORDER, AN_ORDER))
    two = wire(2, avro_bytes(wider, {**AN_ORDER, "tip": 3}))
    for _ in range(2):
        assert decoders.read("value", Format.AVRO, one, "orders") == AN_ORDER
    with pytest.raises(SchemaChangedError, match=r"^orders: schema id 2 adds field 'tip'$"):
        decoders.read("value", Format.AVRO, two, "orders")
    # Other topics, and keys, are not watched.
    assert decoders.read("value", Format.AVRO, two, "refunds")["tip"] == 3  # type: ignore[index]
    assert decoders.read("key", Format.AVRO, two, "orders")["tip"] == 3  # type: ignore[index]
    assert len(seen) == 2  # schema 1 once, schema 2 once


def test_avro_reads_logical_types_as_the_values_mapping_takes(
    decoders: SchemaDecoders, registry: FakeRegistry
) -> None:
    registry.add(1, Schema(json.dumps(ORDER), "AVRO"))
    assert decoders.read("value", Format.AVRO, wire(1, avro_bytes(ORDER, AN_ORDER))) == AN_ORDER


def test_each_schema_is_fetched_once(decoders: SchemaDecoders, registry: FakeRegistry) -> None:
    registry.add(1, Schema(json.dumps(ORDER), "AVRO"))
    data = wire(1, avro_bytes(ORDER, AN_ORDER))
    for _ in range(5):
        decoders.read("value", Format.AVRO, data)
    assert registry.calls == [("id", (1, None))]


@pytest.mark.parametrize("change", ["cut", "extra", "garbage"])
def test_avro_bytes_that_do_not_read_with_their_schema_are_not_avro(
    decoders: SchemaDecoders, registry: FakeRegistry, change: str
) -> None:
    registry.add(1, Schema(json.dumps(ORDER), "AVRO"))
    payload = avro_bytes(ORDER, AN_ORDER)
    payload = {"cut": payload[:-4], "extra": payload + b"\x00", "garbage": b"\xff" * 3}[change]
    with pytest.raises(BadPayload) as caught:
        decoders.read("value", Format.AVRO, wire(1, payload))
    assert caught.value.code == "not-avro"
    assert caught.value.reason.startswith("value (schema id 1): ")


def test_avro_named_types_come_from_referenced_subjects(
    decoders: SchemaDecoders, registry: FakeRegistry
) -> None:
    money = {"type": "record", "name": "Money", "fields": [{"name": "cents", "type": "long"}]}
    registry.by_version[("money-value", 2)] = Schema(json.dumps(money), "AVRO")
    wallet = {"type": "record", "name": "Wallet", "fields": [{"name": "cash", "type": "Money"}]}
    references = [SchemaReference("Money", "money-value", 2)]
    registry.add(9, Schema(json.dumps(wallet), "AVRO", references))
    named: dict[str, Any] = {}
    fastavro.parse_schema(money, named_schemas=named)
    out = io.BytesIO()
    parsed = fastavro.parse_schema(wallet, named_schemas=named)
    fastavro.schemaless_writer(out, parsed, {"cash": {"cents": 5}})
    assert decoders.read("value", Format.AVRO, wire(9, out.getvalue())) == {"cash": {"cents": 5}}


# --- Protobuf -------------------------------------------------------------------------------


def _protobuf_file() -> tuple[descriptor_pb2.FileDescriptorProto, Any]:
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="unit.proto", package="unit", syntax="proto3")
    proto.dependency.append("google/protobuf/timestamp.proto")
    first = proto.message_type.add(name="First")
    first.field.add(name="a", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    inner = first.nested_type.add(name="Inner")
    inner.field.add(name="n", number=1, type=field.TYPE_INT64, label=field.LABEL_OPTIONAL)
    inner.field.add(
        name="at",
        number=2,
        type=field.TYPE_MESSAGE,
        type_name=".google.protobuf.Timestamp",
        label=field.LABEL_OPTIONAL,
    )
    inner.oneof_decl.add(name="_maybe")
    inner.field.add(
        name="maybe",
        number=3,
        type=field.TYPE_STRING,
        label=field.LABEL_OPTIONAL,
        proto3_optional=True,
        oneof_index=0,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return proto, message_factory.GetMessageClass(pool.FindMessageTypeByName("unit.First.Inner"))


def test_protobuf_reads_the_message_its_indexes_name_with_presence_and_well_known_types(
    decoders: SchemaDecoders, registry: FakeRegistry
) -> None:
    proto, inner = _protobuf_file()
    serialized = base64.standard_b64encode(proto.SerializeToString()).decode()
    registry.add(4, Schema(serialized, "PROTOBUF"))
    message = inner(n=2**62)
    message.at.FromDatetime(datetime(2024, 5, 1, 12, tzinfo=UTC) + timedelta(microseconds=7))
    # Indexes [0, 0] (First, then its first nested type): count 2, then 0 and 0, zigzag.
    data = wire(4, message.SerializeToString(), indexes=b"\x04\x00\x00")
    assert decoders.read("value", Format.PROTOBUF, data) == {
        "n": 2**62,
        "at": datetime(2024, 5, 1, 12, 0, 0, 7, tzinfo=UTC),
    }  # "maybe" is unset: left out, so its column is NULL
    assert registry.calls == [("id", (4, "serialized"))]
    with pytest.raises(BadPayload) as caught:
        decoders.read("value", Format.PROTOBUF, wire(4, b"", indexes=b"\x02\x06"))
    assert caught.value.code == "not-protobuf" and "[3]" in caught.value.reason
    with pytest.raises(BadPayload) as caught:
        decoders.read("value", Format.PROTOBUF, wire(4, b"\x0a\xff\x7f", indexes=b"\x00"))
    assert caught.value.code == "not-protobuf"


def test_a_protobuf_schema_as_proto_source_text_stops_the_worker_saying_why(
    decoders: SchemaDecoders, registry: FakeRegistry
) -> None:
    registry.add(5, Schema('syntax = "proto3"; message M { string a = 1; }', "PROTOBUF"))
    with pytest.raises(SchemaRegistryRefusedError, match="serialized form"):
        decoders.read("value", Format.PROTOBUF, wire(5, b"", indexes=b"\x00"))


# --- JSON Schema ----------------------------------------------------------------------------

READING = {
    "type": "object",
    "properties": {"id": {"type": "integer"}, "v": {"type": "number"}},
    "required": ["id"],
}


def test_json_schema_values_keep_every_digit_and_must_match_their_schema(
    decoders: SchemaDecoders, registry: FakeRegistry
) -> None:
    registry.add(6, Schema(json.dumps(READING), "JSON"))
    data = wire(6, b'{"id": 1, "v": 0.1000000000000000000001}')
    exact = decoders.read("value", Format.JSON_SCHEMA, data)
    assert exact == {"id": 1, "v": Decimal("0.1000000000000000000001")}
    assert decoders.read("value", Format.JSON_SCHEMA, wire(6, b'{"id": 2, "v": 1.5}')) == {
        "id": 2,
        "v": 1.5,
    }
    assert _code(decoders, Format.JSON_SCHEMA, wire(6, b'{"v": 1}')) == "schema-mismatch"
    assert _code(decoders, Format.JSON_SCHEMA, wire(6, b'{"id": "x"}')) == "schema-mismatch"
    assert _code(decoders, Format.JSON_SCHEMA, wire(6, b"{nope")) == "not-json"
    huge = wire(6, b'{"id": 3, "v": 0E0000000000001876899999999989902}')
    assert _code(decoders, Format.JSON_SCHEMA, huge) == "not-exact"


# --- registry failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        SchemaRegistryError(503, 50003, "unavailable"),
        SchemaRegistryError(500, 50001, "store error"),
        SchemaRegistryError(429, 42901, "slow down"),
        ConnectError("[Errno 111] Connection refused"),
    ],
)
def test_a_registry_that_cannot_answer_is_a_transient_failure_not_a_bad_message(
    decoders: SchemaDecoders, registry: FakeRegistry, failure: Exception
) -> None:
    registry.failure = failure
    message = Message("t", 0, 5, None, None, wire(1, b"\x02"))
    with pytest.raises(SchemaRegistryUnavailableError) as caught:
        decode(message, Format.STRING, Format.AVRO, schemas=decoders)
    assert isinstance(caught.value, TransientError)
    assert URL in str(caught.value) and "schema id 1" in str(caught.value)
    registry.failure = None  # it comes back: the same message reads (nothing was cached)
    registry.add(1, Schema(json.dumps({"type": "long"}), "AVRO"))
    assert decode(message, Format.STRING, Format.AVRO, schemas=decoders).value == 1


@pytest.mark.parametrize(
    ("failure", "remedy"),
    [
        (SchemaRegistryError(401, 401, "Unauthorized"), "username and password"),
        (SchemaRegistryError(403, 40301, "Forbidden"), "username and password"),
        (SchemaRegistryError(404, 404, "RESTEASY003210: no resource"), "/apis/ccompat/v7"),
        (json.JSONDecodeError("Expecting value", "<html>", 0), "not the registry's JSON"),
    ],
)
def test_a_registry_that_refuses_stops_the_worker_with_the_remedy(
    decoders: SchemaDecoders, registry: FakeRegistry, failure: Exception, remedy: str
) -> None:
    registry.failure = failure
    with pytest.raises(SchemaRegistryRefusedError, match=remedy) as caught:
        decoders.read("value", Format.AVRO, wire(1, b"\x02"))
    assert not isinstance(caught.value, TransientError)


# --- through decode and the pipeline ----------------------------------------------------------


def test_a_bad_payload_becomes_a_decode_error_naming_the_message_and_table(
    decoders: SchemaDecoders,
) -> None:
    message = Message("orders", 2, 41, None, None, b"\x05junk")
    with pytest.raises(DecodeError) as caught:
        decode(message, Format.STRING, Format.AVRO, target="public.orders", schemas=decoders)
    assert caught.value.code == "magic-byte"
    assert str(caught.value).startswith("orders[2]@41: public.orders: value is not in")


def test_avro_keys_and_values_map_to_rows_on_the_general_path(registry: FakeRegistry) -> None:
    key_schema = {"type": "record", "name": "K", "fields": [{"name": "id", "type": "long"}]}
    registry.add(1, Schema(json.dumps(ORDER), "AVRO"))
    registry.add(2, Schema(json.dumps(key_schema), "AVRO"))
    columns = tuple(
        ColumnSettings(name, ctype(type_text), source(f"value.{name}"), nullable=name != "id")
        for name, type_text in [
            ("id", "BIGINT"),
            ("amount", "NUMERIC(9,3)"),
            ("at", "TIMESTAMPTZ"),
            ("day", "DATE"),
            ("ref", "UUID"),
            ("note", "TEXT"),
        ]
    )
    table = TableSettings(
        schema="public",
        name="orders",
        columns=columns,
        topics=("t",),
        primary_key=("id",),
        key_format=Format.AVRO,
        value_format=Format.AVRO,
        tombstones=TombstonePolicy.DELETE,
    )
    pipeline = Pipeline(tables_from_config([table]), SchemaDecoders(registry, URL))
    key = wire(2, avro_bytes(key_schema, {"id": 7}))
    value = wire(1, avro_bytes(ORDER, AN_ORDER))
    mapped = pipeline.copy_lines(Message("t", 0, 0, None, key, value))
    fast = pipeline.path("t").fast
    assert fast is None or fast.row(key, value) is None  # a key in the wire format
    ((table_, row),) = mapped.rows
    if not isinstance(row, str):  # values, for a table written in binary COPY
        row = "\t".join(encode(value) for encode, value in zip(copy_encoders(table_), row)) + "\n"
    assert row == (
        "7\t-12.345\t2024-05-01T12:00:00.123000+00:00\t2024-05-01\t"
        "00000000-0000-0000-0000-000000000063\t\\N\n"
    )
    tombstone = pipeline.copy_lines(Message("t", 0, 1, None, key, None))
    assert [values for _, values in tombstone.deletes] == [(7,)]
