"""The sink of another revision beside today's, in one run: `--baseline REV`.

The revision's tree is exported once per commit under .cache/bench-baseline/ (`git archive`, so no
worktree is left behind) and its C extension built there; its workers then run that tree's code in
today's virtual environment, the only difference between the two being the code.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .measure import REPO, BenchmarkError

CACHE = REPO / ".cache" / "bench-baseline"
# setup.py's extensions built in place, without reading the revision's pyproject.toml (whose
# metadata the environment's setuptools need not accept: pip builds with its own). The ingest
# core's row encoder too, where the revision has one: else the tree would import this one's.
_BUILD_EXTENSION = """
import os
from setuptools import Distribution, Extension
from setuptools.command.build_ext import build_ext
modules = [Extension("sink._copyline", ["sink/_copyline.c"])]
if os.path.exists("pg_bulk_ingest/_binrow.c"):
    modules.append(Extension("pg_bulk_ingest._binrow", ["pg_bulk_ingest/_binrow.c"]))
dist = Distribution({"ext_modules": modules})
command = build_ext(dist)
command.inplace = True
command.ensure_finalized()
command.run()
"""


@dataclass(frozen=True)
class Baseline:
    """A revision's code, ready to run: `label` names its rows, `tree` is its working dir."""

    label: str
    tree: Path


def checkout(revision: str) -> Baseline:
    """The revision's tree with its C extension built; raises BenchmarkError naming what failed."""
    commit = _git("rev-parse", "--verify", f"{revision}^{{commit}}").strip()
    tree = CACHE / commit
    ready = tree / ".built"
    if not ready.exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", commit], capture_output=True, check=False
        )
        if archive.returncode != 0:
            raise BenchmarkError(f"git archive {commit}: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
        build = subprocess.run(
            [sys.executable, "-c", _BUILD_EXTENSION],
            cwd=tree,
            capture_output=True,
            text=True,
            check=False,
        )
        if build.returncode != 0 or not list((tree / "sink").glob("_copyline*.so")):
            raise BenchmarkError(
                f"building the C extension of {revision} in {tree} failed:\n{build.stderr[-2000:]}"
            )
        ready.touch()
    return Baseline(f"@{commit[:9]}", tree)


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BenchmarkError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout
