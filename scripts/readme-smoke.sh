#!/usr/bin/env bash
# Checks that the README's first command works: scripts/cluster.sh starts three nodes
# that replicate, and one SIGINT stops every one of them. Bounded in time; cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."

base=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768-): no client holds it
data=$(mktemp -d)
export CHORUS_HTTP_PORT=$base CHORUS_COMM_PORT=$((base + 3)) CHORUS_DATA_DIR=$data
log=$(mktemp)
setsid scripts/cluster.sh >"$log" 2>&1 &
script=$!
cleanup() { kill -KILL -- -"$script" 2>/dev/null || true; rm -rf "$log" "$data"; }
trap cleanup EXIT

up() { curl -fsS -m 2 "http://127.0.0.1:$1/health" >/dev/null 2>&1; }
deadline=$((SECONDS + 600)) # the first run may build
for port in $base $((base + 1)) $((base + 2)); do
  until up "$port"; do
    if [ $SECONDS -gt $deadline ] || ! kill -0 "$script" 2>/dev/null; then
      echo "FAIL: node on port $port never came up"; cat "$log"; exit 1
    fi
    sleep 0.2
  done
done
# Wait until both secondaries are members, then write with w=3.
until curl -fsS -m 2 "http://127.0.0.1:$base/health" | grep -q '"memberCount":3'; do
  [ $SECONDS -gt $deadline ] && { echo "FAIL: secondaries never joined"; cat "$log"; exit 1; }
  sleep 0.2
done
resp=$(curl -sS -m 30 -X POST "http://127.0.0.1:$base/newMessage" \
  -H 'content-type: application/json' -d '{"message":"smoke","writeConcern":3}')
echo "$resp" | grep -q '"acks":3' || { echo "FAIL: w=3 write: $resp"; cat "$log"; exit 1; }
for port in $((base + 1)) $((base + 2)); do
  got=$(curl -fsS -m 5 "http://127.0.0.1:$port/messages")
  [ "$got" = '[{"id":1,"message":"smoke"}]' ] || { echo "FAIL: $port has $got"; exit 1; }
done

pids=$(pgrep -g "$script" -f 'master-node|secondary-node' || true)
kill -INT -- -"$script"
for _ in $(seq 100); do
  kill -0 "$script" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$script" 2>/dev/null && { echo "FAIL: cluster.sh still running after SIGINT"; exit 1; }
for p in $pids; do
  kill -0 "$p" 2>/dev/null && { echo "FAIL: node $p survived SIGINT"; exit 1; }
done
echo "readme smoke: 1 passed, 0 failed"
