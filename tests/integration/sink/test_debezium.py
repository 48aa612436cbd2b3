"""Debezium change events, shaped as Debezium 3.x's PostgreSQL connector writes them with the
JSON converter (with and without schemas) and with the Avro converter through the schema
registry: creates, snapshot reads and updates upsert, deletes and their tombstones delete, in
the order they were written even within one batch; truncates follow the table's setting; what
is no change event is a dead letter, or stops the worker under errors.policy = "fail"; a worker
killed mid-stream leaves the table in the source's state."""

from __future__ import annotations

import base64
import json
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from .harness import SinkProcess, log_end_offsets, produce, stored_offsets, wait_until

UTC = timezone.utc
Pair = tuple[bytes | None, bytes | None]
PREFIX = "shop.inventory.customers"

COLUMNS = """
[[tables.columns]]
name = "id"
type = "INTEGER"
[[tables.columns]]
name = "name"
type = "VARCHAR(64)"
[[tables.columns]]
name = "price"
type = "NUMERIC(10,2)"
[[tables.columns]]
name = "born"
type = "DATE"
[[tables.columns]]
name = "updated_at"
type = "TIMESTAMP"
[[tables.columns]]
name = "seen_at"
type = "TIMESTAMPTZ"
[[tables.columns]]
name = "ref"
type = "UUID"
[[tables.columns]]
name = "doc"
type = "JSONB"
[[tables.columns]]
name = "ratio"
type = "NUMERIC"
"""
NAMES = ["id", "name", "price", "born", "updated_at", "seen_at", "ref", "doc", "ratio"]


# --- the source rows and how the connector writes them ----------------------------------------


def row(i: int, version: int = 0) -> dict[str, Any]:
    """The i-th source row after `version` updates, as PostgreSQL holds it."""
    return {
        "id": i,
        "name": f"customer {i} v{version}",
        "price": Decimal(i * 101 + version) / 100,
        "born": date(1990, 1, 1) + timedelta(days=i),
        "updated_at": datetime(2024, 5, 1, 12) + timedelta(microseconds=i * 1_000_003 + version),
        "seen_at": datetime(2024, 5, 1, 12, tzinfo=UTC) + timedelta(seconds=i),
        "ref": uuid.UUID(int=i),
        "doc": {"tags": [f"t{i % 3}"], "version": version, "ratio": 0.25},
        "ratio": Decimal(f"{i}.{version:03d}"),
    }


def _unscaled(number: int) -> bytes:
    return number.to_bytes((number.bit_length() + 8) // 8, "big", signed=True)


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _days(day: date) -> int:
    return (day - date(1970, 1, 1)).days


def _micros(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1)) // timedelta(microseconds=1)


def _zoned(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _connect_row(values: dict[str, Any]) -> dict[str, Any]:
    """A row as the JsonConverter writes it with its schema (the default modes: precise
    decimals, adaptive_time_microseconds)."""
    ratio = values["ratio"].as_tuple()
    return {
        "id": values["id"],
        "name": values["name"],
        "price": _base64(_unscaled(int(values["price"].scaleb(2)))),
        "born": _days(values["born"]),
        "updated_at": _micros(values["updated_at"]),
        "seen_at": _zoned(values["seen_at"]),
        "ref": str(values["ref"]),
        "doc": json.dumps(values["doc"]),
        "ratio": {
            "scale": -ratio.exponent,
            "value": _base64(_unscaled(int(values["ratio"].scaleb(-ratio.exponent)))),
        },
    }


def _plain_row(values: dict[str, Any]) -> dict[str, Any]:
    """A row as the JsonConverter writes it without schemas, from a connector set up for it:
    decimal.handling.mode=string, and the temporal columns (otherwise a number of days or
    microseconds, a unit only the schema tells) written as text by a TimestampConverter."""
    return {
        "id": values["id"],
        "name": values["name"],
        "price": str(values["price"]),
        "born": values["born"].isoformat(),
        "updated_at": values["updated_at"].isoformat(),
        "seen_at": _zoned(values["seen_at"]),
        "ref": str(values["ref"]),
        "doc": values["doc"],
        "ratio": str(values["ratio"]),
    }


def _source(lsn: int, snapshot: str = "false") -> dict[str, Any]:
    return {
        "version": "3.0.7.Final",
        "connector": "postgresql",
        "name": "shop",
        "ts_ms": 1_714_564_800_000 + lsn,
        "snapshot": snapshot,
        "db": "shop",
        "sequence": f'["{lsn - 1}","{lsn}"]',
        "ts_us": (1_714_564_800_000 + lsn) * 1000,
        "ts_ns": (1_714_564_800_000 + lsn) * 1_000_000,
        "schema": "inventory",
        "table": "customers",
        "txId": 700 + lsn,
        "lsn": lsn,
        "xmin": None,
    }


def _field(name: str, type_: str, optional: bool = True, **extra: Any) -> dict[str, Any]:
    return {"type": type_, "optional": optional, **extra, "field": name}


def _semantic(field: str, type_: str, semantic: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "optional": True,
        "name": semantic,
        "version": 1,
        **extra,
        "field": field,
    }


ROW_FIELDS = [
    _field("id", "int32", optional=False, default=0),
    _field("name", "string"),
    _semantic(
        "price",
        "bytes",
        "org.apache.kafka.connect.data.Decimal",
        parameters={"scale": "2", "connect.decimal.precision": "10"},
    ),
    _semantic("born", "int32", "io.debezium.time.Date"),
    _semantic("updated_at", "int64", "io.debezium.time.MicroTimestamp"),
    _semantic("seen_at", "string", "io.debezium.time.ZonedTimestamp"),
    _semantic("ref", "string", "io.debezium.data.Uuid"),
    _semantic("doc", "string", "io.debezium.data.Json"),
    _semantic(
        "ratio",
        "struct",
        "io.debezium.data.VariableScaleDecimal",
        fields=[_field("scale", "int32", False), _field("value", "bytes", False)],
        doc="Variable scaled decimal",
    ),
]
ROW_SCHEMA = {"type": "struct", "fields": ROW_FIELDS, "optional": True, "name": f"{PREFIX}.Value"}
SOURCE_SCHEMA = {
    "type": "struct",
    "fields": [
        _field("version", "string", False),
        _field("connector", "string", False),
        _field("name", "string", False),
        _field("ts_ms", "int64", False),
        _semantic(
            "snapshot",
            "string",
            "io.debezium.data.Enum",
            parameters={
                "allowed": "true,first,first_in_data_collection,last_in_data_collection,last,"
                "false,incremental"
            },
            default="false",
        ),
        _field("db", "string", False),
        _field("sequence", "string"),
        _field("ts_us", "int64"),
        _field("ts_ns", "int64"),
        _field("schema", "string", False),
        _field("table", "string", False),
        _field("txId", "int64"),
        _field("lsn", "int64"),
        _field("xmin", "int64"),
    ],
    "optional": False,
    "name": "io.debezium.connector.postgresql.Source",
    "version": 1,
    "field": "source",
}
ENVELOPE_SCHEMA = {
    "type": "struct",
    "fields": [
        {**ROW_SCHEMA, "field": "before"},
        {**ROW_SCHEMA, "field": "after"},
        SOURCE_SCHEMA,
        {
            "type": "struct",
            "fields": [
                _field("id", "string", False),
                _field("total_order", "int64", False),
                _field("data_collection_order", "int64", False),
            ],
            "optional": True,
            "name": "event.block",
            "version": 1,
            "field": "transaction",
        },
        _field("op", "string", False),
        _field("ts_ms", "int64"),
        _field("ts_us", "int64"),
        _field("ts_ns", "int64"),
    ],
    "optional": False,
    "name": f"{PREFIX}.Envelope",
    "version": 2,
}
KEY_SCHEMA = {
    "type": "struct",
    "fields": [_field("id", "int32", optional=False, default=0)],
    "optional": False,
    "name": f"{PREFIX}.Key",
}


class Source:
    """The source table's changes as the connector writes them, in order, and what the sink
    table must hold after them."""

    def __init__(self, write: Callable[[dict[str, Any] | None], dict[str, Any] | None]) -> None:
        self.write = write  # a row as the converter writes it
        self.state: dict[int, dict[str, Any]] = {}
        self.versions: dict[int, int] = {}
        self.lsn = 1000

    def event(self, op: str, before: Any, after: Any, snapshot: str = "false") -> dict[str, Any]:
        self.lsn += 8
        return {
            "before": self.write(before),
            "after": self.write(after),
            "source": _source(self.lsn, snapshot),
            "transaction": None,
            "op": op,
            "ts_ms": 1_714_564_800_000 + self.lsn,
            "ts_us": None,
            "ts_ns": None,
        }

    def upsert(self, i: int, op: str) -> tuple[int, dict[str, Any]]:
        before = self.state.get(i) if op == "u" else None
        self.versions[i] = self.versions.get(i, -1) + 1
        after = self.state[i] = row(i, self.versions[i])
        return i, self.event(op, before, after, "true" if op == "r" else "false")

    def delete(self, i: int) -> tuple[int, dict[str, Any]]:
        # REPLICA IDENTITY DEFAULT: before holds the key columns only, the rest null.
        before = {name: None for name in NAMES} | {"id": i}
        self.state.pop(i, None)
        return i, self.event("d", _Partial(before), None)

    def truncate(self) -> dict[str, Any]:
        self.state.clear()
        return self.event("t", None, None)

    def expected(self) -> list[tuple[Any, ...]]:
        return [_row_tuple(self.state[i]) for i in sorted(self.state)]


class _Partial(dict):  # type: ignore[type-arg]
    """A `before` with only its key columns: written as is, not through the converter."""


def _row_tuple(values: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(values[name] for name in NAMES)


def _connect(values: Any) -> Any:
    if values is None or isinstance(values, _Partial):
        return None if values is None else dict(values)
    return _connect_row(values)


def _plain(values: Any) -> Any:
    if values is None or isinstance(values, _Partial):
        return None if values is None else dict(values)
    return _plain_row(values)


def _with_schema(schema: dict[str, Any], payload: Any) -> bytes:
    return orjson.dumps({"schema": schema, "payload": payload})


def connect_json(key: int | None, value: dict[str, Any] | None) -> Pair:
    return (
        None if key is None else _with_schema(KEY_SCHEMA, {"id": key}),
        None if value is None else _with_schema(ENVELOPE_SCHEMA, value),
    )


def plain_json(key: int | None, value: dict[str, Any] | None) -> Pair:
    return (
        None if key is None else orjson.dumps({"id": key}),
        None if value is None else orjson.dumps(value),
    )


def story(source: Source, encode: Callable[[int | None, Any], Pair]) -> Iterator[Pair]:
    """Snapshot, then creates, updates and deletes, and the orders within a batch that must
    keep their order: insert-delete-insert, delete-insert, insert-delete."""
    for i in range(1, 41):
        yield encode(*source.upsert(i, "r"))
    for i in range(41, 61):
        yield encode(*source.upsert(i, "c"))
    for i in range(1, 61, 3):
        yield encode(*source.upsert(i, "u"))
    for i in (2, 5, 41, 60):  # a delete, then its tombstone
        yield encode(*source.delete(i))
        yield encode(i, None)
    # insert, delete, insert: present, with the second insert's values.
    yield encode(*source.upsert(70, "c"))
    yield encode(*source.delete(70))
    yield encode(70, None)
    yield encode(*source.upsert(70, "c"))
    # delete, insert: present.
    yield encode(*source.delete(8))
    yield encode(8, None)
    yield encode(*source.upsert(8, "c"))
    # insert, update, delete: absent.
    yield encode(*source.upsert(71, "c"))
    yield encode(*source.upsert(71, "u"))
    yield encode(*source.delete(71))
    yield encode(71, None)
    # A tombstone for a key deleted long ago, and one never seen: nothing to delete.
    yield encode(2, None)
    yield encode(999, None)


# --- running the sink -------------------------------------------------------------------------


def _rows(engine: sa.engine.Engine, schema: str, table: str = "customers") -> list[Any]:
    columns = ", ".join(f'"{name}"' for name in NAMES)
    with engine.connect() as conn:
        found = conn.execute(sa.text(f'SELECT {columns} FROM "{schema}"."{table}" ORDER BY id'))
        return [tuple(found_row) for found_row in found]


def _dead_letters(engine: sa.engine.Engine, schema: str) -> list[tuple[int, str, str]]:
    with engine.connect() as conn:
        return [
            (found[0], found[1], found[2])
            for found in conn.execute(
                sa.text(f'SELECT "offset", error_code, error FROM "{schema}".dead ORDER BY 1')
            )
        ]


def _caught_up(
    engine: sa.engine.Engine, worker: SinkProcess, schema: str, topic: str, ends: dict[int, int]
) -> Callable[[], bool]:
    def caught_up() -> bool:
        assert worker.running(), worker.output()[-3000:]
        stored = stored_offsets(engine, schema).get(topic, {})
        return all(stored.get(str(p)) == end for p, end in ends.items() if end)

    return caught_up


def _config(
    sink_config: Callable[..., Path],
    topic: str,
    schema: str,
    fmt: str,
    *,
    truncate: str | None = None,
    policy: str = "dead-letter-table",
    extra: str = "",
    **options: Any,
) -> Path:
    table_extra = f'envelope = "debezium"\nkey_format = "{fmt}"\nvalue_format = "{fmt}"\n'
    if truncate is not None:
        table_extra += f'truncate = "{truncate}"\n'
    errors = f'[errors]\npolicy = "{policy}"\n'
    if policy == "dead-letter-table":
        errors += f'dead_letter_table = "{schema}.dead"\n'
    return sink_config(  # type: ignore[no-any-return]
        [topic],
        schema,
        "customers",
        primary_key=["id"],
        columns=COLUMNS,
        table_extra=table_extra,
        extra=errors + extra,
        **options,
    )


def _run_until_caught_up(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    start_sink: Callable[[Path], SinkProcess],
    config: Path,
    schema: str,
    topic: str,
) -> SinkProcess:
    worker = start_sink(config)
    ends = log_end_offsets(kafka_bootstrap, topic, 1)
    wait_until(_caught_up(engine, worker, schema, topic, ends), 120, "every change committed")
    return worker


# --- JSON, with schemas and without -----------------------------------------------------------


BAD_INPUT = [
    ({"id": 1, "name": "a plain row"}, "not-debezium"),
    ({"before": None, "after": {"id": 1}, "op": "x"}, "debezium-op"),
    ({"before": None, "after": None, "op": "d"}, "no-key"),
]


def _bad(fmt: str, value: dict[str, Any]) -> bytes:
    """A value that is no change event this sink applies, in the topic's format (a Connect
    envelope without a schema, as JsonConverter writes a schemaless value)."""
    return orjson.dumps({"schema": None, "payload": value} if fmt == "connect-json" else value)


@pytest.mark.parametrize("fmt", ["connect-json", "json"])
def test_json_change_events_apply_in_order_within_a_batch_and_bad_ones_are_dead_letters(
    fmt: str,
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic()
    encode = connect_json if fmt == "connect-json" else plain_json
    source = Source(_connect if fmt == "connect-json" else _plain)
    messages = list(story(source, encode))
    # The tombstone-free kind of delete: a key, but only `before` says which row (no key).
    messages.append(encode(*source.upsert(80, "c")))
    i, delete = source.delete(80)
    messages.append((None, encode(i, delete)[1]))
    # A truncate, ignored by default: the rows stay.
    messages.append((None, encode(None, source.event("t", None, None))[1]))
    truncated = source.expected()
    # A message event (pg_logical_emit_message): nothing to write.
    message_event = {"op": "m", "ts_ms": 1, "source": _source(9), "message": {"prefix": "p"}}
    messages.append((None, encode(None, message_event)[1]))
    first_bad = len(messages)
    messages += [(None, _bad(fmt, value)) for value, _ in BAD_INPUT]
    produce(kafka_bootstrap, topic, messages)
    # One batch holds the whole story: the orders above are kept within it.
    config = _config(sink_config, topic, schema, fmt, max_messages=5000, max_age_seconds=3)
    worker = _run_until_caught_up(engine, kafka_bootstrap, start_sink, config, schema, topic)
    assert worker.terminate() == 0, worker.output()[-2000:]

    assert _rows(engine, schema) == truncated
    assert {70, 8} <= {found[0] for found in truncated}
    assert not {2, 5, 41, 60, 71, 80} & {found[0] for found in truncated}
    letters = _dead_letters(engine, schema)
    assert [(offset, code) for offset, code, _ in letters] == [
        (first_bad + n, code) for n, (_, code) in enumerate(BAD_INPUT)
    ]
    assert all(f"{schema}.customers" in error for _, _, error in letters)
    assert "the source table of" in worker.messages()
    assert 'truncated; ignored (truncate = "ignore")' in worker.messages()


def test_a_truncate_empties_the_table_of_rows_before_it_and_keeps_those_after_it(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic()
    source = Source(_connect)
    config = _config(
        sink_config, topic, schema, "connect-json", truncate="truncate", max_messages=5000
    )
    # Rows of an earlier batch, committed.
    produce(kafka_bootstrap, topic, [connect_json(*source.upsert(i, "r")) for i in range(1, 31)])
    worker = _run_until_caught_up(engine, kafka_bootstrap, start_sink, config, schema, topic)
    assert len(_rows(engine, schema)) == 30
    # Then one batch: rows, a truncate, rows (some written before it too), a delete, a truncate
    # of nothing in between, and more rows.
    later: list[Pair] = [connect_json(*source.upsert(i, "c")) for i in range(31, 41)]
    later.append((None, connect_json(None, source.truncate())[1]))
    later += [connect_json(*source.upsert(i, "c")) for i in (35, 36, 50, 51, 52)]
    later += [connect_json(*source.delete(51)), connect_json(51, None)]
    later += [connect_json(*source.upsert(i, "u")) for i in (50,)]
    produce(kafka_bootstrap, topic, later)
    ends = log_end_offsets(kafka_bootstrap, topic, 1)
    wait_until(_caught_up(engine, worker, schema, topic, ends), 120, "the truncate committed")
    assert _rows(engine, schema) == source.expected()
    assert [found[0] for found in _rows(engine, schema)] == [35, 36, 50, 52]
    # A truncate last in its batch empties the table.
    produce(kafka_bootstrap, topic, [(None, connect_json(None, source.truncate())[1])])
    ends = log_end_offsets(kafka_bootstrap, topic, 1)
    wait_until(_caught_up(engine, worker, schema, topic, ends), 120, "the last truncate")
    assert worker.terminate() == 0, worker.output()[-2000:]
    assert _rows(engine, schema) == []
    assert "truncated at its source: 4 rows deleted, 0 written since kept" in worker.messages()


def test_a_bad_change_event_stops_the_worker_under_the_fail_policy_after_what_came_before(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic()
    source = Source(_plain)
    good = [plain_json(*source.upsert(i, "c")) for i in range(1, 11)]
    produce(kafka_bootstrap, topic, [*good, (None, _bad("json", BAD_INPUT[1][0])), *good])
    worker = start_sink(_config(sink_config, topic, schema, "json", policy="fail"))
    assert worker.exit_code(120) != 0
    assert "debezium-op" in worker.output() or "op is 'x'" in worker.output()
    assert _rows(engine, schema) == source.expected()
    assert stored_offsets(engine, schema)[topic] == {"0": 10}


# --- Avro through the schema registry ---------------------------------------------------------


def _avro_semantic(type_: str, semantic: str, **extra: Any) -> dict[str, Any]:
    return {"type": type_, "connect.version": 1, "connect.name": semantic, **extra}


AVRO_ROW = {
    "type": "record",
    "name": "Value",
    "namespace": PREFIX,
    "fields": [
        {"name": "id", "type": {"type": "int", "connect.default": 0}, "default": 0},
        {"name": "name", "type": ["null", "string"], "default": None},
        {
            "name": "price",
            "type": [
                "null",
                _avro_semantic(
                    "bytes",
                    "org.apache.kafka.connect.data.Decimal",
                    scale=2,
                    precision=10,
                    **{"connect.parameters": {"scale": "2", "connect.decimal.precision": "10"}},
                    logicalType="decimal",
                ),
            ],
            "default": None,
        },
        {
            "name": "born",
            "type": ["null", _avro_semantic("int", "io.debezium.time.Date")],
            "default": None,
        },
        {
            "name": "updated_at",
            "type": ["null", _avro_semantic("long", "io.debezium.time.MicroTimestamp")],
            "default": None,
        },
        {
            "name": "seen_at",
            "type": ["null", _avro_semantic("string", "io.debezium.time.ZonedTimestamp")],
            "default": None,
        },
        {
            "name": "ref",
            "type": ["null", _avro_semantic("string", "io.debezium.data.Uuid")],
            "default": None,
        },
        {
            "name": "doc",
            "type": ["null", _avro_semantic("string", "io.debezium.data.Json")],
            "default": None,
        },
        {
            "name": "ratio",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "VariableScaleDecimal",
                    "namespace": "io.debezium.data",
                    "fields": [
                        {"name": "scale", "type": "int"},
                        {"name": "value", "type": "bytes"},
                    ],
                    "connect.doc": "Variable scaled decimal",
                    "connect.version": 1,
                    "connect.name": "io.debezium.data.VariableScaleDecimal",
                },
            ],
            "default": None,
        },
    ],
    "connect.name": f"{PREFIX}.Value",
}
AVRO_SOURCE = {
    "type": "record",
    "name": "Source",
    "namespace": "io.debezium.connector.postgresql",
    "fields": [
        {"name": "version", "type": "string"},
        {"name": "connector", "type": "string"},
        {"name": "name", "type": "string"},
        {"name": "ts_ms", "type": "long"},
        {
            "name": "snapshot",
            "type": [
                _avro_semantic(
                    "string",
                    "io.debezium.data.Enum",
                    **{
                        "connect.default": "false",
                        "connect.parameters": {"allowed": "true,last,false"},
                    },
                ),
                "null",
            ],
            "default": "false",
        },
        {"name": "db", "type": "string"},
        {"name": "sequence", "type": ["null", "string"], "default": None},
        {"name": "ts_us", "type": ["null", "long"], "default": None},
        {"name": "ts_ns", "type": ["null", "long"], "default": None},
        {"name": "schema", "type": "string"},
        {"name": "table", "type": "string"},
        {"name": "txId", "type": ["null", "long"], "default": None},
        {"name": "lsn", "type": ["null", "long"], "default": None},
        {"name": "xmin", "type": ["null", "long"], "default": None},
    ],
    "connect.version": 1,
    "connect.name": "io.debezium.connector.postgresql.Source",
}
AVRO_ENVELOPE = {
    "type": "record",
    "name": "Envelope",
    "namespace": PREFIX,
    "fields": [
        {"name": "before", "type": ["null", AVRO_ROW], "default": None},
        {"name": "after", "type": ["null", "Value"], "default": None},
        {"name": "source", "type": AVRO_SOURCE},
        {
            "name": "transaction",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "block",
                    "namespace": "event",
                    "fields": [
                        {"name": "id", "type": "string"},
                        {"name": "total_order", "type": "long"},
                        {"name": "data_collection_order", "type": "long"},
                    ],
                    "connect.version": 1,
                    "connect.name": "event.block",
                },
            ],
            "default": None,
        },
        {"name": "op", "type": "string"},
        {"name": "ts_ms", "type": ["null", "long"], "default": None},
        {"name": "ts_us", "type": ["null", "long"], "default": None},
        {"name": "ts_ns", "type": ["null", "long"], "default": None},
    ],
    "connect.version": 2,
    "connect.name": f"{PREFIX}.Envelope",
}
AVRO_KEY = {
    "type": "record",
    "name": "Key",
    "namespace": PREFIX,
    "fields": [{"name": "id", "type": {"type": "int", "connect.default": 0}, "default": 0}],
    "connect.name": f"{PREFIX}.Key",
}


def _avro_row(values: Any) -> Any:
    if values is None:
        return None
    if isinstance(values, _Partial):
        return dict(values)
    written = _connect_row(values)
    written["price"] = values["price"]  # the Avro decimal logical type
    ratio = written["ratio"]
    written["ratio"] = {"scale": ratio["scale"], "value": base64.b64decode(ratio["value"])}
    return written


@pytest.fixture
def registry(schema_registry_url: str) -> Iterator[SchemaRegistryClient]:
    with SchemaRegistryClient({"url": schema_registry_url}) as client:
        yield client


def test_avro_change_events_through_the_registry_apply_in_order_with_truncates(
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
    keys = AvroSerializer(registry, json.dumps(AVRO_KEY))
    values = AvroSerializer(registry, json.dumps(AVRO_ENVELOPE))

    def avro(key: int | None, value: dict[str, Any] | None) -> Pair:
        return (
            None
            if key is None
            else keys({"id": key}, SerializationContext(topic, MessageField.KEY)),
            None
            if value is None
            else values(value, SerializationContext(topic, MessageField.VALUE)),
        )

    source = Source(_avro_row)
    messages = list(story(source, avro))
    messages.append((None, avro(None, source.truncate())[1]))
    messages += [avro(*source.upsert(i, "c")) for i in (3, 4, 90)]
    messages += [avro(*source.delete(4)), avro(4, None)]
    produce(kafka_bootstrap, topic, messages)
    config = _config(
        sink_config,
        topic,
        schema,
        "avro",
        truncate="truncate",
        extra=f'[schema_registry]\nurl = "{schema_registry_url}"\n',
        max_messages=5000,
        max_age_seconds=3,
    )
    worker = _run_until_caught_up(engine, kafka_bootstrap, start_sink, config, schema, topic)
    assert worker.terminate() == 0, worker.output()[-2000:]
    assert _rows(engine, schema) == source.expected()
    assert [found[0] for found in _rows(engine, schema)] == [3, 90]
    assert _dead_letters(engine, schema) == []


# --- a worker killed mid-stream ---------------------------------------------------------------


def test_sigkill_mid_stream_leaves_the_table_in_the_sources_state(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic(partitions=3)
    source = Source(_plain)
    rng = random.Random(7)
    messages: list[Pair] = []
    for _ in range(60_000):
        i = rng.randrange(1, 2000)
        if i in source.state and rng.random() < 0.3:
            messages += [plain_json(*source.delete(i)), plain_json(i, None)]
        else:
            messages.append(plain_json(*source.upsert(i, "u" if i in source.state else "c")))

    def produce_steadily() -> None:
        # Keyed by id, as the connector keys them: each key's changes stay in order.
        for start in range(0, len(messages), 3000):
            produce(kafka_bootstrap, topic, messages[start : start + 3000])
            time.sleep(1)

    producer = threading.Thread(target=produce_steadily, daemon=True)
    producer.start()
    config = _config(sink_config, topic, schema, "json", max_messages=700)

    def committed() -> int:
        return sum(stored_offsets(engine, schema).get(topic, {}).values())

    kills = 0
    try:
        while producer.is_alive() and kills < 4:
            worker = start_sink(config)
            before = committed()
            wait_until(lambda b=before: committed() > b, 60, "progress")
            time.sleep(rng.uniform(0.0, 0.8))
            worker.signal(signal.SIGKILL)
            worker.proc.wait(10)
            kills += 1
            time.sleep(7)  # past the session timeout: the next worker gets the partitions
    finally:
        producer.join()
    assert kills >= 2, "the workers were killed too seldom to prove anything"
    ends = log_end_offsets(kafka_bootstrap, topic, 3)
    final = start_sink(config)
    wait_until(_caught_up(engine, final, schema, topic, ends), 180, "every change committed")
    assert final.terminate() == 0, final.output()[-2000:]
    assert _rows(engine, schema) == source.expected()
    assert stored_offsets(engine, schema)[topic] == {str(p): n for p, n in ends.items() if n}
