"""The intake of consumed messages: taking runs of messages by the fast path gives the same
rows and the same batch as taking every message the general way, one by one."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka import KafkaError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sink.batcher import Batch
from sink.config import Settings, load_settings
from sink.errors import SinkError
from sink.health import Health
from sink.metrics import SinkMetrics
from sink.path import TopicPath
from sink.pipeline import Pipeline
from sink.records import TopicPartition
from sink.worker import Worker

CONFIG = """
[kafka]
bootstrap_servers = "127.0.0.1:1"
group_id = "unused"

[postgres]
url = "postgresql://unused@127.0.0.1:1/unused"

[errors]
policy = "dead-letter-table"
dead_letter_table = "public.dead"

[[tables]]
name = "events"
topics = ["fast"]
primary_key = ["id"]
tombstones = "delete"
[[tables.columns]]
name = "id"
type = "BIGINT"
nullable = false
[[tables.columns]]
name = "name"
type = "TEXT"

[[tables]]
name = "stamped"
topics = ["general"]
[[tables.columns]]
name = "id"
type = "BIGINT"
[[tables.columns]]
name = "at"
type = "TIMESTAMPTZ"
source = "kafka.timestamp"
"""


def binary_tuple(id_: int, name: str | None) -> bytes:
    """The binary COPY tuple of a row of `events` (BIGINT, TEXT)."""
    field = b"\xff\xff\xff\xff" if name is None else len(name.encode()).to_bytes(4, "big")
    return b"\x00\x02\x00\x00\x00\x08" + id_.to_bytes(8, "big") + field + (name or "").encode()


# Partition 2 of each topic is not assigned: its messages were fetched before a revocation.
ASSIGNED = [TopicPartition(topic, p) for topic in ("fast", "general") for p in (0, 1)]


def _settings() -> Settings:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sink.toml"
        path.write_text(CONFIG)
        return load_settings(path, {})


SETTINGS = _settings()
PIPELINE = Pipeline.from_settings(SETTINGS)  # one set of tables, so that rows compare equal


def worker() -> Worker:
    """A worker that never connects (the engine is lazy), its partitions assigned."""
    engine = sa.create_engine(SETTINGS.postgres.engine_url())
    made = Worker(SETTINGS, engine, PIPELINE, Health(lambda: None), SinkMetrics())
    made.positions.update(dict.fromkeys(ASSIGNED, 0))
    return made


def general_way(made: Worker) -> Worker:
    """The worker, each message of which takes the general way."""
    made.intake._paths = lambda topic: TopicPath(None, PIPELINE.path(topic).lines)
    return made


@dataclass(frozen=True)
class FakeMessage:
    """What the worker reads of a confluent-kafka message."""

    topic_: str
    partition_: int
    offset_: int
    key_: bytes | None
    value_: bytes | None
    error_: KafkaError | None = None

    def error(self) -> KafkaError | None:
        return self.error_

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes | None:
        return self.value_

    def timestamp(self) -> tuple[int, int]:
        if self.offset_ % 7 == 3:  # some without: TIMESTAMP_NOT_AVAILABLE
            return 0, -1
        return 1, 1_700_000_000_000 + self.offset_

    def headers(self) -> None:
        return None


MAPPED = [b'{"id": 1, "name": "one"}', b'{"id": 2}', b'{"id": 1, "name": "again"}']
REFUSED = [b'{"name": "no id"}', b"not json", b"[1]", b"{}", b'{"id": "x"}']
VALUES = st.sampled_from([*MAPPED, *REFUSED, None])  # None: a tombstone
KEYS = st.sampled_from([b"1", b"2", None, b"not json"])
STEPS = st.tuples(
    st.sampled_from(["fast", "general"]),
    st.sampled_from([0, 1, 2]),
    st.integers(1, 3),  # the offset's step: gaps where the log has them
    KEYS,
    VALUES,
    st.booleans(),  # a consumer error event instead of a message
)


def messages(steps: list[tuple[str, int, int, bytes | None, bytes | None, bool]]) -> list[Any]:
    offsets: dict[tuple[str, int], int] = {}
    made: list[Any] = []
    for topic, partition, step, key, value, is_error in steps:
        if is_error:
            made.append(FakeMessage("", -1, -1, None, None, KafkaError(KafkaError._TRANSPORT)))
            continue
        offset = offsets[topic, partition] = offsets.get((topic, partition), -1) + step
        made.append(FakeMessage(topic, partition, offset, key, value))
    return made


def comparable(batch: Batch) -> tuple[object, ...]:
    """The batch, with each dead letter's error as its text (errors compare by identity)."""
    letters = tuple((d.message, str(d.error)) for d in batch.dead_letters)
    return (
        dict(batch.row_counts),
        dict(batch.deletes),
        letters,
        dict(batch.next_offsets),
        dict(batch.first_offsets),
        batch.message_count,
        batch.byte_count,
        dict(batch.first_timestamps),
        dict(batch.last_timestamps),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEPS, max_size=40), cuts=st.lists(st.integers(0, 40), max_size=4))
def test_runs_by_the_fast_path_give_what_the_general_way_gives(
    steps: list[tuple[str, int, int, bytes | None, bytes | None, bool]], cuts: list[int]
) -> None:
    msgs = messages(steps)
    by_runs, one_by_one = worker(), general_way(worker())
    rows: list[object] = []
    bounds = sorted({0, len(msgs), *(min(c, len(msgs)) for c in cuts)})
    for begin, end in zip(bounds, bounds[1:]):  # consumed in chunks
        rows += by_runs.intake.add(msgs[begin:end])
    expected = [row for msg in msgs for row in one_by_one.intake.add([msg])]
    assert rows == expected
    assert comparable(by_runs.batcher.take()) == comparable(one_by_one.batcher.take())


def test_a_run_is_accounted_for_before_a_message_of_its_partition_that_ends_it() -> None:
    loop = worker()
    rows = loop.intake.add(
        [
            FakeMessage("fast", 0, 3, b"1", b'{"id": 1}'),
            FakeMessage("fast", 0, 4, b"1", b'{"id": 1}'),
            FakeMessage("fast", 0, 6, None, None),  # a tombstone: the general way
            FakeMessage("fast", 0, 9, b"2", b'{"id": 2}'),
        ]
    )
    batch = loop.batcher.take()
    # The table is written in binary COPY: the native line's rows are binary tuples.
    tuples = [binary_tuple(1, None), binary_tuple(1, None), binary_tuple(2, None)]
    assert [bytes(row) for _, row in rows] == tuples
    assert batch.first_offsets == {TopicPartition("fast", 0): 3}
    assert batch.next_offsets == {TopicPartition("fast", 0): 10}
    assert (batch.message_count, batch.row_count) == (4, 3)
    # Offset 3 has no timestamp (see FakeMessage): the first is not known, the last is.
    assert batch.first_timestamps == {}
    assert batch.last_timestamps == {TopicPartition("fast", 0): 1_700_000_000_009}


def test_each_partitions_first_and_last_timestamps_come_from_runs_between_other_messages() -> None:
    loop = worker()
    loop.intake.add(
        [
            FakeMessage("fast", 1, 4, b"1", b'{"id": 1}'),
            FakeMessage("general", 0, 0, None, b'{"id": 1}'),  # the general way, one row
            FakeMessage("fast", 1, 5, b"1", b'{"id": 1}'),
            FakeMessage("fast", 1, 6, None, None),  # a tombstone: no row
            FakeMessage("", -1, -1, None, None, KafkaError(KafkaError._TRANSPORT)),
            FakeMessage("fast", 0, 11, b"1", b'{"id": 1}'),
            FakeMessage("fast", 0, 12, b"2", b'{"id": 2}'),
            FakeMessage("fast", 2, 8, b"2", b'{"id": 2}'),  # partition 2: not assigned
            FakeMessage("fast", 1, 8, b"2", b'{"id": 2}'),
            FakeMessage("fast", 1, 9, b"2", b'{"id": 2}'),
        ]
    )
    in_flight = loop._in_flight = loop.batcher.take()
    fast0, fast1, general0 = (
        TopicPartition("fast", 0),
        TopicPartition("fast", 1),
        TopicPartition("general", 0),
    )
    at = 1_700_000_000_000
    assert in_flight.first_timestamps == {fast0: at + 11, fast1: at + 4, general0: at}
    assert in_flight.last_timestamps == {fast0: at + 12, fast1: at + 9, general0: at}

    # Read on while the batch commits: its own messages are the oldest not committed yet.
    loop.intake.add(
        [
            FakeMessage("fast", 0, 14, b"1", b'{"id": 1}'),
            FakeMessage("fast", 1, 12, b"1", b'{"id": 1}'),
        ]
    )
    assert loop._oldest_uncommitted() == {fast0: at + 11, fast1: at + 4, general0: at}
    loop._in_flight = None  # committed
    assert loop._oldest_uncommitted() == {fast0: at + 14, fast1: at + 12}


def test_the_batch_counts_the_bytes_of_keys_and_values_whichever_way_a_message_takes() -> None:
    loop = worker()
    loop.intake.add(
        [
            FakeMessage("fast", 0, 0, b"12", b'{"id": 12}'),  # fast: 2 + 10 bytes
            FakeMessage("fast", 0, 1, None, b'{"id": 1}'),  # fast, no key: 9
            FakeMessage("fast", 0, 2, b"1", None),  # a tombstone, the general way: 1
            FakeMessage("fast", 0, 3, None, b"not json"),  # a dead letter: 8
            FakeMessage("general", 1, 0, b"abc", b'{"id": 3}'),  # general: 3 + 9
        ]
    )
    batch = loop.batcher.take()
    assert batch.byte_count == 12 + 9 + 1 + 8 + 12
    assert batch.by_topic() == {"fast": (4, 30), "general": (1, 12)}


def test_an_offset_that_goes_back_within_a_run_is_refused() -> None:
    back = [FakeMessage("fast", 0, offset, b"1", b'{"id": 1}') for offset in (5, 6, 4)]
    with pytest.raises(SinkError, match=r"fast\[0\]@4: offset goes back"):
        worker().intake.add(back)
