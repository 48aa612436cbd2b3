"""The operations half against the real broker and database: dead letters, the operator
commands `check`, `status` and `reset` run as an operator would (`python -m sink ...`), and
the metrics a running worker serves."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, Producer

import pg_bulk_ingest
from sink.batcher import DeadLetter
from sink.config import load_settings
from sink.deadletter import DeadLetterProducer, dead_letter_rows
from sink.errors import DecodeError, MappingError, SinkError
from sink.offsets import StoredState, fingerprint
from sink.records import Message, TopicPartition
from sink.tables import dead_letter_table, load_tables
from tests.events import EVENT_COLUMNS_TOML

from .harness import (
    SinkProcess,
    produce,
    sink_command,
    state_table,
    stored_offsets,
    wait_until,
)

T0_MS = 1_750_000_000_000


def table_state(engine: sa.engine.Engine, schema: str, table: str = "events") -> Any:
    """Columns (name, type, not null) and the raw COMMENT of a table."""
    with engine.connect() as conn:
        columns = conn.execute(
            sa.text(
                "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
                "WHERE attrelid = to_regclass(:t) AND attnum > 0 AND NOT attisdropped "
                "ORDER BY attnum"
            ),
            {"t": f'"{schema}"."{table}"'},
        ).all()
        comment = conn.execute(
            sa.text("SELECT obj_description(to_regclass(:t), 'pg_class')"),
            {"t": f'"{schema}"."{table}"'},
        ).scalar()
    return [tuple(c) for c in columns], comment


def create_tables(
    engine: sa.engine.Engine, config: Path, offsets: dict[TopicPartition, int] | None = None
) -> None:
    """Creates the config's tables as a worker would, storing `offsets` in the state table."""
    tables = load_tables(load_settings(config, {}))
    state = StoredState(offsets or {}, (fingerprint(tables.data_tables),))
    with engine.connect() as conn:
        pg_bulk_ingest.ingest(
            conn, tables.metadata, lambda _: iter([(state.to_json(), None, iter(()))])
        )


def set_state_comment(engine: sa.engine.Engine, schema: str, document: dict[str, Any]) -> None:
    text = orjson.dumps(document).decode().replace("'", "''")
    with engine.begin() as conn:
        conn.exec_driver_sql(f"COMMENT ON TABLE {state_table(engine, schema)} IS '{text}'")


def produce_at(bootstrap: str, topic: str, partition: int, timestamps_ms: list[int]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for i, timestamp in enumerate(timestamps_ms):
        value = orjson.dumps({"id": i})
        producer.produce(topic, value=value, partition=partition, timestamp=timestamp)
    assert producer.flush(30) == 0


# --- dead letters --------------------------------------------------------------------------


def consume_all(bootstrap: str, topic: str, count: int) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"dlq-reader-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    found: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        while len(found) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                found.append(msg)
    finally:
        consumer.close()
    return found


def test_dead_letter_producer_keeps_the_message_and_adds_its_coordinates_and_reason(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    dlq = new_topic(partitions=1)
    bad_json = DeadLetter(
        Message("orders", 3, 1207, T0_MS, b"key-1", b"{nope", (("trace-id", b"t-1"),)),
        DecodeError("orders[3]@1207", "value is not JSON", code="not-json"),
    )
    bad_column = DeadLetter(
        Message("orders", 0, 9, None, None, b'{"amount": "x"}'),
        MappingError("orders[0]@9", "not a number", table="s.orders", column="amount", code="type"),
    )
    producer = DeadLetterProducer({"bootstrap.servers": kafka_bootstrap, "group.id": "g"}, dlq)
    try:
        producer.send([bad_json, bad_column])
    finally:
        producer.close()

    first, second = consume_all(kafka_bootstrap, dlq, 2)
    assert (first.key(), first.value()) == (b"key-1", b"{nope")
    assert first.headers()[0] == ("trace-id", b"t-1")
    assert dict(first.headers()) == {
        "trace-id": b"t-1",
        "dlq.error.code": b"not-json",
        "dlq.error.reason": b"value is not JSON",
        "dlq.source.topic": b"orders",
        "dlq.source.partition": b"3",
        "dlq.source.offset": b"1207",
        "dlq.source.timestamp": str(T0_MS).encode(),
    }
    assert (second.key(), second.value()) == (None, b'{"amount": "x"}')
    headers = dict(second.headers())
    assert headers["dlq.error.code"] == b"type"
    assert headers["dlq.error.column"] == b"amount"
    assert headers["dlq.source.offset"] == b"9"


def test_dead_letter_producer_raises_when_nothing_acknowledges_in_time() -> None:
    letter = DeadLetter(Message("orders", 0, 1, None, b"k", b"v"), DecodeError("c", "bad"))
    # Nothing listens on port 1: the broker never acknowledges.
    producer = DeadLetterProducer({"bootstrap.servers": "127.0.0.1:1"}, "dlq", timeout_seconds=1.5)
    with pytest.raises(SinkError, match="not acknowledged within 2 s"):
        producer.send([letter])


def test_dead_letter_rows_land_in_the_dead_letter_table(
    engine: sa.engine.Engine, schema: str
) -> None:
    metadata = sa.MetaData()
    table = dead_letter_table(f"{schema}.dead_letters", metadata)
    failed_at = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    letters = [
        DeadLetter(
            Message("orders", 1, 77, T0_MS, b"k", b"\xff\xfe", (("h", b"v"),)),
            DecodeError("orders[1]@77", "value is not UTF-8 text", code="not-utf8"),
        )
    ]
    rows = dead_letter_rows(table, letters, failed_at=failed_at)
    with engine.connect() as conn:
        pg_bulk_ingest.ingest(
            conn, metadata, lambda _: iter([(None, None, ((table, row) for row in rows))])
        )
        found = conn.execute(sa.select(table)).mappings().one()
    assert (found["topic"], found["partition"], found["offset"]) == ("orders", 1, 77)
    assert found["timestamp"] == datetime.fromtimestamp(T0_MS / 1000, timezone.utc)
    assert (found["key"], found["value"]) == (b"k", b"\xff\xfe")
    assert found["headers"] == {"h": "v"}
    assert found["error_code"] == "not-utf8"
    assert "value is not UTF-8 text" in found["error"]
    assert found["failed_at"] == failed_at


# --- check ---------------------------------------------------------------------------------


def test_check_prints_the_migration_plan_of_a_changed_table_and_changes_nothing(
    engine: sa.engine.Engine,
    schema: str,
    new_topic: Callable[..., str],
    sink_config: Callable[..., Path],
) -> None:
    topic = new_topic(partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    create_tables(
        engine, sink_config([topic], schema, group_id=group), {TopicPartition(topic, 0): 5}
    )
    before = table_state(engine, schema)

    wider = EVENT_COLUMNS_TOML.replace('"VARCHAR(64)"', '"VARCHAR(128)"')
    wider += '[[tables.columns]]\nname = "note"\ntype = "TEXT"\n'
    config = sink_config([topic], schema, columns=wider, group_id=group)
    result = sink_command("check", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "connected to database 'sink' as role 'sink'" in out
    assert f"topic {topic}: 2 partition(s)" in out
    assert f'ALTER TABLE "{schema}"."events" ALTER COLUMN "key" TYPE character varying(128)' in out
    assert (
        f'ALTER TABLE "{schema}"."events" ADD COLUMN "note" text;  -- lock: ACCESS EXCLUSIVE' in out
    )
    assert (
        f"offsets: stored in the state table {schema}.kafka_sink_state_{group.replace('-', '_')}"
        in out
    )
    assert "role 'sink' can COMMENT ON it" in out
    assert "ready to run" in out

    retyped = EVENT_COLUMNS_TOML.replace('"VARCHAR(16)"', '"BIGINT"')
    config = sink_config([topic], schema, columns=retyped, group_id=group)
    result = sink_command("check", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{schema}.events: rebuild (column 'status' changes type" in result.stdout
    assert "lock: ACCESS EXCLUSIVE, part of a rebuild + swap" in result.stdout

    assert table_state(engine, schema) == before


def test_check_lists_missing_topics_and_an_unchanged_table_as_nothing_to_do(
    engine: sa.engine.Engine,
    schema: str,
    new_topic: Callable[..., str],
    sink_config: Callable[..., Path],
) -> None:
    topic = new_topic()
    config = sink_config([topic], schema)
    create_tables(engine, config)
    missing = sink_config([topic, "no-such-topic-" + uuid.uuid4().hex[:6]], schema)
    result = sink_command("check", "--config", str(missing))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{schema}.events: nothing to do" in result.stdout
    assert "not ready: 1 problem(s)" in result.stdout
    assert "topic 'no-such-topic-" in result.stdout.split("not ready")[1]


def test_check_against_a_port_nothing_listens_on_fails_within_seconds_in_one_line(
    kafka_bootstrap: str, schema: str, sink_config: Callable[..., Path]
) -> None:
    with socket.socket() as probe:  # a loopback port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = sink_config(["t"], schema)
    config.write_text(config.read_text().replace(kafka_bootstrap, f"127.0.0.1:{port}", 1))
    started = time.monotonic()
    result = sink_command("check", "--config", str(config))
    took = time.monotonic() - started
    assert result.returncode == 1
    assert took < 8, f"check took {took:.1f} s"
    problems = [line for line in result.stdout.splitlines() if "does not answer" in line]
    assert problems and all("Connection refused" in line for line in problems), result.stdout
    # librdkafka's own lines (several a second per broker) are folded into one.
    assert result.stderr.count("Connection refused") <= 1, result.stderr[-3000:]


# --- status --------------------------------------------------------------------------------


def test_status_shows_lag_against_the_real_log_end_offsets(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    schema: str,
    new_topic: Callable[..., str],
    sink_config: Callable[..., Path],
) -> None:
    topic = new_topic(partitions=2)
    produce(kafka_bootstrap, topic, [(None, b"{}")] * 10, partitions=2)
    config = sink_config([topic], schema)
    create_tables(engine, config, {TopicPartition(topic, 0): 2})

    result = sink_command("status", "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    status = orjson.loads(result.stdout)
    assert status["state_table"].startswith(f"{schema}.kafka_sink_state_g_")
    assert [
        (p["partition"], p["stored_next_offset"], p["log_end_offset"], p["lag"])
        for p in status["partitions"]
    ] == [(0, 2, 5, 3), (1, None, 5, 5)]
    assert status["total_lag"] == 8

    text = sink_command("status", "--config", str(config)).stdout
    assert "total: 2 partition(s), lag 8" in text


def test_status_says_the_lag_is_unknown_and_fails_for_a_topic_it_cannot_see(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    schema: str,
    new_topic: Callable[..., str],
    sink_config: Callable[..., Path],
) -> None:
    topic, unseen = new_topic(), f"unseen-{uuid.uuid4().hex[:8]}"
    produce(kafka_bootstrap, topic, [(None, b"{}")] * 4)
    config = sink_config([topic, unseen], schema)
    create_tables(engine, config, {TopicPartition(topic, 0): 1, TopicPartition(unseen, 0): 7})

    result = sink_command("status", "--config", str(config), "--json")
    assert result.returncode == 1, result.stderr
    status = orjson.loads(result.stdout)
    assert status["missing_topics"] == [unseen] and status["total_lag"] is None
    assert {p["topic"]: p["lag"] for p in status["partitions"]} == {topic: 3, unseen: None}

    text = sink_command("status", "--config", str(config))
    assert text.returncode == 1
    assert "lag unknown" in text.stdout and "lag 3" not in text.stdout
    (line,) = [line for line in text.stdout.splitlines() if line.startswith(unseen)]
    assert line.split()[-1] == "unknown"


# --- reset ---------------------------------------------------------------------------------


@pytest.fixture
def reset_setup(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    schema: str,
    new_topic: Callable[..., str],
    sink_config: Callable[..., Path],
) -> Iterator[tuple[str, Path]]:
    """A topic with 5 messages per partition at T0, T0+1 s, ... and a table storing offsets
    under a comment that also holds keys the sink does not own."""
    topic = new_topic(partitions=2)
    for partition in (0, 1):
        produce_at(kafka_bootstrap, topic, partition, [T0_MS + i * 1000 for i in range(5)])
    config = sink_config([topic], schema)
    create_tables(engine, config)
    set_state_comment(
        engine,
        schema,
        {
            "owner": "team-orders",
            "pg-bulk-ingest": {
                "other": 1,
                "high-watermark": {
                    "offsets": {topic: {"0": 3}, "retired-topic": {"0": 42}},
                    "definitions": ["abc"],
                },
            },
        },
    )
    yield topic, config


def test_reset_moves_stored_offsets_and_keeps_every_other_key_of_the_comment(
    engine: sa.engine.Engine, schema: str, reset_setup: tuple[str, Path]
) -> None:
    topic, config = reset_setup

    dry = sink_command("reset", "--config", str(config), "--to", "latest", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"{topic}[0]: 3 -> 5" in dry.stdout
    assert stored_offsets(engine, schema)[topic] == {"0": 3}

    expectations = [
        ("latest", {"0": 5, "1": 5}),
        ("earliest", {"0": 0, "1": 0}),
        (f"timestamp:{T0_MS + 2000}", {"0": 2, "1": 2}),
        ("timestamp:2025-06-15T15:06:42.500+00:00", {"0": 3, "1": 3}),  # T0 + 2.5 s
        ("timestamp:2099-01-01T00:00:00Z", {"0": 5, "1": 5}),  # after the last message
        (f"{topic}:1=4", {"0": 5, "1": 4}),
    ]
    for to, offsets in expectations:
        result = sink_command("reset", "--config", str(config), "--to", to)
        assert result.returncode == 0, result.stdout + result.stderr
        assert stored_offsets(engine, schema)[topic] == offsets, to

    with engine.connect() as conn:
        comment = conn.execute(
            sa.text("SELECT obj_description(to_regclass(:t), 'pg_class')"),
            {"t": state_table(engine, schema)},
        ).scalar()
    document = orjson.loads(comment)
    assert document["owner"] == "team-orders"
    assert document["pg-bulk-ingest"]["other"] == 1
    watermark = document["pg-bulk-ingest"]["high-watermark"]
    assert watermark["offsets"]["retired-topic"] == {"0": 42}
    assert watermark["definitions"] == ["abc"]


def test_reset_refuses_while_the_group_has_an_active_member_unless_forced(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    schema: str,
    new_topic: Callable[..., str],
    sink_config: Callable[..., Path],
) -> None:
    topic = new_topic()
    group = f"g-{uuid.uuid4().hex[:8]}"
    produce(kafka_bootstrap, topic, [(None, b"{}")] * 3)
    config = sink_config([topic], schema, group_id=group)
    create_tables(engine, config, {TopicPartition(topic, 0): 1})
    member = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": group, "session.timeout.ms": 6000}
    )
    try:
        member.subscribe([topic])

        def joined() -> bool:
            member.poll(0.2)
            return bool(member.assignment())

        wait_until(joined, 30, "the member to join the group")
        refused = sink_command("reset", "--config", str(config), "--to", f"{topic}:0=0")
        assert refused.returncode == 1
        assert f"consumer group {group!r} has 1 active member(s)" in refused.stdout
        assert stored_offsets(engine, schema)[topic] == {"0": 1}

        # A dry run changes nothing: it shows the plan, and what the members would do.
        dry = sink_command("reset", "--config", str(config), "--to", f"{topic}:0=0", "--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert f"{topic}[0]: 1 -> 0" in dry.stdout and "dry run: nothing changed" in dry.stdout
        assert f"consumer group {group!r} has 1 active member(s)" in dry.stdout
        assert stored_offsets(engine, schema)[topic] == {"0": 1}

        forced = sink_command("reset", "--config", str(config), "--to", "latest", "--force")
        assert forced.returncode == 0, forced.stdout + forced.stderr
    finally:
        member.close()
    assert stored_offsets(engine, schema)[topic] == {"0": 3}


# --- start-up problems -----------------------------------------------------------------------


def test_a_second_worker_on_a_taken_http_port_says_which_setting_to_change_in_one_line(
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = start_sink(sink_config([new_topic()], schema), env={"SINK_HTTP__PORT": str(port)})
        assert worker.exit_code() == 2
    output = worker.output()
    assert "Traceback" not in output, output
    (line,) = [line for line in output.splitlines() if "http.port" in line]
    assert f":{port}" in line and "SINK_HTTP__PORT" in line and "0 to pick one" in line


def test_a_wrong_postgresql_password_is_named_as_such_by_run_and_check(
    database_url: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
) -> None:
    config = sink_config([new_topic()], schema)
    wrong = sa.engine.make_url(database_url).set(password="not-the-password")
    config.write_text(config.read_text().replace(database_url, wrong.render_as_string(False)))

    worker = start_sink(config)
    assert worker.exit_code() == 2
    (line,) = [line for line in worker.output().splitlines() if "refused the login" in line]
    assert "password authentication failed" in line
    assert "postgres.password_file" in line and "SINK_POSTGRES__PASSWORD" in line

    checked = sink_command("check", "--config", str(config))
    assert checked.returncode == 1
    assert "refused the login" in checked.stdout and "does not answer" not in checked.stdout
    assert "SINK_POSTGRES__PASSWORD" in checked.stdout


# --- logs ------------------------------------------------------------------------------------


def _json_lines(output: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_json_logs_carry_batches_and_dead_letters_as_fields(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
) -> None:
    topic = new_topic()
    produce(
        kafka_bootstrap, topic, [(b"1", b'{"id": 1}'), (b"2", b"not json"), (b"3", b'{"id": 3}')]
    )
    config = sink_config(
        [topic],
        schema,
        primary_key=["id"],
        extra=f'[errors]\npolicy = "dead-letter-table"\n'
        f'dead_letter_table = "{schema}.dead_letters"\n',
    )
    worker = start_sink(config)
    wait_until(lambda: stored_offsets(engine, schema).get(topic) == {"0": 3}, 60, "the batch")
    assert worker.terminate() == 0, worker.output()[-2000:]
    lines = _json_lines(worker.output())
    (settings,) = [line for line in lines if line["message"] == "effective configuration"]
    assert settings["configuration"]["kafka"]["bootstrap_servers"] == kafka_bootstrap
    committed = [line for line in lines if line["message"].startswith("committed ")]
    assert sum(line["messages"] for line in committed) == 3
    assert sum(line["rows"] for line in committed) == 2
    assert committed[-1]["next_offsets"] == {f"{topic}[0]": 3}
    assert {"duration_seconds", "rows_by_table", "dead_letters", "topics"} <= committed[-1].keys()
    (dead,) = [line for line in lines if line["logger"] == "sink.deadletters"]
    assert dead["level"] == "WARNING" and dead["reason"] == "not-json"
    assert (dead["topic"], dead["partition"], dead["offset"]) == (topic, 0, 1)
    joined = [line for line in lines if line["message"].startswith("joined consumer group")]
    assert len(joined) == 1
    assigned = [line for line in lines if line["message"].startswith("assigned ")]
    assert assigned and all("@-" not in line["message"] for line in assigned)


def test_a_missing_config_file_is_logged_as_json_when_logs_are_json(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    result = subprocess.run(
        [sys.executable, "-m", "sink", "run", "--config", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SINK_LOG__FORMAT": "json"},
    )
    assert result.returncode == 2
    (line,) = _json_lines(result.stderr)
    assert line["level"] == "ERROR" and str(missing) in line["message"]


def test_check_lists_each_config_problem_once_and_writes_names_as_sql_needs_them(
    tmp_path: Path, new_topic: Callable[..., str], sink_config: Callable[..., Path]
) -> None:
    config = tmp_path / "sink.toml"
    config.write_text(
        '[kafka]\nbootstrap_servers = "127.0.0.1:9"\ngrup_id = "g"\n'
        '[postgres]\nurl = "postgresql://sink@127.0.0.1/sink"\n'
        '[http]\nport = "18481"\n'
        '[[tables]]\nname = "t"\ntopics = ["t"]\n[[tables.columns]]\nname = "id"\ntype = "BIGINT"\n'
    )
    result = sink_command("check", "--config", str(config))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "not ready: 2 problem(s)" in result.stdout
    for problem in ("kafka.grup_id: unknown setting; did you mean 'group_id'?", "http.port: must"):
        assert output.count(problem) == 1, output

    # A schema and table PostgreSQL reads differently unquoted; check creates neither.
    schema = f"Check {uuid.uuid4().hex[:8]}"
    result = sink_command("check", "--config", str(sink_config([new_topic()], schema, "UX_Orders")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f'"{schema}"."UX_Orders": create' in result.stdout
    warnings = [line["message"] for line in _json_lines(result.stderr)]
    assert any('it is created as "UX_Orders" and must be quoted in SQL' in w for w in warnings)


# --- metrics -------------------------------------------------------------------------------


def scrape(worker: SinkProcess) -> dict[str, float]:
    """The worker's /metrics, sample by sample."""
    port = int(re.findall(r"on port (\d+)", worker.messages())[0])
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = (line.rpartition(" ") for line in text.splitlines() if not line.startswith("#"))
    return {name: float(value) for name, _, value in samples if name}


def test_metrics_time_messages_from_their_kafka_timestamp_to_visible_and_the_lag_in_seconds(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
) -> None:
    topic = new_topic(partitions=2)
    visible = f'pg_kafka_sink_produce_to_visible_seconds_{{}}{{{{topic="{topic}"}}}}'.format
    lag = f'pg_kafka_sink_partition_lag_seconds{{{{partition="{{}}",topic="{topic}"}}}}'.format
    hour_ago = int(time.time() * 1000) - 3_600_000

    def age() -> float:
        return time.time() - hour_ago / 1000

    for partition in (0, 1):
        produce_at(kafka_bootstrap, topic, partition, [hour_ago] * 5)
    worker = start_sink(sink_config([topic], schema))
    wait_until(lambda: stored_offsets(engine, schema).get(topic) == {"0": 5, "1": 5}, 60, "10 rows")
    # Caught up: the lag is 0 s, not the hour since the messages were produced.
    wait_until(lambda: scrape(worker).get(lag(0)) == scrape(worker).get(lag(1)) == 0, 30, "0 s")
    found = scrape(worker)
    count = found[visible("count")]
    # At least one observation per partition (the batches may have split them), each of the
    # hour and the seconds the sink took since.
    assert 2 <= count <= 10
    assert 3600 * count <= found[visible("sum")] <= age() * count
    assert found[visible("bucket").replace("{", '{le="3600.0",')] == 0
    assert found[visible("bucket").replace("{", '{le="14400.0",')] == count

    # A backlog in partition 0 that cannot commit while its table is locked.
    with engine.connect() as locked:
        locked.execute(sa.text(f'LOCK TABLE "{schema}".events IN ACCESS EXCLUSIVE MODE'))
        produce_at(kafka_bootstrap, topic, 0, [hour_ago] * 5)
        wait_until(lambda: scrape(worker).get(lag(0), 0) >= 3600, 30, "an hour of lag")
        found = scrape(worker)
        assert found[lag(0)] <= age()
        assert found[lag(1)] == 0
        assert found[visible("count")] == count  # nothing committed meanwhile
        locked.rollback()

    wait_until(lambda: stored_offsets(engine, schema).get(topic) == {"0": 10, "1": 5}, 60, "5 more")
    wait_until(lambda: scrape(worker).get(lag(0)) == 0, 30, "0 s once caught up again")
    found = scrape(worker)
    assert found[visible("count")] > count
    assert worker.terminate() == 0, worker.output()[-2000:]
