#!/usr/bin/env bash
# Start a chorus cluster on this machine: one master and two secondaries.
# Ctrl-C (or SIGTERM) stops all three. No Docker needed.
#
#   CHORUS_HTTP_PORT   master HTTP port; the secondaries take the next two (default 8080)
#   CHORUS_COMM_PORT   master comm port (default 4000)
#   CHORUS_MASTER_ARGS / CHORUS_SECONDARY_ARGS   extra flags, e.g. "--delay-ms 1000-2000"
#   CHORUS_DATA_DIR    where each node keeps its log, as DIR/NAME (default ./data)
#   CHORUS_PROFILE     debug (default) or release
set -euo pipefail
cd "$(dirname "$0")/.."

http=${CHORUS_HTTP_PORT:-8080}
comm=${CHORUS_COMM_PORT:-4000}
profile=${CHORUS_PROFILE:-debug}
data=${CHORUS_DATA_DIR:-./data}
flag=()
[ "$profile" = release ] && flag=(--release)

cargo build --workspace --bins "${flag[@]}"
bin=target/$profile

pids=()
stop() {
  trap - INT TERM
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap 'echo "stopping the cluster" >&2; stop; exit 0' INT TERM

# shellcheck disable=SC2086 # the extra args are meant to split
"$bin/master-node" --name master --http-port "$http" --comm-port "$comm" --data-dir "$data/master" ${CHORUS_MASTER_ARGS:-} &
pids+=($!)
for i in 1 2; do
  # shellcheck disable=SC2086
  "$bin/secondary-node" --name "s$i" --http-port $((http + i)) --master-comm-port "$comm" --data-dir "$data/s$i" ${CHORUS_SECONDARY_ARGS:-} &
  pids+=($!)
done

cat >&2 <<MSG
chorus is running: master http://127.0.0.1:$http (comm port $comm),
secondaries http://127.0.0.1:$((http + 1)) and http://127.0.0.1:$((http + 2)). Logs are kept in $data.
Ctrl-C stops them all.
MSG

# If any node exits on its own (a port in use, say), stop the others and fail.
set +e
wait -n "${pids[@]}"
status=$?
set -e
echo "a node exited (status $status); stopping the cluster" >&2
stop
exit 1
