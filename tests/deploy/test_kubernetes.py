"""The rendered Kubernetes manifests keep the promises deploy/README.md makes to operators."""

from __future__ import annotations

from pathlib import Path

import pytest

from .manifests import BASE, EXAMPLE, KUSTOMIZATIONS, Rendered, render

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(
    params=KUSTOMIZATIONS, ids=lambda path: path.relative_to(BASE.parents[1]).as_posix()
)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    directory: Path = request.param
    return render(directory)


def test_there_is_a_base_and_an_example_overlay() -> None:
    assert BASE in KUSTOMIZATIONS
    assert EXAMPLE in KUSTOMIZATIONS


def test_probes_hit_livez_and_readyz_on_the_named_http_port(rendered: Rendered) -> None:
    container = rendered.container
    probes = {kind: container[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/livez"
    assert probes["readinessProbe"]["path"] == "/readyz"
    startup = container.get("startupProbe", {}).get("httpGet")
    # Startup must not wait for Kafka or PostgreSQL: it probes the loop, like liveness.
    assert startup is None or startup["path"] == "/livez"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for probe in [*probes.values(), *([startup] if startup else [])]:
        assert probe["port"] in ports or probe["port"] in ports.values()


def test_liveness_never_depends_on_readiness_endpoint(rendered: Rendered) -> None:
    # A Kafka or PostgreSQL outage must make pods unready, never restart them all.
    assert rendered.container["livenessProbe"]["httpGet"]["path"] != "/readyz"


def test_pod_runs_as_non_root_without_privilege_escalation(rendered: Rendered) -> None:
    pod = rendered.pod_spec["securityContext"]
    container = rendered.container["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] > 0
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["allowPrivilegeEscalation"] is False
    assert container["readOnlyRootFilesystem"] is True
    assert container.get("privileged", False) is False
    assert container["capabilities"]["drop"] == ["ALL"]
    assert rendered.pod_spec["automountServiceAccountToken"] is False


def test_only_tmp_is_writable(rendered: Rendered) -> None:
    volumes = {volume["name"]: volume for volume in rendered.pod_spec["volumes"]}
    writable = [
        mount["mountPath"]
        for mount in rendered.container["volumeMounts"]
        if not mount.get("readOnly", False)
    ]
    assert writable == ["/tmp"]
    (tmp,) = [m for m in rendered.container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "sizeLimit" in volumes[tmp["name"]]["emptyDir"]


def test_cpu_is_requested_not_limited_and_memory_is_limited(rendered: Rendered) -> None:
    resources = rendered.container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "cpu" not in resources.get("limits", {})
    assert "memory" in resources["limits"]


def test_config_file_is_mounted_where_sink_config_points(rendered: Rendered) -> None:
    env = {v["name"]: v.get("value") for v in rendered.container["env"]}
    config_path = Path(env["SINK_CONFIG"])
    (mount,) = [
        m for m in rendered.container["volumeMounts"] if m["mountPath"] == str(config_path.parent)
    ]
    (volume,) = [v for v in rendered.pod_spec["volumes"] if v["name"] == mount["name"]]
    configmap = rendered.one("ConfigMap", volume["configMap"]["name"])
    assert config_path.name in configmap["data"]


def test_rollout_never_drops_below_the_wanted_replicas(rendered: Rendered) -> None:
    spec = rendered.one("Deployment")["spec"]
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # A pod that joined must settle (one rebalance) before the next one is replaced.
    assert spec["minReadySeconds"] > 0


def test_disruption_budget_selects_the_sink_pods_one_at_a_time(rendered: Rendered) -> None:
    budget = rendered.one("PodDisruptionBudget")["spec"]
    labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["maxUnavailable"] == 1


def test_deployment_selector_matches_its_pods(rendered: Rendered) -> None:
    spec = rendered.one("Deployment")["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_metrics_are_scraped_from_the_http_port(rendered: Rendered) -> None:
    template = rendered.one("Deployment")["spec"]["template"]
    ports = {port["name"]: port["containerPort"] for port in rendered.container["ports"]}
    annotations = template["metadata"].get("annotations", {})
    monitors = rendered.all("PodMonitor")
    assert annotations.get("prometheus.io/scrape") == "true" or monitors
    if annotations.get("prometheus.io/scrape") == "true":
        assert annotations["prometheus.io/path"] == "/metrics"
        assert int(annotations["prometheus.io/port"]) == ports["http"]
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= template["metadata"]["labels"].items()
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["port"] in ports
        assert endpoint["path"] == "/metrics"


def test_every_resource_lands_in_one_namespace() -> None:
    rendered = render(EXAMPLE)
    (namespace,) = rendered.all("Namespace")
    name = namespace["metadata"]["name"]
    others = [r for r in rendered.resources if r["kind"] != "Namespace"]
    assert {r["metadata"].get("namespace") for r in others} == {name}
    # The pod spec above meets the "restricted" Pod Security Standard: keep it enforced.
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_autoscaler_scales_the_sink_on_its_own_consumer_lag() -> None:
    rendered = render(EXAMPLE)
    scaled = rendered.one("ScaledObject")["spec"]
    deployment = rendered.one("Deployment")
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert scaled.get("scaleTargetRef", {}).get("kind", "Deployment") == "Deployment"
    # KEDA owns the replica count: a replicas field would undo its scaling on every apply.
    assert "replicas" not in deployment["spec"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    # Never more members than partitions: the extra ones would only sit idle.
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    # Each step is a rebalance: scale down slower than up.
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    down = behavior["scaleDown"]["stabilizationWindowSeconds"]
    assert down >= 600
    assert down > behavior["scaleUp"]["stabilizationWindowSeconds"]


def test_autoscaler_authenticates_with_the_sinks_secret() -> None:
    rendered = render(EXAMPLE)
    (trigger,) = rendered.one("ScaledObject")["spec"]["triggers"]
    auth = rendered.one("TriggerAuthentication", trigger["authenticationRef"]["name"])
    secret = rendered.one("Secret")
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]


def test_example_secret_is_visibly_a_placeholder() -> None:
    secret = render(EXAMPLE).one("Secret")
    passwords = {k: v for k, v in secret["stringData"].items() if k.endswith("password")}
    assert passwords
    assert set(passwords.values()) == {"change-me"}
