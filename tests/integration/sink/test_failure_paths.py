"""Failure paths where a message could be skipped without a trace, or the worker could spin:
each breaks something real (a PostgreSQL backend, a setting, a batch of deletes) and checks
that every message still lands exactly once, or that the worker stops saying why."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from sqlalchemy.engine import make_url

from sink.config import BatchSettings
from tests.events import events

from .harness import SinkProcess, log_end_offsets, produce, stored_offsets, wait_until
from .test_exactly_once import COORDINATE_COLUMNS, assert_exactly_once, count_rows
from .test_semantics import ORDER_COLUMNS, order


def tagged_url(database_url: str, application_name: str) -> str:
    """The database URL with an application_name, so a test can find the sink's backends."""
    url = make_url(database_url).update_query_dict({"application_name": application_name})
    return url.render_as_string(hide_password=False)


def terminate_backends(engine: sa.engine.Engine, application_name: str) -> int:
    with engine.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name"
            ),
            {"name": application_name},
        ).scalar_one()
    return int(killed)


def test_latest_is_resolved_once_so_a_retried_first_batch_loses_nothing(
    engine: sa.engine.Engine,
    database_url: str,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
) -> None:
    partitions, before, after = 3, 600, 3_000
    topic = new_topic(partitions=partitions)
    produce(kafka_bootstrap, topic, events(before), partitions=partitions)
    skipped = log_end_offsets(kafka_bootstrap, topic, partitions)
    name = f"sink-{uuid.uuid4().hex[:8]}"
    config = sink_config([topic], schema, columns=COORDINATE_COLUMNS, max_age_seconds=1.5)
    worker = start_sink(
        config,
        {"SINK_KAFKA__START_FROM": "latest", "SINK_POSTGRES__URL": tagged_url(database_url, name)},
    )
    wait_until(lambda: "assigned" in worker.messages(), 60, "the assignment")

    def produce_slowly() -> None:
        for start in range(before, before + after, 300):
            produce(kafka_bootstrap, topic, events(300, start=start), partitions=partitions)
            time.sleep(0.3)

    producer = threading.Thread(target=produce_slowly)
    producer.start()
    try:
        # The first batches fail before they commit: each retry must go back to where the
        # partitions started, not to whatever the log end is by then.
        for _ in range(3):
            time.sleep(0.8)
            terminate_backends(engine, name)
    finally:
        producer.join()
    wait_until(lambda: count_rows(engine, schema) >= after, 90, f"all {after} rows")
    time.sleep(1)
    assert worker.terminate() == 0, worker.output()[-2000:]
    assert "PostgreSQL failed" in worker.messages(), "no batch was retried: the test proves nothing"
    with engine.connect() as conn:
        total, distinct = conn.execute(
            sa.text(
                f'SELECT count(*), count(DISTINCT ("partition", "offset")) FROM "{schema}".events'
            )
        ).one()
        firsts = dict(
            conn.execute(
                sa.text(f'SELECT "partition", min("offset") FROM "{schema}".events GROUP BY 1')
            ).all()
        )
    assert (total, distinct) == (after, after)
    assert firsts == skipped
    ends = log_end_offsets(kafka_bootstrap, topic, partitions)
    assert stored_offsets(engine, schema)[topic] == {str(p): n for p, n in ends.items()}


def test_a_batch_of_more_tombstones_than_postgresql_takes_parameters_deletes_them_all(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
) -> None:
    keys = 70_000  # one parameter per key would pass the protocol's limit of 65,535
    topic = new_topic()
    config = sink_config(
        [topic],
        schema,
        "orders",
        primary_key=["id"],
        columns=ORDER_COLUMNS,
        table_extra='tombstones = "delete"\n',
        max_messages=200_000,
        max_age_seconds=3,
    )
    produce(kafka_bootstrap, topic, [order(i, "created") for i in range(keys + 10)])
    worker = start_sink(config)
    wait_until(lambda: count_rows(engine, schema, "orders") == keys + 10, 90, "the orders")
    produce(kafka_bootstrap, topic, [(str(i).encode(), None) for i in range(keys)])
    wait_until(lambda: count_rows(engine, schema, "orders") == 10, 90, "the deletes")
    assert worker.terminate() == 0, worker.output()[-2000:]
    assert "PostgreSQL failed" not in worker.messages()
    assert stored_offsets(engine, schema)[topic] == {"0": 2 * keys + 10}


class CuttingProxy:
    """A TCP proxy to PostgreSQL that cuts the connection whenever the client sends `marker`,
    as a pooler, a load balancer or a firewall may for what it does not let through (or a
    backend crashing on a row): the driver sees the connection lost, without a SQLSTATE,
    while new connections work. `cuts_left` bounds how many more times it cuts (None: always).
    """

    def __init__(self, upstream: tuple[str, int], marker: bytes) -> None:
        self.upstream = upstream
        self.marker = marker
        self.cuts = 0
        self.cuts_left: int | None = None
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:  # closed
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _cut(self, seen: bytes) -> bool:
        with self._lock:
            if self.marker not in seen or self.cuts_left == 0:
                return False
            self.cuts += 1
            if self.cuts_left is not None:
                self.cuts_left -= 1
            return True

    def _pump(self, source: socket.socket, target: socket.socket, inspect: bool) -> None:
        tail = b""  # the marker may straddle two reads
        try:
            while data := source.recv(65536):
                if inspect and self._cut(tail + data):
                    break
                tail = data[-len(self.marker) :]
                target.sendall(data)
        except OSError:
            pass
        for end in (source, target):
            with contextlib.suppress(OSError):  # the other pump closed it first
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self._server.close()


CUT_MARKER = "cut-the-connection-here"


@pytest.fixture
def cutting_proxy(database_url: str) -> Iterator[tuple[CuttingProxy, str]]:
    """A `CuttingProxy` cutting on CUT_MARKER, and the database URL through it."""
    url = make_url(database_url)
    proxy = CuttingProxy((url.host or "127.0.0.1", url.port or 5432), CUT_MARKER.encode())
    yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    proxy.close()


def test_a_batch_that_fails_the_same_way_without_sqlstate_stops_the_worker_naming_it(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
    cutting_proxy: tuple[CuttingProxy, str],
) -> None:
    proxy, proxied_url = cutting_proxy
    env = {"SINK_POSTGRES__URL": proxied_url}
    topic = new_topic()
    config = sink_config([topic], schema, columns=COORDINATE_COLUMNS)
    worker = start_sink(config, env)
    land(engine, kafka_bootstrap, schema, topic, worker)
    # One message the connection never lets through, and nine good ones in its batch.
    produce(kafka_bootstrap, topic, [(None, orjson.dumps({"id": 100, "payload": CUT_MARKER}))])
    produce(kafka_bootstrap, topic, events(9, start=101))

    stopped = start_sink(config, env)
    assert stopped.exit_code(60) == 2, stopped.output()[-3000:]
    output = stopped.messages()
    assert (
        f"the batch of {topic}[0]@100 to @109 for {schema}.events failed 3 times in a row "
        "the same way, without a SQLSTATE, while PostgreSQL answers a new connection "
        "(OperationalError: " in output
    ), output[-3000:]
    assert "lower batch.max_messages or batch.max_bytes" in output
    assert proxy.cuts == 3
    assert count_rows(engine, schema) == 100
    assert stored_offsets(engine, schema)[topic] == {"0": 100}

    # Cut twice more only: a connection lost twice in a row is retried, and the batch lands.
    proxy.cuts_left = 2
    retried = start_sink(config, env)
    wait_until(lambda: stored_offsets(engine, schema)[topic] == {"0": 110}, 60, "the batch")
    assert retried.terminate() == 0, retried.output()[-2000:]
    assert "2 of 3 failures in a row without a SQLSTATE" in retried.messages()
    assert proxy.cuts == 5
    with engine.connect() as conn:
        ids = conn.execute(sa.text(f'SELECT id FROM "{schema}".events ORDER BY id')).scalars()
        assert list(ids) == list(range(110))


def test_a_topic_the_subscription_assigns_but_no_route_matches_stops_the_worker(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
) -> None:
    topic = new_topic()
    produce(kafka_bootstrap, topic, events(50))
    # librdkafka (POSIX classes) matches the topic; Python's re reads "[[:digit:]]" otherwise.
    pattern = f"^{topic[:-1]}[[:xdigit:]]$"
    config = sink_config(
        [], schema, columns=COORDINATE_COLUMNS, table_extra=f"topic_pattern = '{pattern}'\n"
    )
    worker = start_sink(config)
    code = worker.exit_code()
    output = worker.messages()
    assert code == 2, output[-3000:]
    assert f"topic {topic!r} was assigned to this worker by the subscription" in output
    assert count_rows(engine, schema) == 0
    assert stored_offsets(engine, schema).get(topic) is None


def test_partitions_assigned_while_postgresql_is_unreachable_wait_paused_then_land(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
    sink_role: Callable[..., str],
) -> None:
    # One partition: one worker owns it, the other idles (and keeps polling Kafka).
    partitions, total = 1, 8_000
    topic = new_topic(partitions=partitions)
    role = f"sink_{uuid.uuid4().hex[:8]}"
    env = {"SINK_POSTGRES__URL": sink_role(name=role)}
    config = sink_config([topic], schema, columns=COORDINATE_COLUMNS, max_messages=500)
    produce(kafka_bootstrap, topic, events(total // 2), partitions=partitions)
    first = start_sink(config, env)
    wait_until(lambda: count_rows(engine, schema) >= total // 2, 60, "the first half")
    second = start_sink(config, env)
    # An empty assignment: it joined, owning nothing.
    wait_until(lambda: "joined consumer group" in second.messages(), 60, "the second member")
    produce(kafka_bootstrap, topic, events(total // 2, start=total // 2), partitions=partitions)
    # PostgreSQL refuses the sink's role ("too many connections": transient) while the first
    # worker dies: its partitions go to the second one, which cannot read their offsets.
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER ROLE {role} CONNECTION LIMIT 0"))
    first.signal(signal.SIGKILL)
    with engine.connect() as conn:
        conn.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"),
            {"r": role},
        )
    wait_until(
        lambda: "paused until their stored offsets can be read" in second.messages(),
        60,
        "the partitions to wait",
    )
    port = int(re.findall(r"on port (\d+)", second.messages())[0])
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    assert re.search(rb"pg_kafka_sink_waiting_partitions [1-9]", metrics), metrics[-2000:]
    time.sleep(3)
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER ROLE {role} CONNECTION LIMIT -1"))
    wait_until(lambda: count_rows(engine, schema) >= total, 90, f"all {total} rows")
    assert "at their stored offsets" in second.messages()
    assert second.terminate() == 0, second.output()[-2000:]
    assert_exactly_once(engine, kafka_bootstrap, schema, topic, partitions)


def corrupt_on_disk(topic: str, marker: bytes) -> None:
    """Flips one byte of `marker` in the broker's log segment of `topic`[0]: that record
    batch then fails the client's CRC check."""
    data = os.environ.get("SINK_TEST_KAFKA_DATA")
    assert data, "SINK_TEST_KAFKA_DATA is not set: start the services (make services-up)"
    (segment,) = Path(data).glob(f"{topic}-0/*.log")
    position = segment.read_bytes().find(marker)
    assert position >= 0, f"{marker!r} not found in {segment}"
    with segment.open("r+b") as file:
        file.seek(position)
        file.write(b"X")


def test_a_message_the_client_cannot_read_becomes_a_dead_letter_and_the_rest_lands(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
) -> None:
    topic = new_topic()
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 0})
    for i in range(10):  # one record batch each
        producer.produce(topic, value=orjson.dumps({"id": i, "payload": {"mark": f"M-{i:04d}"}}))
        producer.flush(10)
    corrupt_on_disk(topic, b"M-0005")
    config = sink_config(
        [topic],
        schema,
        columns=COORDINATE_COLUMNS,
        extra=f'[errors]\npolicy = "dead-letter-table"\ndead_letter_table = "{schema}.dead"\n',
    )
    worker = start_sink(config, {"SINK_KAFKA__SETTINGS__CHECK_CRCS": "true"})
    wait_until(lambda: stored_offsets(engine, schema).get(topic) == {"0": 10}, 60, "all offsets")
    assert worker.terminate() == 0, worker.output()[-2000:]
    with engine.connect() as conn:
        ids = conn.execute(sa.text(f'SELECT id FROM "{schema}".events ORDER BY id')).scalars()
        assert list(ids) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
        dead = conn.execute(
            sa.text(f'SELECT "offset", error_code, error FROM "{schema}".dead')
        ).all()
    assert [(offset, code) for offset, code, _ in dead] == [(5, "unreadable")]
    assert "failed CRC32C check" in dead[0][2]


def land(
    engine: sa.engine.Engine, bootstrap: str, schema: str, topic: str, worker: SinkProcess
) -> None:
    """100 events into `topic`, landed by `worker`, which then stops."""
    produce(bootstrap, topic, events(100))
    wait_until(lambda: stored_offsets(engine, schema).get(topic) == {"0": 100}, 60, "100 rows")
    assert worker.terminate() == 0, worker.output()[-2000:]


def test_a_stored_offset_deleted_from_the_log_stops_the_worker_or_jumps_when_told(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
) -> None:
    topic = new_topic()
    config = sink_config([topic], schema, columns=COORDINATE_COLUMNS)
    land(engine, kafka_bootstrap, schema, topic, start_sink(config))
    produce(kafka_bootstrap, topic, events(50, start=100))
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    (deleted,) = admin.delete_records([KafkaTopicPartition(topic, 0, 120)]).values()
    deleted.result(timeout=30)  # retention, or DeleteRecords: offsets 0 to 119 are gone

    refused = start_sink(config)
    assert refused.exit_code() == 2, refused.output()[-3000:]
    expected = (
        f"{topic}[0]: the stored next offset 100 no longer exists: the partition holds "
        "offsets 120 to 150 now"
    )
    assert expected in refused.messages()
    assert count_rows(engine, schema) == 100

    jumping = start_sink(config, {"SINK_KAFKA__OUT_OF_RANGE": "jump"})
    wait_until(lambda: stored_offsets(engine, schema).get(topic) == {"0": 150}, 60, "the rest")
    assert "jumping to 120" in jumping.messages()
    port = int(re.findall(r"on port (\d+)", jumping.messages())[0])
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    assert f'offsets_jumped_total{{reason="deleted",topic="{topic}"}} 1.0'.encode() in metrics
    assert jumping.terminate() == 0
    with engine.connect() as conn:
        offsets = conn.execute(sa.text(f'SELECT "offset" FROM "{schema}".events ORDER BY 1'))
        assert list(offsets.scalars()) == [*range(100), *range(120, 150)]


def test_a_topic_deleted_and_created_again_is_recognised_by_its_id(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
) -> None:
    topic = new_topic()
    config = sink_config([topic], schema, columns=COORDINATE_COLUMNS)
    land(engine, kafka_bootstrap, schema, topic, start_sink(config))
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.delete_topics([topic])[topic].result(timeout=30)
    wait_until(lambda: topic not in admin.list_topics(timeout=10).topics, 30, "the deletion")
    created = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    created[topic].result(timeout=30)
    # The new topic's offsets pass the stored one: only its id tells them apart.
    produce(kafka_bootstrap, topic, events(150, start=1_000))

    refused = start_sink(config)
    assert refused.exit_code() == 2, refused.output()[-3000:]
    assert "the topic was deleted and created again since" in refused.messages()
    assert count_rows(engine, schema) == 100

    jumping = start_sink(config, {"SINK_KAFKA__OUT_OF_RANGE": "jump"})
    wait_until(lambda: count_rows(engine, schema) == 250, 60, "the new topic's messages")
    assert jumping.terminate() == 0
    with engine.connect() as conn:
        ids = conn.execute(sa.text(f'SELECT id FROM "{schema}".events WHERE id >= 1000'))
        assert sorted(ids.scalars()) == list(range(1_000, 1_150))
    assert stored_offsets(engine, schema)[topic] == {"0": 150}


def test_a_topic_of_transactional_producers_drains_to_lag_zero(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
) -> None:
    topic = new_topic(partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": topic})
    producer.init_transactions(30)
    for chunk in range(3):
        producer.begin_transaction()
        for key, value in events(100, start=100 * chunk):
            producer.produce(topic, key=key, value=value, partition=chunk % 2)
        producer.commit_transaction(30)
    producer.begin_transaction()  # an aborted one: never landed, never counted as lag
    for key, value in events(10, start=1_000):
        producer.produce(topic, key=key, value=value, partition=0)
    producer.abort_transaction(30)
    ends = log_end_offsets(kafka_bootstrap, topic, 2)
    config = sink_config([topic], schema, columns=COORDINATE_COLUMNS)
    worker = start_sink(config)
    wait_until(lambda: count_rows(engine, schema) >= 300, 60, "the committed messages")
    wait_until(
        lambda: stored_offsets(engine, schema).get(topic) == {str(p): n for p, n in ends.items()},
        30,
        "the stored offsets to pass the last transaction markers",
    )
    assert worker.terminate() == 0, worker.output()[-2000:]
    assert count_rows(engine, schema) == 300


def test_a_dead_letter_topic_that_cannot_acknowledge_is_retried_like_a_broker_outage(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
) -> None:
    topic = new_topic()
    # A dead-letter topic that does not exist yet (the broker creates none by itself): the
    # producer waits for it until its delivery timeout.
    dlq = f"dlq-{uuid.uuid4().hex[:8]}"
    produce(kafka_bootstrap, topic, [*events(5), (b"bad", b"not json"), *events(5, start=5)])
    config = sink_config(
        [topic],
        schema,
        columns=COORDINATE_COLUMNS,
        extra=f'[errors]\npolicy = "dead-letter-topic"\ndead_letter_topic = "{dlq}"\n',
    )
    worker = start_sink(config)
    wait_until(lambda: "not acknowledged within" in worker.messages(), 90, "a failed delivery")
    assert worker.running(), worker.output()[-3000:]
    assert "retrying in" in worker.messages()
    assert count_rows(engine, schema) == 0
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(dlq, num_partitions=1, replication_factor=1)])[dlq].result(30)
    wait_until(lambda: stored_offsets(engine, schema).get(topic) == {"0": 11}, 120, "the commit")
    assert worker.terminate() == 0, worker.output()[-2000:]
    assert count_rows(engine, schema) == 10
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"r-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([dlq])
    found = []
    deadline = time.monotonic() + 30
    while not found and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            found.append(msg)
    consumer.close()
    admin.delete_topics([dlq])[dlq].result(30)
    assert [m.value() for m in found] == [b"not json"]


# The sink's peak RSS with the default batch limits, whatever the message size (README).
PEAK_RSS_BOUND_MB = 300


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    (kilobytes,) = re.findall(r"VmHWM:\s+(\d+) kB", status)
    return int(kilobytes) / 1024


def test_one_megabyte_messages_keep_the_worker_under_its_memory_bound(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[..., SinkProcess],
) -> None:
    count, size = 400, 1_000_000
    topic = new_topic(partitions=2, config={"max.message.bytes": str(2 * size)})
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 2 * size})
    for i in range(count):
        value = orjson.dumps({"id": i, "payload": {"blob": f"{i:07d}" * (size // 7)}})
        producer.produce(topic, value=value, partition=i % 2)
        producer.poll(0)
    assert producer.flush(60) == 0
    defaults = BatchSettings()  # the default batch limits: 50,000 messages, 16 MiB, 1 s
    config = sink_config(
        [topic],
        schema,
        columns=COORDINATE_COLUMNS,
        max_messages=defaults.max_messages,
        max_age_seconds=defaults.max_age_seconds,
    )
    worker = start_sink(config)
    wait_until(
        lambda: sum(stored_offsets(engine, schema).get(topic, {}).values()) == count,
        180,
        f"all {count} messages",
    )
    peak = peak_rss_mb(worker.proc.pid)
    assert worker.terminate() == 0, worker.output()[-2000:]
    print(f"peak RSS with {count} messages of {size:,} bytes: {peak:.0f} MB")
    assert peak <= PEAK_RSS_BOUND_MB
    assert count_rows(engine, schema) == count
