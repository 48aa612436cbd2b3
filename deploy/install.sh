#!/bin/sh
# Builds the sink's virtual environment from the lock file. The image build (deploy/Dockerfile)
# and the rehearsal without Docker (deploy/rehearse-image.sh) both run this script, so CI tests
# the very pip commands that produce the image.
#   install.sh VENV SOURCE_DIR
set -eu

venv=${1:?usage: install.sh VENV SOURCE_DIR}
src=${2:?usage: install.sh VENV SOURCE_DIR}
python=${PYTHON:-python3}
# pip itself is not in the lock file; pin it so the image and the rehearsal resolve alike.
pip_version=26.3

# Wheels only: a missing wheel must fail the build here, not surface as a half-built
# dependency. Our own package is the one thing built from source (with a C compiler).
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --no-cache-dir --disable-pip-version-check --quiet \
    "pip==$pip_version"
"$venv/bin/python" -m pip install --no-cache-dir --disable-pip-version-check --quiet \
    --only-binary=:all: \
    --constraint "$src/constraints.txt" "$src"
"$venv/bin/python" -m pip check --disable-pip-version-check
# The C extension (the fast path from a JSON message to its COPY line) must be there: without
# it the worker still runs, on the Python form of that path, at about two thirds the rate.
# -I: from the installed package, not from a source tree in the working directory (the
# Dockerfile runs this in /src, whose sink/ has no compiled module).
"$venv/bin/python" -I -c 'import sink._copyline' \
    || { echo "install.sh: sink._copyline was not built (is a C compiler installed?)" >&2; exit 1; }

# Every installed distribution must be pinned by the lock file: a dependency added to
# pyproject.toml without a pin would otherwise float to whatever PyPI serves on build day.
"$venv/bin/python" -I - "$src/constraints.txt" <<'PY'
import re
import sys
from importlib import metadata


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


pins = {}
with open(sys.argv[1], encoding="utf-8") as lock:
    for line in lock:
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonical(name.split("[", 1)[0])] = version.strip()

unpinned = []
for dist in metadata.distributions():
    name = canonical(dist.metadata["Name"])
    if name in {"pg-kafka-sink", "pip", "setuptools", "wheel"}:
        continue
    if pins.get(name) != dist.version:
        unpinned.append(f"{name}=={dist.version} (lock file: {pins.get(name, 'absent')})")
if unpinned:
    sys.exit("install.sh: installed but not pinned in constraints.txt: " + ", ".join(sorted(unpinned)))
PY
