"""The package as a user installs it: the C extension is optional, and the version shows."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pg_bulk_ingest  # noqa: F401  (the checkout's packages are importable)
from sink.metrics import version

REPO = Path(__file__).resolve().parents[2]


def test_a_wheel_builds_without_a_c_compiler_and_leaves_the_extension_out(tmp_path: Path) -> None:
    env = {**os.environ, "CC": "/bin/false", "LDSHARED": "/bin/false"}
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = tmp_path.glob("pg_kafka_sink-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sink/worker.py" in names and "pg_bulk_ingest/_ingest.py" in names
    assert not [name for name in names if name.endswith(".so")], names


def test_version_prints_the_package_version() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "sink", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=REPO,
    )
    assert shown.stdout.strip() == f"pg-kafka-sink {version()}"
    assert version() != "unknown"


def test_the_license_file_is_the_one_pyproject_declares() -> None:
    declared = next(
        line
        for line in (REPO / "pyproject.toml").read_text().splitlines()
        if line.startswith("license = ")
    )
    assert declared == 'license = "MIT"'
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
