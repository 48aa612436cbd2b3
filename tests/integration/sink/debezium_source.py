"""The real source side of a Debezium replication: a PostgreSQL cluster of its own with
`wal_level = logical`, and a Kafka Connect standalone worker running Debezium's PostgreSQL source
connector into the local broker. The jars come from Maven Central into the git-ignored .cache/.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests import maven

from .harness import REPO

PG_BIN = Path("/usr/lib/postgresql/15/bin")
# Connect 4.1 and Debezium 3.6 are built for Java 17 (class files of version 61).
JAVA = Path("/usr/bin/java")
HERE = Path(__file__).resolve().parent / "debezium_connect"
CACHE = REPO / ".cache" / "debezium-source"
LIBS = CACHE / "libs"
# Connect's JVM answers in ~15 s here and a connector starts in a few; generous for a busy machine.
CONNECTOR_START_SECONDS = 120
STOP_GRACE_SECONDS = 20
# Connect commits the source offsets (and Debezium confirms the slot's LSN) this often.
OFFSET_FLUSH_MS = 1000
SOURCE_USER = "source"
SOURCE_PASSWORD = "source"
SOURCE_DATABASE = "source"


class SourceError(Exception):
    """The source side could not be set up; the message says what is missing or failed."""


# --- the source cluster ------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceDatabase:
    host: str
    port: int

    @property
    def url(self) -> str:
        return (
            f"postgresql://{SOURCE_USER}:{SOURCE_PASSWORD}@{self.host}:{self.port}/"
            f"{SOURCE_DATABASE}"
        )

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url, autocommit=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_pg_owner(argv: list[str]) -> list[str]:
    # initdb refuses to run as root: run PostgreSQL as Debian's postgres user when we are root.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _run(argv: list[str], what: str, log: Path) -> None:
    with log.open("ab") as out:
        code = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT, cwd="/", timeout=120)
    if code != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise SourceError(f"{what} failed (exit {code}); log: {log}\n{tail}")


@contextmanager
def source_cluster() -> Iterator[SourceDatabase]:
    """A disposable PostgreSQL 15 cluster for logical replication on a free loopback port,
    stopped and removed afterwards."""
    for program in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / program).exists():
            raise SourceError(
                f"{PG_BIN / program} not found: install Debian's PostgreSQL 15 server "
                f"(apt-get install postgresql-15)"
            )
    # Not under pytest's private temporary folders: the postgres user must reach it.
    top = Path(tempfile.mkdtemp(prefix="debezium-source-pg-"))
    top.chmod(0o755)
    data, log, port = top / "data", top / "server.log", free_port()
    if os.geteuid() == 0:
        shutil.chown(top, "postgres", "postgres")
    pwfile = top / "pwfile"
    pwfile.write_text(SOURCE_PASSWORD + "\n")
    pwfile.chmod(0o644)
    setup_log = CACHE.parent / "debezium-source-initdb.log"
    setup_log.parent.mkdir(parents=True, exist_ok=True)
    setup_log.write_text("")
    try:
        _run(
            _as_pg_owner(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    SOURCE_USER,
                    f"--pwfile={pwfile}",
                    "-A",
                    "scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            ),
            "initdb of the source cluster",
            setup_log,
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={top} "
            "-c wal_level=logical -c max_replication_slots=4 -c max_wal_senders=4 -c fsync=off"
        )
        _run(
            _as_pg_owner(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    options,
                    "start",
                ]
            ),
            f"starting the source cluster (server log: {log})",
            setup_log,
        )
        try:
            database = SourceDatabase("127.0.0.1", port)
            admin_url = database.url.rsplit("/", 1)[0] + "/postgres"
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {SOURCE_DATABASE}")
            yield database
        finally:
            _run(
                _as_pg_owner([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                "stopping the source cluster",
                setup_log,
            )
    finally:
        shutil.rmtree(top, ignore_errors=True)


# --- Kafka Connect with the connector ----------------------------------------------------------


def ensure_libs() -> Path:
    """Resolves Connect and the connector once per pom.xml; returns the jar folder."""
    try:
        return maven.resolve(HERE, LIBS)
    except maven.MavenError as error:
        raise SourceError(f"Debezium: {error}") from None


def _properties(values: Mapping[str, object]) -> str:
    return "".join(f"{name}={value}\n" for name, value in values.items())


# Connect's own lines at WARN, the connector's at INFO: its start, snapshot and errors.
_LOG4J = """rootLogger.level=WARN
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName={log}
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.debezium.name=io.debezium
logger.debezium.level=INFO
"""


JSON_CONVERTERS: Mapping[str, object] = {
    "key.converter": "org.apache.kafka.connect.json.JsonConverter",
    "key.converter.schemas.enable": "true",
    "value.converter": "org.apache.kafka.connect.json.JsonConverter",
    "value.converter.schemas.enable": "true",
}


def connector_settings(
    source: SourceDatabase,
    *,
    prefix: str,
    table: str,
    slot: str,
    converters: Mapping[str, object] = JSON_CONVERTERS,
) -> dict[str, object]:
    """Debezium's PostgreSQL source connector for one table (JSON with schemas by default)."""
    return {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": 1,
        "database.hostname": source.host,
        "database.port": source.port,
        "database.user": SOURCE_USER,
        "database.password": SOURCE_PASSWORD,
        "database.dbname": SOURCE_DATABASE,
        "topic.prefix": prefix,
        "plugin.name": "pgoutput",
        "slot.name": slot,
        "publication.name": f"{slot}_publication",
        "publication.autocreate.mode": "filtered",
        "table.include.list": table,
        "snapshot.mode": "initial",
        "decimal.handling.mode": "precise",
        "time.precision.mode": "adaptive_time_microseconds",
        **converters,
        # The slot goes with the connector: each test streams through a slot of its own.
        "slot.drop.on.stop": "true",
    }


def avro_converters(registry_url: str) -> dict[str, object]:
    """Connector settings for Avro through Apicurio Registry, in the wire format Confluent's
    serializers write (a magic byte and the schema's 4-byte id, which the Confluent-compatible
    API serves as the content id) rather than Apicurio's ids in headers. `registry_url` is the
    Confluent-compatible API (.../apis/ccompat/v7); the converter speaks Apicurio's own."""
    native = registry_url.split("/apis/", 1)[0] + "/apis/registry/v2"
    settings: dict[str, object] = {}
    for part in ("key", "value"):
        converter = f"{part}.converter"
        settings |= {
            converter: "io.apicurio.registry.utils.converter.AvroConverter",
            f"{converter}.apicurio.registry.url": native,
            f"{converter}.apicurio.registry.auto-register": "true",
            f"{converter}.apicurio.registry.find-latest": "true",
            f"{converter}.apicurio.registry.headers.enabled": "false",
            f"{converter}.apicurio.registry.as-confluent": "true",
            f"{converter}.apicurio.registry.use-id": "contentId",
        }
    return settings


class ConnectWorker:
    """A Connect standalone worker, started without connectors: each test adds its own over the
    REST API (the JVM's start is most of a connector's start). Its log goes to `work`."""

    def __init__(self, work: Path, bootstrap: str) -> None:
        libs = ensure_libs()
        if not JAVA.exists():
            raise SourceError(f"{JAVA} not found: install Java 17 (apt-get install openjdk-17-jre)")
        work.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = work / "connect.log"
        self.url = f"http://127.0.0.1:{self.port}"
        worker = work / "worker.properties"
        worker.write_text(
            _properties(
                {
                    "bootstrap.servers": bootstrap,
                    # The worker's defaults; each connector names its own converters.
                    "key.converter": "org.apache.kafka.connect.json.JsonConverter",
                    "value.converter": "org.apache.kafka.connect.json.JsonConverter",
                    "offset.storage.file.filename": work / "connect.offsets",
                    "offset.flush.interval.ms": OFFSET_FLUSH_MS,
                    "listeners": self.url,
                    "rest.advertised.host.name": "127.0.0.1",
                    # The connector is on the classpath; found through its ServiceLoader
                    # manifests (KIP-898) rather than by scanning every jar.
                    "plugin.discovery": "service_load",
                }
            )
        )
        log4j = work / "log4j2.properties"
        log4j.write_text(_LOG4J.format(log=self.log_path))
        self._out = (work / "stdout.log").open("ab")
        self.proc = subprocess.Popen(
            [
                str(JAVA),
                "-Xms256m",
                "-Xmx1g",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j}",
                "-cp",
                f"{libs}/*",
                "org.apache.kafka.connect.cli.ConnectStandalone",
                str(worker),
            ],
            cwd=work,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def tail(self, chars: int = 4000) -> str:
        self._out.flush()
        return "".join(
            path.read_text(errors="replace")[-chars:]
            for path in (self.log_path, Path(self._out.name))
            if path.exists()
        )

    def _request(self, method: str, path: str, body: object = None) -> object:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else None

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise SourceError(
                f"Kafka Connect exited with {self.proc.returncode}; log: {self.log_path}\n"
                f"{self.tail()}"
            )

    def wait_ready(self, timeout: float = CONNECTOR_START_SECONDS) -> None:
        """Until the REST API answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                self._request("GET", "/connectors")
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        raise SourceError(f"Kafka Connect did not answer in {timeout:.0f} s\n{self.tail()}")

    def add(self, name: str, settings: Mapping[str, object]) -> None:
        """Starts a connector; returns once it and its task run, raises SourceError if not."""
        config = {key: str(value) for key, value in {"name": name, **settings}.items()}
        self._request("PUT", f"/connectors/{name}/config", config)
        deadline = time.monotonic() + CONNECTOR_START_SECONDS
        while time.monotonic() < deadline:
            status = self.status(name)
            if status == "RUNNING":
                return
            time.sleep(0.3)
        raise SourceError(f"the connector {name} did not start\n{self.tail()}")

    def status(self, name: str) -> str | None:
        """RUNNING when the connector and its tasks run, None while they start; raises
        SourceError with the trace when one failed or the worker died."""
        self._check_alive()
        try:
            found = self._request("GET", f"/connectors/{name}/status")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise
        assert isinstance(found, dict)
        states = [found["connector"]["state"]] + [task["state"] for task in found["tasks"]]
        if "FAILED" in states:
            raise SourceError(f"the connector {name} failed: {json.dumps(found)[:6000]}")
        return "RUNNING" if found["tasks"] and set(states) == {"RUNNING"} else None

    def remove(self, name: str) -> None:
        """Stops and removes a connector, if it was added and the worker still runs."""
        if self.proc.poll() is not None:
            return
        try:
            self._request("DELETE", f"/connectors/{name}")
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()


def wait_streaming(source: SourceDatabase, slot: str, timeout: float = 60) -> None:
    """Until the connector reads its replication slot: every change from now on is streamed."""
    deadline = time.monotonic() + timeout
    with source.connect() as conn:
        while time.monotonic() < deadline:
            active = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            if active is not None and active[0]:
                return
            time.sleep(0.2)
    raise SourceError(f"the replication slot {slot} was not read within {timeout:.0f} s")
