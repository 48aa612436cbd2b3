"""Autovacuum of a data table runs to completion while the sink writes it: a commit locks only
the sink's state table, so nothing of the sink conflicts with VACUUM on the data tables."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.events import EVENT_COLUMNS_TOML, events

from .harness import SinkProcess, autovacuum_cancels, produce, stored_offsets, wait_until

# Sustained load: this long, at this rate, over this many distinct keys (so that nearly every
# event updates a row and leaves a dead tuple behind).
LOAD_SECONDS = 180
EVENTS_PER_SECOND = 5_000
KEYS = 20_000
# Small thresholds: autovacuum visits the table every few seconds under this load.
AGGRESSIVE = (
    "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000, "
    "autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000"
)


@pytest.fixture
def aggressive_autovacuum(engine: sa.engine.Engine) -> Iterator[Path]:
    """The server's autovacuum wakes every second and logs each run; yields its log file."""
    log = os.environ.get("SINK_TEST_POSTGRES_LOG")
    assert log, "SINK_TEST_POSTGRES_LOG is not set: start the services (make services-up)"
    settings = {"autovacuum_naptime": "1s", "log_autovacuum_min_duration": "0"}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for name, value in settings.items():
            conn.execute(sa.text(f"ALTER SYSTEM SET {name} = '{value}'"))
        conn.execute(sa.text("SELECT pg_reload_conf()"))
    try:
        yield Path(log)
    finally:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for name in settings:
                conn.execute(sa.text(f"ALTER SYSTEM RESET {name}"))
            conn.execute(sa.text("SELECT pg_reload_conf()"))


def vacuum_stats(engine: sa.engine.Engine, table: str) -> tuple[int, int]:
    with engine.connect() as conn:
        found = conn.execute(
            sa.text(
                "SELECT autovacuum_count, n_dead_tup FROM pg_stat_user_tables "
                "WHERE relid = to_regclass(:t)"
            ),
            {"t": table},
        ).one()
    return int(found[0]), int(found[1])


def test_sustained_upserts_never_cancel_autovacuum_of_the_data_table(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
    aggressive_autovacuum: Path,
) -> None:
    partitions = 3
    topic = new_topic(partitions=partitions)
    config = sink_config(
        [topic], schema, primary_key=["id"], columns=EVENT_COLUMNS_TOML, max_messages=5_000
    )
    table = f'"{schema}".events'
    produce(kafka_bootstrap, topic, events(KEYS), partitions=partitions)
    worker = start_sink(config)
    wait_until(
        lambda: sum(stored_offsets(engine, schema).get(topic, {}).values()) >= KEYS, 60, "keys"
    )
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {table} SET ({AGGRESSIVE})"))
    log_start = aggressive_autovacuum.stat().st_size
    vacuums_before, _ = vacuum_stats(engine, table)

    produced = [0]

    def load() -> None:
        # Bursts every 0.2 s, paced against the clock.
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < LOAD_SECONDS:
            due = int(elapsed * EVENTS_PER_SECOND) + EVENTS_PER_SECOND // 5
            batch = due - produced[0]
            if batch > 0:
                start = (KEYS + produced[0]) % KEYS
                produce(kafka_bootstrap, topic, events(batch, start=start), partitions=partitions)
                produced[0] += batch
            time.sleep(0.2)

    started = time.monotonic()
    producer = threading.Thread(target=load)
    producer.start()
    producer.join()
    total = KEYS + produced[0]
    wait_until(
        lambda: sum(stored_offsets(engine, schema).get(topic, {}).values()) >= total,
        60,
        "the sink to catch up",
    )
    seconds = time.monotonic() - started
    vacuums_after, dead = vacuum_stats(engine, table)
    assert worker.terminate() == 0, worker.output()[-2000:]
    with aggressive_autovacuum.open(errors="replace") as log:
        log.seek(log_start)
        server_log = log.read()

    rate = produced[0] / seconds
    vacuums = vacuums_after - vacuums_before
    print(f"{produced[0]} upserts in {seconds:.0f} s ({rate:,.0f}/s):", end=" ")
    print(f"{vacuums} autovacuums completed, {dead} dead tuples at the end")
    assert rate >= EVENTS_PER_SECOND * 0.95
    assert autovacuum_cancels(server_log, f"{schema}.events") == 0
    assert vacuums_after > vacuums_before
    assert f'automatic vacuum of table "{engine.url.database}.{schema}.events"' in server_log
