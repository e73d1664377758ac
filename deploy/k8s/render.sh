#!/bin/sh
# Renders deploy/haproxy's template for this directory's pool (the
# StatefulSets in warren.yaml and haproxy.yaml) into haproxy/, with the
# error pages beside it, for kustomize's configMapGenerator (which reads
# files under this directory only). check.sh fails when the result differs
# from what is committed: edit deploy/haproxy/haproxy.cfg.in, then run this.
#
# Growing the pool: raise NODES here and `replicas` in warren.yaml together
# (append only: a node's ordinal + 1 is its id in HAProxy's table).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
NODES=${NODES:-3}
NAMESPACE=${NAMESPACE:-warren}
nodes=""
i=0
while [ $i -lt "$NODES" ]; do
    nodes="$nodes warren-$i=warren-$i.warren-nodes.$NAMESPACE.svc.cluster.local:8080"
    i=$((i + 1))
done
# Peers by address: HAProxy resolves a peer once, at start, so the
# container resolves its peers' names first (haproxy.yaml) and passes them in.
WARREN_NODES=$nodes \
WARREN_LB_PEERS='haproxy-0="${WARREN_LB_PEER_0}":10000 haproxy-1="${WARREN_LB_PEER_1}":10000' \
WARREN_AGENT_PORT=8081 \
    "$here/../haproxy/render.sh" > "$here/haproxy/haproxy.cfg"
cp "$here/../haproxy/pages/"* "$here/haproxy/"
