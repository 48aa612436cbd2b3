"""The real source side of a Debezium replication: a PostgreSQL cluster of its own with
`wal_level = logical`, and a Kafka Connect standalone worker running Debezium's PostgreSQL source
connector into the local broker. The jars come from Maven Central into the git-ignored .cache/.
"""

from __future__ import annotations

import json
import os
import random
import re
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
# Connect's JVM answers in ~10 s on an idle 2-core machine; several times that when a full test
# run, or a neighbour's, keeps both cores busy.
CONNECT_START_SECONDS = 240
# A connector starts (and snapshots a few thousand rows) in seconds when idle.
CONNECTOR_START_SECONDS = 180
CLUSTER_START_SECONDS = 120
STOP_GRACE_SECONDS = 20
# Connect commits the source offsets (and Debezium confirms the slot's LSN) this often.
OFFSET_FLUSH_MS = 1000
SOURCE_USER = "source"
SOURCE_PASSWORD = "source"
SOURCE_DATABASE = "source"
TOP_PREFIX = "debezium-source-pg-"
# A folder that does not name the run that made it (made before runs named themselves) is taken
# for a leftover only once it is this old: it may be a concurrent run's, still being set up.
LEFTOVER_AGE_SECONDS = 3600
# The cluster's port is chosen below the kernel's ephemeral range, where no outgoing connection
# and no bind to port 0 (such as the sink's HTTP server) can take it between the check and
# PostgreSQL's own bind; a port taken anyway by another explicit chooser is retried.
PORT_RANGE = (20000, 32000)
PORT_ATTEMPTS = 5


class SourceError(Exception):
    """The source side could not be set up; the message says what is missing or failed."""


def _owned(argv: list[str], *, death_signal: str, as_postgres: bool = False) -> list[str]:
    """`argv` run so that it gets `death_signal` when the test process dies, however it dies (a
    killed test run leaves no cluster or JVM behind); with `as_postgres`, as Debian's postgres
    user when we are root (initdb and postgres refuse to run as root)."""
    prefix = ["setpriv", f"--pdeathsig={death_signal}"]
    if as_postgres and os.geteuid() == 0:
        prefix += ["--reuid=postgres", "--regid=postgres", "--init-groups"]
    return [*prefix, "--", *argv]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def unused_port() -> int:
    """A loopback port in PORT_RANGE that nothing listens on or uses now."""
    for _ in range(100):
        port = random.randrange(*PORT_RANGE)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SourceError(f"no free loopback port in {PORT_RANGE}")


def _run(argv: list[str], what: str, log: Path) -> None:
    with log.open("ab") as out:
        code = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT, cwd="/", timeout=120)
    if code != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise SourceError(f"{what} failed (exit {code}); log: {log}\n{tail}")


def _pid_alive(pid_file: Path) -> bool:
    return pid_file.exists() and _alive(int(pid_file.read_text().split()[0]))


def _remove_leftovers() -> None:
    """Removes the cluster folders of earlier runs that died before their cleanup: the run that
    made one is gone (or, for a folder that does not name it, the folder is old) and no
    postmaster runs there."""
    for top in Path(tempfile.gettempdir()).glob(f"{TOP_PREFIX}*"):
        owner = top / "owner"
        try:
            if owner.exists():
                if _pid_alive(owner):
                    continue
            elif time.time() - top.stat().st_mtime < LEFTOVER_AGE_SECONDS:
                continue
            if _pid_alive(top / "data" / "postmaster.pid"):
                continue
        except (OSError, ValueError, IndexError):
            continue
        shutil.rmtree(top, ignore_errors=True)


def _start_postgres(data: Path, top: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The postmaster, as a child of this process, accepting connections; and its port."""
    for _ in range(PORT_ATTEMPTS):
        port = unused_port()
        options = {
            "listen_addresses": "127.0.0.1",
            "port": port,
            "unix_socket_directories": top,
            "wal_level": "logical",
            "max_replication_slots": 4,
            "max_wal_senders": 4,
            "fsync": "off",
        }
        argv = [str(PG_BIN / "postgres"), "-D", str(data)]
        argv += [arg for name, value in options.items() for arg in ("-c", f"{name}={value}")]
        with log.open("ab") as out:
            # SIGQUIT: an immediate shutdown, the postmaster taking its backends with it.
            server = subprocess.Popen(
                _owned(argv, death_signal="QUIT", as_postgres=True),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd="/",
            )
        admin = f"postgresql://{SOURCE_USER}:{SOURCE_PASSWORD}@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + CLUSTER_START_SECONDS
        taken = False
        while server.poll() is None and time.monotonic() < deadline:
            try:
                with psycopg.connect(admin, connect_timeout=5) as conn:
                    found = conn.execute("SELECT current_setting('data_directory')").fetchone()
            except psycopg.OperationalError:
                time.sleep(0.2)
                continue
            # Not another run's cluster that took the port while ours failed to bind it.
            if found is not None and Path(str(found[0])) == data and server.poll() is None:
                return server, port
            taken = True
            break
        _stop_postgres(server)
        tail = log.read_text(errors="replace")[-2000:]
        taken = taken or "could not bind" in tail or "already in use" in tail
        if not taken:
            raise SourceError(
                f"the source cluster did not accept connections on port {port} within "
                f"{CLUSTER_START_SECONDS} s (exit code {server.returncode}); log: {log}\n{tail}"
            )
    raise SourceError(f"the source cluster found no free port in {PORT_ATTEMPTS} tries: {log}")


def _stop_postgres(server: subprocess.Popen[bytes]) -> None:
    # SIGINT: a fast shutdown; SIGQUIT if that takes too long.
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
        if server.poll() is not None:
            return
        server.send_signal(sig)
        try:
            server.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def source_cluster() -> Iterator[SourceDatabase]:
    """A disposable PostgreSQL 15 cluster for logical replication on a free loopback port,
    stopped and removed afterwards (and stopped even if this process is killed)."""
    for program in ("initdb", "postgres"):
        if not (PG_BIN / program).exists():
            raise SourceError(
                f"{PG_BIN / program} not found: install Debian's PostgreSQL 15 server "
                f"(apt-get install postgresql-15)"
            )
    _remove_leftovers()
    # Not under pytest's private temporary folders: the postgres user must reach it.
    top = Path(tempfile.mkdtemp(prefix=TOP_PREFIX))
    try:
        (top / "owner").write_text(f"{os.getpid()}\n")
        top.chmod(0o755)
        data, log = top / "data", top / "server.log"
        if os.geteuid() == 0:
            shutil.chown(top, "postgres", "postgres")
        pwfile = top / "pwfile"
        pwfile.write_text(SOURCE_PASSWORD + "\n")
        pwfile.chmod(0o644)
        setup_log = top / "initdb.log"
        initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", SOURCE_USER]
        initdb += [f"--pwfile={pwfile}", "-A", "scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"]
        _run(
            _owned(initdb, death_signal="KILL", as_postgres=True),
            "initdb of the source cluster",
            setup_log,
        )
        server, port = _start_postgres(data, top, log)
        try:
            database = SourceDatabase("127.0.0.1", port)
            admin_url = database.url.rsplit("/", 1)[0] + "/postgres"
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {SOURCE_DATABASE}")
            yield database
        finally:
            _stop_postgres(server)
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


# Connect's own lines at WARN, the connector's at INFO (its start, snapshot and errors), and the
# REST server's line that says which port it took.
_LOG4J = """rootLogger.level=WARN
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName={log}
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.debezium.name=io.debezium
logger.debezium.level=INFO
logger.rest.name=org.apache.kafka.connect.runtime.rest.RestServer
logger.rest.level=INFO
"""
_LISTENING = re.compile(r"REST server listening at (http://[0-9.]+:[0-9]+)")


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
    REST API (the JVM's start is most of a connector's start). Its log goes to `work`. Use it
    through `connect_worker`, which stops it whatever happens."""

    def __init__(self, work: Path, bootstrap: str) -> None:
        libs = ensure_libs()
        if not JAVA.exists():
            raise SourceError(f"{JAVA} not found: install Java 17 (apt-get install openjdk-17-jre)")
        work.mkdir(parents=True, exist_ok=True)
        self.log_path = work / "connect.log"
        self.url = ""  # known once the REST server says where it listens
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
                    # Port 0: the kernel picks a free one as the server binds, so no other
                    # process can take it first; the log line says which.
                    "listeners": "http://127.0.0.1:0",
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
        java = [
            str(JAVA),
            "-Xms256m",
            "-Xmx1g",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{libs}/*",
            "org.apache.kafka.connect.cli.ConnectStandalone",
            str(worker),
        ]
        self.proc = subprocess.Popen(
            _owned(java, death_signal="KILL"), cwd=work, stdout=self._out, stderr=subprocess.STDOUT
        )

    def tail(self, chars: int = 4000) -> str:
        """The end of the worker's log (and of its console output, if any)."""
        self._out.flush()
        parts = [
            f"--- {path} (last {chars} characters)\n" + path.read_text(errors="replace")[-chars:]
            for path in (self.log_path, Path(self._out.name))
            if path.exists() and path.stat().st_size
        ]
        return "\n".join(parts)

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

    def wait_ready(self, timeout: float = CONNECT_START_SECONDS) -> None:
        """Until the REST API answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if not self.url and self.log_path.exists():
                found = _LISTENING.search(self.log_path.read_text(errors="replace"))
                self.url = found.group(1) if found else ""
            try:
                if self.url:
                    self._request("GET", "/connectors")
                    return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        state = f"its REST server at {self.url}" if self.url else "no REST server in its log yet"
        raise SourceError(
            f"Kafka Connect did not answer in {timeout:.0f} s ({state})\n{self.tail()}"
        )

    def add(self, name: str, settings: Mapping[str, object]) -> None:
        """Starts a connector; returns once it and its task run, raises SourceError if not."""
        config = {key: str(value) for key, value in {"name": name, **settings}.items()}
        self._request("PUT", f"/connectors/{name}/config", config)
        deadline = time.monotonic() + CONNECTOR_START_SECONDS
        while time.monotonic() < deadline:
            if self.status(name) == "RUNNING":
                return
            time.sleep(0.3)
        raise SourceError(
            f"the connector {name} was not running after {CONNECTOR_START_SECONDS} s; "
            f"its status: {self.describe(name)}\n{self.tail()}"
        )

    def describe(self, name: str) -> str:
        """The connector's status as the REST API gives it, for messages."""
        try:
            return json.dumps(self._request("GET", f"/connectors/{name}/status"))[:3000]
        except (urllib.error.URLError, OSError) as error:
            return f"unknown ({error})"

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
        if self.proc.poll() is not None or not self.url:
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


@contextmanager
def connect_worker(work: Path, bootstrap: str) -> Iterator[ConnectWorker]:
    """A started Connect worker whose REST API answers; stopped on the way out, however the
    way out goes (a failed start, a test's failure, a timeout)."""
    worker = ConnectWorker(work, bootstrap)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


def wait_streaming(source: SourceDatabase, slot: str, timeout: float = 120) -> None:
    """Until the connector reads its replication slot: every change from now on is streamed."""
    deadline = time.monotonic() + timeout
    found: tuple[object, ...] | None = None
    with source.connect() as conn:
        while time.monotonic() < deadline:
            found = conn.execute(
                "SELECT active, active_pid, confirmed_flush_lsn FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (slot,),
            ).fetchone()
            if found is not None and found[0]:
                return
            time.sleep(0.2)
    seen = "no such slot" if found is None else f"active, pid, confirmed LSN = {found}"
    raise SourceError(f"the replication slot {slot} was not read within {timeout:.0f} s ({seen})")
