#!/usr/bin/env bash
# Checks that the README's first command works: scripts/cluster.sh starts three nodes
# that replicate (proving a key the script made) and serve the chat page, and the
# chorus CLI finds their master; a node killed by hand leaves the others running, and the command the
# script prints starts it again on its data (it catches up); kill -9 of the master makes
# another node master, and the old master restarted with its printed command follows it;
# one SIGINT stops every node the script started. Bounded in time; cleans up what it
# started.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/hello.sh
. scripts/lib/hello.sh

base=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768-): no client holds it
data=$(mktemp -d)
export CHORUS_HTTP_PORT=$base CHORUS_COMM_PORT=$((base + 3)) CHORUS_DATA_DIR=$data
log=$(mktemp)
setsid scripts/cluster.sh >"$log" 2>&1 &
script=$!
again= again_master=
cleanup() {
  kill -KILL -- -"$script" 2>/dev/null || true
  [ -n "$again" ] && kill -KILL "$again" 2>/dev/null
  [ -n "$again_master" ] && kill -KILL "$again_master" 2>/dev/null
  rm -rf "$log" "$data"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; cat "$log"; exit 1; }

up() { curl -fsS -m 2 "http://127.0.0.1:$1/health" >/dev/null 2>&1; }
deadline=$((SECONDS + 600)) # the first run may build
for port in $base $((base + 1)) $((base + 2)); do
  until up "$port"; do
    if [ $SECONDS -gt $deadline ] || ! kill -0 "$script" 2>/dev/null; then
      fail "node on port $port never came up"
    fi
    sleep 0.2
  done
done
# Wait until both secondaries are members, then write with w=3.
until curl -fsS -m 2 "http://127.0.0.1:$base/health" | grep -q '"memberCount":3'; do
  [ $SECONDS -gt $deadline ] && fail "secondaries never joined"
  sleep 0.2
done
post() {
  curl -sS -m 30 -X POST "http://127.0.0.1:$base/newMessage" \
    -H 'content-type: application/json' -d "{\"message\":\"$1\",\"writeConcern\":$2}"
}
resp=$(post smoke 3)
echo "$resp" | grep -q '"acks":3' || fail "w=3 write: $resp"
for port in $((base + 1)) $((base + 2)); do
  got=$(curl -fsS -m 5 "http://127.0.0.1:$port/messages")
  [ "$got" = '[{"id":1,"message":"smoke"}]' ] || fail "$port has $got"
done
# The script made the set's key, private, and every node uses it.
[ "$(stat -c %a "$data/cluster.key")" = 600 ] || fail "the cluster key is not private"
[ "$(pgrep -g "$script" -f -- '--cluster-key-file' | wc -l)" = 3 ] || fail "not every node uses the key"
# The README's next lines: the chat page on any member, and the chorus CLI finding
# the master from a secondary.
curl -fsS -m 5 "http://127.0.0.1:$((base + 2))/" | grep -q 'id="messages"' || fail "no chat page on s2"
cli=target/${CHORUS_PROFILE:-debug}/chorus
status=$("$cli" --hosts "127.0.0.1:$((base + 1))" status) || fail "chorus status: $status"
echo "$status" | grep -q ' PRIMARY ' || fail "chorus status names no master: $status"

# kill -9 one secondary: the script says which and how to restart it; the rest go on.
s1=$(pgrep -g "$script" -f 'secondary-node --name s1 ') || fail "no s1 process"
kill -KILL "$s1"
deadline=$((SECONDS + 30))
until grep -q "node s1 (pid $s1) exited killed by SIGKILL" "$log"; do
  [ $SECONDS -gt $deadline ] && fail "the script did not report s1's exit"
  sleep 0.1
done
kill -0 "$script" 2>/dev/null || fail "cluster.sh stopped when s1 died"
resp=$(post while-s1-is-down 2)
echo "$resp" | grep -q '"id":2' || fail "w=2 write with s1 down: $resp"
restart=$(grep -A3 "node s1 (pid $s1) exited" "$log" | grep '^  ' | head -1)
[ -n "$restart" ] || fail "no restart command printed"
bash -c "exec $restart" >/dev/null 2>&1 &
again=$!
want='[{"id":1,"message":"smoke"},{"id":2,"message":"while-s1-is-down"}]'
until [ "$(curl -fsS -m 2 "http://127.0.0.1:$((base + 1))/messages" 2>/dev/null)" = "$want" ]; do
  [ $SECONDS -gt $deadline ] && fail "s1 restarted with the printed command did not catch up"
  sleep 0.2
done

# kill -9 the master: s1 or s2 is elected and takes writes; the master started again
# with the printed command follows the new master and catches up.
m=$(pgrep -g "$script" -f 'master-node --name master ') || fail "no master process"
kill -KILL "$m"
deadline=$((SECONDS + 60))
new=$(writable_primary 60 $((base + 1)) $((base + 2))) || fail "no new master after kill -9 of the master"
resp=$(curl -sS -m 30 -X POST "http://127.0.0.1:$new/newMessage" -d '{"message":"after-failover","writeConcern":2}')
echo "$resp" | grep -q '"id":3' || fail "w=2 write on the new master: $resp"
until grep -q "node master (pid $m) exited" "$log"; do
  [ $SECONDS -gt $deadline ] && fail "the script did not report the master's exit"
  sleep 0.1
done
restart=$(grep -A3 "node master (pid $m) exited" "$log" | grep '^  ' | head -1)
[ -n "$restart" ] || fail "no restart command printed for the master"
bash -c "exec $restart" >/dev/null 2>&1 &
again_master=$!
want="${want%]},{\"id\":3,\"message\":\"after-failover\"}]"
until [ "$(curl -fsS -m 2 "http://127.0.0.1:$base/messages" 2>/dev/null)" = "$want" ]; do
  [ $SECONDS -gt $deadline ] && fail "the old master restarted with the printed command did not catch up"
  sleep 0.2
done
curl -fsS -m 2 "http://127.0.0.1:$base/hello" | grep -q '"secondary":true' || fail "the old master is not a secondary"

pids=$(pgrep -g "$script" -f 'master-node|secondary-node' || true)
kill -INT -- -"$script"
for _ in $(seq 100); do
  kill -0 "$script" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$script" 2>/dev/null && fail "cluster.sh still running after SIGINT"
for p in $pids; do
  kill -0 "$p" 2>/dev/null && fail "node $p survived SIGINT"
done
kill -TERM "$again" "$again_master"
wait "$again" || fail "the restarted s1 did not stop cleanly on SIGTERM"
wait "$again_master" || fail "the restarted master did not stop cleanly on SIGTERM"
again= again_master=
echo "readme smoke: 3 passed, 0 failed"
