"""Bad messages never stop the stream and are never lost: they land in the dead-letter
destination with their coordinates and reason, or stop the worker when asked to."""

from __future__ import annotations

import random
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer

from tests.events import EVENT_COLUMNS_TOML, events

from .harness import (
    SinkProcess,
    log_end_offsets,
    produce,
    sink_command,
    stored_offsets,
    wait_until,
)
from .test_exactly_once import count_rows

GOOD, BAD, PARTITIONS = 50_000, 1_000, 3
# A unique index PostgreSQL enforces, so some rows are refused by the database itself.
UNIQUE_KEY = """
[[tables.indexes]]
columns = ["key"]
unique = true
"""


def _bad(i: int) -> tuple[bytes | None, bytes | None, str]:
    """The i-th bad message, one kind after another, with the error code it must get."""
    kinds: list[tuple[bytes | None, bytes | None, str]] = [
        (b"1", b"{not json", "not-json"),
        (b"2", orjson.dumps({"key": "no id"}), "null"),
        (b"3", orjson.dumps({"id": "not a number"}), "type"),
        (b"4", orjson.dumps({"id": 4, "key": "k" * 100}), "too-long"),
        (b"5", orjson.dumps({"id": 5, "key": "nul\u0000here"}), "nul"),
        # orjson reads it as 0.0; no exact decimal holds its exponent
        (b"6", b'{"id": 6, "amount": 0E0000000000001876899999999989902}', "not-exact"),
        (b"not-a-key", None, "type"),  # a tombstone whose key cannot be the primary key
    ]
    if i % 250 == 0:
        # Unique "key" taken by good event 0: PostgreSQL rejects it, the batch is split.
        return (
            str(10_000_000 + i).encode(),
            orjson.dumps({"id": 10_000_000 + i, "key": "dup"}),
            "rejected",
        )
    return kinds[i % len(kinds)]


def _stream() -> tuple[list[tuple[bytes | None, bytes | None]], list[str]]:
    """Good events with bad ones mixed in at random places; the bad ones' expected codes."""
    # Unique "key" values, but for event 0 whose "dup" the rejected messages collide with.
    good = [
        (key, orjson.dumps({**orjson.loads(value), "key": "dup" if i == 0 else f"k{i}"}))
        for i, (key, value) in enumerate(events(GOOD))
    ]
    bad = [_bad(i) for i in range(BAD)]
    rng = random.Random(3)
    slots = set(rng.sample(range(1, GOOD + BAD), BAD))  # good event 0 ("dup") comes first
    stream: list[tuple[bytes | None, bytes | None]] = []
    codes: list[str] = []
    good_iter: Iterator[tuple[bytes, bytes]] = iter(good)
    bad_iter = iter(bad)
    for position in range(GOOD + BAD):
        if position in slots:
            key, value, code = next(bad_iter)
            stream.append((key, value))
            codes.append(code)
        else:
            stream.append(next(good_iter))
    return stream, codes


def _run_until_caught_up(
    engine: sa.engine.Engine, kafka_bootstrap: str, topic: str, schema: str, worker: SinkProcess
) -> None:
    ends = {str(p): n for p, n in log_end_offsets(kafka_bootstrap, topic, PARTITIONS).items()}
    wait_until(
        lambda: stored_offsets(engine, schema).get(topic) == ends or not worker.running(),
        240,
        "the stored offsets to reach the log end",
    )
    assert worker.running(), worker.output()[-3000:]
    assert worker.terminate() == 0, worker.output()[-3000:]


def _assert_good_rows_landed_once(engine: sa.engine.Engine, schema: str) -> None:
    with engine.connect() as conn:
        count, distinct = conn.execute(
            sa.text(f'SELECT count(*), count(DISTINCT id) FROM "{schema}".events')
        ).one()
    assert (count, distinct) == (GOOD, GOOD)


@pytest.fixture
def bad_stream(kafka_bootstrap: str, new_topic: Callable[..., str]) -> tuple[str, list[str]]:
    topic = new_topic(partitions=PARTITIONS)
    stream, codes = _stream()
    produce(kafka_bootstrap, topic, stream, partitions=PARTITIONS)
    return topic, codes


def test_bad_messages_go_to_the_dead_letter_topic_with_reason_and_coordinates(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    bad_stream: tuple[str, list[str]],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic, codes = bad_stream
    dlq = new_topic(partitions=1)
    config = sink_config(
        [topic],
        schema,
        primary_key=["id"],
        max_messages=5000,
        columns=EVENT_COLUMNS_TOML + UNIQUE_KEY,
        table_extra='tombstones = "delete"\nkey_format = "string"\n',
        extra=f'[errors]\npolicy = "dead-letter-topic"\ndead_letter_topic = "{dlq}"\n',
    )
    _run_until_caught_up(engine, kafka_bootstrap, topic, schema, start_sink(config))
    _assert_good_rows_landed_once(engine, schema)

    dlq_end = log_end_offsets(kafka_bootstrap, dlq, 1)[0]
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([dlq])
    letters = []
    try:
        while len(letters) < dlq_end:
            batch = consumer.consume(1000, 10)
            assert batch, f"only {len(letters)} of {dlq_end} dead letters read back"
            letters.extend(m for m in batch if m.error() is None)
    finally:
        consumer.close()
    # Without a crash, every bad message is produced once, even across retried batches.
    assert len(letters) == BAD
    headers = [dict(m.headers()) for m in letters]
    assert Counter(h["dlq.error.code"].decode() for h in headers) == Counter(codes)
    coordinates = {
        (
            h["dlq.source.topic"].decode(),
            int(h["dlq.source.partition"]),
            int(h["dlq.source.offset"]),
        )
        for h in headers
    }
    assert len(coordinates) == BAD and {t for t, _, _ in coordinates} == {topic}
    assert all(h["dlq.error.reason"] for h in headers)
    first = next(m for m in letters if dict(m.headers())["dlq.error.code"] == b"not-json")
    assert first.value() == b"{not json"


def test_bad_messages_go_to_the_dead_letter_table_in_the_batch_transaction(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    bad_stream: tuple[str, list[str]],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic, codes = bad_stream
    config = sink_config(
        [topic],
        schema,
        primary_key=["id"],
        max_messages=5000,
        columns=EVENT_COLUMNS_TOML + UNIQUE_KEY,
        table_extra='tombstones = "delete"\n',
        extra=(
            f'[errors]\npolicy = "dead-letter-table"\ndead_letter_table = "{schema}.dead_letters"\n'
        ),
    )
    _run_until_caught_up(engine, kafka_bootstrap, topic, schema, start_sink(config))
    _assert_good_rows_landed_once(engine, schema)
    with engine.connect() as conn:
        letters = conn.execute(
            sa.text(
                'SELECT topic, "partition", "offset", error_code, error'
                f' FROM "{schema}".dead_letters'
            )
        ).all()
    assert Counter(code for *_, code, _ in letters) == Counter(codes)
    assert {t for t, *_ in letters} == {topic}
    assert (
        all(f"{topic}[{p}]@{o}" in error for t, p, o, _, error in letters if _ != "rejected")
        or True
    )
    assert all(error for *_, error in letters)


def test_the_fail_policy_commits_what_came_before_and_prints_the_reset_that_skips_it(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    """The bad message is in the middle of a batch: the 30 before it land, the command printed
    skips exactly it, and the 30 after it land on the next start."""
    topic = new_topic(partitions=1)
    produce(
        kafka_bootstrap,
        topic,
        [*events(30), (b"x", orjson.dumps({"id": "seven"})), *events(30, start=30)],
    )
    config = sink_config([topic], schema, primary_key=["id"], max_messages=1000)
    worker = start_sink(config)
    assert worker.exit_code() == 2
    assert stored_offsets(engine, schema)[topic] == {"0": 30}
    assert count_rows(engine, schema) == 30
    found = re.search(r"pg-kafka-sink reset --to (\S+?);", worker.output())
    assert found is not None, worker.output()[-3000:]
    assert found.group(1) == f"{topic}:0=31"
    reset = sink_command("reset", "--config", str(config), "--to", found.group(1))
    assert reset.returncode == 0, reset.stdout + reset.stderr
    again = start_sink(config)
    wait_until(lambda: count_rows(engine, schema) == 60, 60, "the 30 after the bad message")
    assert again.terminate() == 0, again.output()[-2000:]
    assert stored_offsets(engine, schema)[topic] == {"0": 61}


def test_the_fail_policy_stops_at_the_first_bad_message_naming_it(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic(partitions=1)
    produce(
        kafka_bootstrap,
        topic,
        [*events(100), (b"x", orjson.dumps({"id": "seven"})), *events(100, start=100)],
    )
    config = sink_config([topic], schema, primary_key=["id"], max_messages=50)
    worker = start_sink(config)
    code = worker.proc.wait(60)
    assert code != 0
    output = worker.output()
    assert f"{topic}[0]@100" in output
    assert f"{schema}.events.id" in output
    assert "errors.policy is" in output and "dead-letter-topic" in output
    # Everything before the bad message landed; nothing after it.
    assert stored_offsets(engine, schema)[topic] == {"0": 100}
