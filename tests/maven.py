"""Java jars from Maven Central: `mvn dependency:copy-dependencies` of a small project (its
pom.xml and the settings.xml beside it) into a cache folder, once per version of the two."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

# A first resolution downloads some 100 MB.
TIMEOUT_SECONDS = 1200


class MavenError(Exception):
    """The jars could not be resolved; the message says why and where the log is."""


def _stamp(project: Path) -> str:
    digest = hashlib.sha256()
    for name in ("pom.xml", "settings.xml"):
        digest.update((project / name).read_bytes())
    return digest.hexdigest()[:16]


def resolve(project: Path, libs: Path) -> Path:
    """The runtime jars of the `project` folder's pom.xml, copied into `libs` (emptied first)
    unless that was done for these very files; returns `libs`. The log goes beside `libs`."""
    done = libs / f".complete-{_stamp(project)}"
    if done.exists():
        return libs
    if shutil.which("mvn") is None:
        raise MavenError("mvn not found: install Maven (apt-get install maven)")
    shutil.rmtree(libs, ignore_errors=True)
    libs.mkdir(parents=True)
    log = libs.parent / "mvn.log"
    with log.open("wb") as out:
        code = subprocess.call(
            [
                "mvn",
                "-B",
                "-q",
                "-s",
                str(project / "settings.xml"),
                "-f",
                str(project / "pom.xml"),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={libs}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=TIMEOUT_SECONDS,
        )
    if code != 0:
        raise MavenError(f"mvn could not resolve the jars of {project} (exit {code}); log: {log}")
    done.touch()
    return libs
