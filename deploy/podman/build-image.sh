#!/usr/bin/env bash
# Builds deploy/Dockerfile with podman from an empty image store, on base images made from
# Debian's packages (base-images.sh), and prints the image's size.
#   deploy/podman/build-image.sh [TAG]      (default localhost/pg-kafka-sink:test)
# The machine's CA bundle ($SINK_BUILD_CA_BUNDLE, default /etc/ssl/certs/ca-certificates.crt)
# reaches pip inside the build as a secret, for networks that intercept TLS; it is not stored
# in the image.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
tag=${1:-localhost/pg-kafka-sink:test}
podman=$here/podman.sh
ca_bundle=${SINK_BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

started=$SECONDS
# A clean store: nothing from an earlier build (layers, base images) is reused.
"$podman" system reset --force >/dev/null 2>&1
read -r -a base_args < <("$here/base-images.sh")
secret_args=()
[ -s "$ca_bundle" ] && secret_args=(--secret "id=ca-bundle,src=$ca_bundle")
"$podman" build --quiet --network=host --file "$repo/deploy/Dockerfile" \
    --ignorefile "$repo/deploy/Dockerfile.dockerignore" \
    "${base_args[@]}" "${secret_args[@]}" --tag "$tag" "$repo" >/dev/null
size=$("$podman" image inspect --format '{{.Size}}' "$tag")
printf 'build-image: %s built in %ds, %d MB\n' "$tag" $((SECONDS - started)) $((size / 1000000))
