"""deploy/validate.sh passes on the repository and fails, naming the file, on a broken copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .manifests import DEPLOY

pytestmark = pytest.mark.timeout(60)


def validate(deploy_dir: Path) -> subprocess.CompletedProcess[str]:
    # The dev tools sit beside this interpreter; validate.sh finds them on PATH.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", str(DEPLOY / "validate.sh"), str(deploy_dir)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    target = tmp_path / "deploy"
    shutil.copytree(DEPLOY, target, ignore=shutil.ignore_patterns("local"))
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_validate_passes_on_the_repository() -> None:
    result = validate(DEPLOY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout


def _unknown_field(deploy: Path) -> str:
    edit(deploy / "k8s/base/deployment.yaml", "readOnlyRootFilesystem:", "readOnlyRootFilesytem:")
    return "k8s/base/deployment.yaml"


def _wrong_type(deploy: Path) -> str:
    edit(deploy / "k8s/base/poddisruptionbudget.yaml", "maxUnavailable: 1", "maxUnavailable: [1]")
    return "k8s/base/poddisruptionbudget.yaml"


def _misspelt_kind(deploy: Path) -> str:
    edit(deploy / "k8s/overlays/example/namespace.yaml", "kind: Namespace", "kind: Namespce")
    return "k8s/overlays/example/namespace.yaml"


def _bad_patch(deploy: Path) -> str:
    path = "k8s/overlays/example/patches/deployment-kafka-sasl.yaml"
    edit(deploy / path, "value: SASL_SSL", "valueFrom: SASL_SSL")
    return "k8s/overlays/example"


def _missing_resource(deploy: Path) -> str:
    (deploy / "k8s/overlays/example/podmonitor.yaml").unlink()
    return "k8s/overlays/example/podmonitor.yaml"


def _yaml_syntax(deploy: Path) -> str:
    edit(deploy / "compose.yaml", "  sink:\n", "  sink:\n   bad-indent: [\n")
    return "compose.yaml"


def _dockerfile(deploy: Path) -> str:
    edit(deploy / "Dockerfile", "USER 10001:10001", "RUN apt-get install gcc\nUSER 10001:10001")
    return "Dockerfile"


@pytest.mark.parametrize(
    "breakage",
    [
        _unknown_field,
        _wrong_type,
        _misspelt_kind,
        _bad_patch,
        _missing_resource,
        _yaml_syntax,
        _dockerfile,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_validate_fails_on_a_broken_copy_and_names_the_file(
    copy: Path, breakage: Callable[[Path], str]
) -> None:
    offending = breakage(copy)
    result = validate(copy)
    assert result.returncode != 0, result.stdout
    failures = [line for line in result.stdout.splitlines() if line.startswith("validate: FAIL")]
    assert failures, result.stdout + result.stderr
    assert any(f"{copy}/{offending}" in line for line in failures), "\n".join(failures)
