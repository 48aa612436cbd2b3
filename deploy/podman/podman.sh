#!/usr/bin/env bash
# podman with this project's settings, for machines without Docker (CI, a laptop):
#   deploy/podman/podman.sh build|run|images|... (any podman arguments)
# Storage (images, layers, containers) lives under the project's cache ($SINK_PODMAN_DIR,
# default .cache/podman), never in /var/lib/containers, so a `rm -rf .cache/podman` cleans it
# all. The settings files are written there on each call from what this machine allows.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
dir=${SINK_PODMAN_DIR:-$repo/.cache/podman}
command -v podman >/dev/null || {
    echo "podman.sh: podman not found (Debian: apt-get install podman buildah runc fuse-overlayfs slirp4netns uidmap)" >&2
    exit 1
}
mkdir -p "$dir/storage" "$dir/run" "$dir/tmp"

# Where the runtime may not raise rlimits ("setrlimit RLIMIT_NOFILE: Operation not permitted"
# with podman's defaults), ask for no more open files than this process's hard limit, and for
# a modest process count (4096: the worker runs a few dozen threads; on some machines any
# value near the host's own limit is refused).
nofile=$(ulimit -Hn)
{ [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ]; } && nofile=65536
nproc=4096
cat >"$dir/containers.conf" <<CONF
# Written by deploy/podman/podman.sh
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
log_driver = "k8s-file"

[engine]
# crun refuses cgroups in hybrid mode ("cgroups in hybrid mode not supported"); runc runs.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$dir/run/events.log"
tmp_dir = "$dir/tmp"
CONF

# fuse-overlayfs where the kernel's overlay cannot be used by this process (nested containers).
cat >"$dir/storage.conf" <<CONF
# Written by deploy/podman/podman.sh
[storage]
driver = "overlay"
graphroot = "$dir/storage"
runroot = "$dir/run"

[storage.options.overlay]
mount_program = "$(command -v fuse-overlayfs || echo /usr/bin/fuse-overlayfs)"
CONF

export CONTAINERS_CONF=$dir/containers.conf
export CONTAINERS_STORAGE_CONF=$dir/storage.conf
export TMPDIR=$dir/tmp
exec podman "$@"
