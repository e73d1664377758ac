#!/bin/sh
# Validates deploy/k8s offline (deploy/check.sh runs it; CI through
# tests/matrix.sh):
#   1. haproxy/ is what render.sh makes of deploy/haproxy's template;
#   2. `kubectl kustomize` builds the manifests;
#   3. every resource passes kubernetes-validate --strict (pinned, from PyPI,
#      into a venv under target/; it carries the Kubernetes schemas, and as
#      root it runs with no network at all to prove it);
#   4. HAProxy accepts the rendered configuration (its only warnings: the
#      nodes' cluster DNS names do not resolve here, which init-addr allows).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
KV_VERSION=1.37.0
# The Kubernetes version whose schemas the manifests must pass.
K8S_VERSION=${K8S_VERSION:-1.33.0}
venv=${KV_VENV:-$repo/target/kubernetes-validate}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "deploy/k8s/check.sh: $*" >&2; exit 1; }

# 1. The rendered HAProxy configuration is current.
mkdir "$tmp/render"
cp -r "$here/." "$tmp/render/k8s"
mkdir -p "$tmp/render/haproxy" && cp -r "$repo/deploy/haproxy/." "$tmp/render/haproxy"
"$tmp/render/k8s/render.sh"
diff -r "$here/haproxy" "$tmp/render/k8s/haproxy" >&2 \
    || fail "deploy/k8s/haproxy/ is stale: run deploy/k8s/render.sh"

# 2. Build.
command -v kubectl >/dev/null || fail "kubectl is missing (.ci/run installs kubernetes-client)"
kubectl kustomize "$here" > "$tmp/all.yaml" || fail "kubectl kustomize failed"

# 3. Schemas, offline.
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$KV_VERSION"; then
    echo "deploy/k8s/check.sh: installing kubernetes-validate $KV_VERSION into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KV_VERSION"
fi
offline=""
if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then offline="unshare --net"; fi
$offline "$venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$tmp/all.yaml" \
    || fail "the manifests do not pass the Kubernetes $K8S_VERSION schemas"
kinds=$(grep -c '^kind:' "$tmp/all.yaml")

# 4. HAProxy.
(
    export WARREN_LB_DNS=1 WARREN_LB_PEER_0=10.1.0.1 WARREN_LB_PEER_1=10.1.0.2 \
        WARREN_LB_BIND=:8000 WARREN_LB_SOCKET="$tmp/admin.sock" WARREN_LB_PEER=haproxy-0 \
        WARREN_LB_PAGES="$here/haproxy" WARREN_JWT_SECRET=0123456789abcdef0123456789abcdef
    haproxy -c -f "$here/haproxy/haproxy.cfg" >"$tmp/haproxy.out" 2>&1 \
        || { cat "$tmp/haproxy.out" >&2; exit 1; }
    if grep -E 'WARNING|ALERT' "$tmp/haproxy.out" | grep -v 'could not resolve address' >&2; then
        exit 1
    fi
) || fail "haproxy -c refused deploy/k8s/haproxy/haproxy.cfg"
echo "deploy/k8s/check.sh: $kinds resources valid against Kubernetes $K8S_VERSION${offline:+ (offline)}; haproxy.cfg valid"
