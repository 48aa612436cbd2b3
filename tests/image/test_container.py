"""The image as a cluster runs it: non-root, read-only, landing a stream exactly once through
stops and kills, with /readyz and /metrics that a real Prometheus scrapes."""

from __future__ import annotations

import math
import random
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from tests.events import EVENT_COLUMNS_TOML, events
from tests.integration.sink.harness import log_end_offsets, produce, stored_offsets

from .conftest import (
    STOP_GRACE_SECONDS,
    Container,
    Endpoints,
    free_port,
    podman,
    tool,
    wait_until,
)

pytestmark = pytest.mark.timeout(600)

MAX_IMAGE_BYTES = 250_000_000
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "pg-kafka-sink.json"
DEMO_EVENTS, DEMO_PARTITIONS = 5_000, 6
# The shutdown budget of the config below (the base ConfigMap's value).
SHUTDOWN_GRACE_SECONDS = 20

# A table without a primary key: a message landed twice shows as a repeated (partition, offset).
COORDINATE_COLUMNS = """
[[tables.columns]]
name = "partition"
type = "INTEGER"
source = "kafka.partition"
nullable = false
[[tables.columns]]
name = "offset"
type = "BIGINT"
source = "kafka.offset"
nullable = false
[[tables.columns]]
name = "id"
type = "BIGINT"
nullable = false
"""


def sink_config(
    endpoints: Endpoints, topic: str, schema: str, columns: str, *, primary_key: bool
) -> str:
    """The demo's config (deploy/local/demo.py), in JSON logs as in the cluster."""
    key = 'primary_key = ["id"]' if primary_key else ""
    return f"""
[kafka]
bootstrap_servers = "{endpoints.bootstrap}"
group_id = "{schema}"
start_from = "earliest"

[kafka.settings]
# A killed container never leaves the group: its successor waits this long for its partitions.
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 1000

[postgres]
url = "{endpoints.database_url}"

[batch]
max_messages = 2000
max_age_seconds = 0.5

[http]
host = "127.0.0.1"
port = {{port}}

[shutdown]
grace_seconds = {SHUTDOWN_GRACE_SECONDS}

[log]
format = "json"

[[tables]]
schema = "{schema}"
name = "events"
topics = ["{topic}"]
{key}
{columns}"""


def count_rows(engine: sa.engine.Engine, schema: str) -> int:
    with engine.connect() as conn:
        if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f'"{schema}".events'}).scalar():
            return int(
                conn.execute(sa.text(f'SELECT count(*) FROM "{schema}".events')).scalar_one()
            )
    return 0


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def caught_up(engine: sa.engine.Engine, endpoints: Endpoints, schema: str, topic: str) -> bool:
    ends = log_end_offsets(endpoints.bootstrap, topic, DEMO_PARTITIONS)
    stored = stored_offsets(engine, schema).get(topic, {})
    return all(stored.get(str(p), 0) == end for p, end in ends.items())


def test_image_is_smaller_than_250_mb(image: str) -> None:
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    print(f"image {image}: {size / 1e6:.1f} MB")
    assert size < MAX_IMAGE_BYTES, f"{image} is {size / 1e6:.1f} MB"


def test_image_runs_as_uid_10001_on_a_read_only_root(image: str) -> None:
    probe = (
        "id -u; id -g; touch /opt/pg-kafka-sink/x 2>/dev/null && echo root-writable; "
        "touch /tmp/x && echo tmp-writable; python3 -I -c 'import sink._copyline'"
    )
    result = podman(
        "run", "--rm", "--read-only", "--network", "none",
        "--entrypoint", "sh", image, "-c", probe,
    )  # fmt: skip
    assert result.stdout.split() == ["10001", "10001", "tmp-writable"], result.stderr
    help_text = podman("run", "--rm", "--read-only", "--network", "none", image, "--help")
    assert "Exactly-once Kafka-to-PostgreSQL sink" in help_text.stdout


@pytest.fixture
def demo(
    endpoints: Endpoints,
    engine: sa.engine.Engine,
    topic: Callable[[int], str],
    schema: str,
    run_sink: Callable[[str], Container],
) -> tuple[Container, str]:
    """The demo's events landed by the container, which is left running."""
    name = topic(DEMO_PARTITIONS)
    produce(endpoints.bootstrap, name, events(DEMO_EVENTS), partitions=DEMO_PARTITIONS)
    config = sink_config(endpoints, name, schema, EVENT_COLUMNS_TOML, primary_key=True)
    container = run_sink(config)
    try:
        wait_until(lambda: count_rows(engine, schema) == DEMO_EVENTS, 90, "the demo's rows")
        wait_until(lambda: caught_up(engine, endpoints, schema, name), 30, "stored offsets")
    except AssertionError:
        print(container.logs())
        raise
    return container, name


def test_container_lands_the_demo_events_then_stops_with_exit_0_within_its_grace(
    demo: tuple[Container, str], engine: sa.engine.Engine, schema: str
) -> None:
    container, _ = demo
    with engine.connect() as conn:
        ids = conn.execute(
            sa.text(f'SELECT min(id), max(id), count(DISTINCT id) FROM "{schema}".events')
        ).one()
    assert tuple(ids) == (0, DEMO_EVENTS - 1, DEMO_EVENTS)
    assert http_get(container.port, "/livez")[0] == 200
    wait_until(lambda: http_get(container.port, "/readyz")[0] == 200, 30, "/readyz to answer 200")
    # JSON log lines from the first one, as a log collector expects.
    first = container.logs().splitlines()[0]
    assert orjson.loads(first)["message"]

    started = time.monotonic()
    podman("stop", "--time", str(STOP_GRACE_SECONDS), container.name, timeout=90)
    took = time.monotonic() - started
    state = container.state()
    print(f"podman stop: exit code {state['exit_code']} after {took:.1f} s")
    assert state == {"status": "exited", "exit_code": "0"}, container.logs()
    assert took < SHUTDOWN_GRACE_SECONDS + 5


def test_kill_at_random_moments_leaves_every_event_exactly_once(
    endpoints: Endpoints,
    engine: sa.engine.Engine,
    topic: Callable[[int], str],
    schema: str,
    run_sink: Callable[[str], Container],
) -> None:
    partitions, kills, chunk = DEMO_PARTITIONS, 6, 1_000
    name = topic(partitions)
    config = sink_config(endpoints, name, schema, COORDINATE_COLUMNS, primary_key=False)

    # A live stream (~2,000 events/s) for as long as containers die, so kills land mid-batch
    # and mid-commit rather than on an idle worker.
    produced = [0]
    killing = threading.Event()
    killing.set()

    def stream() -> None:
        while killing.is_set():
            start = produced[0]
            produce(endpoints.bootstrap, name, events(chunk, start=start), partitions=partitions)
            produced[0] = start + chunk
            time.sleep(0.5)

    producer = threading.Thread(target=stream)
    producer.start()
    rng = random.Random()
    try:
        for round_ in range(kills):
            container = run_sink(config)
            before = count_rows(engine, schema)
            # Kill only a container that has committed something: otherwise the kill proves nothing.
            try:
                wait_until(lambda b=before: count_rows(engine, schema) > b, 90, "progress")
            except AssertionError:
                print(container.logs())
                raise
            delay = rng.uniform(0.0, 1.5)
            time.sleep(delay)
            container.kill()
            rows = count_rows(engine, schema)
            print(f"kill {round_ + 1}: {delay:.2f} s after a commit; {rows} rows")
            container.remove()
    finally:
        killing.clear()
        producer.join()
    total = produced[0]
    final = run_sink(config)
    try:
        wait_until(lambda: count_rows(engine, schema) >= total, 180, f"all {total} rows")
        wait_until(lambda: caught_up(engine, endpoints, schema, name), 30, "stored offsets")
    except AssertionError:
        print(final.logs())
        raise
    podman("stop", "--time", str(STOP_GRACE_SECONDS), final.name, timeout=90)
    assert final.state()["exit_code"] == "0", final.logs()

    ends = log_end_offsets(endpoints.bootstrap, name, partitions)
    with engine.connect() as conn:
        rows, distinct, ids = conn.execute(
            sa.text(
                'SELECT count(*), count(DISTINCT ("partition", "offset")), count(DISTINCT id)'
                f' FROM "{schema}".events'
            )
        ).one()
        per_partition = dict(
            conn.execute(
                sa.text(f'SELECT "partition", count(*) FROM "{schema}".events GROUP BY 1')
            ).all()
        )
    assert rows == distinct == ids == total, f"{rows} rows, {distinct} coordinates, {ids} ids"
    assert per_partition == ends
    assert stored_offsets(engine, schema)[name] == {str(p): n for p, n in ends.items()}


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """Debian's Prometheus on a loopback port, scraping the given sink port every second."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(target_port: int) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: pg-kafka-sink\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        )
        with (tmp_path / "prometheus.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [
                        tool("prometheus"),
                        f"--config.file={config}",
                        f"--storage.tsdb.path={tmp_path / 'data'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_get(port, "/-/ready")[0] == 200, 30, "Prometheus to be ready")
        return url

    yield start
    for process in processes:
        process.terminate()
        process.wait(30)


def query(url: str, promql: str) -> list[dict[str, Any]]:
    """An instant query's result vector."""
    with urllib.request.urlopen(
        f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}", timeout=10
    ) as response:
        body = orjson.loads(response.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_prometheus_scrapes_the_container_and_every_dashboard_panel_has_data(
    demo: tuple[Container, str],
    prometheus: Callable[[int], str],
    endpoints: Endpoints,
    engine: sa.engine.Engine,
    schema: str,
) -> None:
    container, topic = demo
    status, text = http_get(container.port, "/metrics")
    assert status == 200
    lint = subprocess.run(
        [tool("promtool"), "check", "metrics"],
        check=False,
        input=text,
        capture_output=True,
        timeout=30,
    )
    assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()

    url = prometheus(container.port)
    throughput = f'pg_kafka_sink_messages_total{{topic="{topic}"}}'
    wait_until(lambda: bool(query(url, throughput)), 30, "a scrape of the container")
    up = query(url, 'up{job="pg-kafka-sink"}')
    assert [float(s["value"][1]) for s in up] == [1.0]
    (messages,) = query(url, throughput)
    assert float(messages["value"][1]) == DEMO_EVENTS
    lag = query(url, f'pg_kafka_sink_partition_lag{{topic="{topic}"}}')
    assert sorted(int(s["metric"]["partition"]) for s in lag) == list(range(DEMO_PARTITIONS))
    assert all(float(s["value"][1]) == 0 for s in lag), lag

    # A second wave while Prometheus watches, so that rates and batch times have samples.
    produce(endpoints.bootstrap, topic, events(DEMO_EVENTS, start=DEMO_EVENTS), partitions=6)
    wait_until(lambda: count_rows(engine, schema) == 2 * DEMO_EVENTS, 60, "the second wave")
    landed = f"{throughput} == {2 * DEMO_EVENTS}"
    wait_until(lambda: bool(query(url, landed)), 30, "Prometheus to see the second wave")
    time.sleep(3)  # a few more scrapes after the last batch
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            promql = target["expr"].replace("$__rate_interval", "1m")
            samples = query(url, promql)
            assert samples, f"panel {panel['title']!r}: {promql} returns nothing"
            values = [float(sample["value"][1]) for sample in samples]
            assert all(math.isfinite(v) for v in values), f"{panel['title']!r}: {values}"
