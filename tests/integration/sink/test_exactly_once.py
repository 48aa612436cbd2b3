"""Every message lands exactly once, whatever happens to the workers."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from sink.config import BatchSettings
from sink.worker import AHEAD_MAX_ROWS
from tests.events import events

from .harness import (
    SinkProcess,
    log_end_offsets,
    produce,
    produce_steadily,
    stored_offsets,
    wait_until,
)

# A table without a primary key: duplicates would show up as repeated (partition, offset).
COORDINATE_COLUMNS = """
[[tables.columns]]
name = "partition"
type = "INTEGER"
source = "kafka.partition"
nullable = false
[[tables.columns]]
name = "offset"
type = "BIGINT"
source = "kafka.offset"
nullable = false
[[tables.columns]]
name = "id"
type = "BIGINT"
nullable = false
[[tables.columns]]
name = "payload"
type = "JSONB"
"""


def count_rows(engine: sa.engine.Engine, schema: str, table: str = "events") -> int:
    with engine.connect() as conn:
        exists = conn.execute(
            sa.text("SELECT to_regclass(:t)"), {"t": f'"{schema}"."{table}"'}
        ).scalar()
        if exists is None:
            return 0
        return int(conn.execute(sa.text(f'SELECT count(*) FROM "{schema}"."{table}"')).scalar_one())


def assert_exactly_once(
    engine: sa.engine.Engine, kafka_bootstrap: str, schema: str, topic: str, partitions: int
) -> None:
    ends = log_end_offsets(kafka_bootstrap, topic, partitions)
    with engine.connect() as conn:
        total, distinct = conn.execute(
            sa.text(
                f'SELECT count(*), count(DISTINCT ("partition", "offset")) FROM "{schema}".events'
            )
        ).one()
        per_partition = dict(
            conn.execute(
                sa.text(f'SELECT "partition", count(*) FROM "{schema}".events GROUP BY 1')
            ).all()
        )
    assert total == distinct, f"{total - distinct} duplicated rows"
    assert per_partition == {p: n for p, n in ends.items() if n}, "rows missing"
    assert stored_offsets(engine, schema)[topic] == {str(p): n for p, n in ends.items() if n}


def test_restart_after_sigterm_resumes_at_next_offset_without_duplicates(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic(partitions=3)
    config = sink_config([topic], schema, columns=COORDINATE_COLUMNS, max_messages=500)
    produce(kafka_bootstrap, topic, events(6000), partitions=3)

    first = start_sink(config)
    wait_until(lambda: count_rows(engine, schema) > 0, 60, "the first rows")
    assert first.terminate(timeout=30) == 0, first.output()
    landed = count_rows(engine, schema)

    produce(kafka_bootstrap, topic, events(3000, start=6000), partitions=3)
    second = start_sink(config)
    wait_until(lambda: count_rows(engine, schema) == 9000, 90, "all 9000 rows")
    assert second.terminate(timeout=30) == 0, second.output()

    assert landed <= 9000
    assert_exactly_once(engine, kafka_bootstrap, schema, topic, 3)


def test_sigkill_at_random_moments_neither_loses_nor_duplicates(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    total, partitions, kills = 200_000, 6, 10
    topic = new_topic(partitions=partitions)
    config = sink_config([topic], schema, columns=COORDINATE_COLUMNS, max_messages=1000)
    # The producer keeps going while workers die, so kills land mid-batch and mid-commit.

    # ~2,500 msgs/s for ~80 s: the workers keep catching up with it while they are killed.
    producer = produce_steadily(kafka_bootstrap, topic, total, partitions, chunk=5_000, pause=2)
    rng = random.Random(1)
    try:
        for _ in range(kills):
            worker = start_sink(config)
            before = count_rows(engine, schema)
            # Kill only once this worker has committed something: otherwise the kill proves nothing.
            wait_until(lambda b=before: count_rows(engine, schema) > b, 60, "progress")
            time.sleep(rng.uniform(0.0, 1.5))
            worker.signal(signal.SIGKILL)
            worker.proc.wait(10)
    finally:
        producer.join()
    final = start_sink(config)
    wait_until(lambda: count_rows(engine, schema) >= total, 180, f"all {total} rows")
    assert final.terminate(timeout=30) == 0, final.output()
    assert_exactly_once(engine, kafka_bootstrap, schema, topic, partitions)


def test_sigkill_mid_batch_at_the_default_batch_size(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    """At the default batch size, on the native path, a batch holds more messages than the
    worker reads ahead while the batch before it commits: the rows read ahead go first, and
    the rest of the batch is read on the worker's own thread as its rows stream. Killed at
    random moments of such batches, workers neither lose nor duplicate a message (each event
    has an id of its own; the table has no primary key)."""
    defaults = BatchSettings()
    assert defaults.max_messages > AHEAD_MAX_ROWS, "the batches would all be read ahead whole"
    total, partitions, kills = 600_000, 6, 3
    topic = new_topic(partitions=partitions)
    config = sink_config(
        [topic],
        schema,
        max_messages=defaults.max_messages,
        max_age_seconds=defaults.max_age_seconds,
    )
    produce(kafka_bootstrap, topic, events(total), partitions=partitions)

    def committed() -> int:
        return sum(stored_offsets(engine, schema).get(topic, {}).values())

    # The messages each commit added, as seen by polling the stored offsets.
    steps: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        seen = 0
        while not stop.is_set():
            now = committed()
            if now > seen:
                steps.append(now - seen)
                seen = now
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    rng = random.Random(3)
    try:
        for _ in range(kills):
            worker = start_sink(config)
            before = committed()
            wait_until(lambda b=before: committed() > b, 60, "progress")
            time.sleep(rng.uniform(0.0, 0.3))  # a batch takes about 0.1 to 0.3 s here
            worker.signal(signal.SIGKILL)
            worker.proc.wait(10)
        assert committed() < total, "the kills came after the last batch: they prove nothing"
        final = start_sink(config)
        wait_until(lambda: committed() == total, 180, f"all {total} messages")
        assert final.terminate(timeout=30) == 0, final.output()
    finally:
        stop.set()
        watcher.join()
    assert max(steps) > AHEAD_MAX_ROWS, f"no batch larger than what is read ahead: {steps}"
    with engine.connect() as conn:
        rows, ids, low, high = conn.execute(
            sa.text(f'SELECT count(*), count(DISTINCT id), min(id), max(id) FROM "{schema}".events')
        ).one()
    assert (rows, ids, low, high) == (total, total, 0, total - 1)
    ends = log_end_offsets(kafka_bootstrap, topic, partitions)
    assert stored_offsets(engine, schema)[topic] == {str(p): n for p, n in ends.items()}
