"""`make bench`: the sink against Kafka Connect's JDBC sink, side by side in one run.

    python -m tests.benchmarks [--quick] [--events N] [--rounds R] [--baseline REV]
                               [--only ingest,limit,e2e,peer,cdc,avro,scaling,latency,vacuum,memory]
                               [--json out.json]

Prints the machine, then one table, then the issue's targets with the measured ratios. The
one-worker runs of the sink and the peer's tuned runs, which the targets compare, are repeated
R times, interleaved, and reported as their medians. `--baseline REV` adds the sink and the
ingest core of another revision (a commit, tag or branch) to those interleaved runs, so that a
change's effect on speed is measured in one run; its rows' system ends in @commit.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import confluent_kafka
import sqlalchemy as sa

from . import avro, baseline, cdc, e2e, memory, peer, vacuum
from .measure import (
    REPO,
    RUNS_DIR,
    BenchmarkError,
    Result,
    create_schema,
    delete_topics,
    drop_schema,
    engine_for,
    run_id,
)

SECTIONS = (
    "ingest",
    "limit",
    "e2e",
    "peer",
    "cdc",
    "avro",
    "scaling",
    "latency",
    "vacuum",
    "memory",
)
PEER = peer.SYSTEM
BATCH_SIZES = (1_000, 10_000, 50_000)
LATENCY_RATES = (1_000, 10_000)
# The sustained upsert load under which autovacuum of the data table must run to completion.
VACUUM_RATE = 5_000
# Large messages whose batches max_bytes must bound (the README gives the peak RSS bound).
MEMORY_MESSAGES, MEMORY_SIZE = 400, 1_000_000
# The targets.
TARGET_VS_PEER = 3.0
# Change events (cdc section): the sink against Debezium's JDBC sink; Avro against JSON (avro).
TARGET_CDC_VS_PEER = 3.0
TARGET_AVRO_VS_JSON = 0.6
TARGET_VS_INGEST = 0.7
# The ingest core's append against raw text COPY of the same rows (binary COPY issue).
TARGET_INGEST_VS_RAW_COPY = 1.15
# The sink's steady append rate (after its first commit) against raw COPY of the rows it
# writes (the e2e events, in the limit section; binary COPY issue): faster than any loader
# that writes COPY text.
TARGET_SINK_VS_RAW_TEXT = 1.0
TARGET_SINK_VS_RAW_BINARY = 0.8
# The ingest core's upserts against the revision before binary COPY (--baseline).
TARGET_INGEST_UPSERT_VS_BEFORE = 1.2
TARGET_RSS_MB = 300.0
# "Flat within noise": what two runs of the same size differ by on a shared 2-core machine.
TARGET_FLAT = 0.85
# Against --baseline: a change meant to keep the speed keeps it within 5%.
TARGET_VS_BASELINE = 0.95


@dataclass(frozen=True)
class Plan:
    events: int
    sections: tuple[str, ...]
    scaling_events: tuple[int, ...]
    latency_seconds: float
    ingest_rows: int
    ingest_repeat: int
    rounds: int = 1
    baseline: str | None = None


def parse_args(argv: Sequence[str] | None) -> tuple[Plan, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100k events, 15 s latency runs")
    parser.add_argument("--events", type=int, help="N for e2e and peer (default 1M; quick 100k)")
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds of the compared one-worker runs and of the ingest section's repetitions "
        "(default 3; quick 1)",
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--json", type=Path, help="also write machine, rows and targets here")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run this revision's sink (e2e) and ingest core (ingest) in the same rounds",
    )
    args = parser.parse_args(argv)
    sections = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
    events = args.events or (100_000 if args.quick else 1_000_000)
    rounds = args.rounds or (1 if args.quick else 3)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    return (
        Plan(
            events=events,
            sections=sections,
            # The 100k, 1M, 5M around the default N.
            scaling_events=(events // 10, events, events * 5),
            latency_seconds=15.0 if args.quick else 60.0,
            ingest_rows=100_000 if args.quick else 500_000,
            ingest_repeat=rounds,
            rounds=rounds,
            baseline=args.baseline,
        ),
        args.json,
    )


# --- the machine -------------------------------------------------------------------------------


def _first(path: str, prefix: str) -> str:
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def _kafka_version() -> str:
    libs = Path(os.environ.get("SINK_SERVICES_DIR", REPO / ".services")) / "kafka" / "libs"
    jars = sorted(libs.glob("kafka_2.13-*.jar"))
    return jars[0].name[len("kafka_2.13-") : -len(".jar")] if jars else "?"


def _java_version() -> str:
    try:
        out = subprocess.run(
            ["java", "-version"], check=False, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stderr.splitlines()[0] if out.stderr else "?"


def machine(engine: sa.engine.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        postgres = str(conn.execute(sa.text("SHOW server_version")).scalar_one())
        settings = conn.execute(
            sa.text(
                "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings "
                "WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', "
                "'full_page_writes', 'max_wal_size')"
            )
        ).scalar_one()
    memory_kb = _first("/proc/meminfo", "MemTotal").split()[0]
    return {
        "cpu": _first("/proc/cpuinfo", "model name"),
        "cores": str(os.cpu_count()),
        "memory": f"{int(memory_kb) / 1024 / 1024:.1f} GiB" if memory_kb.isdigit() else "?",
        "os": f"{platform.system()} {platform.release()}",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "postgresql": f"{postgres} ({settings})",
        "kafka broker": _kafka_version(),
        "python": platform.python_version(),
        "confluent-kafka": (
            f"{confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]})"
        ),
        "java": _java_version(),
    }


# --- one run -----------------------------------------------------------------------------------


@dataclass
class Bench:
    """The endpoints and what this run created (topics by N, its schema), cleaned up at the end."""

    plan: Plan
    bootstrap: str
    database_url: str
    engine: sa.engine.Engine
    run_dir: Path
    schema: str
    results: list[Result] = field(default_factory=list)
    # The vacuum and memory sections' figures, as one line each.
    vacuum: str | None = None
    memory: str | None = None
    _topics: dict[tuple[str, int], str] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)  # other topics, deleted at the end

    def topic(self, kind: str, count: int) -> str:
        """The pre-produced topic of `count` events, plain ("sink") or enveloped ("peer")."""
        key = (kind, count)
        if key not in self._topics:
            name = f"bench-{self.run_dir.name}-{kind}-{count}"
            producer = e2e.produce_topic if kind == "sink" else peer.produce_topic
            print(f"  producing {count:,} {kind} events to {name} ...", flush=True)
            self._topics[key] = name
            seconds = producer(self.bootstrap, name, count)
            print(f"  ... {seconds:.1f} s", flush=True)
        return self._topics[key]

    def drop_topic(self, kind: str, count: int) -> None:
        name = self._topics.pop((kind, count), None)
        if name:
            delete_topics(self.bootstrap, [name])

    def cleanup(self) -> None:
        delete_topics(self.bootstrap, [*self._topics.values(), *self.created])
        self._topics.clear()
        drop_schema(self.engine, self.schema)

    def step(self, what: str, action: Callable[[], Result | list[Result]], **row: Any) -> None:
        """Runs one measurement and keeps its rows."""
        self.results.extend(self.measure(what, action, **row))

    def measure(
        self, what: str, action: Callable[[], Result | list[Result]], **row: Any
    ) -> list[Result]:
        """Runs one measurement; a failure becomes a row saying so, and the run goes on."""
        print(f"- {what}", flush=True)
        try:
            outcome = action()
        except (BenchmarkError, subprocess.SubprocessError, OSError, sa.exc.SQLAlchemyError) as exc:
            print(f"  FAILED: {exc}", flush=True)
            traceback.print_exc(limit=3, file=sys.stdout)
            return [Result(note=f"FAILED: {str(exc).splitlines()[0][:90]}", **row)]
        results = outcome if isinstance(outcome, list) else [outcome]
        for result in results:
            print(f"  {_rate(result.rate)} events/s, {_num(result.seconds, 's')}", flush=True)
        return results

    def sink(
        self,
        *,
        upsert: bool,
        workers: int,
        count: int,
        batch: int,
        section: str,
        code: baseline.Baseline | None = None,
    ) -> Result:
        return e2e.run(
            bootstrap=self.bootstrap,
            database_url=self.database_url,
            engine=self.engine,
            topic=self.topic("sink", count),
            events_count=count,
            schema=self.schema,
            run_dir=self.run_dir,
            upsert=upsert,
            workers=workers,
            batch=batch,
            section=section,
            baseline=code,
        )

    def e2e_sink(
        self, *, upsert: bool, workers: int, of: str = "", code: baseline.Baseline | None = None
    ) -> list[Result]:
        """One end-to-end run of the sink over the plan's N events, at the default batch; of the
        revision `code`, if given."""
        n, name = self.plan.events, "upsert" if upsert else "append"
        revision = code.label if code else ""
        return self.measure(
            f"sink{revision} {name}, {workers} worker{'s' if workers > 1 else ''}, N={n:,}{of}",
            partial(
                self.sink,
                upsert=upsert,
                workers=workers,
                count=n,
                batch=e2e.DEFAULT_BATCH,
                section="e2e",
                code=code,
            ),
            section="e2e",
            system=e2e.SYSTEM + revision,
            mode=name,
            events=n,
            workers=workers,
        )

    def connect(self, mode: str, count: int, tuning: peer.Tuning) -> Result:
        return peer.run(
            mode,
            bootstrap=self.bootstrap,
            database_url=self.database_url,
            engine=self.engine,
            topic=self.topic("peer", count),
            events_count=count,
            schema=self.schema,
            run_dir=self.run_dir,
            tuning=tuning,
        )


def run_ingest(bench: Bench) -> None:
    """The ingest core benchmark lives in ingest_bench.py (another engineer's): call its
    `run(rows, repeat) -> list[dict]` when it has one."""
    module = importlib.import_module("tests.benchmarks.ingest_bench")
    entry = getattr(module, "run", None)
    if entry is None:
        print(
            "- ingest: skipped, tests/benchmarks/ingest_bench.py has no run(rows, repeat) yet; "
            "run it alone: python -m tests.benchmarks.ingest_bench"
        )
        return

    base = baseline.checkout(bench.plan.baseline) if bench.plan.baseline else None
    before = (base.label, base.tree) if base else None

    def measure() -> list[Result]:
        rows = entry(rows=bench.plan.ingest_rows, repeat=bench.plan.ingest_repeat, before=before)
        return [_ingest_result(row, bench.plan.ingest_rows) for row in rows]

    bench.step(
        "ingest core (ingest_bench.run)",
        measure,
        section="ingest",
        system="?",
        mode="?",
        events=bench.plan.ingest_rows,
    )


def run_limit(bench: Bench) -> None:
    """The server's side alone: the ingest benchmark's rows and the e2e section's events (as the
    sink's table holds them), pre-encoded by PostgreSQL as COPY text and as binary COPY, loaded
    alternately into fresh tables."""
    module = importlib.import_module("tests.benchmarks.ingest_bench")

    def measure() -> list[Result]:
        rows = module.limit(rows=bench.plan.ingest_rows)
        return [_ingest_result(row, bench.plan.ingest_rows) for row in rows]

    bench.step(
        "COPY text vs binary (ingest_bench.limit)",
        measure,
        section="limit",
        system="?",
        mode="?",
        events=bench.plan.ingest_rows,
    )


def _ingest_result(row: dict[str, Any], rows: int) -> Result:
    def pick(*names: str) -> Any:
        return next((row[n] for n in names if row.get(n) is not None), None)

    rate = pick("rows_per_s", "median_rows_per_s", "rate")
    return Result(
        section="limit" if row.get("scenario") == "limit" else "ingest",
        system=str(pick("implementation", "system") or "?"),
        mode=str(pick("scenario", "mode") or "?"),
        events=int(pick("rows") or rows),
        batch=pick("batch_rows", "batch"),
        seconds=pick("seconds"),
        rate=float(rate) if rate is not None else None,
        peak_rss_mb=pick("peak_rss_mib", "peak_rss_mb"),
        note=str(pick("note") or ""),
        extra=row,
    )


def run_e2e_and_peer(bench: Bench) -> None:
    """Sink and peer interleaved, so that load from elsewhere on the machine hits both alike;
    the compared runs `plan.rounds` times each, reported as their medians."""
    n = bench.plan.events
    want_sink, want_peer = "e2e" in bench.plan.sections, "peer" in bench.plan.sections
    row = {"section": "e2e", "events": n}
    base = baseline.checkout(bench.plan.baseline) if want_sink and bench.plan.baseline else None
    runs: dict[tuple[str, str], list[Result]] = {}
    for round_ in range(1, bench.plan.rounds + 1):
        of = f", round {round_} of {bench.plan.rounds}" if bench.plan.rounds > 1 else ""
        for upsert, mode in ((False, "insert"), (True, "upsert")):
            name = "upsert" if upsert else "append"
            if want_sink:
                runs.setdefault((e2e.SYSTEM, name), []).extend(
                    bench.e2e_sink(upsert=upsert, workers=1, of=of)
                )
            if base is not None:
                runs.setdefault((e2e.SYSTEM + base.label, name), []).extend(
                    bench.e2e_sink(upsert=upsert, workers=1, of=of, code=base)
                )
            if want_peer:
                runs.setdefault((PEER, name), []).extend(
                    bench.measure(
                        f"Kafka Connect + Debezium JDBC sink, insert.mode={mode}, N={n:,}{of}",
                        partial(bench.connect, mode, n, peer.TUNED),
                        system=PEER,
                        mode=name,
                        **row,
                    )
                )
    bench.results.extend(median(results) for results in runs.values())
    if want_peer:
        bench.step(
            f"Kafka Connect + Debezium JDBC sink, insert.mode=insert, default settings, N={n:,}",
            partial(bench.connect, "insert", n, peer.DEFAULTS),
            system=PEER,
            mode="append",
            **row,
        )
    bench.drop_topic("peer", n)
    if want_sink:
        for upsert in (False, True):
            bench.results.extend(bench.e2e_sink(upsert=upsert, workers=2))


def run_cdc(bench: Bench) -> None:
    """Debezium change events (the JSON converter with schemas; inserts, 10% updates, 5% deletes
    with their tombstones) through the sink and through Debezium's JDBC sink in upsert mode with
    deletes, interleaved `plan.rounds` times; each run ends when its table is what the changes
    leave. events/s counts the topic's messages, tombstones included."""
    changes = cdc.Changes(bench.plan.events)
    topic = f"bench-{bench.run_dir.name}-cdc-{bench.plan.events}"
    print(f"  producing {bench.plan.events:,} change events to {topic} ...", flush=True)
    bench.created.append(topic)
    print(f"  ... {changes.produce(bench.bootstrap, topic):.1f} s", flush=True)
    n = changes.messages
    row = {"section": "cdc", "events": n, "mode": "upsert"}
    common = {
        "bootstrap": bench.bootstrap,
        "database_url": bench.database_url,
        "engine": bench.engine,
        "topic": topic,
        "events_count": n,
        "schema": bench.schema,
        "run_dir": bench.run_dir,
    }
    systems = {
        e2e.SYSTEM: (
            "sink, Debezium change events",
            partial(e2e.run, upsert=True, section="cdc", source=changes.source(), **common),
        ),
        PEER: (
            "Kafka Connect + Debezium JDBC sink, upsert with deletes",
            partial(peer.run, "upsert", changes=changes, **common),
        ),
    }
    runs: dict[str, list[Result]] = {}
    for round_ in range(1, bench.plan.rounds + 1):
        of = f", round {round_} of {bench.plan.rounds}" if bench.plan.rounds > 1 else ""
        for system, (what, action) in systems.items():
            runs.setdefault(system, []).extend(
                bench.measure(f"{what}, {n:,} messages{of}", action, system=system, **row)
            )
    bench.results.extend(median(results) for results in runs.values())


def run_avro(bench: Bench) -> None:
    """The same events appended from an Avro topic (schema registry wire format) and from the
    JSON topic, interleaved `plan.rounds` times."""
    n = bench.plan.events
    registry = os.environ.get("SINK_TEST_SCHEMA_REGISTRY_URL", "")
    row = {"section": "avro", "events": n, "mode": "append"}
    topics = {"json": bench.topic("sink", n)}
    if registry:
        topics["avro"] = f"bench-{bench.run_dir.name}-avro-{n}"
        print(f"  producing {n:,} Avro events to {topics['avro']} ...", flush=True)
        bench.created.append(topics["avro"])
        seconds = avro.produce_topic(bench.bootstrap, registry, topics["avro"], n)
        print(f"  ... {seconds:.1f} s", flush=True)
    sources = {"json": e2e.Source(), "avro": avro.source(registry)}
    runs: dict[str, list[Result]] = {}
    for round_ in range(1, bench.plan.rounds + 1):
        of = f", round {round_} of {bench.plan.rounds}" if bench.plan.rounds > 1 else ""
        for kind, source in sources.items():

            def measure(kind: str = kind, source: e2e.Source = source) -> Result:
                if kind not in topics:
                    raise BenchmarkError("no schema registry: set SINK_TEST_SCHEMA_REGISTRY_URL")
                result = e2e.run(
                    bootstrap=bench.bootstrap,
                    database_url=bench.database_url,
                    engine=bench.engine,
                    topic=topics[kind],
                    events_count=n,
                    schema=bench.schema,
                    run_dir=bench.run_dir,
                    upsert=False,
                    section="avro",
                    source=source,
                )
                return dataclasses.replace(result, system=f"{e2e.SYSTEM} ({kind})")

            system = f"{e2e.SYSTEM} ({kind})"
            what = f"sink append from {kind}, N={n:,}{of}"
            runs.setdefault(system, []).extend(bench.measure(what, measure, system=system, **row))
    bench.results.extend(median(results) for results in runs.values())


def median(results: Sequence[Result]) -> Result:
    """The run of median rate, noting the others; any failed run is the row instead."""
    failed = [r for r in results if not r.rate]
    if failed or len(results) == 1:
        return failed[0] if failed else results[0]
    ordered = sorted(results, key=lambda r: r.rate or 0.0)
    middle = ordered[(len(ordered) - 1) // 2]
    spread = f"{_rate(ordered[0].rate)}..{_rate(ordered[-1].rate)}"
    note = f"median of {len(results)} (min-max {spread} events/s)"
    extra = {**middle.extra, "rates": [r.rate for r in results]}
    steadies = [steady_rate(r) for r in results]
    if all(steadies) and any("steady_rate" in r.extra for r in results):
        # The steady column's own median: it need not come from the run of median rate.
        known = [s for s in steadies if s]
        extra["steady_rate"] = statistics.median(known)
        note += f", steady {_rate(min(known))}..{_rate(max(known))}"
    return dataclasses.replace(
        middle, note=f"{middle.note}, {note}" if middle.note else note, extra=extra
    )


def run_scaling(bench: Bench) -> None:
    """Append, one worker: rate against N at the default batch, and against the batch size."""
    n = bench.plan.events
    done = {
        (r.events, r.batch)
        for r in bench.results
        if r.system == e2e.SYSTEM and r.mode == "append" and r.workers == 1 and r.rate
    }
    points = [(count, e2e.DEFAULT_BATCH) for count in bench.plan.scaling_events]
    points += [(n, batch) for batch in BATCH_SIZES if batch != e2e.DEFAULT_BATCH]
    for count, batch in sorted(points):
        if (count, batch) in done:
            print(f"- scaling N={count:,} batch={batch:,}: the e2e row above")
            continue
        bench.step(
            f"scaling: sink append, N={count:,}, batch {batch:,}",
            partial(
                bench.sink, upsert=False, workers=1, count=count, batch=batch, section="scaling"
            ),
            section="scaling",
            system=e2e.SYSTEM,
            mode="append",
            events=count,
            batch=batch,
        )
        if count != n:
            bench.drop_topic("sink", count)


def run_latency(bench: Bench) -> None:
    for rate in LATENCY_RATES:
        bench.step(
            f"latency: steady {rate:,} events/s for {bench.plan.latency_seconds:.0f} s",
            partial(
                e2e.latency,
                bootstrap=bench.bootstrap,
                database_url=bench.database_url,
                engine=bench.engine,
                schema=bench.schema,
                run_dir=bench.run_dir,
                rate=rate,
                duration=bench.plan.latency_seconds,
            ),
            section="latency",
            system=e2e.SYSTEM,
            mode="append",
            events=int(rate * bench.plan.latency_seconds),
        )


def run_vacuum(bench: Bench) -> None:
    seconds = bench.plan.latency_seconds * 3
    print(f"  vacuum: {VACUUM_RATE:,} upserts/s for {seconds:.0f} s ...", flush=True)
    log = os.environ.get("SINK_TEST_POSTGRES_LOG")
    result = vacuum.sustained_upserts(
        bootstrap=bench.bootstrap,
        database_url=bench.database_url,
        engine=bench.engine,
        schema=bench.schema,
        run_dir=bench.run_dir,
        seconds=seconds,
        rate=VACUUM_RATE,
        server_log=Path(log) if log else None,
    )
    bench.vacuum = vacuum.describe(result)
    print(f"  ... {bench.vacuum}", flush=True)


def run_memory(bench: Bench) -> None:
    print(f"  memory: {MEMORY_MESSAGES} messages of {MEMORY_SIZE:,} bytes ...", flush=True)
    result = memory.peak_with_large_messages(
        bootstrap=bench.bootstrap,
        database_url=bench.database_url,
        engine=bench.engine,
        schema=bench.schema,
        run_dir=bench.run_dir,
        messages=MEMORY_MESSAGES,
        size=MEMORY_SIZE,
    )
    bench.memory = memory.describe(result)
    print(f"  ... {bench.memory}", flush=True)


# --- output ------------------------------------------------------------------------------------


def _num(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}{unit}"


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


COLUMNS = (
    "section",
    "system",
    "mode",
    "workers",
    "N",
    "batch",
    "seconds",
    "1st row s",
    "events/s",
    "steady/s",
    "2nd/1st half",
    "peak RSS MB",
    "p50 ms",
    "p99 ms",
    "note",
)


def steady_rate(r: Result) -> float | None:
    """Events per second after the first row: the run's rate less its start. The sink's runs
    time it by its stored offsets (every LATENCY_POLL_SECONDS), the others by their polls."""
    if r.extra.get("steady_rate"):
        return float(r.extra["steady_rate"])
    if r.seconds and r.first_row_seconds is not None and r.seconds > r.first_row_seconds:
        return r.events / (r.seconds - r.first_row_seconds)
    return None


def _cells(r: Result) -> tuple[str, ...]:
    steady = steady_rate(r)
    return (
        r.section,
        r.system,
        r.mode,
        str(r.workers),
        f"{r.events:,}",
        "" if r.batch is None else f"{r.batch:,}",
        _num(r.seconds),
        _num(r.first_row_seconds),
        _rate(r.rate),
        _rate(steady),
        _num(r.extra.get("half_ratio"), digits=2),
        _num(r.peak_rss_mb, digits=0),
        _num(r.p50_ms, digits=0),
        _num(r.p99_ms, digits=0),
        r.note,
    )


def table(results: Sequence[Result]) -> str:
    rows = [COLUMNS, *(_cells(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    numeric = {3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}
    lines = []
    for index, row in enumerate(rows):
        cells = [
            c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _find(results: Sequence[Result], **match: Any) -> Result | None:
    for r in results:
        if r.rate and all(getattr(r, k) == v for k, v in match.items()):
            return r
    return None


def targets(results: Sequence[Result], plan: Plan) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured figure and a verdict (None: not measured)."""
    n = plan.events
    one = {"system": e2e.SYSTEM, "workers": 1, "section": "e2e", "events": n}
    peer_system = {"system": PEER, "events": n, "batch": peer.TUNED.batch_size}
    checks: list[dict[str, Any]] = []

    def ratio(name: str, a: Result | None, b: Result | None, goal: float) -> None:
        value = a.rate / b.rate if a and b and a.rate and b.rate else None
        checks.append(
            {
                "target": name,
                "goal": f">= {goal}x",
                "measured": value,
                "met": None if value is None else value >= goal,
            }
        )

    ratio(
        "e2e append, 1 worker / peer insert mode",
        _find(results, mode="append", **one),
        _find(results, mode="append", **peer_system),
        TARGET_VS_PEER,
    )
    ratio(
        "e2e upsert, 1 worker / peer upsert mode",
        _find(results, mode="upsert", **one),
        _find(results, mode="upsert", **peer_system),
        TARGET_VS_PEER,
    )
    ingest = next(
        (
            r
            for r in results
            if r.section == "ingest" and r.rate and r.system == "ours" and r.mode == "append"
        ),
        None,
    )
    ratio(
        "e2e append, 1 worker / ingest core (ours, append)",
        _find(results, mode="append", **one),
        ingest,
        TARGET_VS_INGEST,
    )
    for base in sorted({r.system for r in results if r.system.startswith(e2e.SYSTEM + "@")}):
        before = {**one, "system": base}
        ratio(
            f"  the same, the sink at {base.split('@')[1]}",
            _find(results, mode="append", **before),
            ingest,
            TARGET_VS_INGEST,
        )
        for mode in ("append", "upsert"):
            ratio(
                f"e2e {mode}, 1 worker / the sink at {base.split('@')[1]}",
                _find(results, mode=mode, **one),
                _find(results, mode=mode, **before),
                TARGET_VS_BASELINE,
            )
    ratio(
        "cdc: sink / Debezium JDBC sink (upsert, deletes)",
        _find(results, section="cdc", system=e2e.SYSTEM),
        _find(results, section="cdc", system=PEER),
        TARGET_CDC_VS_PEER,
    )
    ratio(
        "avro: sink append from Avro / from JSON, same run",
        _find(results, section="avro", system=f"{e2e.SYSTEM} (avro)"),
        _find(results, section="avro", system=f"{e2e.SYSTEM} (json)"),
        TARGET_AVRO_VS_JSON,
    )
    sink = _find(results, mode="append", **one)
    for kind, goal in (("text", TARGET_SINK_VS_RAW_TEXT), ("binary", TARGET_SINK_VS_RAW_BINARY)):
        raw = _find(results, section="limit", system=f"raw COPY {kind}, events")
        steady = steady_rate(sink) if sink else None
        value = steady / raw.rate if steady and raw and raw.rate else None
        checks.append(
            {
                "target": f"e2e append, 1 worker, steady / raw {kind} COPY of its rows (limit)",
                "goal": f">= {goal}x",
                "measured": value,
                "met": None if value is None else value >= goal,
            }
        )
    batched = next((r for r in results if r.system.startswith("raw COPY binary, events, ")), None)
    steady = steady_rate(sink) if sink else None
    checks.append(
        {
            "target": "e2e steady / the same rows in batches (reference)",
            "goal": "x",
            "measured": steady / batched.rate if steady and batched and batched.rate else None,
            "met": None,
        }
    )
    ratio(
        "ingest core append (ours) / raw text COPY, same rows and run",
        ingest,
        _find(results, section="ingest", system="raw COPY", mode="append"),
        TARGET_INGEST_VS_RAW_COPY,
    )
    for base in sorted({r.system for r in results if r.system.startswith("ours@")}):
        for mode, goal in (
            ("append", TARGET_VS_BASELINE),
            ("upsert first load", TARGET_INGEST_UPSERT_VS_BEFORE),
            ("upsert re-load", TARGET_INGEST_UPSERT_VS_BEFORE),
        ):
            ratio(
                f"ingest core {mode} / the ingest core at {base.split('@')[1]}",
                _find(results, section="ingest", system="ours", mode=mode),
                _find(results, section="ingest", system=base, mode=mode),
                goal,
            )
    peaks = [
        r.peak_rss_mb
        for r in results
        if r.system == e2e.SYSTEM and r.peak_rss_mb and r.batch == e2e.DEFAULT_BATCH
    ]
    checks.append(
        {
            "target": "sink peak RSS at default batch limits",
            "goal": f"<= {TARGET_RSS_MB:.0f} MB",
            "measured": max(peaks) if peaks else None,
            "met": max(peaks) <= TARGET_RSS_MB if peaks else None,
        }
    )
    scaling = {"system": e2e.SYSTEM, "mode": "append", "workers": 1, "batch": e2e.DEFAULT_BATCH}
    ratio(
        f"rate at N={plan.scaling_events[-1]:,} / at N={n:,} (flat within noise)",
        _find(results, events=plan.scaling_events[-1], **scaling),
        _find(results, events=n, **scaling),
        TARGET_FLAT,
    )
    largest = _find(results, events=plan.scaling_events[-1], **scaling)
    within = largest.extra.get("half_ratio") if largest else None
    checks.append(
        {
            "target": f"N={plan.scaling_events[-1]:,} run: 2nd-half rate / 1st-half rate",
            "goal": f">= {TARGET_FLAT}x",
            "measured": within,
            "met": None if within is None else within >= TARGET_FLAT,
        }
    )
    return checks


def print_targets(checks: Sequence[dict[str, Any]]) -> None:
    print("\nTargets (issue):")
    for check in checks:
        value = check["measured"]
        shown = (
            "not measured"
            if value is None
            else (f"{value:.2f}x" if check["goal"].endswith("x") else f"{value:.0f} MB")
        )
        verdict = {True: "met", False: "NOT met", None: "-"}[check["met"]]
        print(f"  {check['target']:58} {check['goal']:>9}  {shown:>12}  {verdict}")


@contextmanager
def bench_context(plan: Plan) -> Iterator[Bench]:
    bootstrap = os.environ.get("SINK_TEST_KAFKA_BOOTSTRAP")
    database_url = os.environ.get("SINK_TEST_DATABASE_URL")
    if not bootstrap or not database_url:
        sys.exit(
            "set SINK_TEST_KAFKA_BOOTSTRAP and SINK_TEST_DATABASE_URL: "
            'make services-up && eval "$(deploy/local/services.sh env)", or run `make bench`'
        )
    rid = run_id()
    run_dir = RUNS_DIR / rid
    run_dir.mkdir(parents=True)
    engine = engine_for(database_url)
    bench = Bench(plan, bootstrap, database_url, engine, run_dir, "bench_" + rid.replace("-", "_"))
    create_schema(engine, bench.schema)
    try:
        yield bench
    finally:
        bench.cleanup()
        engine.dispose()


# Each runner, in order, with the sections it measures.
RUNNERS: tuple[tuple[frozenset[str], Callable[[Bench], None]], ...] = (
    (frozenset({"ingest"}), run_ingest),
    (frozenset({"limit"}), run_limit),
    (frozenset({"e2e", "peer"}), run_e2e_and_peer),
    (frozenset({"cdc"}), run_cdc),
    (frozenset({"avro"}), run_avro),
    (frozenset({"scaling"}), run_scaling),
    (frozenset({"latency"}), run_latency),
    (frozenset({"vacuum"}), run_vacuum),
    (frozenset({"memory"}), run_memory),
)


def main(argv: Sequence[str] | None = None) -> int:
    plan, json_path = parse_args(argv)
    with bench_context(plan) as bench:
        described = machine(bench.engine)
        print("Machine")
        for name, value in described.items():
            print(f"  {name:22} {value}")
        print(f"  {'peer':22} " + ", ".join(f"{k} {v}" for k, v in _peer_versions(plan).items()))
        print(f"  {'logs and configs':22} {bench.run_dir}")
        print(
            f"\nN = {plan.events:,} events of ~250 bytes, 6 partitions; sections {plan.sections}\n"
        )
        started = time.monotonic()
        for wanted, runner in RUNNERS:
            if wanted & set(plan.sections):
                runner(bench)
        described["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        described["benchmark wall time"] = f"{time.monotonic() - started:.0f} s"
    print(
        f"\nResults ({described['load average at end']} load average at the end; "
        f"{described['benchmark wall time']})\n"
    )
    print(table(bench.results))
    if bench.vacuum is not None:
        print(f"\nAutovacuum under sustained upserts: {bench.vacuum}")
    if bench.memory is not None:
        print(f"\nLarge messages, default batch limits: {bench.memory}")
    checks = targets(bench.results, plan)
    print_targets(checks)
    print(
        "\nevents/s: N / wall time from process start until the table holds all N (and, for "
        "the sink, its stored offsets equal the log end offsets); steady/s: N / time after "
        "the first row (the sink's: the messages after its first commit / the time from it to "
        "its last, read off its stored offsets every 20 ms); 2nd/1st half: rate over the last "
        "half of the rows / over the first half. "
        "Both systems share the same 2 cores with PostgreSQL and Kafka."
    )
    if json_path:
        json_path.write_text(
            json.dumps(
                {
                    "machine": described,
                    "peer": _peer_versions(plan),
                    "results": [r.as_dict() for r in bench.results],
                    "targets": checks,
                },
                indent=2,
                default=str,
            )
        )
        print(f"wrote {json_path}")
    return 1 if any(r.note.startswith("FAILED") for r in bench.results) else 0


def _peer_versions(plan: Plan) -> dict[str, str]:
    if "peer" not in plan.sections:
        return {}
    try:
        peer.ensure_libs()
    except BenchmarkError as exc:
        return {"error": str(exc)}
    return peer.versions()


if __name__ == "__main__":
    sys.exit(main())
