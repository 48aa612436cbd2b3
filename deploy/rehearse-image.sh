#!/usr/bin/env bash
# Rehearses the image without Docker: copies the build context the way deploy/Dockerfile's
# COPY lines do, builds the virtual environment with the same deploy/install.sh, then runs the
# image's entrypoint command as the image's non-root user (uid 10001): `pg-kafka-sink --help`
# and `pg-kafka-sink check` on the config of the base ConfigMap, pointed at the local services.
#   eval "$(deploy/local/services.sh env)" && deploy/rehearse-image.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
say() { printf 'rehearse: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

database_url=${SINK_TEST_DATABASE_URL:?set SINK_TEST_DATABASE_URL (eval \"\$(deploy/local/services.sh env)\")}
bootstrap=${SINK_TEST_KAFKA_BOOTSTRAP:?set SINK_TEST_KAFKA_BOOTSTRAP (eval \"\$(deploy/local/services.sh env)\")}
dev_python=$repo/.venv/bin/python
[ -x "$dev_python" ] || die "$dev_python not found: the dev environment renders the ConfigMap"

# The interpreter matching the image's base (python:X.Y-slim), outside /root so that the
# unprivileged user can run it.
version=$(sed -n 's/^ARG PYTHON_IMAGE=python:\([0-9]*\.[0-9]*\)-.*/\1/p' "$here/Dockerfile")
[ -n "$version" ] || die "no ARG PYTHON_IMAGE=python:X.Y-... in $here/Dockerfile"
python=${PYTHON:-}
for candidate in "/usr/local/bin/python$version" "/usr/bin/python$version"; do
    [ -z "$python" ] && [ -x "$candidate" ] && python=$candidate
done
python=${python:-$(command -v "python$version" || true)}
[ -n "$python" ] || die "python$version not found (the image's Python); install it or set PYTHON"

if [ "$(id -u)" = 0 ]; then
    as_image_user=(setpriv --reuid=10001 --regid=10001 --clear-groups --)
else
    as_image_user=()
fi
"${as_image_user[@]}" "$python" -c '' 2>/dev/null \
    || die "$python cannot be run by uid 10001 (the image's user); set PYTHON to one it can run"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"

# 1. The build context, as the Dockerfile's build stage lays it out under /src.
mkdir "$work/src"
while read -r _ args; do
    read -r -a parts <<<"$args"
    dest=$work/src/${parts[-1]}
    for src in "${parts[@]:0:${#parts[@]}-1}"; do
        if [ -d "$repo/$src" ]; then
            mkdir -p "$dest"
            cp -R "$repo/$src/." "$dest/"
        else
            mkdir -p "$(dirname "$dest")"
            if [ "${#parts[@]}" -gt 2 ]; then cp "$repo/$src" "$dest/"; else cp "$repo/$src" "$dest"; fi
        fi
    done
done < <(sed -n '/^FROM .* AS build$/,/^FROM /p' "$here/Dockerfile" | grep '^COPY ' | grep -v -- '--from')
find "$work/src" \( -name __pycache__ -o -name '*.egg-info' -o -name '*.so' \) -prune -exec rm -rf {} +

# 2. The virtual environment, with the Dockerfile's own install step.
say "building the environment from constraints.txt with deploy/install.sh ($python)"
PYTHON=$python "$work/src/deploy/install.sh" "$work/venv" "$work/src"

# 3. What the pod sees: the ConfigMap's sink.toml, the Secret's files, the Deployment's env.
mkdir -p "$work/etc" "$work/secrets"
"$dev_python" - "$repo/.venv/bin/kubectl" "$here/k8s/base" "$work/etc/sink.toml" <<'PY'
import subprocess
import sys

import yaml

kubectl, kustomization, target = sys.argv[1:]
rendered = subprocess.run([kubectl, "kustomize", kustomization], check=True,
                          capture_output=True, text=True).stdout
for doc in yaml.safe_load_all(rendered):
    if doc and doc["kind"] == "ConfigMap" and "sink.toml" in doc.get("data", {}):
        with open(target, "w", encoding="utf-8") as config:
            config.write(doc["data"]["sink.toml"])
        break
else:
    sys.exit(f"no ConfigMap with sink.toml in {kustomization}")
PY
# Like the example Secret: the URL without its password, the password in its own file.
"$dev_python" - "$database_url" "$work/secrets/database-password" >"$work/database-url" <<'PY'
import sys
from urllib.parse import unquote, urlsplit, urlunsplit

url = urlsplit(sys.argv[1])
with open(sys.argv[2], "w", encoding="utf-8") as secret:
    secret.write(unquote(url.password or ""))
host = url.hostname if url.port is None else f"{url.hostname}:{url.port}"
netloc = f"{url.username}@{host}" if url.username else host
print(urlunsplit(url._replace(netloc=netloc)))
PY
chmod -R a+rX "$work"

# The topic the base config reads must exist for `check` to find it; creating it is the
# only change made, and only when it is missing.
"$work/venv/bin/python" - "$bootstrap" <<'PY'
import sys

from confluent_kafka.admin import AdminClient, NewTopic

admin = AdminClient({"bootstrap.servers": sys.argv[1]})
if "orders" not in admin.list_topics(timeout=30).topics:
    admin.create_topics([NewTopic("orders", num_partitions=3, replication_factor=1)])["orders"].result(30)
PY

run_sink() {
    (cd /tmp && env -i PATH="$work/venv/bin:/usr/bin:/bin" HOME=/nonexistent \
        PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
        SINK_CONFIG="$work/etc/sink.toml" \
        SINK_POSTGRES__URL="$(cat "$work/database-url")" \
        SINK_POSTGRES__PASSWORD_FILE="$work/secrets/database-password" \
        SINK_KAFKA__BOOTSTRAP_SERVERS="$bootstrap" \
        "${as_image_user[@]}" pg-kafka-sink "$@")
}

say "as uid $("${as_image_user[@]}" id -u): pg-kafka-sink --help"
run_sink --help
for command in run check status reset; do run_sink "$command" --help >/dev/null; done
say "pg-kafka-sink check --config <base ConfigMap sink.toml>"
run_sink check --config "$work/etc/sink.toml"
say "passed: the image's install steps build a working sink that validates its ConfigMap"
