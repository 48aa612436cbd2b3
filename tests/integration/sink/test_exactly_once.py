"""Every message lands exactly once, whatever happens to the workers."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

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
