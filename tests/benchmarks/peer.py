"""The peer: Kafka Connect (standalone) with the Debezium JDBC sink connector, fed the same events
in the JSON schema envelope it needs, timed the same way as the sink (process start until the
table holds every event). Its jars come from Maven Central into the git-ignored .cache/."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import sqlalchemy as sa

from tests import maven
from tests.events import events
from tests.integration.sink.harness import produce

from .cdc import Changes
from .measure import (
    PARTITIONS,
    REPO,
    BenchmarkError,
    Result,
    Watched,
    create_topic,
    inserted_estimate,
    row_count,
    time_until_complete,
    timeout_for,
)

HERE = Path(__file__).resolve().parent / "connect"
CACHE = REPO / ".cache" / "bench-connect"
LIBS = CACHE / "libs"
# Connect's own launcher script defaults (bin/connect-standalone.sh: KAFKA_HEAP_OPTS).
JVM_HEAP = ("-Xms256m", "-Xmx2g")
MODES = ("insert", "upsert")
SYSTEM = "kafka-connect+debezium-jdbc"
STRING_CONVERTER = "org.apache.kafka.connect.storage.StringConverter"
JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"


@dataclass(frozen=True)
class Tuning:
    """The knobs that decide the connector's speed."""

    label: str
    batch_size: int  # the connector's batch.size
    poll_records: int  # its consumer's max.poll.records
    partition_fetch_bytes: int  # its consumer's max.partition.fetch.bytes
    rewrite_batched_inserts: bool  # pgjdbc's reWriteBatchedInserts


# What a user tuning for throughput sets: the sink's default batch size, polls that fill a batch,
# multi-row INSERTs. The targets are measured against this one.
TUNED = Tuning("tuned", 10_000, 10_000, 10 * 1024 * 1024, rewrite_batched_inserts=True)
# The documented defaults of the connector (batch.size), the consumer and the driver.
DEFAULTS = Tuning("defaults", 500, 500, 1024 * 1024, rewrite_batched_inserts=False)

# The event as a Connect Struct. Where a column's type has no Connect type, the field carries
# the logical name the Debezium connector binds with a cast (ZonedTimestamp -> timestamptz,
# Json -> the column's json/jsonb); NUMERIC goes as text, which PostgreSQL casts on insert.
VALUE_SCHEMA: dict[str, object] = {
    "type": "struct",
    "name": "bench.event",
    "optional": False,
    "fields": [
        {"field": "id", "type": "int64", "optional": False},
        {"field": "key", "type": "string", "optional": True},
        {
            "field": "ts",
            "type": "string",
            "optional": True,
            "name": "io.debezium.time.ZonedTimestamp",
        },
        {"field": "amount", "type": "string", "optional": True},
        {"field": "status", "type": "string", "optional": True},
        {"field": "payload", "type": "string", "optional": True, "name": "io.debezium.data.Json"},
        {
            "field": "tags",
            "type": "array",
            "items": {"type": "string", "optional": False},
            "optional": True,
        },
    ],
}
_SCHEMA_PREFIX = b'{"schema":' + orjson.dumps(VALUE_SCHEMA) + b',"payload":'

# The same columns the sink's config declares (tests.events.EVENT_COLUMNS_TOML).
TABLE_COLUMNS = """
    id BIGINT NOT NULL,
    key VARCHAR(64),
    ts TIMESTAMPTZ,
    amount NUMERIC(12,2),
    status VARCHAR(16),
    payload JSONB,
    tags TEXT[]
"""


# --- the connector's jars ----------------------------------------------------------------------


def ensure_libs() -> Path:
    """Resolves Connect, the connector and the driver once per pom.xml; returns the jar folder."""
    if not any(LIBS.glob(".complete-*")):
        print(f"  resolving Kafka Connect and the JDBC sink connector from Maven Central ({CACHE})")
    try:
        return maven.resolve(HERE, LIBS)
    except maven.MavenError as error:
        raise BenchmarkError(f"the peer: {error}") from None


def versions() -> dict[str, str]:
    """Versions of the parts of the peer, read from the resolved jar names."""
    wanted = {
        "kafka-connect": "connect-runtime-",
        "debezium-connector-jdbc": "debezium-connector-jdbc-",
        "hibernate": "hibernate-core-",
        "pgjdbc": "postgresql-",
    }
    found: dict[str, str] = {}
    for jar in sorted(LIBS.glob("*.jar")):
        for label, prefix in wanted.items():
            if jar.name.startswith(prefix) and jar.name[len(prefix)].isdigit():
                found[label] = jar.name[len(prefix) : -len(".jar")]
    return found


# --- its input ---------------------------------------------------------------------------------


def enveloped(value: bytes) -> bytes:
    """One event as Connect's JsonConverter reads it: `{"schema": ..., "payload": ...}`."""
    record = orjson.loads(value)
    record["payload"] = orjson.dumps(record["payload"]).decode()
    return _SCHEMA_PREFIX + orjson.dumps(record) + b"}"


def enveloped_events(count: int) -> Iterator[tuple[bytes, bytes]]:
    for key, value in events(count):
        yield key, enveloped(value)


def produce_topic(bootstrap: str, topic: str, count: int) -> float:
    """Creates the peer's topic and fills it with the enveloped events; returns seconds taken."""
    started = time.monotonic()
    create_topic(bootstrap, topic)
    produce(bootstrap, topic, enveloped_events(count), partitions=PARTITIONS)
    return time.monotonic() - started


def create_table(engine: sa.engine.Engine, schema: str, table: str, *, primary_key: bool) -> None:
    pk = ",\n    PRIMARY KEY (id)" if primary_key else ""
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        conn.execute(sa.text(f'CREATE TABLE "{schema}"."{table}" ({TABLE_COLUMNS}{pk})'))


# --- one timed run -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fill(template: str, out: Path, fields: dict[str, str]) -> Path:
    text = (HERE / template).read_text()
    for name, value in fields.items():
        text = text.replace(f"@{name}@", value)
    out.write_text(text)
    return out


def _jdbc(database_url: str, tuning: Tuning) -> tuple[str, str, str]:
    url = sa.engine.make_url(database_url)
    options = "stringtype=unspecified"
    if tuning.rewrite_batched_inserts:
        options += "&reWriteBatchedInserts=true"
    jdbc = f"jdbc:postgresql://{url.host}:{url.port or 5432}/{url.database}?{options}"
    return jdbc, url.username or "", url.password or ""


def run(
    mode: str,
    *,
    bootstrap: str,
    database_url: str,
    engine: sa.engine.Engine,
    topic: str,
    events_count: int,
    schema: str,
    run_dir: Path,
    tuning: Tuning = TUNED,
    timeout: float | None = None,
    changes: Changes | None = None,
) -> Result:
    """Runs Connect with the connector in `mode` (insert or upsert) over the whole topic: one
    row per event, or with `changes`, Debezium change events applied by the record key."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    libs = ensure_libs()
    # Each run its own table, folder and connector name (hence consumer group): runs repeat.
    label = f"{mode}-{tuning.label}-{uuid.uuid4().hex[:6]}"
    table = f"peer_{label}".replace("-", "_")
    create_table(engine, schema, table, primary_key=mode == "upsert")
    work = run_dir / f"connect-{label}"
    work.mkdir(parents=True)
    jdbc, user, password = _jdbc(database_url, tuning)
    worker = _fill(
        "worker.properties",
        work / "worker.properties",
        {
            "BOOTSTRAP": bootstrap,
            "RUN_DIR": str(work),
            "REST_PORT": str(_free_port()),
            "KEY_CONVERTER": JSON_CONVERTER if changes else STRING_CONVERTER,
            "POLL_RECORDS": str(tuning.poll_records),
            "PARTITION_FETCH_BYTES": str(tuning.partition_fetch_bytes),
        },
    )
    connector = _fill(
        "jdbc-sink.properties",
        work / "jdbc-sink.properties",
        {
            "NAME": f"bench-{label}-{run_dir.name}",
            "TASKS": "1",
            "TOPIC": topic,
            "JDBC_URL": jdbc,
            "USER": user,
            "PASSWORD": password,
            "INSERT_MODE": mode,
            "PK_MODE": "record_key" if changes else "record_value" if mode == "upsert" else "none",
            "DELETE": "true" if changes else "false",
            "REDUCTION": "true" if changes else "false",
            "TABLE": f"{schema}.{table}",
            "BATCH": str(tuning.batch_size),
        },
    )
    log4j = _fill(
        "log4j2.properties", work / "log4j2.properties", {"LOG": str(work / "connect.log")}
    )
    argv = [
        "java",
        *JVM_HEAP,
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        f"{libs}/*",
        "org.apache.kafka.connect.cli.ConnectStandalone",
        str(worker),
        str(connector),
    ]
    started = time.monotonic()
    proc = Watched(argv, work / "stdout.log")
    try:
        timing = time_until_complete(
            [proc],
            started,
            rows=lambda: row_count(engine, schema, table),
            estimate=lambda: inserted_estimate(engine, schema, table),
            expected=len(changes.amounts) if changes else events_count,
            also_done=(lambda: changes.applied(engine, schema, table)) if changes else lambda: True,
            timeout=timeout or timeout_for(events_count),
            what=f"Kafka Connect JDBC sink ({mode}); connector log: {work / 'connect.log'}",
        )
    finally:
        proc.stop()
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{schema}"."{table}"'))
    return Result(
        section="cdc" if changes else "e2e",
        system=SYSTEM,
        mode="append" if mode == "insert" else "upsert",
        events=events_count,
        batch=tuning.batch_size,
        seconds=timing.seconds,
        first_row_seconds=timing.first_row_seconds,
        rate=events_count / timing.seconds,
        peak_rss_mb=timing.peak_rss_mb,
        note=f"insert.mode={mode}{', delete.enabled' if changes else ''}, settings: "
        f"{tuning.label}, at-least-once",
        extra={"rows": timing.rows, "half_ratio": timing.half_ratio},
    )
