"""The sink end to end: `python -m sink run` workers over a pre-produced topic, timed from process
start until the table holds every event and the stored offsets equal the log end offsets; and
produce-to-visible latency under a steady producer."""

from __future__ import annotations

import bisect
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from confluent_kafka import KafkaError, Message, Producer

from sink.config import BatchSettings
from tests.events import EVENT_COLUMNS_TOML, events
from tests.integration.sink.harness import log_end_offsets, produce, stored_offsets

from .baseline import Baseline
from .measure import (
    PARTITIONS,
    REPO,
    BenchmarkError,
    Result,
    Watched,
    create_topic,
    delete_topics,
    row_count,
    time_until_complete,
    timeout_for,
)

SYSTEM = "pg-kafka-sink"
# The sink's own default: the runs are of the sink as it ships.
DEFAULT_BATCH = BatchSettings().max_messages
# Latency: how often the stored offsets are read (the resolution of every latency figure), and
# how many events first prove that the worker has joined and created its table.
LATENCY_POLL_SECONDS = 0.02
WARMUP_EVENTS = 100
# Seconds after the last produce for the last event to become visible before the run fails.
DRAIN_SECONDS = 120.0


@dataclass(frozen=True)
class Source:
    """What the topic holds, when not the plain JSON events: the config lines that read it, a
    name for its runs, and the table it must leave (`rows` rows, and `done()` true) when that
    is not one row per message."""

    label: str = ""
    settings: str = ""  # top-level config sections (e.g. [schema_registry])
    table_settings: str = ""  # lines of the [[tables]] entry (formats, envelope)
    rows: int | None = None
    done: Callable[[sa.engine.Engine, str, str], bool] | None = None


def produce_topic(bootstrap: str, topic: str, count: int) -> float:
    """Creates `topic` and fills it with `count` events round-robin; returns seconds taken."""
    started = time.monotonic()
    create_topic(bootstrap, topic)
    produce(bootstrap, topic, events(count), partitions=PARTITIONS)
    return time.monotonic() - started


def write_config(
    path: Path,
    *,
    bootstrap: str,
    database_url: str,
    topic: str,
    schema: str,
    table: str,
    group_id: str,
    upsert: bool,
    max_messages: int = DEFAULT_BATCH,
    source: Source = Source(),
) -> Path:
    """A sink config for one run; every batch limit but `max_messages` keeps its default."""
    primary_key = 'primary_key = ["id"]\n' if upsert else ""
    path.write_text(
        f"""
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{group_id}"
start_from = "earliest"

[postgres]
url = "{database_url}"
state_table = "{schema}.{state_table(table)}"

[batch]
max_messages = {max_messages}

[http]
host = "127.0.0.1"
port = 0  # any free port: several workers run side by side

[errors]
policy = "fail"
{source.settings}
[log]
format = "text"
level = "INFO"

[[tables]]
schema = "{schema}"
name = "{table}"
topics = ["{topic}"]
{primary_key}{source.table_settings}{EVENT_COLUMNS_TOML}"""
    )
    return path


def run_config(
    run_dir: Path,
    label: str,
    *,
    bootstrap: str,
    database_url: str,
    topic: str,
    schema: str,
    upsert: bool,
    max_messages: int = DEFAULT_BATCH,
    source: Source = Source(),
) -> tuple[Path, str]:
    """The config of the run named `label`, and its table: file, table and consumer group all
    follow from the label."""
    table = label.replace("-", "_")
    config = write_config(
        run_dir / f"{label}.toml",
        bootstrap=bootstrap,
        database_url=database_url,
        topic=topic,
        schema=schema,
        table=table,
        group_id=f"bench-{run_dir.name}-{label}",
        upsert=upsert,
        max_messages=max_messages,
        source=source,
    )
    return config, table


def _fresh(run_dir: Path, label: str) -> str:
    """`label`, numbered when an earlier round of this run used it: each round gets a consumer
    group and tables of its own (a group's offsets stay with its state table)."""
    fresh, round_ = label, 1
    while (run_dir / f"{fresh}.toml").exists():
        round_ += 1
        fresh = f"{label}-r{round_}"
    return fresh


def state_table(table: str) -> str:
    """The state table of the run whose table is `table`: several runs share a schema."""
    return f"{table}_state"


def _offsets_reached(
    engine: sa.engine.Engine, schema: str, table: str, topic: str, ends: dict[int, int]
) -> Callable[[], bool]:
    def reached() -> bool:
        stored = stored_offsets(engine, schema, state_table(table)).get(topic, {})
        return all(int(stored.get(str(p), -1)) == end for p, end in ends.items())

    return reached


def _committed(engine: sa.engine.Engine, schema: str, table: str, topic: str) -> Callable[[], int]:
    """Messages the sink has committed, from its stored next offsets (offsets start at 0 on
    these topics, and each event is one row): a cheap stand-in for count(*)."""

    def committed() -> int:
        stored = stored_offsets(engine, schema, state_table(table))
        return sum(int(o) for o in stored.get(topic, {}).values())

    return committed


def start_workers(
    config: Path,
    workers: int,
    run_dir: Path,
    label: str,
    env: dict[str, str] | None = None,
    code: Path = REPO,
) -> list[Watched]:
    """`workers` sink processes running the code of the tree `code` (today's by default)."""
    argv = [sys.executable, "-m", "sink", "run", "--config", str(config)]
    return [
        Watched(
            argv,
            run_dir / f"{label}-worker{i}.log",
            env={"PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=code,
        )
        for i in range(workers)
    ]


def run(
    *,
    bootstrap: str,
    database_url: str,
    engine: sa.engine.Engine,
    topic: str,
    events_count: int,
    schema: str,
    run_dir: Path,
    upsert: bool,
    workers: int = 1,
    batch: int = DEFAULT_BATCH,
    section: str = "e2e",
    timeout: float | None = None,
    baseline: Baseline | None = None,
    source: Source = Source(),
) -> Result:
    """Times `workers` sink processes over the whole topic into a table of their own; with
    `baseline`, processes running that revision's code, in a row of their own. `events_count`
    is the topic's messages; the table must end with one row each unless `source` says else."""
    mode = "upsert" if upsert else "append"
    label = f"sink{source.label}-{mode}-w{workers}-b{batch}-n{events_count}"
    if baseline is not None:
        label += "-base"
    label = _fresh(run_dir, label)
    ends = log_end_offsets(bootstrap, topic, PARTITIONS)
    if sum(ends.values()) != events_count:
        raise BenchmarkError(f"topic {topic} holds {sum(ends.values())} events, not {events_count}")
    expected = events_count if source.rows is None else source.rows
    config, table = run_config(
        run_dir,
        label,
        bootstrap=bootstrap,
        database_url=database_url,
        topic=topic,
        schema=schema,
        upsert=upsert,
        max_messages=batch,
        source=source,
    )
    reached = _offsets_reached(engine, schema, table, topic, ends)
    check = source.done
    started = time.monotonic()
    code = baseline.tree if baseline else REPO
    procs = start_workers(config, workers, run_dir, label, code=code)
    try:
        with OffsetTimeline(engine, schema, table, topic) as timeline:
            timing = time_until_complete(
                procs,
                started,
                rows=lambda: row_count(engine, schema, table),
                estimate=_committed(engine, schema, table, topic),
                expected=expected,
                also_done=lambda: reached() and (check is None or check(engine, schema, table)),
                exact_after=reached,
                timeout=timeout or timeout_for(events_count),
                what=f"sink {label}",
            )
    finally:
        for proc in procs:
            proc.stop()
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{schema}"."{table}"'))
    return Result(
        section=section,
        system=SYSTEM + (baseline.label if baseline else ""),
        mode=mode,
        events=events_count,
        workers=workers,
        batch=batch,
        seconds=timing.seconds,
        first_row_seconds=timing.first_row_seconds,
        rate=events_count / timing.seconds,
        peak_rss_mb=timing.peak_rss_mb,
        note="exactly-once" + (", peak RSS of the larger worker" if workers > 1 else ""),
        extra={
            "rows": timing.rows,
            "half_ratio": timing.half_ratio,
            "steady_rate": timeline.steady_rate(ends),
        },
    )


# --- latency -----------------------------------------------------------------------------------


class OffsetTimeline:
    """Polls the stored offsets in a thread: per partition, when each next offset was first seen.
    Rows and offsets commit in one transaction, so an offset stored means its row is visible."""

    def __init__(self, engine: sa.engine.Engine, schema: str, table: str, topic: str) -> None:
        self._where = (engine, schema, table, topic)
        self.times: dict[int, list[float]] = {p: [] for p in range(PARTITIONS)}
        self.offsets: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="offset-timeline", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> OffsetTimeline:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _read(self) -> dict[str, int]:
        engine, schema, table, topic = self._where
        return stored_offsets(engine, schema, state_table(table)).get(topic, {})

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                stored = self._read()
                now = time.monotonic()
                for partition, next_offset in stored.items():
                    p = int(partition)
                    offsets = self.offsets.setdefault(p, [])
                    if not offsets or int(next_offset) > offsets[-1]:
                        offsets.append(int(next_offset))
                        self.times.setdefault(p, []).append(now)
                self._stop.wait(LATENCY_POLL_SECONDS)
        except BaseException as exc:  # reported by the caller: a silent thread would hang it
            self.error = exc

    def visible_at(self, partition: int, offset: int) -> float | None:
        """When a stored next offset first passed `offset`, or None if it has not yet."""
        offsets = self.offsets.get(partition, [])
        index = bisect.bisect_right(offsets, offset)
        return self.times[partition][index] if index < len(offsets) else None

    def steady_rate(self, ends: dict[int, int]) -> float | None:
        """Messages per second from the first commit seen to the one that reached `ends`,
        those of the first commit left out: at the poll's resolution, where the run's own
        clock stops at a poll of the table every POLL_SECONDS."""
        if self.error is not None or not all(self.covers(p, end - 1) for p, end in ends.items()):
            return None
        first = min(times[0] for times in self.times.values() if times)
        last = max(self.visible_at(p, end - 1) or first for p, end in ends.items())
        # The messages committed by the first poll that saw any: none of them counts.
        at_first = sum(
            next_offsets[0]
            for p, next_offsets in self.offsets.items()
            if next_offsets and self.times[p][0] == first
        )
        counted = sum(ends.values()) - at_first
        return counted / (last - first) if last > first else None

    def covers(self, partition: int, offset: int) -> bool:
        offsets = self.offsets.get(partition, [])
        return bool(offsets) and offsets[-1] > offset


def _steady_produce(
    bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]], rate: float
) -> tuple[list[float], list[tuple[int, int]]]:
    """Produces at `rate` events/s on a fixed schedule; returns each event's send time and its
    (partition, offset) from the delivery report."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    sent = [0.0] * len(payloads)
    where = [(-1, -1)] * len(payloads)

    def delivered(index: int) -> Callable[[KafkaError | None, Message], None]:
        def report(error: KafkaError | None, message: Message) -> None:
            if error is None:
                where[index] = (message.partition() or 0, message.offset() or 0)

        return report

    start = time.monotonic()
    for i, (key, value) in enumerate(payloads):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent[i] = time.monotonic()
        producer.produce(
            topic, key=key, value=value, partition=i % PARTITIONS, on_delivery=delivered(i)
        )
        producer.poll(0)
    if producer.flush(60) != 0:
        raise BenchmarkError(f"latency producer: events left unsent to {topic}")
    if any(p < 0 for p, _ in where):
        raise BenchmarkError(f"latency producer: some events to {topic} were not delivered")
    return sent, where


def latency(
    *,
    bootstrap: str,
    database_url: str,
    engine: sa.engine.Engine,
    schema: str,
    run_dir: Path,
    rate: int,
    duration: float,
) -> Result:
    """One worker at default batch limits, append mode; a steady producer at `rate` events/s
    for `duration` s; p50/p99 from each event's produce() call until its offset is stored."""
    label = f"latency-{rate}"
    topic = f"bench-{run_dir.name}-{label}"
    create_topic(bootstrap, topic)
    config, table = run_config(
        run_dir,
        label,
        bootstrap=bootstrap,
        database_url=database_url,
        topic=topic,
        schema=schema,
        upsert=False,
    )
    total = int(rate * duration)
    payloads = list(events(total, start=WARMUP_EVENTS))
    procs = start_workers(config, 1, run_dir, label)
    try:
        produce(bootstrap, topic, events(WARMUP_EVENTS), partitions=PARTITIONS)
        time_until_complete(
            procs,
            time.monotonic(),
            rows=lambda: row_count(engine, schema, table),
            estimate=_committed(engine, schema, table, topic),
            expected=WARMUP_EVENTS,
            timeout=timeout_for(WARMUP_EVENTS),
            what=f"sink {label} warm-up",
        )
        with OffsetTimeline(engine, schema, table, topic) as timeline:
            sent, where = _steady_produce(bootstrap, topic, payloads, rate)
            deadline = time.monotonic() + DRAIN_SECONDS
            ends: dict[int, int] = {}
            for partition, offset in where:
                ends[partition] = max(ends.get(partition, -1), offset)
            while not all(timeline.covers(p, o) for p, o in ends.items()):
                procs[0].check_alive()
                if timeline.error is not None:
                    raise BenchmarkError(f"reading stored offsets failed: {timeline.error!r}")
                if time.monotonic() > deadline:
                    raise BenchmarkError(
                        f"sink {label}: events not visible {DRAIN_SECONDS} s "
                        f"after the last produce; log: {procs[0].log_path}"
                    )
                time.sleep(0.1)
        for proc in procs:
            proc.sample()
        latencies_ms = []
        for (partition, offset), sent_at in zip(where, sent):
            seen = timeline.visible_at(partition, offset)
            if seen is None:
                raise BenchmarkError(f"no visibility time for {topic}[{partition}]@{offset}")
            latencies_ms.append((seen - sent_at) * 1000)
    finally:
        for proc in procs:
            proc.stop()
        delete_topics(bootstrap, [topic])
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{schema}"."{table}"'))
    cuts = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    return Result(
        section="latency",
        system=SYSTEM,
        mode="append",
        events=total,
        batch=DEFAULT_BATCH,
        seconds=duration,
        rate=float(rate),
        peak_rss_mb=procs[0].peak_mb,
        p50_ms=cuts[49],
        p99_ms=cuts[98],
        note=f"steady {rate:,}/s for {duration:.0f} s; max {max(latencies_ms):,.0f} ms",
    )
