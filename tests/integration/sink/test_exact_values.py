"""NUMERIC, JSON(B) and text columns keep the digits a message wrote, whichever way the worker
maps it: the native line, the Python fast path, or the general path. A float read from the
message would round 0.123456789012345678 to 0.12345678901234568 and integers beyond 64 bits to
17 digits."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from .harness import SinkProcess, log_end_offsets, produce, stored_offsets, wait_until

# Every column has a native kind (sink/copytext.py native_kind): the native line writes it.
NATIVE_COLUMNS = """
[[tables.columns]]
name = "id"
type = "BIGINT"
nullable = false
[[tables.columns]]
name = "amount"
type = "NUMERIC(30,18)"
[[tables.columns]]
name = "free"
type = "NUMERIC"
[[tables.columns]]
name = "doc"
type = "JSONB"
[[tables.columns]]
name = "note"
type = "TEXT"
"""
# json has no native kind: the Python form of the fast path writes it.
PYTHON_COLUMNS = (
    NATIVE_COLUMNS + '[[tables.columns]]\nname = "doc_json"\ntype = "JSON"\nsource = "value.doc"\n'
)
# A column that reads more than a field of the value: the general path writes it.
GENERAL_COLUMNS = (
    NATIVE_COLUMNS + '[[tables.columns]]\nname = "at"\ntype = "BIGINT"\nsource = "kafka.offset"\n'
)
TABLES = {"native": NATIVE_COLUMNS, "python": PYTHON_COLUMNS, "general": GENERAL_COLUMNS}

# The messages, as producers write them: each number exactly as it should be stored.
MESSAGES = [
    b'{"id": 1, "amount": 0.123456789012345678, "free": 123456789012345678901234567890.123456789,'
    b' "doc": {"big": 123456789012345678901234567890, "d": 0.123456789012345678, "s": 1.10,'
    b' "e": 1e2}, "note": 0.123456789012345678}',
    b'{"id": 2, "amount": -1.50, "free": 1e-20, "doc": [-9223372036854775809, 1.000, 2.5e-3],'
    b' "note": 18446744073709551616}',
    b'{"id": 3, "amount": 12.5, "free": 0.1, "doc": {"x": 1.5, "y": [0.25, 7]}, "note": 2.5}',
    b'{"id": 4, "amount": "0.100000000000000001", "free": "7", "doc": {"n": 12}, "note": "x"}',
]
# What PostgreSQL gives back as text: jsonb writes each number with the digits it was given.
EXPECTED = {
    1: (
        "0.123456789012345678",
        "123456789012345678901234567890.123456789",
        {
            "big": "123456789012345678901234567890",
            "d": "0.123456789012345678",
            "s": "1.10",
            "e": "100",
        },
        "0.123456789012345678",
    ),
    2: (
        "-1.500000000000000000",
        "0.00000000000000000001",
        ["-9223372036854775809", "1.000", "0.0025"],
        "18446744073709551616",
    ),
    3: ("12.500000000000000000", "0.1", {"x": "1.5", "y": ["0.25", "7"]}, "2.5"),
    4: ("0.100000000000000001", "7", {"n": "12"}, "x"),
}


def _numbers_as_text(text: str) -> object:
    """A JSON text with its numbers as the strings written."""
    return json.loads(text, parse_float=str, parse_int=str)


def test_numbers_keep_the_digits_the_message_wrote_on_every_path(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    # One worker, one topic per table, the same messages in each.
    topics = {name: new_topic(partitions=1) for name in TABLES}
    for topic in topics.values():
        produce(kafka_bootstrap, topic, [(None, value) for value in MESSAGES])
    more = "".join(
        f'\n[[tables]]\nschema = "{schema}"\nname = "{name}"\ntopics = ["{topics[name]}"]\n'
        + TABLES[name]
        for name in ("python", "general")
    )
    config = sink_config([topics["native"]], schema, "native", columns=NATIVE_COLUMNS + more)
    worker = start_sink(config)
    ends = {
        topic: {"0": log_end_offsets(kafka_bootstrap, topic, 1)[0]} for topic in topics.values()
    }
    wait_until(
        lambda: (
            all(stored_offsets(engine, schema).get(t) == end for t, end in ends.items())
            or not worker.running()
        ),
        60,
        "the stored offsets to reach the log ends",
    )
    assert worker.running(), worker.output()[-3000:]
    assert worker.terminate() == 0, worker.output()[-3000:]

    output = worker.output()
    assert f"{topics['native']}: messages go straight from JSON to COPY text (native)" in output
    assert f'{topics["python"]}: messages go straight from JSON to COPY text"' in output
    assert f"{topics['general']}: messages take the general path (column at reads" in output
    for name in TABLES:
        rows = _stored(engine, schema, name)
        assert sorted(rows) == sorted(EXPECTED), name
        for id_, (amount, free, doc, note) in EXPECTED.items():
            found = rows[id_]
            assert found[:2] == (amount, free), (name, id_)
            assert _numbers_as_text(str(found[2])) == doc, (name, id_)
            assert found[3] == note, (name, id_)
            if name == "python":  # the same value in a json column
                assert _numbers_as_text(str(found[4])) == doc, (name, id_)


def _stored(engine: sa.engine.Engine, schema: str, name: str) -> dict[int, tuple[object, ...]]:
    extra = ", doc_json::jsonb::text" if name == "python" else ""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT id, amount::text, free::text, doc::text, note{extra}"
                f' FROM "{schema}"."{name}" ORDER BY id'
            )
        ).all()
    return {row[0]: tuple(row[1:]) for row in rows}
