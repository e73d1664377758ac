#!/bin/sh
# Moves one user's home from one warren node to another, and HAProxy's
# routing with it (docs/scale-out.md#draining-a-node).
#
#   move-user.sh USER FROM_URL TO_URL TO_ID
#
# FROM_URL, TO_URL: the nodes' own addresses (not HAProxy's), e.g.
# http://10.0.0.11:8080; TO_ID: the new node's server id (its place in
# render.sh's WARREN_NODES). Environment: WARREN_ADMIN_TOKEN (the pool's
# admin token), WARREN_LB_SOCKETS (HAProxy runtime API sockets, space
# separated; one is enough when the peers sync, each is safer).
#
# The steps: the user's requests wait on a "being moved" page (stick entry
# 65535); their terminals on the old node are closed (so nothing writes
# during the copy); the home is exported from the old node and imported into
# the new one (archives are checked there as any import: docs/archives.md);
# the stick entry points at the new node; the old node forgets the tenant,
# keeping the home directory on its volume until an operator removes it
# (pass --remove-old-home to remove it at once). On any failure the entry
# is put back to the old node and the script stops: the user is where they
# were.
#
# Needs curl, jq, socat.
set -eu
remove_old=false
if [ "${1:-}" = --remove-old-home ]; then remove_old=true; shift; fi
[ $# -eq 4 ] || { sed -n '2,10p' "$0" >&2; exit 2; }
user=$1 from=${2%/} to=${3%/} to_id=$4
: "${WARREN_ADMIN_TOKEN:?set WARREN_ADMIN_TOKEN}"
: "${WARREN_LB_SOCKETS:?set WARREN_LB_SOCKETS (HAProxy runtime API sockets)}"
case $to_id in ''|*[!0-9]*) echo "move-user.sh: TO_ID must be a number" >&2; exit 2 ;; esac
case $user in *[[:space:]\\]*) echo "move-user.sh: a user id with spaces or backslashes cannot be keyed through the runtime API" >&2; exit 2 ;; esac

MOVING=65535
enc=$(printf %s "$user" | jq -sRr @uri)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

api() { # METHOD URL [curl args...]
    m=$1 u=$2; shift 2
    curl -fsS --max-time 600 -X "$m" -H "Authorization: Bearer $WARREN_ADMIN_TOKEN" "$@" "$u"
}
set_home() { # N
    for s in $WARREN_LB_SOCKETS; do
        out=$(echo "set table warren key $user data.gpt0 $1" | socat -t 5 stdio "unix-connect:$s")
        [ -z "$(printf %s "$out" | tr -d '[:space:]')" ] || { echo "move-user.sh: HAProxy $s: $out" >&2; return 1; }
    done
}
home_of() { # the entry's gpt0 on the first socket, empty when none
    echo "show table warren key $user" | socat -t 5 stdio "unix-connect:${WARREN_LB_SOCKETS%% *}" \
        | sed -n 's/.* gpt0=\([0-9]*\).*/\1/p' | head -n1
}

api GET "$from/api/users/$enc" -o /dev/null || { echo "move-user.sh: $user has no home on $from" >&2; exit 1; }
old_id=$(home_of)
[ "$old_id" != "$to_id" ] || { echo "move-user.sh: $user is already routed to node $to_id" >&2; exit 1; }
set_home $MOVING
rollback() {
    echo "move-user.sh: failed; $user stays on $from" >&2
    if [ -n "$old_id" ]; then set_home "$old_id"; else set_home 0; fi
    exit 1
}
# Nothing may write to the home while it is copied.
api GET "$from/api/users/$enc/terminals" -o "$tmp/terminals.json" || rollback
for t in $(jq -r '.terminals[].id' "$tmp/terminals.json"); do
    api DELETE "$from/api/users/$enc/terminals/$t" -o /dev/null || rollback
done
api GET "$from/api/users/$enc/export" -o "$tmp/home.tar.gz" || rollback
api POST "$to/api/users" -H 'Content-Type: application/json' \
    --data "$(jq -cn --arg id "$user" '{id: $id}')" -o /dev/null || rollback
api POST "$to/api/users/$enc/import" -H 'Content-Type: application/gzip' \
    --data-binary "@$tmp/home.tar.gz" -o "$tmp/imported.json" || rollback
set_home "$to_id" || rollback
api DELETE "$from/api/users/$enc?remove_home=$remove_old" -o /dev/null \
    || echo "move-user.sh: $user moved, but $from did not forget them; delete them there" >&2
echo "move-user.sh: $user moved to node $to_id ($(jq -r '"\(.files // "?") files, \(.bytes // "?") bytes"' "$tmp/imported.json"))"
