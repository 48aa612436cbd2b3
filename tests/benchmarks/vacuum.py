"""Autovacuum of a data table under sustained upserts by the sink.

    python -m tests.benchmarks.vacuum [--seconds S] [--rate R]

The sink stores its offsets in a state table of its own, so nothing it does conflicts with
VACUUM of the tables it writes. This runs one worker under a steady upsert load (R events/s for
S seconds over 20,000 keys, so that nearly every event leaves a dead tuple) and prints the rate
reached, the autovacuums and autoanalyzes of the table that completed, the ones PostgreSQL
cancelled, and the dead tuples left at the end.

So that autovacuum visits the table during a short run, the server's `autovacuum_naptime` is set
to 1 s for the duration (ALTER SYSTEM: a superuser on the local test server) and the table gets
thresholds of 5,000 dead tuples. Also the `vacuum` section of `make bench`. Targets the local
services only.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import sqlalchemy as sa

from tests.events import events
from tests.integration.sink.harness import autovacuum_cancels, produce, stored_offsets

from .e2e import run_config, start_workers, state_table
from .measure import PARTITIONS, create_topic, delete_topics, standalone

KEYS = 20_000
THRESHOLDS = (
    "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000, "
    "autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000"
)


def _server_settings(engine: sa.engine.Engine, values: dict[str, str | None]) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for name, value in values.items():
            if value is None:
                conn.execute(sa.text(f"ALTER SYSTEM RESET {name}"))
            else:
                conn.execute(sa.text(f"ALTER SYSTEM SET {name} = '{value}'"))
        conn.execute(sa.text("SELECT pg_reload_conf()"))


def _stats(engine: sa.engine.Engine, table: str) -> tuple[int, int, int]:
    with engine.connect() as conn:
        found = conn.execute(
            sa.text(
                "SELECT autovacuum_count, autoanalyze_count, n_dead_tup FROM pg_stat_user_tables "
                "WHERE relid = to_regclass(:t)"
            ),
            {"t": table},
        ).one()
    return int(found[0]), int(found[1]), int(found[2])


def _stored(engine: sa.engine.Engine, schema: str, topic: str) -> int:
    """Events the sink has committed: the sum of its stored next offsets."""
    return sum(stored_offsets(engine, schema, state_table("vacuum")).get(topic, {}).values())


def sustained_upserts(
    *,
    bootstrap: str,
    database_url: str,
    engine: sa.engine.Engine,
    schema: str,
    run_dir: Path,
    seconds: float,
    rate: int,
    server_log: Path | None,
) -> dict[str, float]:
    """One worker under `rate` upserts/s for `seconds`; the table's vacuum figures after."""
    topic = f"bench-vacuum-{run_dir.name}"
    create_topic(bootstrap, topic)
    config, name = run_config(
        run_dir,
        "vacuum",
        bootstrap=bootstrap,
        database_url=database_url,
        topic=topic,
        schema=schema,
        upsert=True,
    )
    table = f'"{schema}"."{name}"'
    _server_settings(engine, {"autovacuum_naptime": "1s"})
    (worker,) = start_workers(config, 1, run_dir, "vacuum")
    try:
        produce(bootstrap, topic, events(KEYS), partitions=PARTITIONS)
        while _stored(engine, schema, topic) < KEYS:
            worker.check_alive()
            time.sleep(0.2)
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {table} SET ({THRESHOLDS})"))
        log_start = server_log.stat().st_size if server_log else 0
        vacuums, analyzes, _ = _stats(engine, table)
        produced = 0
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            batch = int(elapsed * rate) + rate // 5 - produced
            if batch > 0:
                chunk = events(batch, start=produced % KEYS)
                produce(bootstrap, topic, chunk, partitions=PARTITIONS)
                produced += batch
            worker.check_alive()
            time.sleep(0.2)
        while _stored(engine, schema, topic) < KEYS + produced:
            worker.check_alive()
            time.sleep(0.2)
        took = time.monotonic() - started
        vacuums_after, analyzes_after, dead = _stats(engine, table)
    finally:
        worker.stop()
        _server_settings(engine, {"autovacuum_naptime": None})
        delete_topics(bootstrap, [topic])
    cancelled = -1
    if server_log is not None:
        with server_log.open(errors="replace") as log:
            log.seek(log_start)
            cancelled = autovacuum_cancels(log.read(), f"{schema}.{name}")
    return {
        "events": produced,
        "rate": produced / took,
        "vacuums": vacuums_after - vacuums,
        "analyzes": analyzes_after - analyzes,
        "cancelled": cancelled,
        "dead": dead,
    }


def describe(result: dict[str, float]) -> str:
    cancelled = "unknown" if result["cancelled"] < 0 else f"{result['cancelled']:.0f}"
    return (
        f"{result['events']:,.0f} upserts at {result['rate']:,.0f}/s: {result['vacuums']:.0f} "
        f"autovacuums and {result['analyzes']:.0f} autoanalyzes completed, {cancelled} "
        f"cancelled, {result['dead']:,.0f} dead tuples at the end"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--rate", type=int, default=5_000)
    args = parser.parse_args()
    log = os.environ.get("SINK_TEST_POSTGRES_LOG")
    with standalone("vacuum") as run:
        result = sustained_upserts(
            bootstrap=run.bootstrap,
            database_url=run.database_url,
            engine=run.engine,
            schema=run.schema,
            run_dir=run.run_dir,
            seconds=args.seconds,
            rate=args.rate,
            server_log=Path(log) if log else None,
        )
    print(describe(result))


if __name__ == "__main__":
    main()
