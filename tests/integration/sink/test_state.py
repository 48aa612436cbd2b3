"""The sink's stored state: a table of its own, read under READ COMMITTED whatever the
database's default, never silently started over, and adopted from the layout of earlier
releases (offsets in the first data table's comment) without a row lost or written twice."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from sink.config import PostgresSettings
from sink.writer import create_engine
from tests.events import events

from .harness import (
    REPO,
    SinkProcess,
    produce,
    produce_steadily,
    sink_command,
    state_table,
    stored_offsets,
    stored_state,
    wait_until,
)
from .test_exactly_once import COORDINATE_COLUMNS, assert_exactly_once, count_rows

# The last release that kept the offsets in the comment of the first data table.
PREVIOUS_RELEASE = "67aedea"


def comment(engine: sa.engine.Engine, table: str) -> str | None:
    with engine.connect() as conn:
        found = conn.execute(
            sa.text("SELECT obj_description(to_regclass(:t), 'pg_class')"), {"t": table}
        ).scalar()
    return None if found is None else str(found)


def set_comment(engine: sa.engine.Engine, table: str, text: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"COMMENT ON TABLE {table} IS '{text}'")


# --- READ COMMITTED ----------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_every_sink_connection_runs_read_committed_whatever_the_role_default(
    sink_role: Callable[..., str], driver: str
) -> None:
    url = make_url(sink_role("serializable")).set(drivername=f"postgresql+{driver}")
    plain = sa.create_engine(url)
    sink_engine = create_engine(PostgresSettings(url))
    try:
        with plain.connect() as conn:
            assert conn.execute(sa.text("SHOW transaction_isolation")).scalar() == "serializable"
        for _ in range(2):  # a fresh connection, then one back from the pool
            with sink_engine.connect() as conn:
                level = conn.execute(sa.text("SHOW transaction_isolation")).scalar()
                assert level == "read committed"
    finally:
        plain.dispose()
        sink_engine.dispose()


@pytest.mark.parametrize("level", ["repeatable read", "serializable"])
def test_exactly_once_under_a_role_whose_default_isolation_is_stricter(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
    sink_role: Callable[..., str],
    level: str,
) -> None:
    """Three workers, six SIGKILLs and a SIGSTOP zombie over a keyless table: the fence's
    re-read of the stored offsets after taking the lock is only fresh under READ COMMITTED."""
    total, extra, partitions, kills = 100_000, 6_000, 6, 6
    topic = new_topic(partitions=partitions)
    config = sink_config([topic], schema, columns=COORDINATE_COLUMNS, max_messages=1000)
    env = {"SINK_POSTGRES__URL": sink_role(level)}
    rng = random.Random(level)
    producer = produce_steadily(kafka_bootstrap, topic, total, partitions, chunk=4_000, pause=2)
    try:
        workers = [start_sink(config, env) for _ in range(3)]
        for _ in range(kills):
            before = count_rows(engine, schema)
            wait_until(lambda b=before: count_rows(engine, schema) > b + 2_000, 90, "progress")
            time.sleep(rng.uniform(0.0, 1.0))
            victim = workers.pop(rng.randrange(len(workers)))
            victim.signal(signal.SIGKILL)
            victim.proc.wait(10)
            workers.append(start_sink(config, env))
        # A zombie: paused past the session timeout with a batch open, then woken.
        zombie = workers[0]
        zombie.signal(signal.SIGSTOP)
        try:
            before = count_rows(engine, schema)
            # Rows for the others to write meanwhile, also where the steady stream has ended.
            produce(kafka_bootstrap, topic, events(extra, start=total), partitions=partitions)
            wait_until(lambda: count_rows(engine, schema) > before + 2_000, 90, "the others")
            time.sleep(8)
        finally:
            zombie.signal(signal.SIGCONT)
    finally:
        producer.join()
    wait_until(lambda: count_rows(engine, schema) >= total + extra, 180, "every row")
    time.sleep(2)  # a duplicate would land now
    for worker in workers:
        if worker.running():
            assert worker.terminate() == 0, worker.output()[-2000:]
    assert_exactly_once(engine, kafka_bootstrap, schema, topic, partitions)


# --- where the state lives, and what no one may break ---------------------------------------


def test_the_state_table_is_named_after_the_group_and_data_tables_keep_their_comment(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
) -> None:
    topic = new_topic(partitions=2)
    group = f"Orders.EU-{uuid.uuid4().hex[:6]}"
    config = sink_config([topic], schema, columns=COORDINATE_COLUMNS, group_id=group)
    produce(kafka_bootstrap, topic, events(2_000), partitions=2)
    worker = start_sink(config)
    wait_until(lambda: count_rows(engine, schema) >= 2_000, 60, "the first rows")
    expected = f'"{schema}"."kafka_sink_state_{group.lower().replace(".", "_").replace("-", "_")}"'
    assert state_table(engine, schema) == expected
    assert comment(engine, f'"{schema}".events') is None
    # A DBA documents the data table while the sink writes: nothing happens to the sink.
    set_comment(engine, f'"{schema}".events', "Orders landed from Kafka; owner: data team")
    produce(kafka_bootstrap, topic, events(10, start=2_000), partitions=2)
    wait_until(lambda: count_rows(engine, schema) >= 2_010, 60, "the next rows")
    time.sleep(1)
    assert worker.terminate() == 0, worker.output()[-2000:]
    assert comment(engine, f'"{schema}".events') == "Orders landed from Kafka; owner: data team"
    assert stored_state(engine, schema)["group"] == group
    assert_exactly_once(engine, kafka_bootstrap, schema, topic, 2)
    document = orjson.loads(comment(engine, expected) or "")
    assert "pg-kafka-sink" in document["about"]


def test_two_consumer_groups_writing_one_table_each_keep_their_own_offsets(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
) -> None:
    first, second = new_topic(), new_topic()
    produce(kafka_bootstrap, first, events(300))
    produce(kafka_bootstrap, second, events(500))
    workers = [
        start_sink(sink_config([topic], schema, columns=COORDINATE_COLUMNS, group_id=group))
        for topic, group in ((first, "group-a"), (second, "group-b"))
    ]
    wait_until(lambda: count_rows(engine, schema) >= 800, 60, "both topics")
    for worker in workers:
        assert worker.terminate() == 0, worker.output()[-2000:]
    with engine.connect() as conn:
        names = conn.execute(
            sa.text(
                "SELECT relname FROM pg_class WHERE relnamespace = to_regnamespace(:s) "
                "AND relname LIKE 'kafka_sink_state%' ORDER BY 1"
            ),
            {"s": schema},
        ).scalars()
        assert list(names) == ["kafka_sink_state_group_a", "kafka_sink_state_group_b"]
    for name, topic, count in (("group_a", first, 300), ("group_b", second, 500)):
        value = comment(engine, f'"{schema}".kafka_sink_state_{name}')
        offsets = orjson.loads(value or "")["pg-bulk-ingest"]["high-watermark"]["offsets"]
        assert offsets == {topic: {"0": count}}


def printed_reset(output: str) -> str:
    found = re.search(r"`pg-kafka-sink reset --to (\S+)`", output)
    assert found is not None, output[-3000:]
    return found.group(1)


def test_a_replaced_state_comment_stops_the_worker_and_reset_resumes_exactly(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
) -> None:
    partitions = 3
    topic = new_topic(partitions=partitions)
    config = sink_config([topic], schema, columns=COORDINATE_COLUMNS, max_messages=500)
    producer = produce_steadily(kafka_bootstrap, topic, 20_000, partitions, chunk=2_000, pause=1)
    try:
        worker = start_sink(config)
        wait_until(lambda: count_rows(engine, schema) >= 5_000, 60, "progress")
        table = state_table(engine, schema)
        assert table is not None
        set_comment(engine, table, '{"owner": "data team"}')
        code = worker.exit_code()
    finally:
        producer.join()
    output = worker.messages()
    assert code == 2, output[-3000:]
    assert f"the COMMENT of the sink's state table {table.replace(chr(34), '')}" in output
    assert 'found the comment \'{"owner": "data team"}\'' in output
    # A restarted worker refuses too, offering the group's offsets in Kafka.
    again = start_sink(config)
    assert again.exit_code() == 2, again.output()[-3000:]
    assert "no longer holds the sink's state" in again.messages(), again.output()[-3000:]
    landed = count_rows(engine, schema)
    result = sink_command("reset", "--config", str(config), "--to", printed_reset(output))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cannot be read" in result.stdout
    resumed = start_sink(config)
    wait_until(lambda: count_rows(engine, schema) >= 20_000, 90, "every row")
    assert resumed.terminate() == 0, resumed.output()[-2000:]
    assert landed < 20_000
    assert_exactly_once(engine, kafka_bootstrap, schema, topic, partitions)


def test_a_dropped_state_table_stops_the_worker_rather_than_start_over(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
) -> None:
    topic = new_topic(partitions=2)
    config = sink_config([topic], schema, columns=COORDINATE_COLUMNS, max_messages=200)
    produce(kafka_bootstrap, topic, events(1_000), partitions=2)
    worker = start_sink(config)
    wait_until(
        lambda: sum(stored_offsets(engine, schema).get(topic, {}).values()) == 1_000, 60, "all"
    )
    table = state_table(engine, schema)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {table}"))
    produce(kafka_bootstrap, topic, events(100, start=1_000), partitions=2)
    code = worker.exit_code()
    output = worker.messages()
    assert code == 2, output[-3000:]
    assert "does not exist, yet offsets of consumer group" in output
    # Restarted, it still refuses: the consumer group's offsets in Kafka say it stored some.
    again = start_sink(config)
    assert again.exit_code() == 2, again.output()[-3000:]
    assert "reset --to" in again.messages()
    assert count_rows(engine, schema) == 1_000


def test_a_configured_state_table_moved_elsewhere_is_named_in_the_error(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
) -> None:
    topic = new_topic()
    group = f"g-{uuid.uuid4().hex[:8]}"
    produce(kafka_bootstrap, topic, events(100))
    config = sink_config([topic], schema, columns=COORDINATE_COLUMNS, group_id=group)
    worker = start_sink(config, {"SINK_POSTGRES__STATE_TABLE": f"{schema}.offsets_here"})
    wait_until(lambda: count_rows(engine, schema) >= 100, 60, "the rows")
    assert worker.terminate() == 0
    # Without the setting, the default name is looked for: the group stored offsets before.
    again = start_sink(config)
    assert again.exit_code() == 2, again.output()[-3000:]
    assert f"kafka_sink_state_{group.replace('-', '_')} does not exist" in again.messages()


# --- upgrade from the layout of earlier releases ---------------------------------------------


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sink of the last release that kept its offsets on the first data table."""
    folder = tmp_path_factory.mktemp("previous-release")
    archive = subprocess.run(
        ["git", "archive", "--format=tar", PREVIOUS_RELEASE, "sink", "pg_bulk_ingest"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    assert archive.returncode == 0, (
        f"git archive {PREVIOUS_RELEASE} failed (a clone with history is needed): "
        f"{archive.stderr.decode()}"
    )
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def start_previous(release: Path, config: Path, log: Path) -> SinkProcess:
    """A worker of that release: run from its folder, `python -m sink` imports its packages."""
    return SinkProcess(config, log, {"PYTHONPATH": str(release)}, cwd=release)


def test_an_upgrade_adopts_the_offsets_of_the_previous_layout_and_stops_old_workers(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
    previous_release: Path,
    tmp_path: Path,
) -> None:
    partitions, total = 4, 40_000
    topic = new_topic(partitions=partitions)
    config = sink_config([topic], schema, columns=COORDINATE_COLUMNS, max_messages=500)
    producer = produce_steadily(kafka_bootstrap, topic, total, partitions, chunk=2_000, pause=1)
    old = start_previous(previous_release, config, tmp_path / "old.log")
    try:
        try:
            try:
                wait_until(lambda: count_rows(engine, schema) >= 4_000, 90, "the old worker's rows")
            except AssertionError:
                raise AssertionError(old.output()[-3000:]) from None
            legacy = orjson.loads(comment(engine, f'"{schema}".events') or "")
            assert legacy["pg-bulk-ingest"]["high-watermark"]["offsets"][topic]
            assert state_table(engine, schema) is None
            # The new release starts beside the old worker, in the same consumer group.
            new = start_sink(config)
            wait_until(lambda: not old.running(), 90, "the old worker to stop")
        finally:
            producer.join()
        wait_until(lambda: count_rows(engine, schema) >= total, 120, f"all {total} rows")
        time.sleep(2)
        assert new.terminate() == 0, new.output()[-2000:]
        old_output = old.messages()
        assert old.proc.returncode != 0
        assert "upgrade this worker" in old_output, old_output[-3000:]
        assert "moved the offsets stored in the comment of" in new.messages()
        moved = orjson.loads(comment(engine, f'"{schema}".events') or "")
        table = state_table(engine, schema)
        assert table is not None
        assert moved["pg-bulk-ingest"]["high-watermark"]["moved"] == table.replace('"', "")
    finally:
        old.close()
    assert_exactly_once(engine, kafka_bootstrap, schema, topic, partitions)
