"""Probes and metrics as the kubelet and Prometheus see them: real HTTP on an ephemeral port."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from sink.health import Health, HealthServer
from sink.metrics import SinkMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Database:
    """A ping that counts its calls and fails while `down` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    def __call__(self) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("connection refused\nsecond line")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def database() -> Database:
    return Database()


@pytest.fixture
def health(clock: Clock, database: Database) -> Health:
    return Health(database, stale_after_seconds=60, ping_cache_seconds=5, clock=clock)


@pytest.fixture
def metrics() -> SinkMetrics:
    return SinkMetrics()


@pytest.fixture
def server(health: Health, metrics: SinkMetrics) -> Iterator[HealthServer]:
    with HealthServer("127.0.0.1", 0, health, metrics) as running:
        yield running


def get(server: HealthServer, path: str) -> tuple[int, str, str]:
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read().decode()


def test_port_zero_binds_an_ephemeral_port(server: HealthServer) -> None:
    assert server.port > 0
    assert get(server, "/livez")[0] == 200


def test_livez_fails_once_the_loop_stops_beating_without_touching_the_database(
    server: HealthServer, health: Health, clock: Clock, database: Database
) -> None:
    database.down = True
    status, _, body = get(server, "/livez")
    assert status == 200, body

    clock.now += 61
    status, _, body = get(server, "/livez")
    assert status == 503
    assert "silent for 61 s" in body

    health.beat()
    assert get(server, "/livez")[0] == 200
    assert database.calls == 0


def test_readyz_is_unready_until_the_worker_joins_its_group(
    server: HealthServer, health: Health
) -> None:
    status, _, body = get(server, "/readyz")
    assert status == 503
    assert "not a member of the consumer group" in body

    health.set_joined(True)
    health.set_partitions(3)
    status, _, body = get(server, "/readyz")
    assert status == 200
    assert "3 partition(s) assigned" in body


def test_idle_member_without_partitions_is_ready(server: HealthServer, health: Health) -> None:
    health.set_joined(True)
    health.set_partitions(0)
    status, _, body = get(server, "/readyz")
    assert status == 200
    assert "idle" in body


def test_readyz_fails_with_the_reason_when_the_database_does_not_answer(
    server: HealthServer, health: Health, database: Database, clock: Clock
) -> None:
    health.set_joined(True)
    database.down = True
    status, _, body = get(server, "/readyz")
    assert status == 503
    assert body == "failing: database unreachable: ConnectionError: connection refused\n"

    database.down = False
    clock.now += 5
    assert get(server, "/readyz")[0] == 200


def test_readyz_reuses_a_recent_ping(
    server: HealthServer, health: Health, database: Database, clock: Clock
) -> None:
    health.set_joined(True)
    for _ in range(4):
        assert get(server, "/readyz")[0] == 200
    assert database.calls == 1
    clock.now += 5
    get(server, "/readyz")
    assert database.calls == 2


def test_metrics_serves_the_prometheus_text_format(
    server: HealthServer, metrics: SinkMetrics
) -> None:
    metrics.retried("deadlock")
    status, content_type, body = get(server, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    assert 'pg_kafka_sink_retries_total{kind="deadlock"} 1.0\n' in body


def test_unknown_path_is_not_found(server: HealthServer) -> None:
    status, _, body = get(server, "/health")
    assert status == 404
    assert "/livez" in body


def test_stop_releases_the_port(health: Health, metrics: SinkMetrics) -> None:
    server = HealthServer("127.0.0.1", 0, health, metrics).start()
    port = server.port
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=2)
    # The same port can be bound again straight away.
    HealthServer("127.0.0.1", port, health, metrics).stop()


def test_readyz_names_the_transient_failure_batches_are_retried_for(
    health: Health, database: Database
) -> None:
    health.set_joined(True)
    health.set_retrying("the schema registry at http://127.0.0.1:1 did not answer")
    verdict = health.readyz()
    assert not verdict.ok and "retried: the schema registry" in verdict.reason
    health.set_retrying(None)
    assert health.readyz().ok
