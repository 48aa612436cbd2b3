"""Autovacuum of the sink's table while it ingests, with and without yielding to it.

    python -m tests.benchmarks.vacuum [--events N] [--rounds R] [--budget S] [--cost-delay MS]

Each commit writes the offsets into the table's comment, which takes the lock autovacuum holds.
This runs one worker over the same pre-produced topic with `batch.yield_to_vacuum_seconds` at 0
(the default: commit on time, and a commit that meets autovacuum cancels it after
`deadlock_timeout`) and at `--budget` (10 s), alternately, and prints for each run: the rate,
the vacuums and analyzes of the table that completed, the autovacuums PostgreSQL cancelled, and
the longest gap between two commits.

So that autovacuum visits the table during a short run, the server's `autovacuum_naptime` is set
to 1 s for the duration (ALTER SYSTEM: a superuser on the local test server) and the table gets
insert thresholds of 20,000 rows; `--cost-delay` (PostgreSQL's default, 2 ms) sets its
`autovacuum_vacuum_cost_delay`: 10 makes each vacuum of it last seconds, as on a table of a few
GB. Targets the local services only.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from .e2e import produce_topic, run_config, start_workers
from .measure import REPO, RUNS_DIR, create_schema, delete_topics, drop_schema, engine_for, run_id
from .measure import row_count as count_rows

SERVER_LOG = REPO / ".services" / "postgres" / "server.log"
THRESHOLDS = (
    "autovacuum_vacuum_insert_threshold = 20000, autovacuum_vacuum_insert_scale_factor = 0, "
    "autovacuum_analyze_threshold = 20000, autovacuum_analyze_scale_factor = 0"
)
_COMMITTED = re.compile(r"^(\S+ \S+) INFO +sink\.worker: committed ", re.MULTILINE)


def _naptime(engine: sa.engine.Engine, value: str | None) -> None:
    with engine.connect() as conn:
        if value is None:
            conn.execute(sa.text("ALTER SYSTEM RESET autovacuum_naptime"))
        else:
            conn.execute(sa.text(f"ALTER SYSTEM SET autovacuum_naptime = '{value}'"))
        conn.execute(sa.text("SELECT pg_reload_conf()"))


def _longest_gap(log: Path) -> float:
    """Seconds of the longest gap between two commits in a worker's (text) log."""
    times = [
        datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")
        for stamp in _COMMITTED.findall(log.read_text(errors="replace"))
    ]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    return max(gaps, default=0.0)


def _one_run(
    engine: sa.engine.Engine,
    *,
    bootstrap: str,
    database_url: str,
    topic: str,
    schema: str,
    events: int,
    run_dir: Path,
    label: str,
    yield_seconds: str,
    cost_delay_ms: int,
) -> dict[str, float]:
    config, table = run_config(
        run_dir,
        label,
        bootstrap=bootstrap,
        database_url=database_url,
        topic=topic,
        schema=schema,
        upsert=False,
    )
    log_start = SERVER_LOG.stat().st_size if SERVER_LOG.exists() else 0
    started = time.monotonic()
    (worker,) = start_workers(
        config, 1, run_dir, label, env={"SINK_BATCH__YIELD_TO_VACUUM_SECONDS": yield_seconds}
    )
    qualified = f'"{schema}"."{table}"'
    try:
        while count_rows(engine, schema, table) == 0:
            worker.check_alive()
            time.sleep(0.05)
        with engine.connect() as conn:
            conn.execute(
                sa.text(
                    f"ALTER TABLE {qualified} SET ({THRESHOLDS}, "
                    f"autovacuum_vacuum_cost_delay = {cost_delay_ms})"
                )
            )
        while count_rows(engine, schema, table) < events:
            worker.check_alive()
            time.sleep(0.1)
        seconds = time.monotonic() - started
        with engine.connect() as conn:
            stats = conn.execute(
                sa.text(
                    "SELECT autovacuum_count, autoanalyze_count FROM pg_stat_user_tables "
                    "WHERE relid = to_regclass(:t)"
                ),
                {"t": qualified},
            ).one()
    finally:
        worker.stop()
        with engine.connect() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {qualified}"))
    cancelled = 0
    if SERVER_LOG.exists():
        with SERVER_LOG.open(errors="replace") as log:
            log.seek(log_start)
            text = log.read()
        lines = text.splitlines()
        cancelled = sum(
            1
            for i, line in enumerate(lines)
            if "canceling autovacuum task" in line and table in " ".join(lines[i + 1 : i + 3])
        )
    return {
        "seconds": seconds,
        "rate": events / seconds,
        "vacuums": stats.autovacuum_count,
        "analyzes": stats.autoanalyze_count,
        "cancelled": cancelled,
        "gap": _longest_gap(worker.log_path),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--budget", type=float, default=10.0)
    parser.add_argument("--cost-delay", type=int, default=2)
    args = parser.parse_args()
    bootstrap = os.environ.get("SINK_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    database_url = os.environ.get(
        "SINK_TEST_DATABASE_URL", "postgresql://sink:sink@127.0.0.1:54329/sink"
    )
    rid = run_id()
    run_dir = RUNS_DIR / rid
    run_dir.mkdir(parents=True)
    engine = engine_for(database_url)
    schema = "vacuum_" + rid.replace("-", "_")
    topic = f"bench-vacuum-{rid}"
    create_schema(engine, schema)
    _naptime(engine, "1s")
    try:
        produce_topic(bootstrap, topic, args.events)
        print(
            f"{'yield_to_vacuum_seconds':>24} {'events/s':>9} {'vacuums':>8} "
            f"{'analyzes':>9} {'cancelled':>10} {'longest gap s':>14}"
        )
        for round_ in range(args.rounds):
            order = ["0", f"{args.budget:g}"]
            for value in order if round_ % 2 == 0 else order[::-1]:
                result = _one_run(
                    engine,
                    bootstrap=bootstrap,
                    database_url=database_url,
                    topic=topic,
                    schema=schema,
                    events=args.events,
                    run_dir=run_dir,
                    label=f"vacuum-{value.replace('.', '_')}-{round_}",
                    yield_seconds=value,
                    cost_delay_ms=args.cost_delay,
                )
                print(
                    f"{value:>24} {result['rate']:>9,.0f} "
                    f"{result['vacuums']:>8} {result['analyzes']:>9} "
                    f"{result['cancelled']:>10} {result['gap']:>14.1f}",
                    flush=True,
                )
    finally:
        _naptime(engine, None)
        drop_schema(engine, schema)
        delete_topics(bootstrap, [topic])
        engine.dispose()


if __name__ == "__main__":
    main()
