#!/bin/sh
# Renders haproxy.cfg.in for a pool of warren nodes, to stdout
# (docs/scale-out.md). The node list is append-only: a node's place in it
# (1, 2, ...) is its server id, which the stick table stores as the home of
# each of its users, on every HAProxy peer.
#
#   WARREN_NODES="n1=10.0.0.11:8080 n2=10.0.0.12:8080" \
#   WARREN_LB_PEERS="lb1=10.0.0.2:10000 lb2=10.0.0.3:10000" \
#   deploy/haproxy/render.sh > /etc/haproxy/haproxy.cfg
#
# Optional: WARREN_AGENT_PORT (the nodes' --agent-listen port, 8081),
# WARREN_AGENT_INTER (how often each node is asked, 2s), WARREN_CHECK_INTER
# (health checks, 2s).
set -eu
here=$(dirname "$0")
: "${WARREN_NODES:?set WARREN_NODES=\"name=host:port ...\"}"
: "${WARREN_LB_PEERS:?set WARREN_LB_PEERS=\"name=host:port ...\"}"
agent_port=${WARREN_AGENT_PORT:-8081}
agent_inter=${WARREN_AGENT_INTER:-2s}
check_inter=${WARREN_CHECK_INTER:-2s}

valid() { # name=host:port
    case $1 in
        *=*:*) ;;
        *) echo "render.sh: '$1' is not name=host:port" >&2; exit 2 ;;
    esac
    case ${1%%=*} in
        ''|*[!A-Za-z0-9_.-]*) echo "render.sh: bad name in '$1'" >&2; exit 2 ;;
    esac
}

peers=$(for p in $WARREN_LB_PEERS; do
    valid "$p"
    printf '    peer %s %s\n' "${p%%=*}" "${p#*=}"
done)
id=0
servers=$(for n in $WARREN_NODES; do
    valid "$n"; id=$((id + 1))
    printf '    server %s %s id %d weight 100 check inter %s fall 2 rise 2 agent-check agent-port %s agent-inter %s\n' \
        "${n%%=*}" "${n#*=}" "$id" "$check_inter" "$agent_port" "$agent_inter"
done)
# The home's node is down: this page, never another node. Then the home.
id=0
rules=$(for n in $WARREN_NODES; do
    id=$((id + 1)); name=${n%%=*}
    printf '    http-request return status 503 content-type "text/html; charset=utf-8" hdr Retry-After 60 hdr X-Warren-Home-Down %s file "${WARREN_LB_PAGES}/home-down.html" if { sc0_get_gpt0 eq %d } !{ srv_is_up(warren/%s) }\n' "$name" "$id" "$name"
done
id=0
for n in $WARREN_NODES; do
    id=$((id + 1))
    printf '    use-server %s if { sc0_get_gpt0 eq %d }\n' "${n%%=*}" "$id"
done)

while IFS= read -r line; do
    case $line in
        @PEERS@) printf '%s\n' "$peers" ;;
        @SERVERS@) printf '%s\n' "$servers" ;;
        @HOME_RULES@) printf '%s\n' "$rules" ;;
        *) printf '%s\n' "$line" ;;
    esac
done < "$here/haproxy.cfg.in"
