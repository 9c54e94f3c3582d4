#!/usr/bin/env bash
# A/B comparison of two builds of chorus on the same machine, in alternating pairs, so
# that the machine's drift over minutes favours neither (docs/benchmarks.md, "Noise").
#
#   scripts/bench-ab.sh A_BIN_DIR B_BIN_DIR      (each holds master-node, secondary-node)
#
#   AB_PAIRS    pairs of runs (default 3): pair k runs A then B, or B then A
#   AB_SECONDS  seconds per load point (default 6)
#   AB_POINTS   durability:w:concurrency points (default
#               "fsync:1:64 fsync:3:1 fsync:3:64 relaxed:3:64")
#
# For each build and point: writes/s, p50 and p99 latency (chorus-bench, from this
# checkout's release build) and the CPU the three nodes spent per write (utime + stime
# from /proc over the point). Prints a table of the medians over the pairs. Servers
# listen on loopback ports picked at random and are stopped by pid however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# = 2 ] || { echo "usage: $0 A_BIN_DIR B_BIN_DIR" >&2; exit 2; }
a=$(cd "$1" && pwd) b=$(cd "$2" && pwd)
pairs=${AB_PAIRS:-3}
secs=${AB_SECONDS:-6}
points=${AB_POINTS:-"fsync:1:64 fsync:3:1 fsync:3:64 relaxed:3:64"}
cargo build --release -p chorus-bench --bin chorus-bench -q
bench=("$PWD/target/release/chorus-bench" --quiet --threads 1 --duration "$secs")

# shellcheck source=lib/servers.sh
. scripts/lib/servers.sh
results="$work/results.tsv"
port=$((20000 + RANDOM % 12000))
take_port() { port=$((port + 1)); printf -v "$1" %s "$port"; }
ticks() { # utime + stime of the given pids, in clock ticks
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}
wait_ready() { # http port
  local deadline=$((SECONDS + 60))
  until curl -fsS -m 5 -X POST -d '{"message":"ready?","writeConcern":3,"timeoutMs":2000}' \
    "http://127.0.0.1:$1/newMessage" >/dev/null 2>&1; do
    [ $SECONDS -gt $deadline ] && { echo "cluster on $1 never took a w=3 write" >&2; exit 1; }
    sleep 0.1
  done
}

run_build() { # label bin_dir
  local label=$1 bin=$2 point mode w c mhttp mcomm shttp dir before after
  for point in $points; do
    IFS=: read -r mode w c <<<"$point"
    dir="$work/$label-$mode-$RANDOM"
    take_port mhttp; take_port mcomm
    "$bin/master-node" --name master --http-port "$mhttp" --comm-port "$mcomm" \
      --data-dir "$dir/master" --durability "$mode" >"$work/$label-master.log" 2>&1 &
    pids+=($!)
    for i in 1 2; do
      take_port shttp
      "$bin/secondary-node" --name "s$i" --http-port "$shttp" --master-comm-port "$mcomm" \
        --data-dir "$dir/s$i" --durability "$mode" >"$work/$label-s$i.log" 2>&1 &
      pids+=($!)
    done
    wait_ready "$mhttp"
    before=$(ticks "${pids[@]}")
    "${bench[@]}" --url "http://127.0.0.1:$mhttp" --write-concern "$w" --concurrency "$c" \
      --json "$work/point.json"
    after=$(ticks "${pids[@]}")
    python3 - "$work/point.json" "$label" "$point" "$before" "$after" "$(getconf CLK_TCK)" >>"$results" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
label, point, before, after, hz = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
us = (after - before) / hz * 1e6 / max(r["ok"], 1)
l = r["latencyMs"]
print(f"{label}\t{point}\t{r['throughput']:.0f}\t{l['p50']:.3f}\t{l['p99']:.3f}\t{us:.1f}")
EOF
    stop_all
  done
}

for k in $(seq "$pairs"); do
  echo "== pair $k of $pairs" >&2
  if [ $((k % 2)) = 1 ]; then run_build A "$a"; run_build B "$b"; else run_build B "$b"; run_build A "$a"; fi
done

python3 - "$results" "$a" "$b" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
print(f"A = {sys.argv[2]}\nB = {sys.argv[3]}\n")
print("| point (durability:w:clients) | build | writes/s | p50 ms | p99 ms | CPU µs/write (3 nodes) |")
print("| --- | --- | --- | --- | --- | --- |")
points = list(dict.fromkeys(r[1] for r in rows))
for p in points:
    for b in ("A", "B"):
        sel = [r for r in rows if r[0] == b and r[1] == p]
        med = lambda i: statistics.median(float(r[i]) for r in sel)
        print(f"| {p} | {b} | {med(2):,.0f} | {med(3):.3f} | {med(4):.3f} | {med(5):.1f} |")
EOF
