"""Several workers in one consumer group writing one table."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from tests.events import EVENT_COLUMNS_TOML, events

from .harness import (
    SinkProcess,
    log_end_offsets,
    produce,
    produce_steadily,
    state_table,
    stored_offsets,
    wait_until,
)
from .test_exactly_once import COORDINATE_COLUMNS, assert_exactly_once, count_rows


def test_three_workers_with_one_killed_and_one_added_land_every_message_once(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    total, partitions = 100_000, 6
    topic = new_topic(partitions=partitions)
    config = sink_config([topic], schema, columns=COORDINATE_COLUMNS, max_messages=1000)
    producer = produce_steadily(kafka_bootstrap, topic, total, partitions, chunk=5_000, pause=1)
    try:
        workers = [start_sink(config) for _ in range(3)]
        wait_until(lambda: count_rows(engine, schema) > 10_000, 90, "progress by three workers")
        workers[1].signal(signal.SIGKILL)
        workers[1].proc.wait(10)
        before = count_rows(engine, schema)
        workers.append(start_sink(config))
        wait_until(lambda: count_rows(engine, schema) > before + 10_000, 90, "progress after")
    finally:
        producer.join()
    wait_until(lambda: count_rows(engine, schema) >= total, 120, f"all {total} rows")
    for worker in (workers[0], workers[2], workers[3]):
        assert worker.terminate() == 0, worker.output()[-2000:]
    assert_exactly_once(engine, kafka_bootstrap, schema, topic, partitions)
    assert set(stored_offsets(engine, schema)[topic]) == {str(p) for p in range(6)}


def test_a_paused_zombie_commits_nothing_for_partitions_it_lost(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    partitions = 4
    topic = new_topic(partitions=partitions)
    # A long linger keeps the zombie holding an uncommitted batch when it is paused.
    config = sink_config(
        [topic], schema, columns=COORDINATE_COLUMNS, max_messages=50_000, max_age_seconds=2.0
    )
    produce(kafka_bootstrap, topic, events(4_000), partitions=partitions)
    zombie = start_sink(config)
    wait_until(lambda: count_rows(engine, schema) >= 4_000, 60, "the first rows")
    produce(kafka_bootstrap, topic, events(4_000, start=4_000), partitions=partitions)
    time.sleep(0.5)  # the zombie is now collecting a batch it has not committed
    zombie.signal(signal.SIGSTOP)
    try:
        survivor = start_sink(config)
        # Past the 6 s session timeout the survivor owns every partition and moves them on.
        wait_until(lambda: count_rows(engine, schema) >= 8_000, 60, "the survivor's rows")
        produce(kafka_bootstrap, topic, events(4_000, start=8_000), partitions=partitions)
        wait_until(lambda: count_rows(engine, schema) >= 12_000, 60, "more rows")
    finally:
        zombie.signal(signal.SIGCONT)
    time.sleep(4)  # the zombie wakes with its stale batch and must not commit it
    assert count_rows(engine, schema) == 12_000
    for worker in (survivor, zombie):
        if worker.running():
            assert worker.terminate() == 0, worker.output()[-2000:]
    assert_exactly_once(engine, kafka_bootstrap, schema, topic, partitions)


def test_partitions_revoked_from_an_open_batch_roll_it_back_and_are_read_once(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    partitions, total = 4, 20_000
    topic = new_topic(partitions=partitions)
    # A batch stays open (its rows already sent into COPY) for 10 s: long enough for a second
    # worker to join and take partitions from it.
    config = sink_config(
        [topic], schema, columns=COORDINATE_COLUMNS, max_messages=1_000_000, max_age_seconds=10
    )
    produce(kafka_bootstrap, topic, events(total), partitions=partitions)
    first = start_sink(config)
    wait_until(lambda: "assigned" in first.output(), 60, "the first worker's assignment")
    time.sleep(1.5)  # it has read the backlog into its open batch
    assert count_rows(engine, schema) == 0
    second = start_sink(config)
    wait_until(lambda: count_rows(engine, schema) >= total, 90, f"all {total} rows")
    for worker in (first, second):
        assert worker.terminate() == 0, worker.output()[-2000:]
    assert "partitions of the batch were revoked; it is read again" in first.output()
    assert_exactly_once(engine, kafka_bootstrap, schema, topic, partitions)


def test_a_revocation_while_a_batch_commits_waits_for_the_commit(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    partitions, batch = 4, 3_000
    topic = new_topic(partitions=partitions)
    config = sink_config(
        [topic],
        schema,
        columns=COORDINATE_COLUMNS,
        max_messages=batch,
        max_age_seconds=10,
    )
    produce(kafka_bootstrap, topic, events(batch), partitions=partitions)
    first = start_sink(config)
    wait_until(lambda: count_rows(engine, schema) == batch, 60, "the first batch")
    with engine.connect() as blocker:
        # Holds the lock each commit takes: the next batch is written but cannot commit.
        blocker.execute(
            sa.text(f"LOCK TABLE {state_table(engine, schema)} IN SHARE UPDATE EXCLUSIVE MODE")
        )
        produce(kafka_bootstrap, topic, events(batch, start=batch), partitions=partitions)
        time.sleep(2)  # the second batch is due and waits for the lock
        # Read ahead while the second batch waits: these open a third batch.
        produce(kafka_bootstrap, topic, events(500, start=2 * batch), partitions=partitions)
        time.sleep(1)
        second = start_sink(config)
        wait_until(lambda: "revoked" in first.output(), 60, "the revocation")
        time.sleep(2)
        assert count_rows(engine, schema) == batch
        blocker.rollback()
    total = 2 * batch + 500
    wait_until(lambda: count_rows(engine, schema) >= total, 90, f"all {total} rows")
    for worker in (first, second):
        assert worker.terminate() == 0, worker.output()[-2000:]
    # The revocation waited for the second batch to commit: no worker had a batch fenced off;
    # the partitions revoked from the third batch, read ahead, were read again by their owner.
    assert first.output().count(f"committed {batch} rows") == 2, first.output()[-3000:]
    assert "partitions read ahead were revoked" in first.output()
    for worker in (first, second):
        assert "moved on by another worker" not in worker.output(), worker.output()[-3000:]
    assert_exactly_once(engine, kafka_bootstrap, schema, topic, partitions)


def test_sigterm_mid_stream_exits_zero_within_the_grace_budget(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic(partitions=3)
    config = sink_config([topic], schema, columns=COORDINATE_COLUMNS, max_messages=500)
    producer = produce_steadily(kafka_bootstrap, topic, 30_000, 3, chunk=5_000, pause=1)
    try:
        worker = start_sink(config)
        wait_until(lambda: count_rows(engine, schema) > 1_000, 60, "progress")
        started = time.monotonic()
        code = worker.terminate(timeout=30)
        elapsed = time.monotonic() - started
    finally:
        producer.join()
    assert code == 0, worker.output()[-2000:]
    assert elapsed < 10, f"took {elapsed:.1f} s, the grace budget is 10 s"
    assert "leaving the consumer group" in worker.output()
    restarted = start_sink(config)
    wait_until(lambda: count_rows(engine, schema) >= 30_000, 90, "all rows")
    assert restarted.terminate() == 0
    assert_exactly_once(engine, kafka_bootstrap, schema, topic, 3)


NEW_COLUMN = (
    EVENT_COLUMNS_TOML
    + """
[[tables.columns]]
name = "note"
type = "TEXT"
source = "value.payload.note"
"""
)


def test_rolling_deploy_never_flips_the_table_back_to_the_old_definition(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    total, partitions = 40_000, 4
    topic = new_topic(partitions=partitions)
    group = f"rolling-{schema}"
    old = sink_config([topic], schema, primary_key=["id"], group_id=group, max_messages=1000)
    new = sink_config(
        [topic], schema, primary_key=["id"], group_id=group, max_messages=1000, columns=NEW_COLUMN
    )

    def has_note() -> bool:
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM information_schema.columns WHERE table_schema = :s"
                        " AND table_name = 'events' AND column_name = 'note'"
                    ),
                    {"s": schema},
                ).scalar()
            )

    producer = produce_steadily(kafka_bootstrap, topic, total, partitions, chunk=5_000, pause=1)
    try:
        old_worker = start_sink(old)
        wait_until(lambda: count_rows(engine, schema) > 5_000, 60, "the old worker's rows")
        new_worker = start_sink(new)
        wait_until(has_note, 60, "the new column")
        # From now on the column must stay, while both definitions run side by side.
        flips = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            flips += not has_note()
            time.sleep(0.2)
        old_again = start_sink(old)  # a pod of the old version restarting mid-rollout
        time.sleep(3)
        flips += not has_note()
    finally:
        producer.join()
    wait_until(lambda: count_rows(engine, schema) >= total, 120, "every event")
    assert flips == 0
    assert "newer definition" in old_again.output()
    for worker in (old_worker, new_worker, old_again):
        if worker.running():
            assert worker.terminate() == 0, worker.output()[-2000:]
    ends = log_end_offsets(kafka_bootstrap, topic, partitions)
    assert stored_offsets(engine, schema)[topic] == {str(p): n for p, n in ends.items()}
    with engine.connect() as conn:
        notes = conn.execute(sa.text(f'SELECT count(note) FROM "{schema}".events')).scalar_one()
    assert notes > 0
