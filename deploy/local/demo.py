"""The local demo: sample events into Kafka, the sink landing them in PostgreSQL, a summary.

Run by `make demo` (which starts the services first); reads the endpoints from
SINK_TEST_DATABASE_URL and SINK_TEST_KAFKA_BOOTSTRAP as printed by `services.sh env`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import sqlalchemy as sa
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sink.tables import state_table_name  # noqa: E402
from tests.events import EVENT_COLUMNS_TOML, events  # noqa: E402

TOPIC = "demo.events"
PARTITIONS = 6
EVENTS = 5_000
SCHEMA, TABLE = "demo", "events"
GROUP = "pg-kafka-sink-demo"
# Where the sink stores its offsets: the comment of its state table, named after the group.
STATE_TABLE = state_table_name(GROUP)
# The sink must catch up well within this; it normally takes a few seconds.
TIMEOUT_SECONDS = 120


def main() -> int:
    database_url = os.environ["SINK_TEST_DATABASE_URL"]
    bootstrap = os.environ["SINK_TEST_KAFKA_BOOTSTRAP"]
    work = REPO / ".services" / "demo"
    work.mkdir(parents=True, exist_ok=True)

    ensure_topic(bootstrap)
    first_id = sum(log_end_offsets(bootstrap).values())
    produce(bootstrap, first_id)
    print(f"produced {EVENTS} sample events (ids {first_id}..{first_id + EVENTS - 1}) to {TOPIC}")

    config = work / "sink.toml"
    config.write_text(sink_config(bootstrap, database_url))
    log_path = work / "sink.log"
    with log_path.open("wb") as log:
        sink = subprocess.Popen(
            [sys.executable, "-m", "sink", "run", "--config", str(config)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        print(f"sink started (pid {sink.pid}, config {config}, log {log_path})")
        engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            caught_up = watch(engine, bootstrap, sink)
        finally:
            if sink.poll() is None:
                sink.send_signal(signal.SIGTERM)
            code = sink.wait(60)
    print(f"sink stopped with exit code {code}")
    if not caught_up or code != 0:
        print(log_path.read_text()[-3000:], file=sys.stderr)
        return 1
    summary(engine, bootstrap)
    engine.dispose()
    return 0


def ensure_topic(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if TOPIC not in admin.list_topics(timeout=10).topics:
        admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])[
            TOPIC
        ].result(30)
        print(f"created topic {TOPIC} with {PARTITIONS} partitions")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        partitions = admin.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
        if len(partitions) == PARTITIONS and all(p.leader >= 0 for p in partitions.values()):
            return
        time.sleep(0.2)
    raise SystemExit(f"topic {TOPIC} has no leader for every partition after 30 s")


def produce(bootstrap: str, first_id: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for key, value in events(EVENTS, start=first_id):
        producer.produce(TOPIC, key=key, value=value)
    if producer.flush(30):
        raise SystemExit("some sample events were not acknowledged by the broker")


def log_end_offsets(bootstrap: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "demo-watermarks"})
    try:
        # A topic just created may answer "not leader" for a moment while its partitions start.
        deadline = time.monotonic() + 30
        while True:
            try:
                return {
                    p: consumer.get_watermark_offsets(KafkaTopicPartition(TOPIC, p), timeout=10)[1]
                    for p in range(PARTITIONS)
                }
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()


def sink_config(bootstrap: str, database_url: str) -> str:
    return f"""# Written by deploy/local/demo.py
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{GROUP}"
start_from = "earliest"

[postgres]
url = "{database_url}"

[batch]
max_messages = 2000
max_age_seconds = 0.5

[http]
host = "127.0.0.1"
port = 0

[log]
format = "text"

[[tables]]
schema = "{SCHEMA}"
name = "{TABLE}"
topics = ["{TOPIC}"]
primary_key = ["id"]
{EVENT_COLUMNS_TOML}"""


def stored(engine: sa.engine.Engine) -> dict[int, int]:
    with engine.connect() as conn:
        comment = conn.execute(
            sa.text("SELECT obj_description(to_regclass(:t), 'pg_class')"),
            {"t": f"{SCHEMA}.{STATE_TABLE}"},
        ).scalar()
    if not comment:
        return {}
    offsets = orjson.loads(comment)["pg-bulk-ingest"]["high-watermark"]["offsets"]
    return {int(p): o for p, o in offsets.get(TOPIC, {}).items()}


def row_count(engine: sa.engine.Engine) -> int:
    with engine.connect() as conn:
        if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f"{SCHEMA}.{TABLE}"}).scalar():
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {SCHEMA}.{TABLE}")).scalar_one())
    return 0


def watch(engine: sa.engine.Engine, bootstrap: str, sink: subprocess.Popen[bytes]) -> bool:
    """A live progress line until the stored offsets reach the log end offsets."""
    ends = log_end_offsets(bootstrap)
    started = previous_time = time.monotonic()
    previous_rows = row_count(engine)
    while time.monotonic() - started < TIMEOUT_SECONDS:
        if sink.poll() is not None:
            print("\nthe sink exited early", file=sys.stderr)
            return False
        positions = stored(engine)
        lag = sum(end - positions.get(p, 0) for p, end in ends.items())
        rows, now = row_count(engine), time.monotonic()
        # The rate over the last interval: what the sink is doing now.
        rate = (rows - previous_rows) / (now - previous_time)
        previous_rows, previous_time = rows, now
        print(
            f"\r  {now - started:5.1f} s  rows {rows:>8}  {rate:>9,.0f} rows/s  lag {lag:>6}",
            end="",
            flush=True,
        )
        if lag == 0:
            print()
            return True
        time.sleep(0.5)
    print("\nthe sink did not catch up in time", file=sys.stderr)
    return False


def summary(engine: sa.engine.Engine, bootstrap: str) -> None:
    ends = log_end_offsets(bootstrap)
    positions = stored(engine)
    print(f"\nrows in {SCHEMA}.{TABLE}: {row_count(engine)}")
    print(f"offsets stored in the comment of {SCHEMA}.{STATE_TABLE}:")
    print("partition  stored next offset  log end offset  lag")
    for p in sorted(ends):
        print(
            f"{p:>9}  {positions.get(p, 0):>18}  {ends[p]:>14}  {ends[p] - positions.get(p, 0):>3}"
        )
    with engine.connect() as conn:
        sample = conn.execute(
            sa.text(
                "SELECT id, key, ts, amount, status, tags"
                f" FROM {SCHEMA}.{TABLE} ORDER BY id DESC LIMIT 3"
            )
        ).all()
    print("latest rows:")
    for id_, key, ts, amount, status, tags in sample:
        print(f"  {id_:>6}  {key:<15}  {ts.isoformat()}  {amount:>8}  {status or '-':<9}  {tags}")


if __name__ == "__main__":
    sys.exit(main())
