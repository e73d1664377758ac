#!/usr/bin/env bash
# A fake internet in network namespaces, so no test packet leaves the
# machine (docs/network.md, "Tests"). As root:
#
#   tests/fakenet/fakenet.sh up NAME     # builds NAME-w and NAME-u
#   tests/fakenet/fakenet.sh down NAME   # removes them and their servers
#
# NAME-w, "the world", is where warren runs (`ip netns exec NAME-w ...`):
# 203.0.113.2/24 on a veth, 198.51.100.7 on lo (a second address of this
# "host"), a default route to NAME-u, a resolv.conf naming the fake
# resolver, and a host-side service on port 8081 (the server a sandbox
# must never reach, on every host address and 127.0.0.1).
# NAME-u, "upstream", routes for it and holds 93.184.215.14 (public), and
# 10.0.0.2, 192.168.1.2 and 169.254.169.254 (private, metadata): a web
# server on ports 80 and 8080 of each, and dnsmasq on 93.184.215.14 answering
# upstream.test -> 93.184.215.14.
set -euo pipefail
cmd=${1:?up or down}
name=${2:?name}
w=$name-w u=$name-u
# Interface names are at most 15 bytes.
vw=${name:0:12}-w vu=${name:0:12}-u
run=/run/warren-fakenet/$name
here=$(cd "$(dirname "$0")" && pwd)

down() {
  for pidfile in "$run"/*.pid; do
    [[ -e $pidfile ]] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.02; done
  done
  ip netns del "$w" 2>/dev/null || true
  ip netns del "$u" 2>/dev/null || true
  rm -rf "$run" "/etc/netns/$w"
}

case $cmd in
  down) down; exit 0 ;;
  up) ;;
  *) echo "usage: $0 up|down NAME" >&2; exit 2 ;;
esac

trap 'down' ERR
mkdir -p "$run"
ip netns add "$u"
ip netns add "$w"
ip link add "$vw" netns "$w" type veth peer name "$vu" netns "$u"
ip -n "$w" link set lo up
ip -n "$w" addr add 203.0.113.2/24 dev "$vw"
ip -n "$w" addr add 198.51.100.7/32 dev lo
ip -n "$w" link set "$vw" up
ip -n "$w" route add default via 203.0.113.1
ip -n "$u" link set lo up
ip -n "$u" addr add 203.0.113.1/24 dev "$vu"
ip -n "$u" link set "$vu" up
for a in 93.184.215.14 10.0.0.2 192.168.1.2 169.254.169.254; do
  ip -n "$u" addr add "$a/32" dev lo
done
mkdir -p "/etc/netns/$w"
echo "nameserver 93.184.215.14" >"/etc/netns/$w/resolv.conf"

py=/usr/bin/python3
ip netns exec "$u" "$py" "$here/server.py" 80 upstream >/dev/null 2>&1 &
echo $! >"$run/web.pid"
ip netns exec "$u" "$py" "$here/server.py" 8080 upstream >/dev/null 2>&1 &
echo $! >"$run/web8080.pid"
ip netns exec "$w" "$py" "$here/server.py" 8081 host >/dev/null 2>&1 &
echo $! >"$run/host.pid"
ip netns exec "$u" dnsmasq --keep-in-foreground --no-resolv --no-hosts \
  --listen-address=93.184.215.14 --bind-interfaces --user=root --group=root \
  --address=/upstream.test/93.184.215.14 --pid-file="$run/dnsmasq.pidfile" >/dev/null 2>&1 &
echo $! >"$run/dnsmasq.pid"
# Ready when each answers.
for _ in $(seq 200); do
  if ip netns exec "$u" "$py" -c 'import urllib.request as u; u.urlopen("http://93.184.215.14/", timeout=1)' 2>/dev/null \
    && ip netns exec "$w" "$py" -c 'import urllib.request as u; u.urlopen("http://127.0.0.1:8081/", timeout=1)' 2>/dev/null \
    && ip netns exec "$w" getent hosts upstream.test >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.05
done
echo "fakenet: the servers did not come up" >&2
down
exit 1
