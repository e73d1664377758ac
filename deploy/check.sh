#!/bin/sh
# Checks the committed load-balancer and Kubernetes files offline
# (docs/scale-out.md); tests/matrix.sh runs it, CI fails on any error.
#   1. deploy/haproxy/haproxy.cfg is what render.sh makes of the example
#      pool, and HAProxy accepts it with no warning, in JWT and token mode;
#   2. the Kubernetes manifests (kustomize) and their rendered HAProxy
#      configuration (deploy/k8s/check.sh), when deploy/k8s exists.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

example() {
    WARREN_NODES="node1=10.0.0.11:8080 node2=10.0.0.12:8080 node3=10.0.0.13:8080" \
    WARREN_LB_PEERS="lb1=10.0.0.2:10000 lb2=10.0.0.3:10000" \
    "$here/haproxy/render.sh"
}
example > "$tmp/haproxy.cfg"
if ! cmp -s "$tmp/haproxy.cfg" "$here/haproxy/haproxy.cfg"; then
    echo "deploy/check.sh: deploy/haproxy/haproxy.cfg is stale; regenerate it:" >&2
    echo "  WARREN_NODES=... see the top of deploy/check.sh, > deploy/haproxy/haproxy.cfg" >&2
    diff -u "$here/haproxy/haproxy.cfg" "$tmp/haproxy.cfg" >&2 || true
    exit 1
fi
for secret in set unset; do
    (
        export WARREN_LB_BIND=127.0.0.1:8000 WARREN_LB_SOCKET="$tmp/admin.sock" \
            WARREN_LB_PEER=lb1 WARREN_LB_PAGES="$here/haproxy/pages"
        if [ $secret = set ]; then export WARREN_JWT_SECRET=0123456789abcdef0123456789abcdef; fi
        haproxy -dW -c -f "$here/haproxy/haproxy.cfg" >"$tmp/out" 2>&1 \
            || { cat "$tmp/out" >&2; echo "deploy/check.sh: haproxy -c failed (JWT secret $secret)" >&2; exit 1; }
    )
done
echo "deploy/check.sh: deploy/haproxy/haproxy.cfg: valid (HAProxy $(haproxy -v | sed -n '1s/.*version \([^ ]*\).*/\1/p'))"
if [ -x "$here/k8s/check.sh" ]; then
    "$here/k8s/check.sh"
fi
