"""Fixtures of tests/deploy: each kustomization rendered once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from .manifests import KUSTOMIZATIONS, Rendered, render


def _name(directory: Path) -> str:
    return directory.relative_to(directory.parents[1]).as_posix()


@pytest.fixture(params=KUSTOMIZATIONS, ids=_name)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    """Every kustomization under deploy/k8s, rendered."""
    directory: Path = request.param
    return render(directory)
