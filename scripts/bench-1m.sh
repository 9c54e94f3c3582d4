#!/usr/bin/env bash
# Node-level storage figures for a log of N messages of 100 bytes (default 1M):
# RSS of a master holding it, the time to read it all over HTTP (streamed), the time for
# an empty secondary to catch up on it, and the RSS of both afterwards.
# Builds in release mode; uses loopback ports only; removes everything it made.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
cargo build --release --workspace --bins -q
cargo build --release -p common --features bench --example storage_bench -q
bin=target/release
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
rss() { awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' "/proc/$1/status"; }
wait_http() { for _ in $(seq 300); do curl -fsS -m 1 "http://127.0.0.1:$1/health" >/dev/null 2>&1 && return; sleep 0.1; done; echo "no answer on $1"; exit 1; }

base=$((20000 + RANDOM % 20000))
$bin/examples/storage_bench fill "$work/m" "$n"
t0=$(date +%s.%N)
$bin/master-node --name m --http-port "$base" --comm-port $((base + 1)) --data-dir "$work/m" 2>"$work/m.log" &
pids+=($!); mpid=$!; disown
wait_http "$base"
t1=$(date +%s.%N)
echo "master start with $n messages: $(echo "$t1 - $t0" | bc) s (includes the log scan); RSS $(rss $mpid)"
t0=$(date +%s.%N)
bytes=$(curl -fsS "http://127.0.0.1:$base/messages" | wc -c)
t1=$(date +%s.%N)
echo "GET /messages (all $n, $bytes bytes): $(echo "$t1 - $t0" | bc) s; master RSS after $(rss $mpid)"
t0=$(date +%s.%N)
$bin/secondary-node --name s1 --http-port $((base + 2)) --master-comm-port $((base + 1)) --data-dir "$work/s1" 2>"$work/s1.log" &
pids+=($!); spid=$!; disown
until [ "$(curl -fsS -m 2 "http://127.0.0.1:$((base + 2))/health" 2>/dev/null | grep -o '"lastId":[0-9]*' | cut -d: -f2)" = "$n" ]; do sleep 0.05; done
t1=$(date +%s.%N)
secs=$(echo "$t1 - $t0" | bc)
echo "secondary catch-up of $n: $secs s ($(echo "$n / $secs" | bc) messages/s); RSS master $(rss $mpid), secondary $(rss $spid)"
