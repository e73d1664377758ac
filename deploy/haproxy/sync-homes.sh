#!/bin/sh
# Rebuilds HAProxy's stick table from the nodes, which hold the truth (each
# knows the users whose home it has): after every HAProxy of the pool was
# restarted at once, or to check the table (docs/scale-out.md).
#
#   WARREN_NODES="node1=http://10.0.0.11:8080 node2=http://10.0.0.12:8080" \
#   WARREN_ADMIN_TOKEN=... WARREN_LB_SOCKETS=/run/haproxy/admin.sock sync-homes.sh
#
# WARREN_NODES in render.sh's order (a node's place is its server id).
# Needs curl, jq, socat.
set -eu
: "${WARREN_NODES:?}" "${WARREN_ADMIN_TOKEN:?}" "${WARREN_LB_SOCKETS:?}"
id=0
for n in $WARREN_NODES; do
    id=$((id + 1)); url=${n#*=}
    users=$(curl -fsS --max-time 60 -H "Authorization: Bearer $WARREN_ADMIN_TOKEN" "${url%/}/api/users" | jq -r '.users[].id') \
        || { echo "sync-homes.sh: ${n%%=*} did not answer; its users are left as they are" >&2; continue; }
    count=0
    while IFS= read -r u; do
        [ -n "$u" ] || continue
        case $u in
            *[[:space:]\\]*) echo "sync-homes.sh: skipped '$u': the runtime API cannot key it" >&2; continue ;;
        esac
        for s in $WARREN_LB_SOCKETS; do
            echo "set table warren key $u data.gpt0 $id" | socat -t 5 stdio "unix-connect:$s" >/dev/null
        done
        count=$((count + 1))
    done <<EOF_USERS
$users
EOF_USERS
    echo "sync-homes.sh: ${n%%=*} (id $id): $count users"
done
