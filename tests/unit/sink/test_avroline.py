"""The native path of Avro values (sink/_avroline.h, sink/avroline.py): for any value, valid or
not, it gives the very CopyRow the general way gives (fastavro, then the mapping), or None so
that the message takes the general way; it is taken, for a schema id the general way has read
first; and without it (or for a key in the wire format) messages take the general way."""

from __future__ import annotations

import gc
import io
import json
import sys
import tracemalloc
from datetime import datetime, timedelta, timezone
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pg_bulk_ingest import CopyRow, CopyTuple
from pg_bulk_ingest._binary import binary_row_encoder
from pg_bulk_ingest._errors import NotBinary
from pg_bulk_ingest._types import column_pg_type
from sink import avroline
from sink.avroline import AvroFastPath
from sink.config import ColumnSettings, Format, TableSettings
from sink.config import parse_column_type as ctype
from sink.config import parse_source as source
from sink.errors import DecodeError
from sink.path import TopicPath
from sink.pipeline import Pipeline
from sink.records import Message
from sink.registry import SchemaDecoders
from sink.tables import tables_from_config
from tests.benchmarks.avro import SCHEMA as BENCH_SCHEMA
from tests.benchmarks.avro import _encoded
from tests.unit.sink.test_registry import URL, FakeRegistry, wire

if not avroline.NATIVE:
    pytest.skip("the C extension is not built", allow_module_level=True)
_copyline = avroline._copyline

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
COLUMNS = {
    "id": "BIGINT",
    "small": "SMALLINT",
    "short": "VARCHAR(5)",
    "body": "TEXT",
    "price": "NUMERIC(6,2)",
    "free": "NUMERIC",
    "wide": "DOUBLE PRECISION",
    "ratio": "REAL",
    "flag": "BOOLEAN",
    "doc": "JSONB",
    "at": "TIMESTAMPTZ",
    "ms": "TIMESTAMPTZ",
    "wall": "TIMESTAMP",
    "day": "DATE",
    "uid": "UUID",
    "tags": "TEXT[]",
    "choice": "TEXT",
    "note": "TEXT",
}
INNER = {"type": "record", "name": "Inner", "fields": [{"name": "s", "type": "string"}]}
DOC = {
    "type": "record",
    "name": "Doc",
    "fields": [
        {"name": "name", "type": "string"},
        {"name": "n", "type": "long"},
        {"name": "small", "type": "int"},
        {"name": "on", "type": "boolean"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": ["null", "long", "string"]}},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B_2"]}},
        {"name": "inner", "type": ["null", INNER]},
        {"name": "again", "type": ["null", "Inner"]},
    ],
}
# Logical types as written on the wire: the value schema reads them, the writer writes the
# underlying values, so that values fastavro could not write (out of range, not a UUID) go too.
TIMESTAMP_MICROS = {"type": "long", "logicalType": "timestamp-micros"}
FIELDS: list[dict[str, Any]] = [
    {"name": "id", "type": "long"},
    {"name": "small", "type": "int"},
    {"name": "short", "type": ["null", "string"]},
    {"name": "body", "type": ["null", "string", "long", "boolean"]},
    {
        "name": "price",
        "type": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2},
    },
    {
        "name": "free",
        "type": {
            "type": "fixed",
            "name": "Big",
            "size": 16,
            "logicalType": "decimal",
            "precision": 38,
            "scale": 10,
        },
    },
    {"name": "wide", "type": "double"},
    {"name": "ratio", "type": "float"},
    {"name": "flag", "type": "boolean"},
    {"name": "doc", "type": ["null", DOC]},
    {"name": "at", "type": ["null", TIMESTAMP_MICROS]},
    {"name": "ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "wall", "type": "string"},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "choice", "type": {"type": "enum", "name": "Choice", "symbols": ["RED", "GREEN"]}},
    # Read and checked, not written: no column takes them.
    {"name": "blob", "type": "bytes"},
    {"name": "mac", "type": {"type": "fixed", "name": "Mac", "size": 3}},
    {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
    {"name": "real", "type": "float"},
    {"name": "extra", "type": {"type": "map", "values": "Inner"}},
]
SCHEMA = {"type": "record", "name": "Event", "namespace": "test", "fields": FIELDS}


def _plain(schema: Any) -> Any:
    """The schema with its logical types dropped: what the tests write values with."""
    if isinstance(schema, list):
        return [_plain(branch) for branch in schema]
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items() if k != "logicalType"}
    return schema


WRITER = fastavro.parse_schema(_plain(SCHEMA))


def pipeline(
    *schemas: dict[str, Any],
    key_format: Format = Format.STRING,
    native: bool = True,
    binary: bool = False,
) -> tuple[Pipeline, TopicPath]:
    """A pipeline for table events (COLUMNS from top-level value fields) of Avro values, its
    registry holding `schemas` as ids 1, 2, ...; with `binary`, without the REAL column, so
    that the table is written in binary COPY."""
    columns = [
        ColumnSettings(name, ctype(type_), source(f"value.{name}"), nullable=name != "id")
        for name, type_ in COLUMNS.items()
        if not (binary and type_ == "REAL")
    ]
    table = TableSettings(
        schema="public",
        name="events",
        columns=tuple(columns),
        topics=("t",),
        primary_key=("id",),
        key_format=key_format,
        value_format=Format.AVRO,
    )
    registry = FakeRegistry()
    for schema_id, schema in enumerate(schemas or (SCHEMA,), start=1):
        registry.add(schema_id, Schema(json.dumps(schema), "AVRO"))
    made = Pipeline(tables_from_config([table]), SchemaDecoders(registry, URL))
    return made, made.path("t")


PIPELINE, PATH = pipeline()
FAST = PATH.fast
assert isinstance(FAST, AvroFastPath)
_, BINARY_PATH = pipeline(binary=True)
BINARY_FAST = BINARY_PATH.fast
assert isinstance(BINARY_FAST, AvroFastPath)
BINARY_ENCODE = binary_row_encoder(
    [column_pg_type(BINARY_FAST.table, c) for c in BINARY_FAST.table.columns]
)


def general(key: bytes | None, value: bytes) -> CopyRow | None:
    """The general way's row; None for a dead letter. Also teaches the native path the id."""
    try:
        mapped = PATH.lines(Message("t", 0, 0, None, key, value))
    except DecodeError:
        return None
    return mapped.rows[0][1]  # type: ignore[return-value]


def general_tuple(key: bytes | None, value: bytes) -> bytes | None:
    """The core's binary tuple of the general way's values, of the table written in binary
    COPY; None for a dead letter. Also teaches the native path the id."""
    assert BINARY_ENCODE is not None
    try:
        mapped = BINARY_PATH.lines(Message("t", 0, 0, None, key, value))
    except DecodeError:
        return None
    try:
        return BINARY_ENCODE(mapped.rows[0][1])  # type: ignore[arg-type]
    except NotBinary:
        return None


def encode(value: dict[str, Any], schema_id: int = 1, writer: Any = WRITER) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, writer, value)
    return wire(schema_id, out.getvalue())


def decimal_bytes(unscaled: int) -> bytes:
    return unscaled.to_bytes(max(1, (unscaled.bit_length() + 8) // 8), "big", signed=True)


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


AN_EVENT: dict[str, Any] = {
    "id": 1,
    "small": 7,
    "short": "ab",
    "body": "tab\there, newline\nand back\\slash",
    "price": decimal_bytes(-12345),
    "free": (10**20 + 5).to_bytes(16, "big", signed=True),
    "wide": 0.1,
    "ratio": 1.5,
    "flag": True,
    "doc": {
        "name": 'q"uote ünï 🦆',
        "n": -(2**63),
        "small": 2**31 - 1,
        "on": False,
        "tags": [],
        "attrs": {"a": None, "b": 2**63 - 1, "c": "\u0001"},
        "kind": "B_2",
        "inner": {"s": ""},
        "again": None,
    },
    "at": micros(datetime(2026, 11, 3, 4, 5, 6, 7, tzinfo=UTC)),
    "ms": -1,
    "wall": "2026-11-03T04:05:06Z",
    "day": 20000,
    "uid": "0f8fad5b-d9cb-469f-a165-70867728950e",
    "tags": ["web", "mobile"],
    "choice": "GREEN",
    "blob": b"\x00\xff",
    "mac": b"abc",
    "local": 0,
    "real": float("nan"),
    "extra": {"k": {"s": "v"}},
}


def test_a_typical_event_takes_the_native_path_after_its_schema_id_took_the_general_way() -> None:
    _, path = pipeline()
    fast = path.fast
    assert isinstance(fast, AvroFastPath)
    value = encode(AN_EVENT)
    assert fast.row(b"k", value) is None  # not read the general way yet
    row = path.lines(Message("t", 0, 0, None, b"k", value)).rows[0][1]
    assert fast.row(b"k", value) == row
    assert fast.native_rows == 1
    assert row.startswith("1\t7\tab\ttab\\there, newline\\nand back\\\\slash\t-123.45\t")


def test_the_benchmark_events_go_natively_with_the_general_way_s_rows() -> None:
    columns = {
        "id": "BIGINT",
        "key": "VARCHAR(64)",
        "ts": "TIMESTAMPTZ",
        "amount": "NUMERIC(12,2)",
        "status": "VARCHAR(16)",
        "payload": "JSONB",
        "tags": "TEXT[]",
    }
    table = TableSettings(
        schema="public",
        name="events",
        columns=tuple(
            ColumnSettings(n, ctype(t), source(f"value.{n}"), nullable=n != "id")
            for n, t in columns.items()
        ),
        topics=("t",),
        value_format=Format.AVRO,
    )
    registry = FakeRegistry()
    registry.add(1, Schema(json.dumps(BENCH_SCHEMA), "AVRO"))
    path = Pipeline(tables_from_config([table]), SchemaDecoders(registry, URL)).path("t")
    assert isinstance(path.fast, AvroFastPath)
    messages = list(_encoded(1, 300))
    rows = [path.lines(Message("t", 0, 0, None, k, v)).rows[0][1] for k, v in messages]
    # The table is written in binary COPY: the general way's values, as the core encodes them.
    encode = binary_row_encoder(
        [column_pg_type(path.fast.table, c) for c in path.fast.table.columns]
    )
    assert encode is not None
    assert [path.fast.row(k, v) for k, v in messages] == [encode(row) for row in rows]
    assert path.fast.native_rows == len(messages)


longs = st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, -1, 2**63 - 1, -(2**63)])
ints = st.integers(-(2**31), 2**31 - 1) | st.sampled_from([0, 32767, 32768, -32769])
texts = st.text(max_size=8) | st.sampled_from(
    ["", "a\tb", 'q"uote', "back\\slash", "nul\u0000", "ünï", "🦆", "\u2028", "x" * 6, "\r\n"]
)
# Timestamps within Python's years and beyond them, either side of 1970.
MIN_MICROS, MAX_MICROS = (
    micros(datetime(1, 1, 1, tzinfo=UTC)),
    micros(datetime.max.replace(tzinfo=UTC)),
)
instants = st.integers(MIN_MICROS - 10, MAX_MICROS + 10) | st.sampled_from(
    [0, -1, 1, 1000, MIN_MICROS, MAX_MICROS, MAX_MICROS + 1, 2**63 - 1, -(2**63)]
)
uuids = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()) | texts
docs = st.fixed_dictionaries(
    {
        "name": texts,
        "n": longs,
        "small": ints,
        "on": st.booleans(),
        "tags": st.lists(texts, max_size=3),
        "attrs": st.dictionaries(texts, st.none() | longs | texts, max_size=3),
        "kind": st.sampled_from(["A", "B_2"]),
        "inner": st.none() | st.fixed_dictionaries({"s": texts}),
        "again": st.none() | st.fixed_dictionaries({"s": texts}),
    }
)
events = st.fixed_dictionaries(
    {
        "id": longs,
        "small": ints,
        "short": st.none() | texts,
        "body": st.none() | texts | longs | st.booleans(),
        "price": st.integers(-(10**7), 10**7).map(decimal_bytes),
        "free": st.integers(-(2**127), 2**127 - 1).map(lambda n: n.to_bytes(16, "big", signed=True))
        | st.sampled_from([10**38, -(10**38) + 1, 1, -1, 0]).map(
            lambda n: n.to_bytes(16, "big", signed=True)
        ),
        "wide": st.floats(),
        "ratio": st.floats(width=32),
        "flag": st.booleans(),
        "doc": st.none() | docs,
        "at": st.none() | instants,
        "ms": st.integers(MIN_MICROS // 1000 - 5, MAX_MICROS // 1000 + 5)
        | st.sampled_from([2**63 - 1, -(2**63)]),
        "wall": texts | st.sampled_from(["2026-11-03T04:05:06Z", "2026-11-03 04:05:06+00"]),
        "day": ints | st.integers(-719162 - 2, 2932896 + 2),
        "uid": uuids,
        "tags": st.lists(texts, max_size=3),
        "choice": st.sampled_from(["RED", "GREEN"]),
        "blob": st.binary(max_size=4),
        "mac": st.binary(min_size=3, max_size=3),
        "local": instants,
        "real": st.floats(width=32),
        "extra": st.dictionaries(texts, st.fixed_dictionaries({"s": texts}), max_size=2),
    }
)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(event=events, key=st.none() | st.binary(max_size=3))
def test_any_value_gives_the_general_way_s_row_or_takes_the_general_way(
    event: dict[str, Any], key: bytes | None
) -> None:
    value = encode(event)
    expected = general(key, value)
    native = FAST.row(key, value)
    assert native is None or native == expected


@FUZZ
@given(event=events, key=st.none() | st.binary(max_size=3))
def test_any_value_gives_the_core_s_binary_tuple_of_the_general_way_s_values_or_goes_its_way(
    event: dict[str, Any], key: bytes | None
) -> None:
    value = encode(event)
    expected = general_tuple(key, value)
    native = BINARY_FAST.row(key, value)
    assert native is None or (type(native) is CopyTuple and native == expected)


@FUZZ
@given(event=events, data=st.data())
def test_damaged_bytes_never_give_a_row_the_general_way_would_not(
    event: dict[str, Any], data: st.DataObject
) -> None:
    value = encode(event)
    general(None, value)  # the id is learned
    damage = data.draw(st.sampled_from(["cut", "flip", "append", "splice"]))
    at = data.draw(st.integers(5, len(value) - 1))
    if damage == "cut":
        damaged = value[:at]
    elif damage == "flip":
        damaged = value[:at] + bytes([value[at] ^ data.draw(st.integers(1, 255))]) + value[at + 1 :]
    elif damage == "append":
        damaged = value + data.draw(st.binary(min_size=1, max_size=4))
    else:
        damaged = value[:at] + data.draw(st.binary(max_size=12)) + value[at:]
    native = FAST.row(None, damaged)
    assert native is None or native == general(None, damaged)


# Values at the edges, each with the way it goes: written natively, by the general way (the
# native path is not sure of it), or a dead letter (the general way refuses it; natively None).
EDGES = [
    ({"short": None, "body": None, "doc": None, "at": None}, "native"),
    (
        {"short": "", "body": "", "tags": [], "doc": {**AN_EVENT["doc"], "tags": [], "attrs": {}}},
        "native",
    ),
    ({"body": "nul\u0000"}, "dead"),
    ({"body": 2**63 - 1}, "general"),
    ({"body": True}, "general"),
    ({"short": "ünïcø"}, "native"),
    ({"short": "toolong"}, "dead"),
    ({"small": 32768}, "dead"),
    ({"id": -(2**63)}, "native"),
    ({"price": decimal_bytes(-99999999)}, "dead"),
    ({"price": decimal_bytes(-1)}, "native"),
    ({"price": b""}, "native"),
    ({"free": (-(10**37)).to_bytes(16, "big", signed=True)}, "native"),
    ({"free": (1).to_bytes(16, "big", signed=True)}, "general"),
    ({"at": micros(datetime(1, 1, 1, tzinfo=UTC))}, "native"),
    ({"at": micros(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))}, "native"),
    ({"at": micros(datetime(9999, 12, 28, 23, 59, 59, 999999, tzinfo=UTC))}, "native"),
    ({"at": micros(datetime(2024, 2, 29, tzinfo=UTC))}, "native"),
    ({"at": MAX_MICROS + 1}, "dead"),
    ({"ms": 2**62}, "dead"),
    ({"day": -719163}, "dead"),
    ({"day": -719162}, "native"),
    ({"day": 2932896}, "native"),
    ({"uid": "0F8FAD5B-D9CB-469F-A165-70867728950E"}, "general"),
    ({"uid": "not a uuid"}, "dead"),
    ({"wide": float("inf")}, "general"),
    ({"wide": float("nan")}, "general"),
    ({"wide": -0.0}, "native"),
    ({"wide": 1e16}, "native"),
    ({"ratio": 3.4028234663852886e38}, "native"),
    ({"tags": ["a b", 'q"'], "doc": {**AN_EVENT["doc"], "name": "\u0000"}}, "dead"),
]


@pytest.mark.parametrize(("edge", "way"), EDGES)
def test_edge_values_go_their_way_with_the_general_way_s_row(
    edge: dict[str, Any], way: str
) -> None:
    value = encode({**AN_EVENT, **edge})
    expected = general(None, value)
    native = FAST.row(None, value)
    assert (expected is None) == (way == "dead")
    assert (native is not None) == (way == "native")
    assert native is None or native == expected


@pytest.mark.parametrize(("edge", "way"), EDGES)
def test_edge_values_go_their_way_with_the_core_s_binary_tuple(
    edge: dict[str, Any], way: str
) -> None:
    value = encode({**AN_EVENT, **edge})
    expected = general_tuple(None, value)
    native = BINARY_FAST.row(None, value)
    if way == "native":
        assert native is not None and native == expected
    else:
        assert native is None


def test_a_new_schema_id_takes_the_general_way_first_then_the_native_path() -> None:
    v2 = {**SCHEMA, "fields": [*FIELDS, {"name": "note", "type": ["null", "string"]}]}
    _, path = pipeline(SCHEMA, v2)
    fast = path.fast
    assert isinstance(fast, AvroFastPath)
    writer2 = fastavro.parse_schema(_plain(v2))
    old, new = encode(AN_EVENT), encode({**AN_EVENT, "note": "added"}, 2, writer2)
    for value in (old, new):
        assert fast.row(None, value) is None
        row = path.lines(Message("t", 0, 0, None, None, value)).rows[0][1]
        assert fast.row(None, value) == row
    assert fast.row(None, new).endswith("\tadded\n")  # type: ignore[union-attr]
    assert fast.native_rows == 3


def test_malformed_headers_and_unknown_ids_take_the_general_way() -> None:
    value = encode(AN_EVENT)
    general(None, value)
    assert FAST.row(None, value) is not None
    for bad in (b"", b"\x00\x00", b"\x01" + value[1:], wire(99, value[5:]), value + b"\x00"):
        assert FAST.row(None, bad) is None
    # Invalid UTF-8 in a column's string and in a string read only: a dead letter.
    for field in ("body", "extra"):
        text = "é"
        event = {**AN_EVENT, field: {"k": {"s": text}} if field == "extra" else text}
        bad = encode(event).replace("é".encode(), b"\xc3\x28")
        assert general(None, bad) is None
        assert FAST.row(None, bad) is None


def test_a_key_in_the_wire_format_takes_the_general_way() -> None:
    made, path = pipeline(key_format=Format.AVRO)
    assert path.fast is None
    value = encode(AN_EVENT)
    assert made.copy_lines(Message("t", 0, 0, None, None, value)).rows[0][1] == general(None, value)


def test_a_line_told_so_hands_every_message_with_a_key_to_the_general_way() -> None:
    one_column = _copyline.Line([("id", 1, -(2**63), 2**63 - 1, True)], CopyRow, _none, 0)
    line = _copyline.AvroLine(one_column, True)
    line.learn(
        1, avroline.program(fastavro.parse_schema(SCHEMA), [("id", 1, -(2**63), 2**63 - 1, True)])
    )
    value = encode(AN_EVENT)
    assert line.row(None, value) == "1\n"
    assert line.row(b"k", value) is None
    assert line.native_rows == 1


def test_a_schema_with_a_debezium_semantic_type_takes_the_general_way() -> None:
    semantic = {
        **SCHEMA,
        "fields": [
            *FIELDS[:-1],
            {"name": "note", "type": {"type": "int", "connect.name": "io.debezium.time.Date"}},
        ],
    }
    _, path = pipeline(semantic)
    assert isinstance(path.fast, AvroFastPath)
    writer = fastavro.parse_schema(_plain(semantic))
    value = encode({**AN_EVENT, "note": 3}, 1, writer)
    row = path.lines(Message("t", 0, 0, None, None, value)).rows[0][1]
    assert row.endswith("\t1970-01-04\n")
    assert path.fast.row(None, value) is None


def test_without_the_c_extension_avro_values_take_the_general_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(avroline, "NATIVE", False)
    made, path = pipeline()
    assert path.fast is None
    row = made.copy_lines(Message("t", 0, 0, None, None, encode(AN_EVENT))).rows[0][1]
    assert row.startswith("1\t7\tab\t")


def test_ops_compile_only_where_the_column_takes_the_value_exactly() -> None:
    columns = [("a", 7, 0, 0, False), ("b", 2, -1, 0, False), ("c", 3, 4, 2, False)]
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "R",
            "fields": [
                {"name": "a", "type": TIMESTAMP_MICROS},
                {"name": "b", "type": TIMESTAMP_MICROS},  # TEXT: isoformat, not orjson's
                {
                    "name": "c",
                    "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 3},
                },
                {"name": "d", "type": "bytes"},
            ],
        }
    )
    compiled = avroline.program(schema, columns)
    assert compiled is not None
    ops = [node[0] for node in compiled[5]]
    assert ops == [avroline.Op.TIMESTAMP, avroline.Op.FAIL, avroline.Op.FAIL, avroline.Op.BYTES]
    assert compiled[4] == (b'"a":', b'"b":', b'"c":', b"")


def _none(key: bytes | None, value: bytes | None) -> None:
    return None


def test_a_learned_program_is_released_with_its_line() -> None:
    _, path = pipeline()
    assert isinstance(path.fast, AvroFastPath)
    compiled = avroline.program(fastavro.parse_schema(SCHEMA), path.fast._columns)
    before = sys.getrefcount(compiled)
    one_column = _copyline.Line([("id", 1, -(2**63), 2**63 - 1, True)], CopyRow, _none, 0)
    line = _copyline.AvroLine(one_column, False)
    line.learn(1, compiled)
    line.learn(1, compiled)  # an id learned keeps its program
    assert sys.getrefcount(compiled) == before + 1
    assert line.row(None, encode(AN_EVENT)) == "1\n"
    del line
    gc.collect()
    assert sys.getrefcount(compiled) == before


def test_reading_many_values_good_and_bad_holds_no_memory() -> None:
    values = [encode({**AN_EVENT, **edge}) for edge, _ in EDGES]
    values += [value[:cut] for value in values[:3] for cut in range(5, len(value), 7)]
    for value in values:
        general(None, value)
    tracemalloc.start()
    for _ in range(3):
        for value in values:
            FAST.row(b"k", value)
    baseline = tracemalloc.get_traced_memory()[0]
    for _ in range(30):
        for value in values:
            FAST.row(b"k", value)
    grown = tracemalloc.get_traced_memory()[0] - baseline
    tracemalloc.stop()
    assert grown < 10_000


def test_a_schema_nested_deeper_than_the_native_path_takes_takes_the_general_way() -> None:
    inner: dict[str, Any] = {
        "type": "record",
        "name": "L0",
        "fields": [{"name": "x", "type": "long"}],
    }
    for level in range(1, 80):
        inner = {"type": "record", "name": f"L{level}", "fields": [{"name": "x", "type": inner}]}
    deep = {**SCHEMA, "fields": [*FIELDS[:-1], {"name": "deep", "type": inner}]}  # read only
    _, path = pipeline(deep)
    assert isinstance(path.fast, AvroFastPath)
    leaf: dict[str, Any] = {"x": 1}
    for _ in range(79):
        leaf = {"x": leaf}
    value = encode({**AN_EVENT, "deep": leaf}, 1, fastavro.parse_schema(_plain(deep)))
    row = path.lines(Message("t", 0, 0, None, None, value)).rows[0][1]
    assert row.startswith("1\t7\tab\t")
    assert path.fast.row(None, value) is None
    assert path.fast.native_rows == 0
