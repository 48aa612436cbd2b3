"""Replication through the real Debezium PostgreSQL source connector (3.6.1.Final, pgoutput, the
JSON converter with schemas, or Avro through the registry): a source table's snapshot, inserts,
updates, deletes and a truncate, streamed while the sink is killed and restarted, leave the
target table equal to the source, with the sink's stored offsets at the topic's log end; with
Avro, a column added at the source mid-stream reaches the target while the sink runs."""

from __future__ import annotations

import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from .debezium_source import (
    JSON_CONVERTERS,
    ConnectWorker,
    SourceDatabase,
    SourceError,
    avro_converters,
    connect_worker,
    connector_settings,
    source_cluster,
    wait_streaming,
)
from .harness import SinkProcess, log_end_offsets, stored_offsets

# One step of a test on a loaded 2-core machine: a sink worker's start, its join of the group
# (after the 6 s session timeout of a killed predecessor) and a first batch; or the connector
# streaming a few thousand changes. Idle, each takes seconds.
STEP_SECONDS = 120
# The connector and the sink through everything still unwritten or uncommitted.
CATCH_UP_SECONDS = 240

pytestmark = [
    # Part of the default run; `pytest -m real_debezium` (make test-debezium) runs it alone.
    pytest.mark.real_debezium,
    # The module's fixtures (Maven, the source cluster, Connect's JVM) keep deadlines of their
    # own; this bounds each test's body, well beyond the sum of its steps' deadlines that pass.
    pytest.mark.timeout(300, func_only=True),
]

NAMES = ["id", "name", "amount", "at", "day", "ref", "doc", "flag"]
SOURCE_COLUMNS = """
    id BIGINT PRIMARY KEY,
    name TEXT,
    amount NUMERIC(12,2),
    at TIMESTAMPTZ,
    day DATE,
    ref UUID,
    doc JSONB,
    flag BOOLEAN
"""
# The target declares the source's types; the connector writes them as a Connect Decimal,
# io.debezium.time.ZonedTimestamp, io.debezium.time.Date, io.debezium.data.Uuid and .Json.
COLUMNS = "".join(
    f'[[tables.columns]]\nname = "{name}"\ntype = "{type_}"\n'
    for name, type_ in [
        ("id", "BIGINT"),
        ("name", "TEXT"),
        ("amount", "NUMERIC(12,2)"),
        ("at", "TIMESTAMPTZ"),
        ("day", "DATE"),
        ("ref", "UUID"),
        ("doc", "JSONB"),
        ("flag", "BOOLEAN"),
    ]
)
# The i-th row, with NULLs, text COPY must escape, negative amounts, days and instants before
# 1970, and JSON numbers a float would not keep.
ROWS = """
SELECT g,
       CASE WHEN g %% 17 = 0 THEN NULL ELSE 'item ' || g || E' \\t"q" \\\\ é ✓' END,
       ((g * 7919) %% 2000000 - 1000000) / 100.0,
       CASE WHEN g %% 19 = 0 THEN NULL
            ELSE timestamptz '1965-06-01 00:00:00+00' + g * interval '1 hour 1.000001 second' END,
       date '1950-01-01' + (g %% 40000)::int,
       md5(g::text)::uuid,
       jsonb_build_object('id', g, 'tags', jsonb_build_array('a', g %% 7), 'price', g / 100.0,
                          'big', 12345678901234567890.123 + g, 'none', NULL, 'text', 'ü "q"'),
       CASE g %% 3 WHEN 0 THEN true WHEN 1 THEN false END
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
"""
UPDATE = """
UPDATE {table} SET name = coalesce(name, '') || ' upd', amount = amount + 1.01,
       at = at + interval '1 day 0.000001 second', day = day + 1,
       doc = doc || jsonb_build_object('v', 0.1), flag = NOT flag
"""
# Both sides are compared as PostgreSQL's text of each value (1.5 and 1.50 differ too), in one
# time zone and date style set for the query: the session settings of a pooled connection (that
# another test may have changed) cannot make two equal values differ, as Python's datetimes in
# two time zones do around a change back from summer time.
TEXT_COLUMNS = ", ".join(f'"{name}"::text' for name in NAMES)
COMPARED_IN = ("SET LOCAL TimeZone = 'UTC'", "SET LOCAL DateStyle = 'ISO, YMD'")

Row = tuple[Any, ...]


# --- the source side ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source_database() -> Iterator[SourceDatabase]:
    try:
        with source_cluster() as database:
            yield database
    except SourceError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="module")
def connect(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str
) -> Iterator[ConnectWorker]:
    try:
        with connect_worker(tmp_path_factory.mktemp("connect"), kafka_bootstrap) as worker:
            yield worker
    except SourceError as error:
        pytest.fail(str(error), pytrace=False)


@dataclass
class Replication:
    """A source table streamed by its own connector into its own topic, and the sink workers a
    test started on it (whose logs go into its failure messages)."""

    source: SourceDatabase
    connect: ConnectWorker
    bootstrap: str
    connector: str
    table: str
    topic: str
    partitions: int
    changes: int = 0  # messages the connector must have written for the statements so far
    lock: threading.Lock = field(default_factory=threading.Lock)
    sinks: list[SinkProcess] = field(default_factory=list)

    def run(
        self, sql: str, params: dict[str, Any] | None = None, *, tombstones: bool = False
    ) -> int:
        """Runs one statement in a transaction of its own; counts the events it makes (a delete
        makes a change event and a tombstone)."""
        with self.source.connect() as conn:
            rows = conn.execute(sql.format(table=self.table), params).rowcount
        with self.lock:
            self.changes += rows * (2 if tombstones else 1)
        return rows

    def transaction(self, statements: list[tuple[str, bool]]) -> None:
        """Runs statements in one transaction, counted as `run` counts them."""
        made = 0
        with self.source.connect() as conn, conn.transaction():
            for sql, tombstones in statements:
                rows = conn.execute(sql.format(table=self.table)).rowcount
                made += rows * (2 if tombstones else 1)
        with self.lock:
            self.changes += made

    def truncate(self) -> None:
        """Truncates the table: one truncate event, whatever the rows."""
        with self.source.connect() as conn:
            conn.execute(f"TRUNCATE {self.table}")
        with self.lock:
            self.changes += 1

    def insert(self, first: int, last: int) -> int:
        return self.run(f"INSERT INTO {{table}} {ROWS}", {"first": first, "last": last})

    def rows(self, columns: str = TEXT_COLUMNS) -> list[Row]:
        """The source's rows by id, each value as text (see COMPARED_IN)."""
        with self.source.connect() as conn, conn.transaction():
            for setting in COMPARED_IN:
                conn.execute(setting)
            return list(conn.execute(f"SELECT {columns} FROM {self.table} ORDER BY id"))

    def log_end(self) -> dict[int, int]:
        return log_end_offsets(self.bootstrap, self.topic, self.partitions)

    def start(self, start_sink: Callable[[Path], SinkProcess], config: Path) -> SinkProcess:
        worker = start_sink(config)
        self.sinks.append(worker)
        return worker

    def logs(self) -> str:
        """The end of Connect's log and of the last sink worker's, for failure messages."""
        parts = [self.connect.tail(3000)]
        if self.sinks:
            last = self.sinks[-1]
            exit_code = last.proc.poll()
            state = "running" if exit_code is None else f"exit code {exit_code}"
            parts.append(
                f"--- {last.log_path} (sink worker {len(self.sinks) - 1}, {state}; "
                f"last 3000 characters)\n{last.output()[-3000:]}"
            )
        return "\n".join(parts)

    def wait(
        self, what: str, done: Callable[[], bool], seen: Callable[[], str], timeout: float
    ) -> None:
        """Until `done()`; past `timeout` seconds, fails saying what it waited for, what it
        saw last, and the ends of the logs."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                pytest.fail(
                    f"waited {timeout:.0f} s for {what}; saw {seen()}\n{self.logs()}",
                    pytrace=False,
                )
            time.sleep(0.3)

    def wait_written(self, timeout: float) -> dict[int, int]:
        """Until the topic holds every change the statements made; its log end offsets."""
        ends = self.log_end()

        def written() -> bool:
            nonlocal ends
            self.connect.status(self.connector)  # raises if the connector failed
            ends = self.log_end()
            return sum(ends.values()) >= self.changes

        self.wait(
            f"the connector to write the {self.changes} change events",
            written,
            lambda: f"{sum(ends.values())} messages in {self.topic} ({ends})",
            timeout,
        )
        assert sum(ends.values()) == self.changes, (
            f"the connector wrote {sum(ends.values())} messages for {self.changes} changes"
            f"\n{self.logs()}"
        )
        return ends


@contextmanager
def replication(
    source: SourceDatabase,
    connect: ConnectWorker,
    bootstrap: str,
    *,
    partitions: int,
    snapshot_rows: int,
    settings: Mapping[str, object] | None = None,
    converters: Mapping[str, object] = JSON_CONVERTERS,
) -> Iterator[Replication]:
    """A fresh source table holding `snapshot_rows` rows, and a connector streaming it (its
    snapshot first) into a topic of `partitions` partitions. Table, topic, connector, slot and
    publication are named after one random run id, so runs and tests never share one."""
    run = uuid.uuid4().hex[:8]
    table, prefix, slot = f"items_{run}", f"dbz{run}", f"slot_{run}"
    topic = f"{prefix}.public.{table}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[
        topic
    ].result(timeout=30)
    name = f"source-{run}"
    replicated = Replication(source, connect, bootstrap, name, table, topic, partitions)
    try:
        with source.connect() as conn:
            conn.execute(f"CREATE TABLE {table} ({SOURCE_COLUMNS})")
        if snapshot_rows:
            replicated.insert(1, snapshot_rows)
        connect.add(
            name,
            connector_settings(
                source, prefix=prefix, table=f"public.{table}", slot=slot, converters=converters
            )
            | dict(settings or {}),
        )
        wait_streaming(source, slot)
        yield replicated
    finally:
        connect.remove(name)
        admin.delete_topics([topic])[topic].result(timeout=30)


# --- the target side ---------------------------------------------------------------------------


def _config(
    sink_config: Callable[..., Path],
    topic: str,
    schema: str,
    *,
    truncate: str = "ignore",
    fmt: str = "connect-json",
    extra: str = "",
    columns: str = COLUMNS,
) -> Path:
    return sink_config(
        [topic],
        schema,
        "items",
        primary_key=["id"],
        columns=columns,
        table_extra=(
            f'envelope = "debezium"\nkey_format = "{fmt}"\nvalue_format = "{fmt}"\n'
            f'truncate = "{truncate}"\n'
        ),
        extra='[errors]\npolicy = "fail"\n' + extra,
        max_messages=5000,
    )


def _committed(engine: sa.engine.Engine, schema: str, topic: str) -> int:
    return sum(stored_offsets(engine, schema).get(topic, {}).values())


def wait_committed_past(
    engine: sa.engine.Engine,
    schema: str,
    replicated: Replication,
    worker: SinkProcess,
    past: int,
    timeout: float = STEP_SECONDS,
) -> int:
    """Until `worker` has committed past `past` messages (it fails at once if the worker
    stopped); the messages committed then."""
    committed = 0

    def progressed() -> bool:
        nonlocal committed
        assert worker.running(), f"the sink worker stopped\n{replicated.logs()}"
        committed = _committed(engine, schema, replicated.topic)
        return committed > past

    replicated.wait(
        f"sink worker {len(replicated.sinks) - 1} to commit past {past} messages",
        progressed,
        lambda: (
            f"{committed} committed; {sum(replicated.log_end().values())} in the topic, "
            f"{replicated.changes} changes written at the source"
        ),
        timeout,
    )
    return committed


def _target_rows(engine: sa.engine.Engine, schema: str, columns: str) -> list[Row]:
    """The target's rows by id, each value as text (see COMPARED_IN)."""
    with engine.connect() as conn:  # its transaction, and the settings with it, end on close
        for setting in COMPARED_IN:
            conn.execute(sa.text(setting))
        found = conn.execute(sa.text(f'SELECT {columns} FROM "{schema}".items ORDER BY id'))
        return [tuple(row) for row in found]


def assert_replicated(
    engine: sa.engine.Engine,
    replicated: Replication,
    schema: str,
    worker: SinkProcess,
    timeout: float,
    columns: str = TEXT_COLUMNS,
) -> None:
    """Every change is in the topic, the sink committed the topic's log end, and the target
    holds exactly the source's rows with the same values (of `columns`)."""
    ends = replicated.wait_written(timeout)
    expected = {str(p): end for p, end in ends.items() if end}
    stored: dict[str, int] | None = None

    def caught_up() -> bool:
        nonlocal stored
        assert worker.running(), f"the sink worker stopped\n{replicated.logs()}"
        stored = stored_offsets(engine, schema).get(replicated.topic)
        return stored == expected

    replicated.wait(
        f"the sink to commit the log end {expected}",
        caught_up,
        lambda: f"stored offsets {stored}",
        timeout,
    )
    source, target = replicated.rows(columns), _target_rows(engine, schema, columns)
    if source != target:  # the first differences, not a diff of 100,000 rows
        source_only = sorted(Counter(source) - Counter(target), key=lambda row: int(row[0]))
        target_only = sorted(Counter(target) - Counter(source), key=lambda row: int(row[0]))
        pytest.fail(
            f"{len(source)} source rows, {len(target)} target rows; "
            f"{len(source_only)} only in the source, first: {source_only[:5]}; "
            f"{len(target_only)} only in the target, first: {target_only[:5]}",
            pytrace=False,
        )


# --- the tests ---------------------------------------------------------------------------------

SNAPSHOT_ROWS = 5_000
ROUNDS = 20
BLOCK = 5_000  # inserts per round: 100,000
# A round's inserts, updates (a quarter of its block and of the one before) and deletes (a tenth
# of the block before) with their tombstones.
CHANGES_PER_ROUND = BLOCK + 2 * BLOCK // 4 + 2 * BLOCK // 10
KILLS = 5
# Between two rounds of one phase of the writer: a phase's rounds then take about as long as a
# restarted worker's join, so that workers are killed while changes still arrive.
ROUND_PAUSE_SECONDS = 1.0


def _write_round(replicated: Replication, r: int, *, note: bool = False) -> None:
    """Inserts a block of 5,000 rows; updates a quarter of it (1,250) in a transaction of its
    own; then in one transaction updates a quarter of the block before (1,250) and deletes a
    tenth of it (500, half of them just updated). With `note`, the updates also set the column
    added by ADD_NOTE."""
    first = SNAPSHOT_ROWS + 1 + r * BLOCK
    previous = first - BLOCK
    update = UPDATE + (", note = 'note ' || id || ' é' " if note else "")
    replicated.insert(first, first + BLOCK - 1)
    replicated.run(update + f"WHERE id BETWEEN {first} AND {first + BLOCK - 1} AND id % 4 = 1")
    replicated.transaction(
        [
            (update + f"WHERE id BETWEEN {previous} AND {first - 1} AND id % 4 = 0", False),
            (
                f"DELETE FROM {{table}} WHERE id BETWEEN {previous} AND {first - 1} "
                "AND id % 10 = 4",
                True,
            ),
        ]
    )


class Pacer:
    """Holds the writer back until enough kills have happened: the rounds of phase k are written
    only after the k-th kill, so every restarted worker has changes to commit that were written
    after its predecessor died, and the writer never finishes before the last kill."""

    def __init__(self, rounds: int, phases: int) -> None:
        self.rounds, self.phases = rounds, phases
        self._changed = threading.Condition()
        self._kills = 0
        self._stopped = False

    def kills_before(self, r: int) -> int:
        return r * self.phases // self.rounds

    def rounds_released(self, kills: int) -> int:
        """How many rounds the writer may write once `kills` kills have happened."""
        return sum(1 for r in range(self.rounds) if self.kills_before(r) <= kills)

    def killed(self) -> None:
        with self._changed:
            self._kills += 1
            self._changed.notify_all()

    def stop(self) -> None:
        """Ends the writer after its round in flight (the test failed)."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def may_write(self, r: int, timeout: float) -> bool:
        """Whether round `r` may be written: waits for its kills; False once stopped."""
        needed = self.kills_before(r)
        with self._changed:
            ready = self._changed.wait_for(
                lambda: self._stopped or self._kills >= needed, timeout=timeout
            )
            if not ready:
                raise AssertionError(
                    f"the writer waited {timeout:.0f} s for kill {needed} before round {r}; "
                    f"{self._kills} kills happened"
                )
            return not self._stopped


ADD_NOTE = "ALTER TABLE {table} ADD COLUMN note TEXT"
# The round before which the source gets a column more: one the final worker, never killed,
# reads (the last phase's), once it has joined (so it took its columns before).
ADD_NOTE_ROUND = ROUNDS - 2


@pytest.mark.timeout(600, func_only=True)
@pytest.mark.parametrize("converter", ["json", "avro"])
def test_real_debezium_stream_replicates_exactly_through_sink_kills(
    source_database: SourceDatabase,
    connect: ConnectWorker,
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    schema: str,
    schema_registry_url: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
    converter: str,
) -> None:
    """The JSON converter with schemas, or Avro through the registry, into columns taken from
    the change events' schemas (the messages' own, or the registry's), where an ALTER TABLE
    ... ADD COLUMN at the source halfway through reaches the target while the workers run."""
    avro = converter == "avro"
    with replication(
        source_database,
        connect,
        kafka_bootstrap,
        partitions=3,
        snapshot_rows=SNAPSHOT_ROWS,
        converters=avro_converters(schema_registry_url) if avro else JSON_CONVERTERS,
    ) as replicated:
        if avro:
            replicated.wait_written(STEP_SECONDS)  # the snapshot registers the first schema
            config = _config(
                sink_config,
                replicated.topic,
                schema,
                fmt="avro",
                extra=f'[schema_registry]\nurl = "{schema_registry_url}"\n',
                columns="",
            )
        else:
            config = _config(sink_config, replicated.topic, schema, columns="")
        pacer = Pacer(ROUNDS, phases=KILLS + 1)  # the last phase goes to the final worker
        failures: list[BaseException] = []

        def write() -> None:
            try:
                for r in range(ROUNDS):
                    if not pacer.may_write(r, timeout=KILLS * STEP_SECONDS):
                        return
                    if r == ADD_NOTE_ROUND:
                        replicated.wait(
                            "the final worker to join its group",
                            lambda: (
                                len(replicated.sinks) > KILLS
                                and "joined consumer group" in replicated.sinks[-1].messages()
                            ),
                            lambda: f"{len(replicated.sinks)} workers started",
                            STEP_SECONDS,
                        )
                        with source_database.connect() as conn:
                            conn.execute(ADD_NOTE.format(table=replicated.table))
                    _write_round(replicated, r, note=r >= ADD_NOTE_ROUND)
                    time.sleep(ROUND_PAUSE_SECONDS)
            except BaseException as error:  # reported by the test's thread
                failures.append(error)

        writer = threading.Thread(target=write)
        writer.start()
        rng = random.Random(7)
        kills: list[tuple[int, int]] = []  # (committed before the worker's start, at its kill)
        low = 0
        try:
            for k in range(KILLS):
                # Worker k sees the changes of the rounds released so far (the next ones wait
                # for its kill) and is killed a random way into those it has not committed:
                # while the writer still writes, or the sink still catches up. The kills spread
                # over the snapshot, inserts, updates and deletes of the whole stream.
                high = SNAPSHOT_ROWS + CHANGES_PER_ROUND * pacer.rounds_released(k)
                target = low + int(rng.uniform(0.2, 0.8) * (high - low))
                before = _committed(engine, schema, replicated.topic)
                worker = replicated.start(start_sink, config)
                # Past what its predecessor committed: a kill counts only once this worker has
                # committed something of its own.
                wait_committed_past(engine, schema, replicated, worker, max(target, before))
                time.sleep(rng.uniform(0.0, 0.3))  # anywhere in its batch cycle
                worker.signal(signal.SIGKILL)
                worker.proc.wait(10)
                kills.append((before, _committed(engine, schema, replicated.topic)))
                pacer.killed()
                low = high
            final = replicated.start(start_sink, config)
            writer.join(CATCH_UP_SECONDS)
            assert not writer.is_alive(), (
                f"the writer still writes after {CATCH_UP_SECONDS} s ({replicated.changes} "
                f"changes written)\n{replicated.logs()}"
            )
        except BaseException:
            pacer.stop()
            writer.join(STEP_SECONDS)
            raise
        assert not failures, failures
        assert len(kills) == KILLS and all(at > before for before, at in kills), kills
        columns = f'{TEXT_COLUMNS}, "note"::text'
        assert_replicated(engine, replicated, schema, final, CATCH_UP_SECONDS, columns)
        assert final.terminate(timeout=30) == 0, replicated.logs()
        assert replicated.changes == SNAPSHOT_ROWS + ROUNDS * CHANGES_PER_ROUND
        # The column came while the final worker ran: it migrated the table itself.
        assert "adds field 'note'" in final.messages(), replicated.logs()


def test_real_debezium_truncate_empties_the_target_of_the_rows_before_it(
    source_database: SourceDatabase,
    connect: ConnectWorker,
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    # Debezium skips truncates unless told otherwise (skipped.operations defaults to "t"). A
    # truncate has no key: one partition keeps it in order with the rows.
    with replication(
        source_database,
        connect,
        kafka_bootstrap,
        partitions=1,
        snapshot_rows=1_000,
        settings={"skipped.operations": "none"},
    ) as replicated:
        config = _config(sink_config, replicated.topic, schema, truncate="truncate")
        worker = replicated.start(start_sink, config)
        replicated.insert(1_001, 3_000)
        replicated.run(UPDATE + "WHERE id % 3 = 0")
        wait_committed_past(engine, schema, replicated, worker, 0)
        replicated.truncate()
        # Some keys come back after the truncate, some are new; then deletes and updates.
        replicated.insert(2_500, 4_000)
        replicated.run("DELETE FROM {table} WHERE id % 7 = 0", tombstones=True)
        replicated.run(UPDATE + "WHERE id % 5 = 0")
        assert_replicated(engine, replicated, schema, worker, timeout=STEP_SECONDS)
        assert worker.terminate(timeout=30) == 0, replicated.logs()
        assert "truncated at its source" in worker.messages()
        assert min(int(row[0]) for row in replicated.rows()) == 2_500


def test_real_debezium_avro_through_the_registry_replicates_exactly(
    source_database: SourceDatabase,
    connect: ConnectWorker,
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    schema_registry_url: str,
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    with replication(
        source_database,
        connect,
        kafka_bootstrap,
        partitions=2,
        snapshot_rows=SNAPSHOT_ROWS,
        converters=avro_converters(schema_registry_url),
    ) as replicated:
        config = _config(
            sink_config,
            replicated.topic,
            schema,
            fmt="avro",
            extra=f'[schema_registry]\nurl = "{schema_registry_url}"\n',
        )
        first = replicated.start(start_sink, config)
        for r in range(2):
            _write_round(replicated, r)
        wait_committed_past(engine, schema, replicated, first, 0)
        first.signal(signal.SIGKILL)
        first.proc.wait(10)
        for r in range(2, 4):
            _write_round(replicated, r)
        final = replicated.start(start_sink, config)
        assert_replicated(engine, replicated, schema, final, timeout=STEP_SECONDS)
        assert final.terminate(timeout=30) == 0, replicated.logs()
