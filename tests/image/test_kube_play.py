"""The kustomize base, rendered, as podman's `kube play` runs it: the Deployment's pod starts
from the ConfigMap and the Secret, answers on its readiness probe's path, and lands rows."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pytest
import sqlalchemy as sa
import yaml

from tests.events import events
from tests.integration.sink.harness import produce

from .conftest import REPO, Endpoints, free_port, podman, wait_until
from .test_container import http_get

pytestmark = pytest.mark.timeout(300)

BASE = REPO / "deploy" / "k8s" / "base"
ORDERS = 2_000


def render_base() -> list[dict[str, Any]]:
    kubectl = REPO / ".venv" / "bin" / "kubectl"
    output = subprocess.run(
        [str(kubectl), "kustomize", str(BASE)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


def orders(count: int) -> Iterator[tuple[bytes, bytes]]:
    """The base config's table (orders): its columns from the sample events."""
    for key, _ in events(count):
        i = int(key)
        value = (
            f'{{"order_id": {i}, "customer": "c{i % 7}", "amount": "{i}.50",'
            f' "created_at": "2026-12-03T10:00:00Z"}}'
        )
        yield key, value.encode()


@pytest.fixture
def played(tmp_path: Path) -> Iterator[Callable[[list[dict[str, Any]]], None]]:
    """`podman kube play` of resources. podman 4.3 reads Secrets from its own store (the
    Secret stored with `podman secret create`), not from the played file."""
    files: list[Path] = []
    secrets: list[str] = []
    volumes: list[str] = []

    def play(resources: list[dict[str, Any]]) -> None:
        # podman keeps a volume per ConfigMap and Secret, named after it, and reuses it.
        volumes.extend(
            r["metadata"]["name"] for r in resources if r["kind"] in ("ConfigMap", "Secret")
        )
        for name in volumes:
            podman("volume", "rm", "--force", name, check=False)
        for resource in resources:
            if resource["kind"] == "Secret":
                name = resource["metadata"]["name"]
                path = tmp_path / f"secret-{name}.json"
                path.write_text(json.dumps(resource), encoding="utf-8")
                podman("secret", "rm", name, check=False)
                podman("secret", "create", name, str(path))
                secrets.append(name)
        path = tmp_path / f"kube-{len(files)}.yaml"
        path.write_text(
            yaml.safe_dump_all(r for r in resources if r["kind"] != "Secret"), encoding="utf-8"
        )
        files.append(path)
        result = podman("kube", "play", str(path), check=False)
        assert result.returncode == 0, result.stdout + result.stderr

    yield play
    for path in files:
        podman("kube", "down", str(path), check=False)
    for name in secrets:
        podman("secret", "rm", name, check=False)
    for name in volumes:
        podman("volume", "rm", "--force", name, check=False)


def test_kube_play_of_the_rendered_base_is_ready_and_lands_rows(
    image: str,
    endpoints: Endpoints,
    engine: sa.engine.Engine,
    topic: Callable[[int], str],
    schema: str,
    names: str,
    played: Callable[[list[dict[str, Any]]], None],
) -> None:
    resources = render_base()
    kinds = {r["kind"] for r in resources}
    assert {"Deployment", "ConfigMap"} <= kinds
    (config_map,) = [r for r in resources if r["kind"] == "ConfigMap"]
    (deployment,) = [r for r in resources if r["kind"] == "Deployment"]
    # The base's table and topic, moved to this test's own names; everything else as rendered.
    name = topic(3)
    toml = config_map["data"]["sink.toml"]
    assert 'topics = ["orders"]' in toml
    assert 'schema = "public"' in toml
    dead_letters = 'dead_letter_table = "public.sink_dead_letters"'
    assert dead_letters in toml
    config_map["data"]["sink.toml"] = (
        toml.replace('topics = ["orders"]', f'topics = ["{name}"]')
        .replace('schema = "public"', f'schema = "{schema}"')
        .replace(dead_letters, f'dead_letter_table = "{schema}.sink_dead_letters"')
    )
    # The Secret the overlay expects (created out of band in a cluster), for the local
    # services: the URL without its password, the password in its own key.
    url = urlsplit(endpoints.database_url)
    netloc = f"{url.username}@{url.hostname}:{url.port}"
    database_url = urlunsplit(url._replace(netloc=netloc))
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pg-kafka-sink"},
        # As podman 4.3 mounts them: it writes `data` values without decoding their base64,
        # and ignores `stringData`.
        "data": {
            "database-url": database_url,
            "database-password": unquote(url.password or ""),
        },
    }

    spec = deployment["spec"]
    spec["replicas"] = 1
    pod = spec["template"]["spec"]
    pod["hostNetwork"] = True  # the local services listen on loopback
    (container,) = pod["containers"]
    container["image"] = image
    readiness_path = container["readinessProbe"]["httpGet"]["path"]
    # podman turns probes into health checks that run curl inside the image, which has none;
    # the test asks the readiness path itself.
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        container.pop(probe)
    # On the host's network podman refuses port mappings; the port is set below instead.
    container.pop("ports")
    # podman 4.3 reads `optional` of a Secret volume without checking it is set (a nil
    # dereference); Kubernetes' default, spelled out.
    for volume in pod["volumes"]:
        if "secret" in volume:
            volume["secret"].setdefault("optional", False)
    # podman 4.3 reads a Secret for env values as a flat JSON map and for volumes as a Secret
    # object, so one Secret cannot serve both: the URL (no password in it) becomes a value.
    for variable in container["env"]:
        if variable.get("valueFrom", {}).get("secretKeyRef", {}).get("key") == "database-url":
            del variable["valueFrom"]
            variable["value"] = database_url
    port = free_port()
    container["env"] += [
        {"name": "SINK_KAFKA__BOOTSTRAP_SERVERS", "value": endpoints.bootstrap},
        {"name": "SINK_KAFKA__GROUP_ID", "value": names},
        {"name": "SINK_HTTP__HOST", "value": "127.0.0.1"},
        {"name": "SINK_HTTP__PORT", "value": str(port)},
    ]
    played([config_map, secret, deployment])

    produce(endpoints.bootstrap, name, orders(ORDERS), partitions=3)

    def rows() -> int:
        with engine.connect() as conn:
            table = conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f'"{schema}".orders'})
            if table.scalar() is None:
                return 0
            count = conn.execute(sa.text(f'SELECT count(*) FROM "{schema}".orders'))
            return int(count.scalar_one())

    try:
        wait_until(lambda: rows() == ORDERS, 120, f"{ORDERS} orders")
        wait_until(lambda: http_get(port, readiness_path)[0] == 200, 30, readiness_path)
        # The pod's securityContext, as podman applied it.
        (sink,) = podman("ps", "--filter", "name=-sink$", "--format", "{{.Names}}").stdout.split()
        probe = "id -u; id -g; touch /opt/x 2>/dev/null && echo root-writable; echo done"
        seen = podman("exec", sink, "sh", "-c", probe).stdout.split()
        assert seen == ["10001", "10001", "done"]
    except AssertionError:
        states = podman("ps", "-a", "--format", "{{.Names}} {{.Status}}").stdout
        for pod_name in podman("pod", "ps", "--format", "{{.Name}}").stdout.split():
            print(states, podman("pod", "logs", pod_name, check=False).stdout[-4000:])
        raise
