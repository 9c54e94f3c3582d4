#!/usr/bin/env bash
# Start a chorus cluster on this machine: one master and two secondaries. No Docker needed.
# If a node stops (or is killed), the others keep running and this prints the command that
# starts it again with the same name, ports and data. Ctrl-C (or SIGTERM) stops them all.
#
#   CHORUS_HTTP_PORT   master HTTP port; the secondaries take the next two (default 8080)
#   CHORUS_COMM_PORT   master comm port (default 4000)
#   CHORUS_MASTER_ARGS / CHORUS_SECONDARY_ARGS   extra flags, e.g. "--delay-ms 1000-2000"
#   CHORUS_DATA_DIR    where each node keeps its message log, as DIR/NAME (default ./data)
#   CHORUS_PROFILE     debug (default) or release
#   CHORUS_BIN         a directory with master-node and secondary-node already built
#                      (then nothing is built)
#   CHORUS_CLUSTER_KEY_FILE  the set's shared key (default DATA_DIR/cluster.key, made
#                      on the first start, readable by you only): every replication
#                      and election connection proves it knows it (docs/security.md)
#   CHORUS_TLS=1       mutual TLS between the nodes and HTTPS for clients, with a test
#                      CA and certificates made on the first start in DATA_DIR/tls by
#                      scripts/tls-certs.sh (curl --cacert DATA_DIR/tls/ca.pem,
#                      chorus --tls-ca DATA_DIR/tls/ca.pem)
set -euo pipefail
cd "$(dirname "$0")/.."

http=${CHORUS_HTTP_PORT:-8080}
comm=${CHORUS_COMM_PORT:-4000}
profile=${CHORUS_PROFILE:-debug}
data=${CHORUS_DATA_DIR:-./data}

if [ -n "${CHORUS_BIN:-}" ]; then
  bin=$CHORUS_BIN
else
  flag=()
  [ "$profile" = release ] && flag=(--release)
  cargo build --workspace --bins "${flag[@]}"
  bin=target/$profile
fi
bin=$(cd "$bin" && pwd)
mkdir -p "$data"
data=$(cd "$data" && pwd)
key=${CHORUS_CLUSTER_KEY_FILE:-$data/cluster.key}
if [ ! -e "$key" ]; then
  (umask 077 && head -c 48 /dev/urandom | base64 >"$key")
fi

scheme=http
tls() { :; } # name: the node's --tls-* flags, with CHORUS_TLS=1
if [ "${CHORUS_TLS:-0}" = 1 ]; then
  scheme=https
  [ -s "$data/tls/ca.pem" ] || scripts/tls-certs.sh "$data/tls" master s1 s2 >/dev/null
  tls() { printf '%q ' --tls-cert "$data/tls/$1.pem" --tls-key "$data/tls/$1-key.pem" --tls-ca "$data/tls/ca.pem"; }
fi

# Each node's command line, absolute paths, so that it can be pasted anywhere.
declare -A cmd
cmd[master]="$(printf '%q ' "$bin/master-node" --name master --http-port "$http" \
  --comm-port "$comm" --data-dir "$data/master" --cluster-key-file "$key")$(tls master)${CHORUS_MASTER_ARGS:-}"
for i in 1 2; do
  cmd[s$i]="$(printf '%q ' "$bin/secondary-node" --name "s$i" --http-port $((http + i)) \
    --master-comm-port "$comm" --data-dir "$data/s$i" --cluster-key-file "$key")$(tls "s$i")${CHORUS_SECONDARY_ARGS:-}"
done

declare -A running # pid -> name
stop() {
  trap - INT TERM
  if [ ${#running[@]} -gt 0 ]; then
    kill -TERM "${!running[@]}" 2>/dev/null || true
    wait "${!running[@]}" 2>/dev/null || true
  fi
}
trap 'echo "stopping the cluster" >&3; stop; exit 0' INT TERM
exec 3>&2

for name in master s1 s2; do
  # exec: the pid is the node's own, so a signal reaches it and `wait` reports its exit.
  bash -c "exec ${cmd[$name]}" &
  running[$!]=$name
done

cat >&2 <<MSG
chorus is running: master $scheme://127.0.0.1:$http (comm port $comm),
secondaries s1 $scheme://127.0.0.1:$((http + 1)) and s2 $scheme://127.0.0.1:$((http + 2)).
The nodes log to this terminal, one line per event, each starting with the node's name.
Each node keeps its message log in $data/NAME (rm -rf it to start a fresh set).
Members prove they know the key in $key on every connection.$(
  [ "$scheme" = https ] && printf '\n%s' "TLS everywhere: clients verify the nodes with $data/tls/ca.pem (curl --cacert, chorus --tls-ca).")
If a node stops, the others keep running. Ctrl-C stops them all.
MSG

# A node that exits on its own (killed, a port in use, ...) is reported with the command
# that starts it again; the others go on.
report() { # pid status
  local name=${running[$1]} how="with status $2" others="the other nodes keep running"
  unset "running[$1]"
  [ ${#running[@]} -eq 0 ] && others="no other node is left"
  [ "$2" -gt 128 ] && how="killed by SIG$(kill -l $(($2 - 128)) 2>/dev/null || echo $(($2 - 128)))"
  cat >&3 <<MSG
node $name (pid $1) exited $how; $others.
To start it again with the same name, ports and data, run this in another terminal
(Ctrl-C there stops it):
  ${cmd[$name]}
MSG
}
set +e
# The nodes keep this terminal; the script's own stderr goes to fd 3, and bash's
# "Killed" notices to /dev/null (report says it better).
exec 3>&2 2>/dev/null
while [ ${#running[@]} -gt 0 ]; do
  gone=
  wait -n -p gone "${!running[@]}"
  status=$?
  if [ -n "${gone:-}" ]; then
    report "$gone" "$status"
    continue
  fi
  # Nodes that died together may have been reaped already: `wait PID` still has their
  # status.
  for pid in "${!running[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid"
      report "$pid" $?
    fi
  done
  sleep 0.1
done
echo "every node has exited" >&3
exit 1
