#!/usr/bin/env bash
# Base images for deploy/Dockerfile built from Debian's packages, for machines that cannot pull
# from Docker Hub: `debootstrap --variant=minbase bookworm` trees with Debian's Python 3.11
# (the version of the official python:3.11 images), imported into podman.
#   deploy/podman/base-images.sh       prints the --build-arg options that select them
# localhost/pg-kafka-sink-base:bookworm        the final stage: python3 only, trimmed
# localhost/pg-kafka-sink-build-base:bookworm  the build stage: plus a C compiler and headers
# The root filesystems are cached as tarballs under the project's cache (reused when present,
# rebuilt when missing); Debian's mirror is $DEBIAN_MIRROR (default deb.debian.org).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${SINK_PODMAN_DIR:-$repo/.cache/podman}/base
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
podman=$here/podman.sh
say() { printf 'base-images: %s\n' "$*" >&2; }

runtime_image=localhost/pg-kafka-sink-base:bookworm
build_image=localhost/pg-kafka-sink-build-base:bookworm
# The official images install Python under /usr/local; the Dockerfile runs
# /usr/local/bin/python3 and the virtual environment it copies links there.
runtime_packages=python3
build_packages=python3,python3-venv,python3-dev,gcc,libc6-dev

# rootfs NAME PACKAGES TRIM: a cached tarball of a minbase tree with PACKAGES.
rootfs() {
    local name=$1 packages=$2 trim=$3 tarball=$cache/$1.tar tree
    # Any change to this script or the packages makes a new tree.
    local stamp
    stamp="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16) $packages $trim $mirror"
    if [ -f "$tarball" ] && [ "$(cat "$tarball.stamp" 2>/dev/null)" = "$stamp" ]; then
        say "$name: cached $tarball"
        return 0
    fi
    command -v debootstrap >/dev/null || { say "debootstrap not found (apt-get install debootstrap)"; exit 1; }
    mkdir -p "$cache/debs"
    tree=$(mktemp -d "$cache/tree.XXXXXX")
    say "$name: debootstrap --variant=minbase bookworm with $packages"
    debootstrap --variant=minbase --include="$packages" --cache-dir="$cache/debs" \
        bookworm "$tree" "$mirror" >"$cache/$name.debootstrap.log" 2>&1 \
        || { tail -n 20 "$cache/$name.debootstrap.log" >&2; rm -rf "$tree"; exit 1; }
    ln -sf /usr/bin/python3 "$tree/usr/local/bin/python3"
    rm -rf "$tree"/var/cache/apt/*.bin "$tree"/var/cache/apt/archives/*.deb "$tree"/var/log/*
    if [ "$trim" = trim ]; then
        # Nothing runs apt in the final stage: no package lists, docs, manuals, translations,
        # nor iconv's charset modules (Python decodes by itself), the interpreter's test suite
        # or its interactive tools. Keeps the image under 250 MB (tests/image checks it).
        local py=$tree/usr/lib/python3.11
        rm -rf "$tree"/var/lib/apt/lists/* "$tree"/usr/share/doc/* "$tree"/usr/share/man/* \
            "$tree"/usr/share/info/* "$tree"/usr/share/locale/* \
            "$tree"/usr/lib/x86_64-linux-gnu/gconv \
            "$py/test" "$py/idlelib" "$py/pydoc_data" "$py/lib2to3" "$py/turtledemo"
    fi
    tar --numeric-owner -C "$tree" -cf "$tarball.partial" .
    rm -rf "$tree"
    mv "$tarball.partial" "$tarball"
    echo "$stamp" >"$tarball.stamp"
}

# import_image NAME IMAGE: the cached tree as IMAGE, unless podman already holds it.
import_image() {
    local name=$1 image=$2
    if "$podman" image exists "$image"; then say "$image: present"; return 0; fi
    say "$image: importing $cache/$name.tar"
    "$podman" import --quiet --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
        "$cache/$name.tar" "$image" >/dev/null
}

mkdir -p "$cache"
rootfs runtime "$runtime_packages" trim
rootfs build "$build_packages" keep
import_image runtime "$runtime_image"
import_image build "$build_image"
echo "--build-arg PYTHON_IMAGE=$runtime_image --build-arg BUILD_IMAGE=$build_image"
