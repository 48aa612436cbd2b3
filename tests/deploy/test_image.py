"""The image's Dockerfile: a non-root worker that receives SIGTERM, built from the lock file by
the same script CI rehearses without Docker."""

from __future__ import annotations

import json
import re

import pytest

from .manifests import BASE, DEPLOY, REPO, load_yaml, render

pytestmark = pytest.mark.timeout(60)


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    logical = re.sub(r"\\\n", " ", text)
    found = []
    for line in logical.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, arguments = stripped.partition(" ")
            found.append((keyword.upper(), arguments.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def test_build_is_multi_stage_on_a_slim_python_base() -> None:
    stages = [arguments for keyword, arguments in instructions() if keyword == "FROM"]
    assert len(stages) >= 2
    (base,) = [a for k, a in instructions() if k == "ARG" and a.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.\d+-slim-\w+", base)


def test_image_runs_as_the_numeric_non_root_user_the_pod_expects() -> None:
    users = [arguments for keyword, arguments in final_stage() if keyword == "USER"]
    assert users, "the final stage sets no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so that the kubelet can verify runAsNonRoot without reading /etc/passwd.
    assert uid.isdigit()
    assert int(uid) > 0
    pod = render(BASE).pod_spec["securityContext"]
    assert int(uid) == pod["runAsUser"]
    assert gid.isdigit()
    assert int(gid) == pod["runAsGroup"]


def test_entrypoint_is_exec_form_behind_an_init() -> None:
    (entrypoint,) = [json.loads(a) for k, a in final_stage() if k == "ENTRYPOINT"]
    # Exec form (a JSON array): no shell in between to swallow SIGTERM.
    assert isinstance(entrypoint, list)
    assert entrypoint[0].endswith("/tini")
    assert entrypoint[1] == "--"
    assert entrypoint[2] == "pg-kafka-sink"
    (command,) = [json.loads(a) for k, a in final_stage() if k == "CMD"]
    assert command == ["run"]


def test_output_is_unbuffered_and_config_path_matches_the_pod() -> None:
    env = " ".join(a for k, a in final_stage() if k == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    match = re.search(r"SINK_CONFIG=(\S+)", env)
    assert match
    pod_env = {v["name"]: v.get("value") for v in render(BASE).container["env"]}
    assert pod_env["SINK_CONFIG"] == match[1]


def test_final_stage_installs_nothing_and_copies_only_from_the_build_stage() -> None:
    steps = final_stage()
    runs = " ".join(arguments for keyword, arguments in steps if keyword == "RUN")
    for tool in ("apt-get", "pip", "gcc", "make"):
        assert tool not in runs
    copies = [arguments for keyword, arguments in steps if keyword in ("COPY", "ADD")]
    assert copies
    assert all(arguments.startswith("--from=build ") for arguments in copies)


def test_dependencies_come_from_the_lock_file_through_the_shared_install_script() -> None:
    runs = [arguments for keyword, arguments in instructions() if keyword == "RUN"]
    assert any("deploy/install.sh" in run for run in runs)
    install = (DEPLOY / "install.sh").read_text(encoding="utf-8")
    assert '--constraint "$src/constraints.txt"' in install
    # Compiled wheels only (psycopg-binary, confluent-kafka, orjson): no compiler is needed.
    assert "--only-binary=:all:" in install
    rehearsal = (DEPLOY / "rehearse-image.sh").read_text(encoding="utf-8")
    assert "deploy/install.sh" in rehearsal
    assert "Dockerfile" in rehearsal  # it reads the COPY lines and base version from it


def test_build_context_lets_in_what_the_build_copies() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for keyword, arguments in instructions():
        if keyword == "COPY" and not arguments.startswith("--from"):
            sources = arguments.split()[:-1]
            for source in sources:
                assert source in allowed, f"COPY {source} is excluded by Dockerfile.dockerignore"
                assert (REPO / source).exists()


def test_compose_runs_the_same_hardened_image_as_the_cluster() -> None:
    (compose,) = load_yaml(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert {"kafka", "postgres", "sink"} <= services.keys()
    sink = services["sink"]
    assert sink["build"]["dockerfile"] == "deploy/Dockerfile"
    assert sink["read_only"] is True
    assert sink["tmpfs"] == ["/tmp"]
    assert "KRaft" in (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]
    # The same config as the cluster, mounted where SINK_CONFIG points.
    (config,) = sink["configs"]
    assert compose["configs"][config["source"]]["file"] == "./k8s/base/sink.toml"
    assert config["target"] == sink["environment"]["SINK_CONFIG"]
    # docker stop waits past the sink's grace budget, as the pod does.
    stop_seconds = int(sink["stop_grace_period"].rstrip("s"))
    assert stop_seconds == render(BASE).pod_spec["terminationGracePeriodSeconds"]
    assert "/readyz" in " ".join(sink["healthcheck"]["test"])
    assert sink["depends_on"]["postgres"]["condition"] == "service_healthy"
