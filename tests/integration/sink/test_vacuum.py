"""A due batch stays open, and keeps growing, while another session holds the table's lock."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from tests.events import events

from .harness import SinkProcess, produce, wait_until
from .test_exactly_once import COORDINATE_COLUMNS, assert_exactly_once, count_rows


def test_a_due_batch_grows_while_another_session_holds_the_lock_its_commit_needs(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    partitions, batch = 3, 1_000
    topic = new_topic(partitions=partitions)
    config = sink_config(
        [topic], schema, columns=COORDINATE_COLUMNS, max_messages=batch, yield_to_vacuum_seconds=60
    )
    produce(kafka_bootstrap, topic, events(batch), partitions=partitions)
    worker = start_sink(config)
    wait_until(lambda: count_rows(engine, schema) == batch, 60, "the first batch")
    with engine.connect() as blocker:
        # The lock VACUUM, ANALYZE and CREATE INDEX CONCURRENTLY hold while they run.
        blocker.execute(sa.text(f'LOCK TABLE "{schema}".events IN SHARE UPDATE EXCLUSIVE MODE'))
        produce(kafka_bootstrap, topic, events(3 * batch, start=batch), partitions=partitions)
        wait_until(
            lambda: "holds the lock a commit needs" in worker.output(), 30, "the batch kept open"
        )
        time.sleep(2)  # it reads the rest into the open batch meanwhile
        assert count_rows(engine, schema) == batch
        blocker.rollback()
    total = 4 * batch
    wait_until(lambda: count_rows(engine, schema) >= total, 60, f"all {total} rows")
    assert worker.terminate() == 0, worker.output()[-2000:]
    output = worker.output()
    assert "client backend (pid " in output
    # Three times max_messages in one batch: it grew instead of waiting for the lock.
    assert f"committed {3 * batch} rows" in output, output[-3000:]
    assert_exactly_once(engine, kafka_bootstrap, schema, topic, partitions)
