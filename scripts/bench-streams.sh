#!/usr/bin/env bash
# What the change stream (GET /messages/stream) costs and how fast it is
# (docs/benchmarks.md, "Change streams"): a master and two secondaries here, then
# chorus-streams opens STREAMS_IDLE idle streams on s1 and reads s1's extra resident
# memory, and measures the time from each write's 201 to its event on a stream reading
# s1, at STREAMS_RATE writes/s for STREAMS_SECONDS.
#
#   scripts/bench-streams.sh [OUT_JSON]
#   STREAMS_IDLE (10000), STREAMS_RATE (1000), STREAMS_SECONDS (10),
#   BENCH_PROFILE release (default) or debug (CI: a smoke run whose figures mean nothing)
#
# Servers listen on 127.0.0.1 ports picked at random, live in a temp directory and are
# killed by pid when the script ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${BENCH_PROFILE:-release}
out=${1:-}
flag=()
[ "$profile" = release ] && flag=(--release)
cargo build "${flag[@]}" --workspace --bins -q
bin=$PWD/target/$profile

# shellcheck source=lib/servers.sh
. scripts/lib/servers.sh

port=$((20000 + RANDOM % 12000)) # below the ephemeral range, where clients take ports
mhttp=$port mcomm=$((port + 1)) s1=$((port + 2)) s2=$((port + 3))
"$bin/master-node" --name master --http-port "$mhttp" --comm-port "$mcomm" \
  --data-dir "$work/master" >"$work/master.log" 2>&1 &
pids+=($!)
"$bin/secondary-node" --name s1 --http-port "$s1" --master-comm-port "$mcomm" \
  --data-dir "$work/s1" >"$work/s1.log" 2>&1 &
pids+=($!)
s1pid=$!
"$bin/secondary-node" --name s2 --http-port "$s2" --master-comm-port "$mcomm" \
  --data-dir "$work/s2" >"$work/s2.log" 2>&1 &
pids+=($!)
deadline=$((SECONDS + 60))
until curl -fsS -m 5 -X POST -d '{"message":"ready?","writeConcern":3,"timeoutMs":2000}' \
  "http://127.0.0.1:$mhttp/newMessage" >/dev/null 2>&1; do
  [ $SECONDS -gt $deadline ] && { echo "the set never took a w=3 write" >&2; exit 1; }
  sleep 0.2
done
json=()
[ -n "$out" ] && json=(--json "$out")
"$bin/chorus-streams" --master "127.0.0.1:$mhttp" --node "127.0.0.1:$s1" --pid "$s1pid" \
  --idle "${STREAMS_IDLE:-10000}" --rate "${STREAMS_RATE:-1000}" \
  --seconds "${STREAMS_SECONDS:-10}" "${json[@]}"
