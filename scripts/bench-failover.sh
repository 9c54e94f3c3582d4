#!/usr/bin/env bash
# What a client sees of failovers (docs/benchmarks.md, "Failover seen by a client"):
# chorus-failover starts a master and two secondaries here, writes through the
# chorus-client crate at a steady rate with writeConcern majority, kills the master
# FAILOVER_KILLS times (restarting it each time), and reports the write
# unavailability after each kill, the writes the client retried, and any write lost
# or stored twice (it exits non-zero on either, or if the members' checksums differ).
#
#   scripts/bench-failover.sh [OUT_JSON]
#   FAILOVER_KILLS (20), FAILOVER_RATE (200 writes/s), FAILOVER_INTERVAL (4 s),
#   BENCH_PROFILE release (default) or debug (CI: a smoke run)
#
# The members live in a temp directory on free loopback ports and are killed when the
# tool ends or panics (not if the tool itself is SIGKILLed).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/profile.sh
. scripts/lib/profile.sh
json=()
[ $# -ge 1 ] && json=(--json "$1")
exec "target/$profile/chorus-failover" --bin-dir "target/$profile" \
  --kills "${FAILOVER_KILLS:-20}" --rate "${FAILOVER_RATE:-200}" \
  --interval "${FAILOVER_INTERVAL:-4}" "${json[@]}"
