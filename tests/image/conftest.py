"""The built image run for real: podman runs it against the local services, Prometheus scrapes it.

These tests run only when named (`pytest tests/image`, which `make image-test` does after
building the image): they need podman, Prometheus' binaries and minutes, none of which the
main suite should depend on. The image is `$SINK_TEST_IMAGE` (default
localhost/pg-kafka-sink:test, what deploy/podman/build-image.sh tags).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PODMAN = REPO / "deploy" / "podman" / "podman.sh"
IMAGE = os.environ.get("SINK_TEST_IMAGE", "localhost/pg-kafka-sink:test")
# The pod's terminationGracePeriodSeconds; `podman stop` waits this long before SIGKILL.
STOP_GRACE_SECONDS = 45


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leaves tests/image out of runs that do not name it (the main suite's `pytest`)."""
    named = [Path(arg.split("::")[0]).resolve() for arg in config.args]
    if any(path == HERE or HERE in path.parents for path in named):
        return None
    return collection_path == HERE or HERE in collection_path.parents


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PODMAN), *args], check=check, capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install Debian's package (apt-get install prometheus)")
    return found


@dataclass
class Container:
    """A detached sink container, by name."""

    name: str
    port: int

    def state(self) -> dict[str, str]:
        fields = "{{.State.Status}} {{.State.ExitCode}}"
        status, code = podman("inspect", "--format", fields, self.name).stdout.split()
        return {"status": status, "exit_code": code}

    def running(self) -> bool:
        return self.state()["status"] == "running"

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return (result.stdout + result.stderr)[-4000:]

    def kill(self) -> None:
        podman("kill", self.name)
        podman("wait", self.name)

    def remove(self) -> None:
        podman("rm", "--force", "--time", "0", self.name, check=False)


@dataclass(frozen=True)
class Endpoints:
    database_url: str
    bootstrap: str


@pytest.fixture(scope="session")
def endpoints() -> Endpoints:
    database_url = os.environ.get("SINK_TEST_DATABASE_URL")
    bootstrap = os.environ.get("SINK_TEST_KAFKA_BOOTSTRAP")
    if not database_url or not bootstrap:
        pytest.fail(
            "SINK_TEST_DATABASE_URL and SINK_TEST_KAFKA_BOOTSTRAP are not set: run `make "
            'image-test`, or eval "$(deploy/local/services.sh env)" first',
            pytrace=False,
        )
    return Endpoints(database_url, bootstrap)


@pytest.fixture(scope="session")
def engine(endpoints: Endpoints) -> Iterator[sa.engine.Engine]:
    url = endpoints.database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url, pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def image() -> str:
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail(f"{IMAGE} is not built: run `make image-test` (deploy/podman/build-image.sh)")
    return IMAGE


@pytest.fixture
def names() -> str:
    """A fresh suffix for this test's topic, schema, consumer group and container."""
    return "image_" + uuid.uuid4().hex[:10]


@pytest.fixture
def schema(engine: sa.engine.Engine, names: str) -> Iterator[str]:
    yield names
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{names}" CASCADE'))


@pytest.fixture
def topic(endpoints: Endpoints, names: str) -> Iterator[Callable[[int], str]]:
    admin = AdminClient({"bootstrap.servers": endpoints.bootstrap})
    created: list[str] = []

    def create(partitions: int) -> str:
        name = f"{names}.events"
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[
            name
        ].result(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = admin.list_topics(name, timeout=10).topics[name].partitions
            if len(found) == partitions and all(p.leader >= 0 for p in found.values()):
                created.append(name)
                return name
            time.sleep(0.2)
        raise AssertionError(f"topic {name} has no leader for every partition after 30 s")

    yield create
    if created:
        for future in admin.delete_topics(created).values():
            future.result(30)


@pytest.fixture
def run_sink(image: str, tmp_path: Path, names: str) -> Iterator[Callable[[str], Container]]:
    """Starts the image as the pod runs it: uid 10001, read-only root, a small /tmp, no
    capabilities; on the host's network so that it reaches the loopback services."""
    started: list[Container] = []
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    config_dir.chmod(0o755)

    def start(config: str) -> Container:
        port = free_port()
        (config_dir / "sink.toml").write_text(config.replace("{port}", str(port)))
        (config_dir / "sink.toml").chmod(0o644)
        container = Container(f"{names}-{len(started)}", port)
        started.append(container)
        for attempt in (1, 2):
            podman(
                "run", "--detach", "--name", container.name,
                "--user", "10001:10001", "--read-only", "--tmpfs", "/tmp:size=64m",
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                "--network", "host", "--stop-timeout", str(STOP_GRACE_SECONDS),
                "--volume", f"{config_dir}:/etc/pg-kafka-sink:ro",
                image,
            )  # fmt: skip
            if _ran(container) or attempt == 2:
                break
            # Seen in a CI run: a container ended by SIGTERM (exit 143) a tenth of a second
            # after its start, before the interpreter wrote a byte, with no signal sent by the
            # test (podman's events show start, then died). None of the sink's code ran then;
            # start it again.
            print(f"{container.name} ended before writing anything ({container.state()}); again")
            container.remove()
        return container

    yield start
    for container in started:
        container.remove()


def _ran(container: Container, timeout: float = 60) -> bool:
    """Whether the container's process wrote something (the sink logs its configuration first)
    before it ended, if it ended; waits up to `timeout` for either."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if container.logs().strip():
            return True
        if not container.running():
            return bool(container.logs().strip())
        time.sleep(0.2)
    return True  # running, silent: the test's own waits say what is wrong


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Polls `predicate`; a database that does not answer for a moment (the shared local
    server restarted by another suite's failover test) counts as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except sa.exc.OperationalError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.25)
