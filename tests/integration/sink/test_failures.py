"""The worker rides out database and broker restarts, and stops clearly on what it cannot fix."""

from __future__ import annotations

import re
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.events import events

from .harness import REPO, SinkProcess, produce, produce_steadily, wait_until
from .test_exactly_once import COORDINATE_COLUMNS, assert_exactly_once, count_rows

SERVICES = REPO / "deploy" / "local" / "services.sh"


def _restart(service: str) -> None:
    subprocess.run([str(SERVICES), f"{service}-restart"], check=True, timeout=180)


@pytest.mark.parametrize("service", ["postgres", "kafka"])
def test_worker_recovers_by_itself_from_a_restart_and_lands_everything_once(
    service: str,
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    total, partitions = 40_000, 3
    topic = new_topic(partitions=partitions)
    config = sink_config([topic], schema, columns=COORDINATE_COLUMNS, max_messages=1000)
    worker = start_sink(config)
    produce(kafka_bootstrap, topic, events(10_000), partitions=partitions)
    wait_until(lambda: count_rows(engine, schema) >= 10_000, 60, "the first rows")
    producer = produce_steadily(kafka_bootstrap, topic, 10_000, partitions, chunk=2_000, pause=0.5)
    _restart(service)
    producer.join()
    engine.dispose()  # the test's own pooled connections died with a database restart
    produce(kafka_bootstrap, topic, events(total - 20_000, start=20_000), partitions=partitions)
    wait_until(lambda: count_rows(engine, schema) >= total, 180, f"all {total} rows")
    assert worker.running(), worker.output()[-3000:]
    assert worker.terminate() == 0
    assert_exactly_once(engine, kafka_bootstrap, schema, topic, partitions)
    if service == "postgres":
        assert "retrying in" in worker.output()


def test_a_role_that_may_only_insert_lands_rows_and_stops_clearly_on_a_migration(
    engine: sa.engine.Engine,
    database_url: str,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    """The offsets live in the sink's own state table: a data table someone else owns takes
    rows with INSERT alone. Migrating it needs ownership, which the error says."""
    role = f"r_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'"))
        conn.execute(
            sa.text(
                f'CREATE TABLE "{schema}".events ("partition" integer NOT NULL,'
                ' "offset" bigint NOT NULL, id bigint NOT NULL, payload jsonb)'
            )
        )
        conn.execute(sa.text(f'GRANT USAGE, CREATE ON SCHEMA "{schema}" TO {role}'))
        conn.execute(sa.text(f'GRANT SELECT, INSERT ON "{schema}".events TO {role}'))
    try:
        topic = new_topic(partitions=1)
        produce(kafka_bootstrap, topic, events(10))
        url = sa.engine.make_url(database_url).set(username=role, password="pw")

        def config_as_role(columns: str) -> Path:
            config = sink_config([topic], schema, columns=columns, group_id=f"g-{role}")
            text = config.read_text().replace(database_url, url.render_as_string(False))
            config.write_text(text)
            return config

        worker = start_sink(config_as_role(COORDINATE_COLUMNS))
        wait_until(lambda: count_rows(engine, schema) == 10, 60, "the rows")
        assert worker.terminate() == 0, worker.output()[-2000:]

        wider = COORDINATE_COLUMNS + '[[tables.columns]]\nname = "note"\ntype = "TEXT"\n'
        migrating = start_sink(config_as_role(wider))
        assert migrating.proc.wait(60) != 0
        output = migrating.output()
        assert "ownership of a table it must migrate" in output, output[-2000:]
        assert "OWNER TO" in output
        assert count_rows(engine, schema) == 10
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.execute(sa.text(f"DROP OWNED BY {role}"))
            conn.execute(sa.text(f"DROP ROLE {role}"))


def test_a_migration_that_stored_rows_cannot_take_stops_the_worker_naming_column_and_value(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    """No message is at fault when stored rows refuse a new type: nothing is dead-lettered,
    and the worker stops saying which value blocks the migration."""
    topic = new_topic(partitions=1)
    produce(kafka_bootstrap, topic, events(10, start=3_000_000_000))
    group = f"g-{uuid.uuid4().hex[:8]}"
    worker = start_sink(sink_config([topic], schema, columns=COORDINATE_COLUMNS, group_id=group))
    wait_until(lambda: count_rows(engine, schema) == 10, 60, "the rows")
    assert worker.terminate() == 0, worker.output()[-2000:]

    produce(kafka_bootstrap, topic, events(5, start=20))
    narrower = COORDINATE_COLUMNS.replace(
        'name = "id"\ntype = "BIGINT"', 'name = "id"\ntype = "INTEGER"'
    )
    assert narrower != COORDINATE_COLUMNS
    migrating = start_sink(sink_config([topic], schema, columns=narrower, group_id=group))
    assert migrating.exit_code() == 2
    output = migrating.output()
    assert f"{schema}.events.id: the stored value '3000000000" in output, output[-3000:]
    assert "dead letter" not in output.lower(), output[-3000:]
    assert count_rows(engine, schema) == 10
    with engine.connect() as conn:
        assert (
            conn.execute(
                sa.text(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = to_regclass(:t) AND attname = 'id'"
                ),
                {"t": f'"{schema}".events'},
            ).scalar()
            == "bigint"
        )


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_health_and_metrics_endpoints_report_progress_and_lag_falling_to_zero(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic(partitions=2)
    produce(kafka_bootstrap, topic, events(5_000), partitions=2)
    worker = start_sink(sink_config([topic], schema, columns=COORDINATE_COLUMNS))
    found: list[int] = []
    wait_until(
        lambda: bool(
            found.extend(int(p) for p in re.findall(r"on port (\d+)", worker.output())) or found
        ),
        30,
        "the HTTP port in the log",
    )
    port = found[0]
    assert _get(port, "/livez")[0] == 200
    wait_until(lambda: _get(port, "/readyz")[0] == 200, 30, "readiness")
    wait_until(lambda: count_rows(engine, schema) == 5_000, 60, "all rows")

    def lag_is_zero() -> bool:
        status, body = _get(port, "/metrics")
        lags = re.findall(
            rf'pg_kafka_sink_partition_lag\{{[^}}]*topic="{topic}"[^}}]*\}} (\S+)', body
        )
        return status == 200 and len(lags) == 2 and all(float(v) == 0 for v in lags)

    wait_until(lag_is_zero, 30, "lag 0 on both partitions")
    _, body = _get(port, "/metrics")
    assert re.search(r"pg_kafka_sink_messages_total(\{[^}]*\})? 5000", body), body[:3000]
    assert "pg_kafka_sink_batch_duration_seconds_bucket" in body
    assert worker.terminate() == 0


def test_an_unreachable_broker_is_said_once_and_shown_by_readyz_and_metrics(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
) -> None:
    topic = new_topic(partitions=1)
    produce(kafka_bootstrap, topic, events(5))
    config = sink_config([topic], schema, columns=COORDINATE_COLUMNS)
    first = start_sink(config)
    wait_until(lambda: count_rows(engine, schema) == 5, 60, "the rows")
    assert first.terminate() == 0, first.output()[-2000:]

    with socket.socket() as probe:  # a loopback port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    worker = start_sink(config, env={"SINK_KAFKA__BOOTSTRAP_SERVERS": dead})
    wait_until(lambda: "on port" in worker.messages(), 30, "the HTTP server")
    port = int(re.findall(r"on port (\d+)", worker.messages())[0])
    wait_until(lambda: "Kafka unreachable" in _get(port, "/readyz")[1], 30, "/readyz")
    status, body = _get(port, "/readyz")
    assert status == 503 and "Connection refused" in body, body
    assert re.search(r"^pg_kafka_sink_kafka_up 0", _get(port, "/metrics")[1], re.M)
    assert re.search(r"^pg_kafka_sink_database_up 1", _get(port, "/metrics")[1], re.M)
    time.sleep(10)  # librdkafka retries the connection several times a second meanwhile
    lines = worker.messages().splitlines()
    assert len([line for line in lines if "Kafka unreachable" in line]) == 1, lines[-20:]
    assert len([line for line in lines if "sink.librdkafka" in line]) <= 4, lines[-20:]
    assert worker.terminate() == 0, worker.output()[-2000:]
