"""Endpoints of the real PostgreSQL, Kafka and schema registry the integration tests run against.

Endpoints come from SINK_TEST_DATABASE_URL, SINK_TEST_KAFKA_BOOTSTRAP and
SINK_TEST_SCHEMA_REGISTRY_URL (printed by `deploy/local/services.sh env`); without the first two,
containers are started when a Docker engine answers; otherwise integration tests fail with the
command that starts the services. A test that needs the schema registry fails without it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

START_SERVICES = 'make services-up && eval "$(deploy/local/services.sh env)"'
RUN_TESTS = "make test"
INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def _docker_answers() -> bool:
    """True when a Docker engine answers a ping on its socket (DOCKER_HOST or the default one)."""
    import socket

    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True  # a remote engine: let testcontainers try it and report its own error
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(3)
            sock.connect(host[len("unix://") :])
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b" 200 " in sock.recv(64)
    except OSError:
        return False


class _Services:
    """Resolves endpoints once per session; starts containers only when asked for them."""

    def __init__(self) -> None:
        self._database_url = os.environ.get("SINK_TEST_DATABASE_URL")
        self._bootstrap = os.environ.get("SINK_TEST_KAFKA_BOOTSTRAP")
        self._containers: list[object] = []

    def _missing(self, what: str) -> None:
        pytest.fail(
            f"no {what} for the integration tests: SINK_TEST_DATABASE_URL and "
            f"SINK_TEST_KAFKA_BOOTSTRAP are not set and no Docker engine answers. "
            f"Run the suite with `{RUN_TESTS}` (it starts them), or start them with: "
            f"{START_SERVICES}",
            pytrace=False,
        )

    def _reachable(self, what: str, host: str, port: int) -> None:
        import socket

        try:
            socket.create_connection((host, port), timeout=3).close()
        except OSError as exc:
            pytest.fail(
                f"{what} at {host}:{port} does not answer ({exc}). "
                f"Start the local services with: {START_SERVICES}",
                pytrace=False,
            )

    def database_url(self) -> str:
        if self._database_url is None:
            if not _docker_answers():
                self._missing("PostgreSQL")
            from testcontainers.postgres import PostgresContainer

            container = PostgresContainer("postgres:16", driver=None).start()
            self._containers.append(container)
            self._database_url = container.get_connection_url()
        url = sa.engine.make_url(self._database_url)
        self._reachable("PostgreSQL", url.host or "127.0.0.1", url.port or 5432)
        return self._database_url

    def kafka_bootstrap(self) -> str:
        if self._bootstrap is None:
            if not _docker_answers():
                self._missing("Kafka broker")
            from testcontainers.kafka import KafkaContainer

            container = KafkaContainer().with_kraft().start()
            self._containers.append(container)
            self._bootstrap = container.get_bootstrap_server()
        host, _, port = self._bootstrap.split(",")[0].rpartition(":")
        self._reachable("Kafka", host, int(port))
        return self._bootstrap

    def stop(self) -> None:
        for container in self._containers:
            container.stop()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def services() -> Iterator[_Services]:
    found = _Services()
    yield found
    found.stop()


@pytest.fixture(scope="session")
def database_url(services: _Services) -> str:
    """libpq URL of the test database (postgresql://user:password@host:port/db)."""
    return services.database_url()


def sqlalchemy_url(database_url: str, driver: str = "psycopg") -> str:
    return database_url.replace("postgresql://", f"postgresql+{driver}://", 1)


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[sa.engine.Engine]:
    eng = sa.create_engine(sqlalchemy_url(database_url), future=True)
    yield eng
    eng.dispose()


@pytest.fixture
def schema(engine: sa.engine.Engine) -> Iterator[str]:
    """A fresh, empty schema for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    yield name
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


@pytest.fixture(scope="session")
def kafka_bootstrap(services: _Services) -> str:
    return services.kafka_bootstrap()


@pytest.fixture(scope="session")
def schema_registry_url() -> str:
    """The schema registry's Confluent-compatible API (Apicurio's /apis/ccompat/v7), from
    SINK_TEST_SCHEMA_REGISTRY_URL; a test that needs it fails without it, never skips."""
    import urllib.error
    import urllib.request

    url = os.environ.get("SINK_TEST_SCHEMA_REGISTRY_URL")
    if not url:
        pytest.fail(
            "no schema registry for the integration tests: SINK_TEST_SCHEMA_REGISTRY_URL is not "
            f"set. Run the suite with `{RUN_TESTS}`, or start the services with: {START_SERVICES}",
            pytrace=False,
        )
    try:
        with urllib.request.urlopen(f"{url}/subjects", timeout=5) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        pytest.fail(
            f"the schema registry at {url} does not answer ({exc}). "
            f"Start the local services with: {START_SERVICES}",
            pytrace=False,
        )
    return url


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Creates fresh topics for one test: `new_topic(partitions=6)` returns the name."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def create(partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = f"t-{uuid.uuid4().hex[:12]}"
        future = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})]
        )[name]
        future.result(timeout=30)
        created.append(name)
        return name

    yield create
    if created:
        for future in admin.delete_topics(created).values():
            future.result(timeout=30)
