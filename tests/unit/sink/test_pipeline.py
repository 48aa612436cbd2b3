"""The pipeline's fast path: which topics take it, and that a row it gives is the row
`copy_lines` gives, while anything `copy_lines` refuses (or does more with) it leaves to
`copy_lines`."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sink.config import ColumnSettings, Format, TableSettings, TombstonePolicy
from sink.config import parse_column_type as ctype
from sink.config import parse_source as source
from sink.errors import ConfigError, DecodeError
from sink.pipeline import Pipeline
from sink.records import Message
from sink.tables import tables_from_config

TYPES = [
    "BIGINT", "TEXT", "VARCHAR(8)", "BOOLEAN", "NUMERIC(6,2)", "DOUBLE PRECISION", "DATE",
    "TIMESTAMPTZ", "TIMESTAMP", "JSONB", "UUID", "TEXT[]", "INTERVAL", "BYTEA",
]  # fmt: skip
FIELDS = [f"f{i}" for i in range(len(TYPES))]


def table(*extra: ColumnSettings, **options: object) -> TableSettings:
    columns = [ColumnSettings("id", ctype("BIGINT"), source("value.id"), nullable=False)]
    columns += [
        ColumnSettings(field, ctype(type_text), source(f"value.{field}"))
        for field, type_text in zip(FIELDS, TYPES)
    ]
    settings = TableSettings(
        schema="public", name="events", columns=(*columns, *extra), topics=("t",)
    )
    return dataclasses.replace(settings, **options)  # type: ignore[arg-type]


def pipeline(*tables: TableSettings) -> Pipeline:
    return Pipeline(tables_from_config(tables))


PIPELINES = {
    key_format: pipeline(
        table(primary_key=("id",), tombstones=TombstonePolicy.DELETE, key_format=key_format)
    )
    # The fast path's key formats: those read through a schema registry (test_registry) and
    # Connect's envelope (test_connect) take the general path.
    for key_format in (Format.BYTES, Format.STRING, Format.JSON)
}


def test_a_topic_for_one_table_of_top_level_fields_takes_the_fast_path() -> None:
    path = pipeline(table()).path("t").fast
    assert path is not None
    row = path.row(b"k", b'{"id": 7, "f1": "seven", "f3": true}')
    assert row == "7\t\\N\tseven\t\\N\tt" + "\t\\N" * (len(TYPES) - 4) + "\n"


@pytest.mark.parametrize(
    "settings",
    [
        table(ColumnSettings("at", ctype("TIMESTAMPTZ"), source("kafka.timestamp"))),
        table(ColumnSettings("k", ctype("TEXT"), source("key"))),
        table(ColumnSettings("nested", ctype("TEXT"), source("value.a.b"))),
        table(ColumnSettings("whole", ctype("JSONB"), source("value"))),
        TableSettings(
            schema="public",
            name="raw",
            columns=(ColumnSettings("v", ctype("TEXT"), source("value")),),
            topics=("t",),
            value_format=Format.STRING,
        ),
    ],
    ids=["kafka metadata", "key", "nested path", "whole value", "string values"],
)
def test_columns_that_need_more_than_top_level_fields_take_map(settings: TableSettings) -> None:
    assert pipeline(settings).path("t").fast is None


def test_each_topic_logs_once_which_path_its_messages_take(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fast = pipeline(table())
    slow = pipeline(table(ColumnSettings("at", ctype("TIMESTAMPTZ"), source("kafka.timestamp"))))
    with caplog.at_level(logging.INFO, logger="sink.pipeline"):
        for pipe in (fast, fast, slow):
            pipe.path("t")
    assert caplog.messages == [
        "t: messages go straight from JSON to COPY text",
        "t: messages take the general path (column at reads kafka.timestamp)",
    ]


def test_a_topic_feeding_two_tables_or_a_map_record_hook_takes_map() -> None:
    tables = tables_from_config([table()])
    assert (
        Pipeline(dataclasses.replace(tables, map_record=lambda record: [])).path("t").fast is None
    )
    both = tables_from_config([table(), table(name="copy")])
    assert Pipeline(dataclasses.replace(both, fan_out=True)).path("t").fast is None
    with pytest.raises(ConfigError, match="no table"):
        pipeline(table()).path("not-subscribed")


@pytest.mark.parametrize(
    ("key_format", "key", "takes_fast_path"),
    [
        (Format.STRING, b"\xff", False),
        (Format.JSON, b"not json", False),
        (Format.BYTES, b"\xff", True),
        (Format.JSON, None, True),
    ],
)
def test_a_key_that_does_not_decode_is_left_to_map(
    key_format: Format, key: bytes | None, takes_fast_path: bool
) -> None:
    fast = PIPELINES[key_format].path("t").fast
    assert fast is not None
    assert (fast.row(key, b'{"id": 1}') is not None) is takes_fast_path


@pytest.mark.parametrize(
    "value",
    [None, b"", b"null", b"[1]", b"{}", b"{not json", b'{"f1": "no id"}', b'{"id": "x"}'],
    ids=["tombstone", "empty", "null", "list", "empty object", "not json", "missing", "bad"],
)
def test_values_that_are_not_plain_rows_are_left_to_map(value: bytes | None) -> None:
    fast = PIPELINES[Format.STRING].path("t").fast
    assert fast is not None
    assert fast.row(b"k", value) is None


junk = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
texts = st.text(max_size=10) | st.sampled_from(["a\tb", "a\\b", "nul\u0000", "ünï", "x" * 9])
timestamps = st.sampled_from(
    [
        "2024-05-01T12:00:00Z",
        "2024-05-01T12:00:00.123456+05:30",
        "2024-05-01 12:00",
        "2024-02-30T00:00:00Z",
    ]
) | st.integers(min_value=-(2**45), max_value=2**45)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda items: st.lists(items, max_size=3) | st.dictionaries(st.text(max_size=4), items),
    max_leaves=8,
)
# Per column, values of its type in the shapes producers send, and some that do not fit.
FIELD_VALUES = [
    st.integers(min_value=-(2**64), max_value=2**64) | st.sampled_from(["12", 1.0]),
    texts | st.integers(),
    texts,
    st.booleans() | st.sampled_from(["true", "no", 1]),
    st.sampled_from(["12.50", "-0.5", "1e3", "9999.999", "10000", 12.5, 3]),
    st.floats() | st.integers(max_value=2**70) | st.sampled_from(["NaN", "1.5"]),
    st.sampled_from(["2024-05-01", "2024-02-30", "2024-05-01T12:00:00Z"]) | st.integers(),
    timestamps,
    timestamps,
    json_values,
    st.uuids().map(str) | st.sampled_from(["not-a-uuid", "{12345678-1234-1234-1234-123456789abc}"]),
    st.lists(texts | st.none() | st.integers(), max_size=4),
    st.sampled_from(["PT1H", "1 hour", "P1Y2M"]) | st.integers(),
    st.sampled_from(["aGVsbG8=", "not base64!", ""]),
]
objects = st.fixed_dictionaries(
    {"id": st.integers(min_value=-(2**63), max_value=2**63 - 1)},
    optional={f: values | junk for f, values in zip(FIELDS, FIELD_VALUES)},
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=objects,
    key=st.none() | st.binary(max_size=6) | st.just(b'"k"'),
    key_format=st.sampled_from(list(PIPELINES)),
)
def test_the_fast_path_gives_the_row_copy_lines_gives_or_leaves_the_message_to_it(
    value: dict[str, object], key: bytes | None, key_format: Format
) -> None:
    pipe = PIPELINES[key_format]
    fast = pipe.path("t").fast
    assert fast is not None
    raw = json.dumps(value).encode()  # beyond orjson: integers past 64 bits, NaN
    row = fast.row(key, raw)
    try:
        mapped = pipe.copy_lines(Message("t", 0, 1, None, key, raw))
    except DecodeError:
        assert row is None
        return
    if row is not None:
        assert mapped.rows == ((fast.table, row),)
        assert not mapped.deletes
