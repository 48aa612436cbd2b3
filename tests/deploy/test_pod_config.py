"""The config a sink pod starts with passes the sink's own validation and agrees with the
Deployment around it (ports, grace periods, consumer group)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sink.config import Settings, load_settings

from .manifests import (
    BASE,
    EXAMPLE,
    KUSTOMIZATIONS,
    Rendered,
    pod_files_and_environment,
    render,
)

pytestmark = pytest.mark.timeout(60)

# Time a worker needs after its grace budget to leave the group and close its connections.
SHUTDOWN_MARGIN_SECONDS = 10


@pytest.fixture(
    params=KUSTOMIZATIONS, ids=lambda path: path.relative_to(BASE.parents[1]).as_posix()
)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    directory: Path = request.param
    return render(directory)


def pod_settings(rendered: Rendered, tmp_path: Path) -> Settings:
    environ = pod_files_and_environment(rendered, tmp_path)
    return load_settings(None, environ)


def librdkafka(settings: Settings) -> dict[str, str]:
    """The librdkafka settings passed through, secrets revealed."""
    revealed = {name: secret.reveal() for name, secret in settings.kafka.secret_settings.items()}
    return {**settings.kafka.settings, **revealed}


def test_pod_config_passes_the_sinks_validation(rendered: Rendered, tmp_path: Path) -> None:
    settings = pod_settings(rendered, tmp_path)
    assert settings.tables, "the config declares no [[tables]]"
    # The password comes from the mounted Secret file, never from the URL in the config.
    assert settings.postgres.url.password is None
    assert settings.postgres.password is not None
    assert settings.postgres.password.reveal() == "change-me"


def test_probes_and_http_server_use_the_same_port(rendered: Rendered, tmp_path: Path) -> None:
    settings = pod_settings(rendered, tmp_path)
    ports = {port["name"]: port["containerPort"] for port in rendered.container["ports"]}
    assert ports["http"] == settings.http.port
    # The kubelet and Prometheus connect from outside the pod.
    assert settings.http.host == "0.0.0.0"


def test_pod_grace_period_exceeds_the_shutdown_budget(rendered: Rendered, tmp_path: Path) -> None:
    settings = pod_settings(rendered, tmp_path)
    grace = rendered.pod_spec["terminationGracePeriodSeconds"]
    assert grace >= settings.shutdown.grace_seconds + SHUTDOWN_MARGIN_SECONDS


def test_liveness_outlasts_a_batch_at_its_age_limit(rendered: Rendered, tmp_path: Path) -> None:
    settings = pod_settings(rendered, tmp_path)
    probe = rendered.container["livenessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] > settings.batch.max_age_seconds * 10


def test_example_overlay_reaches_kafka_over_sasl_with_secret_files(tmp_path: Path) -> None:
    settings = pod_settings(render(EXAMPLE), tmp_path)
    client = librdkafka(settings)
    assert client["security.protocol"] == "SASL_SSL"
    assert client["sasl.username"] == "pg-kafka-sink"
    assert client["sasl.password"] == "change-me"


def test_autoscaler_watches_the_group_and_topics_the_sink_consumes(tmp_path: Path) -> None:
    rendered = render(EXAMPLE)
    settings = pod_settings(rendered, tmp_path)
    (trigger,) = rendered.one("ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"]["consumerGroup"] == settings.kafka.group_id
    assert trigger["metadata"]["bootstrapServers"] == settings.kafka.bootstrap_servers
    topics = {topic for table in settings.tables for topic in table.topics}
    assert trigger["metadata"]["topic"] in topics
    # With no position stored anywhere, KEDA must count lag the way the sink would start.
    assert trigger["metadata"]["offsetResetPolicy"] == settings.kafka.start_from.value


def test_static_membership_is_not_used_with_a_deployment(
    rendered: Rendered, tmp_path: Path
) -> None:
    # Pod names change on every rollout: a group.instance.id from them causes lag bubbles.
    settings = pod_settings(rendered, tmp_path)
    assert "group.instance.id" not in librdkafka(settings)
