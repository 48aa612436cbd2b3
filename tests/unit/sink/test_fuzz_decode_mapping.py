"""Fuzzing: whatever bytes arrive, decoding and mapping either succeed or raise DecodeError
(MappingError included); nothing else escapes to stop the stream. The COPY-text mapping
(`line`) accepts and refuses exactly what the typed mapping (`tests.oracle.mapped_row`) does."""

from __future__ import annotations

import json

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sink.config import REGISTRY_FORMATS, ColumnSettings, Format, TableSettings, TombstonePolicy
from sink.config import parse_column_type as ctype
from sink.config import parse_source as source
from sink.decode import decode
from sink.errors import DecodeError, MappingError
from sink.mapping import Mapper, compile_mapper
from sink.records import Message, Record
from sink.tables import tables_from_config
from tests.oracle import mapped_row

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TYPES = [
    "BIGINT", "INTEGER", "SMALLINT", "TEXT", "VARCHAR(5)", "BOOLEAN", "NUMERIC(6,2)", "NUMERIC",
    "REAL", "DOUBLE PRECISION", "DATE", "TIME", "TIMESTAMP", "TIMESTAMPTZ", "JSONB", "JSON",
    "UUID", "BYTEA", "INTERVAL", "TEXT[]", "BIGINT[]", "JSONB[]", "TIMESTAMPTZ[]",
]  # fmt: skip


def build(value_format: Format, key_format: Format = Format.JSON):  # type: ignore[no-untyped-def]
    columns = [ColumnSettings("pk", ctype("TEXT"), source("key"), False)]
    for i, type_text in enumerate(TYPES):
        columns.append(ColumnSettings(f"v{i}", ctype(type_text), source(f"value.f{i}")))
        columns.append(ColumnSettings(f"w{i}", ctype(type_text), source("value")))
    if value_format is not Format.JSON:
        columns = [c for c in columns if c.source.path == ()]
    columns += [
        ColumnSettings("headers", ctype("JSONB"), source("kafka.headers")),
        ColumnSettings("ts", ctype("TIMESTAMPTZ"), source("kafka.timestamp")),
        ColumnSettings("raw_key", ctype("TEXT"), source("kafka.key")),
    ]
    table = TableSettings(
        schema="public",
        name="fuzz",
        columns=tuple(columns),
        topics=("t",),
        primary_key=("pk",),
        tombstones=TombstonePolicy.DELETE,
        key_format=key_format,
        value_format=value_format,
    )
    return compile_mapper(tables_from_config([table]).targets[0])


MAPPERS = {fmt: build(fmt) for fmt in Format if fmt not in REGISTRY_FORMATS}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(
        ["2024-05-01T12:00:00Z", "13:45", "PT1H", "P1Y", "NaN", "1e999999", "\u0000", "-_8", "12.5"]
    )
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)
objects = st.dictionaries(
    st.sampled_from([f"f{i}" for i in range(len(TYPES))]) | st.text(max_size=4),
    json_values,
    max_size=len(TYPES),
)
headers = st.lists(
    st.tuples(st.text(max_size=6), st.none() | st.binary(max_size=8)), max_size=3
).map(tuple)


def run(message: Message, fmt: Format) -> None:
    try:
        record = decode(message, Format.JSON, fmt)
        mapper = MAPPERS[fmt]
        if record.value is None:
            mapper.key_values(record)
            return
    except DecodeError as error:
        assert error.coordinates == message.coordinates
        assert str(error).startswith(message.coordinates)
        return
    line = _line_or_error(mapper, record)
    try:
        row = mapped_row(mapper, record)
    except MappingError as error:
        assert error.coordinates == message.coordinates
        assert not isinstance(line, str), f"line accepted what map refused: {error}"
        # Both name the first failing column, except that map checks JSON for NUL last.
        if "nul" not in (error.code, line.code):
            assert (line.column, line.code) == (error.column, error.code)
        return
    assert len(row) == len(mapper.table.columns)
    assert isinstance(line, str), f"map accepted what line refused: {line}"
    assert line.count("\t") == len(row) - 1
    assert line.endswith("\n")


def _line_or_error(mapper: Mapper, record: Record) -> str | MappingError:
    try:
        return mapper.line(record)
    except MappingError as error:
        return error


@FUZZ
@given(value=objects | json_values, key=json_values, headers=headers)
def test_random_json_maps_or_raises_decode_errors(
    value: object, key: object, headers: tuple[tuple[str, bytes | None], ...]
) -> None:
    try:
        raw = orjson.dumps(value)
        raw_key = orjson.dumps(key)
    except orjson.JSONEncodeError:  # integers beyond 64 bits: not producible as JSON here
        return
    run(Message("t", 1, 5, 1_700_000_000_000, raw_key, raw, headers), Format.JSON)


@FUZZ
@given(
    value=st.none() | st.binary(max_size=200),
    key=st.none() | st.binary(max_size=20),
    fmt=st.sampled_from(list(MAPPERS)),
    timestamp=st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_random_bytes_map_or_raise_decode_errors(
    value: bytes | None, key: bytes | None, fmt: Format, timestamp: int | None
) -> None:
    run(Message("t", 0, 9, timestamp, key, value), fmt)


# Numbers a float does not keep as written, which the mapping reads again exactly.
exact_numbers = st.sampled_from(
    ["1.50", "1e2", "-0.0", "0.123456789012345678", "18446744073709551616", "1e-400", "2E+300"]
) | st.decimals(allow_nan=False, allow_infinity=False).map(str)
exact_values = st.recursive(
    exact_numbers | json_scalars.map(json.dumps),
    lambda children: (
        st.lists(children, max_size=3).map(lambda items: "[" + ",".join(items) + "]")
        | st.dictionaries(st.text(max_size=4), children, max_size=3).map(
            lambda d: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in d.items()) + "}"
        )
    ),
    max_leaves=10,
)


@FUZZ
@given(
    fields=st.dictionaries(st.sampled_from([f"f{i}" for i in range(len(TYPES))]), exact_values),
    key=exact_values,
)
def test_numbers_read_exactly_map_or_raise_decode_errors(fields: dict[str, str], key: str) -> None:
    raw = "{" + ",".join(f'"{name}":{text}' for name, text in fields.items()) + "}"
    run(Message("t", 1, 6, None, key.encode(), raw.encode()), Format.JSON)
    run(Message("t", 1, 7, None, key.encode(), None), Format.JSON)  # a tombstone's key


@settings(max_examples=20, deadline=None)
@given(depth=st.integers(min_value=1, max_value=3000), width=st.integers(0, 3))
def test_deep_values_map_or_raise_decode_errors(depth: int, width: int) -> None:
    raw = b'{"f14":' * depth + b"[" + b"1," * width + b'"\\u0000"]' + b"}" * depth
    run(Message("t", 0, 1, None, b'"k"', raw), Format.JSON)
    raw = b'{"f14":' + b"[" * depth + b"]" * depth + b"}"
    run(Message("t", 0, 2, None, b'"k"', raw), Format.JSON)
    raw = b'{"f14":' + b"[" * depth + b"1.50" + b"]" * depth + b"}"  # read again exactly
    run(Message("t", 0, 3, None, b'"k"', raw), Format.JSON)


@settings(max_examples=5, deadline=None)
@given(size=st.integers(min_value=100_000, max_value=2_000_000))
def test_huge_values_map_or_raise_decode_errors(size: int) -> None:
    big = {f"f{i}": "x" * (size // len(TYPES)) for i in range(len(TYPES))}
    run(Message("t", 0, 3, None, b'"k"', orjson.dumps(big)), Format.JSON)
    run(
        Message("t", 0, 4, None, b'"k"', orjson.dumps({"f3": list(range(size // 10))})), Format.JSON
    )
