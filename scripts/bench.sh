#!/usr/bin/env bash
# The benchmark scenario (docs/benchmarks.md): everything in one run on this machine,
# so that the ratios compare like with like.
#
#   scripts/bench.sh [OUT_DIR]          (default target/bench/<date-time>)
#
#   BENCH_SECONDS   seconds per load point (default 10)
#   BENCH_MESSAGES  size of the catch-up / read test (default 1000000)
#   BENCH_PEERS     0 to skip Redis and etcd (default 1)
#   BENCH_ROUNDS    rounds of the load points (default 2): each round measures every
#                   ceiling, chorus point and peer, in alternating order (round 2 runs
#                   the peers first), and the report takes the mean of the rounds, so
#                   that the machine's drift over minutes favours neither side
#   BENCH_PROFILE   release (default) or debug: CI runs the whole scenario in debug, for
#                   a second a point, to keep this script working; its figures mean nothing
#
# 1. builds chorus in release mode (and the storage tools);
# 2. ceilings: this disk's fdatasync latency, and chorus-ceiling (HTTP only, no
#    replication) at concurrency 1, 16 and 64;
# 3. chorus, master + 2 secondaries on loopback, in both durability modes (fsync,
#    relaxed): w=1, 2, 3 at concurrency 1, 16, 64, 100-byte messages, closed loop;
#    and the same set over TLS (--tls-cert/--tls-key/--tls-ca: mutual TLS between the
#    members, HTTPS for the client; certificates from scripts/tls-certs.sh), fsync,
#    w=3 at concurrency 1 and 64: what encryption costs;
# 4. peers from Debian's packages (installed here if missing): Redis 7 with 2 replicas,
#    RPUSH + WAIT 2 0, in memory and with appendfsync always; a 3-member etcd cluster,
#    put through the leader;
# 5. a log of BENCH_MESSAGES: master start, reading it all, an empty secondary catching
#    up, RSS per million messages;
# 6. results.json, results.md (tables, ratios, targets) and plot.png in OUT_DIR.
#
# Every server it starts listens on 127.0.0.1 ports picked at random, lives in a temp
# directory and is killed by pid when the script ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${BENCH_SECONDS:-10}
n=${BENCH_MESSAGES:-1000000}
peers=${BENCH_PEERS:-1}
rounds=${BENCH_ROUNDS:-2}
profile=${BENCH_PROFILE:-release}
out=${1:-target/bench/$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
log() { echo "== $*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if [ "$peers" = 1 ] && ! { command -v redis-server && command -v etcd && command -v etcdctl; } >/dev/null; then
  log "installing redis-server and etcd from Debian's packages"
  as_root apt-get update -qq
  as_root apt-get install -y -q --no-install-recommends redis-server etcd-server etcd-client >/dev/null
fi

log "building ($profile)"
flag=()
[ "$profile" = release ] && flag=(--release)
cargo build "${flag[@]}" --workspace --bins -q
cargo build "${flag[@]}" -p common --features bench --example storage_bench -q
bin=$PWD/target/$profile
bench=("$bin/chorus-bench" --quiet --threads 1 --duration "$secs")

# shellcheck source=lib/servers.sh
. scripts/lib/servers.sh
# Say where it stopped: under `set -e` a failing command can end the run without a word.
set -E
trap 'echo "bench.sh: line $LINENO: \"$BASH_COMMAND\" failed (exit $?)" >&2' ERR
start() { # name, command...: run in the background, output to $work/name.log
  local name=$1; shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
}
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
now() { date +%s.%N; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
wait_for() { # what, command...: poll for up to 60 s; give up at once if a server died
  local what=$1 deadline=$((SECONDS + 60)) p; shift
  while [ "$SECONDS" -lt "$deadline" ]; do
    "$@" >/dev/null 2>&1 && return 0
    for p in "${pids[@]}"; do
      kill -0 "$p" 2>/dev/null || { echo "pid $p exited while waiting for $what" >&2; return 1; }
    done
    sleep 0.1
  done
  echo "timed out waiting for $what" >&2; return 1
}
# Below Linux's ephemeral range (32768-60999), where the clients' own connections take
# their local ports and could hold one of ours: the run takes some 60 ports from here.
port=$((20000 + RANDOM % 12000))
take_port() { port=$((port + 1)); printf -v "$1" %s "$port"; } # take_port VAR

log "fsync latency of this disk"
"$bin/examples/storage_bench" fsync "$work/fsync" 2000 >"$out/fsync.json"

measure_ceiling() { # round
  log "HTTP-only ceiling (chorus-ceiling), round $1"
  take_port cport
  start ceiling "$bin/chorus-ceiling" --http-port "$cport"
  wait_for ceiling curl -fsS -m 1 -X POST -d '{"message":"x"}' "http://127.0.0.1:$cport/newMessage"
  for c in 1 16 64; do
    "${bench[@]}" --url "http://127.0.0.1:$cport" --concurrency "$c" --json "$out/ceiling-c$c.r$1.json"
  done
  stop_all
}

# With TLS on (chorus_cluster's second argument), how nodes, curl and chorus-bench
# reach the master.
scheme=http
curl_tls=()

chorus_cluster() { # durability [tls]: start master + 2 secondaries, wait until w=3 writes work
  local mode=$1 dir="$work/chorus-$1${2:+-tls}-r$round"
  scheme=http curl_tls=()
  tls_node() { :; } # name: the node's --tls-* flags, when TLS is on
  if [ "${2:-}" = tls ]; then
    [ -s "$work/certs/ca.pem" ] || scripts/tls-certs.sh "$work/certs" master s1 s2 >/dev/null
    scheme=https curl_tls=(--cacert "$work/certs/ca.pem")
    tls_node() { echo --tls-cert "$work/certs/$1.pem" --tls-key "$work/certs/$1-key.pem" --tls-ca "$work/certs/ca.pem"; }
  fi
  take_port mhttp; take_port mcomm
  # shellcheck disable=SC2046 # the flags are words without spaces
  start "$mode${2:+-tls}-master" "$bin/master-node" --name master --http-port "$mhttp" --comm-port "$mcomm" \
    --data-dir "$dir/master" --durability "$mode" $(tls_node master)
  for i in 1 2; do
    take_port shttp
    # shellcheck disable=SC2046
    start "$mode${2:+-tls}-s$i" "$bin/secondary-node" --name "s$i" --http-port "$shttp" \
      --master-comm-port "$mcomm" --data-dir "$dir/s$i" --durability "$mode" $(tls_node "s$i")
  done
  wait_for "chorus ($mode${2:+, tls})" curl "${curl_tls[@]}" -fsS -m 5 -X POST \
    -d '{"message":"ready?","writeConcern":3,"timeoutMs":2000}' "$scheme://127.0.0.1:$mhttp/newMessage"
}

caught_up() { # every secondary holds everything the master has
  curl "${curl_tls[@]}" -fsS -m 2 "$scheme://127.0.0.1:$mhttp/status" | python3 -c '
import json, sys
sys.exit(0 if all(m["lagMessages"] == 0 for m in json.load(sys.stdin)["members"]) else 1)'
}

measure_chorus() { # round
  for mode in fsync relaxed; do
    log "chorus, durability $mode, round $1"
    chorus_cluster "$mode"
    for w in 1 2 3; do
      for c in 1 16 64; do
        # Each point starts with the secondaries caught up (w=1 runs ahead of them).
        wait_for "the secondaries to catch up" caught_up
        "${bench[@]}" --url "http://127.0.0.1:$mhttp" --write-concern "$w" --concurrency "$c" \
          --json "$out/chorus-$mode-w$w-c$c.r$1.json"
      done
    done
    curl -fsS "http://127.0.0.1:$mhttp/health" >"$out/chorus-$mode-health.json"
    stop_all
  done
  log "chorus over TLS, durability fsync, round $1"
  chorus_cluster fsync tls
  for c in 1 64; do
    wait_for "the secondaries to catch up" caught_up
    "${bench[@]}" --url "https://127.0.0.1:$mhttp" --tls-ca "$work/certs/ca.pem" \
      --write-concern 3 --concurrency "$c" --json "$out/chorus-tls-w3-c$c.r$1.json"
  done
  stop_all
  scheme=http curl_tls=()
}

measure_peers() { # round
  [ "$peers" = 1 ] || return 0
  redis_cluster() { # mode (memory|aof)
    # No 5 s wait for more replicas before a full sync (Redis's default).
    local mode=$1 extra=(--save "" --appendonly no --repl-diskless-sync-delay 0)
    [ "$mode" = aof ] && extra=(--save "" --appendonly yes --appendfsync always --repl-diskless-sync-delay 0)
    local r1 r2
    take_port rp; take_port r1; take_port r2
    local ports=("$rp" "$r1" "$r2")
    for i in 0 1 2; do
      mkdir -p "$work/redis-$mode-$i-r$round"
      local role=()
      [ "$i" -gt 0 ] && role=(--replicaof 127.0.0.1 "$rp")
      start "redis-$mode-$i" redis-server --port "${ports[$i]}" --bind 127.0.0.1 \
        --dir "$work/redis-$mode-$i-r$round" --daemonize no "${extra[@]}" "${role[@]}"
    done
    # Both replicas through their initial sync (until then WAIT waits for it).
    wait_for "redis replicas" bash -c "[ \$(redis-cli -p $rp info replication | grep -c state=online) = 2 ]"
  }
  for mode in memory aof; do
    log "Redis, 2 replicas, $mode, round $1"
    redis_cluster "$mode"
    for c in 1 64; do
      "${bench[@]}" --target redis --url "127.0.0.1:$rp" --write-concern 3 --concurrency "$c" \
        --json "$out/redis-$mode-w3-c$c.r$1.json"
    done
    redis-server --version >"$out/redis-version.txt"
    stop_all
  done

  log "etcd, 3 members, round $1"
  cluster="" eps=() clients=()
  for i in 0 1 2; do
    take_port client; take_port peer
    clients+=("$client"); eps+=("$peer")
    cluster+="${cluster:+,}e$i=http://127.0.0.1:$peer"
  done
  for i in 0 1 2; do
    start "etcd-$i" etcd --name "e$i" --data-dir "$work/etcd-$i-r$round" \
      --listen-client-urls "http://127.0.0.1:${clients[$i]}" \
      --advertise-client-urls "http://127.0.0.1:${clients[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${eps[$i]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${eps[$i]}" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token chorus-bench
  done
  endpoints=$(printf '127.0.0.1:%s,' "${clients[@]}")
  endpoints=${endpoints%,}
  # All three members up (a put needs only two of them, and `endpoint status` fails
  # while any one does not answer), then the one that leads.
  wait_for "etcd members" env ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health
  wait_for "etcd" env ETCDCTL_API=3 etcdctl --endpoints "$endpoints" put ready yes
  etcd_leader() {
    ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint status -w json | python3 -c '
import json, sys
leaders = [s["Endpoint"] for s in json.load(sys.stdin)
           if s["Status"]["leader"] == s["Status"]["header"]["member_id"]]
if len(leaders) != 1:
    sys.exit(1)
print(leaders[0])' >"$work/etcd-leader"
  }
  wait_for "an etcd leader" etcd_leader
  leader=$(cat "$work/etcd-leader")
  for c in 1 64; do
    "${bench[@]}" --target etcd --url "$leader" --concurrency "$c" --json "$out/etcd-c$c.r$1.json"
  done
  etcd --version | sed -n 1p >"$out/etcd-version.txt" # sed reads it all: no SIGPIPE
  stop_all
}

for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then
    measure_ceiling "$round"; measure_chorus "$round"; measure_peers "$round"
  else
    measure_peers "$round"; measure_chorus "$round"; measure_ceiling "$round"
  fi
done

log "a log of $n messages: start, read, catch-up, RSS"
"$bin/examples/storage_bench" fill "$work/big/master" "$n" >/dev/null
take_port mhttp; take_port mcomm; take_port shttp
t0=$(now)
start big-master "$bin/master-node" --name master --http-port "$mhttp" --comm-port "$mcomm" --data-dir "$work/big/master"
mpid=${pids[-1]}
wait_for "master with $n messages" curl -fsS -m 1 "http://127.0.0.1:$mhttp/health"
t1=$(now)
start_s=$(minus "$t1" "$t0")
rss_start=$(rss_mib "$mpid")
t0=$(now)
bytes=$(curl -fsS "http://127.0.0.1:$mhttp/messages" | wc -c)
t1=$(now)
read_s=$(minus "$t1" "$t0")
t0=$(now)
start big-s1 "$bin/secondary-node" --name s1 --http-port "$shttp" --master-comm-port "$mcomm" --data-dir "$work/big/s1"
spid=${pids[-1]}
caught_up() { curl -fsS -m 2 "http://127.0.0.1:$shttp/health" | grep -q "\"lastId\":$n[,}]"; }
deadline=$((SECONDS + 120))
until caught_up; do
  [ "$SECONDS" -lt "$deadline" ] || { echo "the secondary did not catch up in 120 s" >&2; exit 1; }
  sleep 0.02
done
t1=$(now)
catchup_s=$(minus "$t1" "$t0")
cat >"$out/big.json" <<JSON
{"messages": $n, "masterStartSeconds": $start_s, "masterRssMiBAtStart": $rss_start,
 "readSeconds": $read_s, "readBytes": $bytes, "catchUpSeconds": $catchup_s,
 "masterRssMiB": $(rss_mib "$mpid"), "secondaryRssMiB": $(rss_mib "$spid")}
JSON
stop_all

log "report"
nproc >"$out/cores.txt"
# matplotlib for the plot, in a virtualenv of the project's (from PyPI).
venv=target/bench-venv
if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q matplotlib
fi
"$venv/bin/python" scripts/bench-report.py "$out"
echo "results in $out: results.md, results.json, plot.png" >&2
