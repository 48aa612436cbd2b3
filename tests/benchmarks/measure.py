"""What every end-to-end run shares: topics, processes watched for peak RSS, the clock that
stops when the table holds every event, and the result row the entry point prints."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

REPO = Path(__file__).resolve().parents[2]
# Configs and logs of each run, kept for post-mortems; .cache/ is git-ignored.
RUNS_DIR = REPO / ".cache" / "bench-runs"
# The topic shape: six partitions, so two workers each own three.
PARTITIONS = 6
# The brief's poll period for "the table holds all N": often enough for 0.5 s resolution.
POLL_SECONDS = 0.5
# count(*) scans the whole table: polled every POLL_SECONDS through a 5M-row run it would end up
# taking most of a core (0.5 s of two parallel workers per poll) from the systems measured on
# these 2 cores. So it runs while it is cheap, and once a cheap estimate of the rows says the
# end is this many seconds away at the current rate; the estimate stands in between.
CHEAP_COUNT_SECONDS = 0.02
EXACT_WINDOW_SECONDS = 3.0
# Seconds a stopped process gets to exit cleanly before it is killed.
STOP_GRACE_SECONDS = 20.0


class BenchmarkError(Exception):
    """A benchmark step could not complete (timeout, crashed process); the message says where."""


@dataclass
class Result:
    """One printed row. Rates are events per second of wall time from process start."""

    section: str
    system: str
    mode: str
    events: int
    workers: int = 1
    batch: int | None = None
    seconds: float | None = None
    first_row_seconds: float | None = None
    rate: float | None = None
    peak_rss_mb: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]


def timeout_for(events: int, *, floor: float = 120.0, rate_floor: float = 2000.0) -> float:
    """A bound generous enough for a loaded 2-core machine: the floor plus N at a slow rate."""
    return floor + events / rate_floor


# --- Kafka topics -------------------------------------------------------------------------------


def create_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)], operation_timeout=30
    )
    futures[topic].result(60)


def delete_topics(bootstrap: str, topics: Iterable[str]) -> None:
    """Deletes what it can: cleanup must not hide the error that ended a run."""
    names = list(topics)
    if not names:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for name, future in admin.delete_topics(names, operation_timeout=30).items():
        try:
            future.result(60)
        except KafkaException as exc:
            print(f"  (could not delete topic {name}: {exc})")


# --- processes ----------------------------------------------------------------------------------


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (the kernel's resident-set high-water mark) of a live process, in MiB."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Watched:
    """A benchmarked process: its log goes to a file; its peak RSS is read until it stops."""

    def __init__(
        self,
        argv: Sequence[str],
        log: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path = REPO,
    ) -> None:
        self.log_path = log
        self.program = Path(argv[0]).name
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            list(argv),
            cwd=cwd,  # `python -m` runs the code found here first
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.peak_mb: float | None = None

    def sample(self) -> None:
        """Reads VmHWM now: it only grows, so the last sample before the stop is the peak."""
        value = peak_rss_mb(self.proc.pid)
        if value is not None:
            self.peak_mb = max(self.peak_mb or 0.0, value)

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise BenchmarkError(
                f"{self.program} exited with {code} before the table was complete; "
                f"log: {self.log_path}\n{self.tail()}"
            )

    def tail(self, lines: int = 25) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.sample()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._log.close()


# --- PostgreSQL ---------------------------------------------------------------------------------


def engine_for(database_url: str) -> sa.engine.Engine:
    url = sa.engine.make_url(database_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return sa.create_engine(url, future=True, pool_size=2, isolation_level="AUTOCOMMIT")


def row_count(engine: sa.engine.Engine, schema: str, table: str) -> int:
    """Rows visible now; 0 while the table does not exist yet (the sink creates its own)."""
    qualified = f'"{schema}"."{table}"'
    with engine.connect() as conn:
        if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": qualified}).scalar() is None:
            return 0
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {qualified}")).scalar_one())


def inserted_estimate(engine: sa.engine.Engine, schema: str, table: str) -> int:
    """Rows inserted into the table as PostgreSQL's cumulative statistics count them: a catalog
    read, about a second behind (a busy backend reports at most once a second)."""
    with engine.connect() as conn:
        found = conn.execute(
            sa.text(
                "SELECT n_tup_ins FROM pg_stat_user_tables WHERE schemaname = :s AND relname = :t"
            ),
            {"s": schema, "t": table},
        ).scalar()
    return int(found or 0)


def drop_schema(engine: sa.engine.Engine, schema: str) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def create_schema(engine: sa.engine.Engine, schema: str) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))


@dataclass(frozen=True)
class Standalone:
    """What a benchmark run on its own (`python -m tests.benchmarks.NAME`) works with."""

    bootstrap: str
    database_url: str
    engine: sa.engine.Engine
    schema: str
    run_dir: Path


@contextmanager
def standalone(name: str) -> Iterator[Standalone]:
    """The local services' endpoints, a run folder, and a schema dropped at the end."""
    bootstrap = os.environ.get("SINK_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    database_url = os.environ.get(
        "SINK_TEST_DATABASE_URL", "postgresql://sink:sink@127.0.0.1:54329/sink"
    )
    rid = run_id()
    run_dir = RUNS_DIR / rid
    run_dir.mkdir(parents=True)
    engine = engine_for(database_url)
    schema = f"{name}_" + rid.replace("-", "_")
    create_schema(engine, schema)
    try:
        yield Standalone(bootstrap, database_url, engine, schema, run_dir)
    finally:
        drop_schema(engine, schema)
        engine.dispose()


@dataclass
class Timing:
    seconds: float
    first_row_seconds: float | None
    rows: int
    peak_rss_mb: float | None
    # Rate over the second half of the rows / rate over the first half (after the first row):
    # about 1 when per-event cost does not grow with the size of the table, whatever the load.
    half_ratio: float | None = None


def half_ratio(samples: Sequence[tuple[float, int]], expected: int) -> float | None:
    """From (seconds, rows) polls: second-half rate over first-half rate, None if too few."""
    started = next(((t, n) for t, n in samples if n > 0), None)
    middle = next(((t, n) for t, n in samples if n >= expected // 2), None)
    end = samples[-1] if samples else None
    if started is None or middle is None or end is None:
        return None
    (t0, n0), (t1, n1), (t2, n2) = started, middle, end
    if t1 <= t0 or t2 <= t1 or n1 <= n0:
        return None
    return ((n2 - n1) / (t2 - t1)) / ((n1 - n0) / (t1 - t0))


def time_until_complete(
    processes: Sequence[Watched],
    started: float,
    *,
    rows: Callable[[], int],
    estimate: Callable[[], int],
    expected: int,
    timeout: float,
    also_done: Callable[[], bool] = lambda: True,
    exact_after: Callable[[], bool] | None = None,
    what: str,
) -> Timing:
    """Polls until `rows()` reaches `expected` and `also_done()` holds; the clock started at
    `started` (just before the processes were launched). Peak RSS is the largest of them.

    `rows()` is exact and may scan the table; `estimate()` is cheap and never ahead of it by
    more than rows written and rolled back. `rows()` runs while it is cheap and from the poll
    where the estimate comes within EXACT_WINDOW_SECONDS of the end, at every poll after.
    With `exact_after` (a system whose progress commits with its rows, as the sink's stored
    offsets do), `rows()` runs only once that holds: a scan of the table while it loads would
    take CPU from the system measured."""
    first_row: float | None = None
    samples: list[tuple[float, int]] = []
    deadline = started + timeout
    cheap, near = True, False  # near: latched once the end is close
    while True:
        for proc in processes:
            proc.sample()
            proc.check_alive()
        count = None
        seen = estimate()
        near = near or _near_end(samples, seen, expected, time.monotonic() - started)
        if exact_after is not None:
            cheap, near = False, exact_after()
        if cheap or near:
            counting = time.monotonic()
            count = seen = rows()
            cheap = time.monotonic() - counting < CHEAP_COUNT_SECONDS
            near = near or _near_end(samples, seen, expected, time.monotonic() - started)
        now = time.monotonic()
        samples.append((now - started, seen))
        if seen and first_row is None:
            first_row = now - started
        if count is not None and count >= expected and also_done():
            for proc in processes:
                proc.sample()
            peaks = [p.peak_mb for p in processes if p.peak_mb is not None]
            return Timing(
                now - started,
                first_row,
                count,
                max(peaks) if peaks else None,
                half_ratio(samples, expected),
            )
        if now > deadline:
            raise BenchmarkError(
                f"{what}: {seen} of {expected} rows after {timeout:.0f} s; "
                f"logs: {', '.join(str(p.log_path) for p in processes)}"
            )
        time.sleep(POLL_SECONDS)


def _near_end(samples: Sequence[tuple[float, int]], seen: int, expected: int, now: float) -> bool:
    """Whether `expected` is within EXACT_WINDOW_SECONDS at the rate of the last few seconds."""
    if seen >= expected:
        return True
    recent = [(t, n) for t, n in samples if now - t <= EXACT_WINDOW_SECONDS]
    if not recent or now <= recent[0][0]:
        return False
    rate = (seen - recent[0][1]) / (now - recent[0][0])
    return expected - seen <= rate * EXACT_WINDOW_SECONDS
