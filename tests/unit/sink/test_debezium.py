"""Debezium's change events: the envelope read into a change, its semantic types read into the
values mapping takes (from Connect's JSON envelope and from Avro), each op mapped to what it
does to its table, and what is no change event refused naming why."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from sink import connect
from sink.batcher import KeyText
from sink.config import (
    ColumnSettings,
    Envelope,
    Format,
    TableSettings,
    TombstonePolicy,
    TruncatePolicy,
    load_settings,
)
from sink.config import parse_column_type as ctype
from sink.config import parse_source as source
from sink.debezium import SEMANTIC_TYPES, Change, Op, change
from sink.errors import BadPayload, ConfigError, MappingError, Mismatch, NotAChange
from sink.path import Mapped
from sink.pipeline import Pipeline
from sink.records import Message
from sink.registry import SchemaDecoders
from sink.tables import Truncation, tables_from_config
from sink.writer import _text_arrays

from .test_registry import URL, FakeRegistry, Schema, avro_bytes, wire

UTC = timezone.utc
ROW = {"id": 7, "name": "seven"}


# --- the envelope -----------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["c", "r", "u"])
def test_creates_snapshot_reads_and_updates_carry_the_row_in_after(op: str) -> None:
    event = {"before": None, "after": ROW, "source": {"db": "shop"}, "op": op, "ts_ms": 1}
    assert change(event) == Change(Op(op), None, ROW)


def test_a_delete_carries_the_row_in_before_and_a_truncate_or_message_carries_none() -> None:
    assert change({"before": ROW, "after": None, "op": "d"}) == Change(Op.DELETE, ROW, None)
    assert change({"before": None, "after": None, "op": "t"}) == Change(Op.TRUNCATE, None, None)
    assert change({"op": "m", "message": {"prefix": "p"}}) == Change(Op.MESSAGE, None, None)


@pytest.mark.parametrize(
    ("value", "code", "says"),
    [
        (ROW, "not-debezium", "not a Debezium change event (an object with op, before and "),
        ([1, 2], "not-debezium", "got an array"),
        ({"schema": {}, "payload": {}}, "not-debezium", 'set value_format = "connect-json"'),
        ({"after": ROW, "op": "x"}, "debezium-op", "op is 'x', not one of 'c', 'r', 'u', 'd'"),
        ({"after": ROW, "op": 1}, "debezium-op", "op is 1"),
        ({"after": None, "op": "c"}, "not-debezium", 'op "c" has no after'),
        ({"after": [1], "op": "u"}, "not-debezium", "after is an array, not a row"),
    ],
)
def test_what_is_not_a_change_event_is_refused_saying_why(
    value: object, code: str, says: str
) -> None:
    with pytest.raises(NotAChange) as caught:
        change(value)
    assert caught.value.code == code
    assert says in caught.value.reason


# --- semantic types ---------------------------------------------------------------------------


def _unscaled(number: int) -> bytes:
    return number.to_bytes((number.bit_length() + 8) // 8, "big", signed=True)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("io.debezium.time.Date", 19_844, date(2024, 5, 1)),
        ("io.debezium.time.Date", -1, date(1969, 12, 31)),
        ("io.debezium.time.Time", 49_500_123, time(13, 45, 0, 123_000)),
        ("io.debezium.time.MicroTime", 49_500_123_456, time(13, 45, 0, 123_456)),
        ("io.debezium.time.NanoTime", 49_500_123_456_789, time(13, 45, 0, 123_456)),
        (
            "io.debezium.time.Timestamp",
            1_714_564_800_123,
            datetime(2024, 5, 1, 12, 0, 0, 123_000, tzinfo=UTC),
        ),
        (
            "io.debezium.time.MicroTimestamp",
            1_714_564_800_123_456,
            datetime(2024, 5, 1, 12, 0, 0, 123_456, tzinfo=UTC),
        ),
        (
            "io.debezium.time.NanoTimestamp",
            1_714_564_800_123_456_789,
            datetime(2024, 5, 1, 12, 0, 0, 123_456, tzinfo=UTC),
        ),
        ("io.debezium.time.MicroTimestamp", -1, datetime(1969, 12, 31, 23, 59, 59, 999_999, UTC)),
        ("io.debezium.time.ZonedTimestamp", "2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z"),
        ("io.debezium.time.MicroDuration", 90_000_000, timedelta(seconds=90)),
        (
            "io.debezium.data.VariableScaleDecimal",
            {"scale": 3, "value": _unscaled(-12_345)},
            Decimal("-12.345"),
        ),
        ("io.debezium.data.Uuid", str(uuid.UUID(int=5)), uuid.UUID(int=5)),
        ("io.debezium.data.Json", '{"a": [1, 0.10]}', {"a": [1, Decimal("0.10")]}),
    ],
)
def test_debeziums_semantic_types_become_the_values_mapping_takes(
    name: str, value: object, expected: object
) -> None:
    converted = SEMANTIC_TYPES[name](value)
    assert converted == expected
    assert type(converted) is type(expected)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("io.debezium.time.Date", "2024-05-01", "days since 1970, but the value is a string"),
        ("io.debezium.time.MicroTime", 86_400_000_000, "is not within a day"),
        ("io.debezium.time.Timestamp", 10**20, "is out of range"),
        ("io.debezium.data.VariableScaleDecimal", {"scale": 1}, "a struct of scale and value"),
        ("io.debezium.data.Uuid", "nope", "'nope' is not a UUID"),
        ("io.debezium.data.Json", "{", "JSON text that does not read"),
    ],
)
def test_a_value_its_semantic_type_does_not_describe_is_a_mismatch(
    name: str, value: object, says: str
) -> None:
    with pytest.raises(Mismatch, match=says):
        SEMANTIC_TYPES[name](value)


def _field(name: str, type_: str, semantic: str | None = None, **extra: Any) -> dict[str, Any]:
    field = {"type": type_, "optional": True, "field": name, **extra}
    if semantic is not None:
        field["name"] = semantic
    return field


ROW_SCHEMA = {
    "type": "struct",
    "name": "shop.public.items.Value",
    "optional": True,
    "fields": [
        _field("id", "int32"),
        _field("day", "int32", "io.debezium.time.Date"),
        _field("at", "int64", "io.debezium.time.MicroTimestamp"),
        _field(
            "price", "bytes", "org.apache.kafka.connect.data.Decimal", parameters={"scale": "2"}
        ),
        _field(
            "ratio",
            "struct",
            "io.debezium.data.VariableScaleDecimal",
            fields=[_field("scale", "int32"), _field("value", "bytes")],
        ),
        _field("ref", "string", "io.debezium.data.Uuid"),
        _field("doc", "string", "io.debezium.data.Json"),
    ],
}
ENVELOPE_SCHEMA = {
    "type": "struct",
    "name": "shop.public.items.Envelope",
    "optional": False,
    "fields": [
        {**ROW_SCHEMA, "field": "before"},
        {**ROW_SCHEMA, "field": "after"},
        _field("op", "string"),
        _field("ts_ms", "int64"),
    ],
}
ROW_PAYLOAD = {
    "id": 7,
    "day": 19_844,
    "at": 1_714_564_800_123_456,
    "price": base64.b64encode(_unscaled(-1999)).decode(),
    "ratio": {"scale": 1, "value": base64.b64encode(_unscaled(5)).decode()},
    "ref": str(uuid.UUID(int=7)),
    "doc": '{"k": 1}',
}
ROW_VALUES = {
    "id": 7,
    "day": date(2024, 5, 1),
    "at": datetime(2024, 5, 1, 12, 0, 0, 123_456, tzinfo=UTC),
    "price": Decimal("-19.99"),
    "ratio": Decimal("0.5"),
    "ref": uuid.UUID(int=7),
    "doc": {"k": 1},
}


def test_connect_json_reads_debeziums_semantic_types_inside_before_and_after() -> None:
    event = {"before": None, "after": ROW_PAYLOAD, "op": "c", "ts_ms": 1}
    data = orjson.dumps({"schema": ENVELOPE_SCHEMA, "payload": event})
    assert connect.read("value", data) == {
        "before": None,
        "after": ROW_VALUES,
        "op": "c",
        "ts_ms": 1,
    }


def test_a_connect_payload_its_semantic_type_does_not_describe_names_the_field() -> None:
    event = {"before": None, "after": {**ROW_PAYLOAD, "day": "monday"}, "op": "c"}
    with pytest.raises(BadPayload) as caught:
        connect.read("value", orjson.dumps({"schema": ENVELOPE_SCHEMA, "payload": event}))
    assert caught.value.code == "schema-mismatch"
    assert "value.after.day: io.debezium.time.Date: days since 1970" in caught.value.reason


def _avro(type_: str, semantic: str, **extra: Any) -> dict[str, Any]:
    return {"type": type_, "connect.version": 1, "connect.name": semantic, **extra}


AVRO_ROW = {
    "type": "record",
    "name": "Value",
    "namespace": "shop.public.items",
    "connect.name": "shop.public.items.Value",
    "fields": [
        {"name": "id", "type": "int"},
        {"name": "day", "type": ["null", _avro("int", "io.debezium.time.Date")], "default": None},
        {"name": "at", "type": ["null", _avro("long", "io.debezium.time.MicroTimestamp")]},
        {
            "name": "price",
            "type": [
                "null",
                _avro(
                    "bytes",
                    "org.apache.kafka.connect.data.Decimal",
                    scale=2,
                    precision=10,
                    logicalType="decimal",
                ),
            ],
        },
        {
            "name": "ratio",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "VariableScaleDecimal",
                    "namespace": "io.debezium.data",
                    "connect.name": "io.debezium.data.VariableScaleDecimal",
                    "fields": [
                        {"name": "scale", "type": "int"},
                        {"name": "value", "type": "bytes"},
                    ],
                },
            ],
        },
        {"name": "ref", "type": ["null", _avro("string", "io.debezium.data.Uuid")]},
        {"name": "doc", "type": ["null", _avro("string", "io.debezium.data.Json")]},
    ],
}
AVRO_ENVELOPE = {
    "type": "record",
    "name": "Envelope",
    "namespace": "shop.public.items",
    "fields": [
        {"name": "before", "type": ["null", AVRO_ROW], "default": None},
        {"name": "after", "type": ["null", "Value"], "default": None},
        {"name": "op", "type": "string"},
        {"name": "ts_ms", "type": ["null", "long"], "default": None},
    ],
}
AVRO_ROW_VALUE = {
    "id": 7,
    "day": 19_844,
    "at": 1_714_564_800_123_456,
    "price": Decimal("-19.99"),
    "ratio": {"scale": 1, "value": _unscaled(5)},
    "ref": str(uuid.UUID(int=7)),
    "doc": '{"k": 1}',
}


def test_avro_reads_debeziums_semantic_types_by_connect_name_in_named_and_nested_records() -> None:
    registry = FakeRegistry()
    registry.add(1, Schema(json.dumps(AVRO_ENVELOPE), "AVRO"))
    decoders = SchemaDecoders(registry, URL)
    event = {"before": AVRO_ROW_VALUE, "after": AVRO_ROW_VALUE, "op": "u", "ts_ms": 1}
    read = decoders.read("value", Format.AVRO, wire(1, avro_bytes(AVRO_ENVELOPE, event)))
    assert read == {"before": ROW_VALUES, "after": ROW_VALUES, "op": "u", "ts_ms": 1}


def test_avro_without_semantic_types_reads_as_fastavro_reads_it() -> None:
    plain = {"type": "record", "name": "P", "fields": [{"name": "d", "type": "int"}]}
    registry = FakeRegistry()
    registry.add(1, Schema(json.dumps(plain), "AVRO"))
    decoders = SchemaDecoders(registry, URL)
    assert decoders.read("value", Format.AVRO, wire(1, avro_bytes(plain, {"d": 3}))) == {"d": 3}


# --- the pipeline -----------------------------------------------------------------------------


def items(**options: object) -> TableSettings:
    columns = (
        ColumnSettings("id", ctype("BIGINT"), source("value.id"), nullable=False),
        ColumnSettings("name", ctype("TEXT"), source("value.name")),
        ColumnSettings("price", ctype("NUMERIC"), source("value.price")),
    )
    settings = TableSettings(
        schema="public",
        name="items",
        columns=columns,
        topics=("t",),
        primary_key=("id",),
        tombstones=TombstonePolicy.DELETE,
        key_format=Format.JSON,
        envelope=Envelope.DEBEZIUM,
    )
    return dataclasses.replace(settings, **options)  # type: ignore[arg-type]


def event(op: str, before: object = None, after: object = None) -> bytes:
    return orjson.dumps({"before": before, "after": after, "source": {}, "op": op, "ts_ms": 1})


def mapped(pipeline: Pipeline, value: bytes | None, key: bytes | None = b'{"id": 7}') -> Mapped:
    return pipeline.copy_lines(Message("t", 0, 3, None, key, value))


def test_a_change_event_topic_never_takes_the_fast_path(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "sink.pipeline")
    assert Pipeline(tables_from_config([items()])).path("t").fast is None
    assert 'take the general path (envelope is "debezium")' in caplog.text


@pytest.mark.parametrize("op", ["c", "r", "u"])
def test_creates_reads_and_updates_write_the_after_row(op: str) -> None:
    pipeline = Pipeline(tables_from_config([items()]))
    result = mapped(pipeline, event(op, after={"id": 7, "name": "seven", "price": 1.5}))
    assert [row for _, row in result.rows] == ["7\tseven\t1.5\n"]
    assert result.deletes == ()


def test_the_after_rows_numbers_keep_the_digits_written() -> None:
    pipeline = Pipeline(tables_from_config([items()]))
    value = b'{"before": null, "after": {"id": 7, "price": 0.10000000000000000001}, "op": "c"}'
    assert [row for _, row in mapped(pipeline, value).rows] == ["7\t\\N\t0.10000000000000000001\n"]


def test_a_delete_deletes_by_the_key_else_by_before() -> None:
    pipeline = Pipeline(tables_from_config([items()]))
    by_key = mapped(pipeline, event("d", before={"id": 9}), key=b'{"id": 7}')
    assert [key for _, key in by_key.deletes] == [(7,)]
    assert by_key.rows == ()
    by_before = mapped(pipeline, event("d", before={"id": 9, "name": "x"}), key=None)
    assert [key for _, key in by_before.deletes] == [(9,)]


def test_the_tombstone_after_a_delete_deletes_the_key_again() -> None:
    pipeline = Pipeline(tables_from_config([items()]))
    assert [key for _, key in mapped(pipeline, None).deletes] == [(7,)]


def test_a_truncate_is_ignored_and_logged_by_default(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "sink.pipeline")
    pipeline = Pipeline(tables_from_config([items()]))
    assert mapped(pipeline, event("t"), key=None) == Mapped()
    assert "t[0]@3: the source table of public.items was truncated; ignored" in caplog.text


def test_a_truncate_set_to_truncate_is_a_truncation_in_the_row_stream() -> None:
    pipeline = Pipeline(tables_from_config([items(truncate=TruncatePolicy.TRUNCATE)]))
    ((table, row),) = mapped(pipeline, event("t"), key=None).rows
    assert table.name == "items"
    assert type(row) is Truncation
    assert row == (None, None, None)


def test_a_message_event_does_nothing() -> None:
    pipeline = Pipeline(tables_from_config([items()]))
    assert mapped(pipeline, orjson.dumps({"op": "m", "message": {}}), key=None) == Mapped()


@pytest.mark.parametrize(
    ("value", "key", "code", "says"),
    [
        (b'{"id": 7, "name": "plain row"}', b'{"id": 7}', "not-debezium", "not a Debezium"),
        (event("z", after={"id": 7}), b'{"id": 7}', "debezium-op", "op is 'z'"),
        (event("d"), None, "no-key", 'a delete (op "d") without a key and without before'),
        (event("c", after={"name": "no id"}), b'{"id": 7}', "null", "value.id is missing"),
    ],
)
def test_what_cannot_be_applied_is_a_mapping_error_naming_message_and_table(
    value: bytes, key: bytes | None, code: str, says: str
) -> None:
    pipeline = Pipeline(tables_from_config([items()]))
    with pytest.raises(MappingError) as caught:
        mapped(pipeline, value, key)
    assert caught.value.code == code
    assert str(caught.value).startswith("t[0]@3: public.items")
    assert says in str(caught.value)


# --- configuration ----------------------------------------------------------------------------

CONFIG = """
[kafka]
bootstrap_servers = "broker:9092"
[postgres]
url = "postgresql://sink@db:5432/sink"
[[tables]]
name = "items"
topics = ["shop.public.items"]
primary_key = ["id"]
envelope = "debezium"
key_format = "json"
[[tables.columns]]
name = "id"
type = "BIGINT"
"""


def _load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "sink.toml"
    path.write_text(text)
    return load_settings(path, {})


def test_envelope_and_truncate_are_table_settings(tmp_path: Path) -> None:
    (table,) = _load(tmp_path, CONFIG).tables
    assert table.envelope is Envelope.DEBEZIUM
    assert table.truncate is TruncatePolicy.IGNORE
    text = CONFIG.replace('envelope = "debezium"', 'envelope = "debezium"\ntruncate = "truncate"')
    (table,) = _load(tmp_path, text).tables
    assert table.truncate is TruncatePolicy.TRUNCATE


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        (
            'primary_key = ["id"]',
            "",
            'tables[0].envelope: "debezium" upserts and deletes public.items by its primary key',
        ),
        (
            'key_format = "json"',
            "",
            'tables[0].key_format: is "string", but Debezium keys public.items\'s change events',
        ),
        (
            'key_format = "json"',
            'key_format = "json"\nvalue_format = "string"',
            'tables[0].envelope: "debezium" reads the change event of a structured value',
        ),
        ('envelope = "debezium"', 'envelope = "maxwell"', "tables[0].envelope: must be one of"),
        (
            'envelope = "debezium"',
            'truncate = "truncate"',
            'tables[0].truncate: applies to change events only; set envelope = "debezium"',
        ),
    ],
)
def test_an_envelope_without_what_it_needs_is_refused_naming_table_and_setting(
    tmp_path: Path, old: str, new: str, says: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, CONFIG.replace(old, new))
    assert says in str(caught.value)


# --- what a truncation keeps ------------------------------------------------------------------


@pytest.mark.parametrize("key", ["plain", "tab\there", "back\\slash", "new\nline", "ünï"])
def test_a_truncation_keeps_the_keys_written_after_it_as_postgresql_reads_them(key: str) -> None:
    settings = items(
        columns=(
            ColumnSettings("id", ctype("TEXT"), source("value.id"), nullable=False),
            ColumnSettings("n", ctype("BIGINT"), source("value.n")),
        ),
        truncate=TruncatePolicy.TRUNCATE,
    )
    pipeline = Pipeline(tables_from_config([settings]))
    ((table, line),) = mapped(pipeline, event("c", after={"id": key, "n": 1}), key=None).rows
    key_text = KeyText(table)
    for written in (line, (key, 1)):
        assert _text_arrays(table, [key_text.of_row(written)]) == {"k0": [key]}
