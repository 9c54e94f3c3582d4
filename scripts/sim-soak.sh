#!/usr/bin/env bash
# The long run of the whole-set simulation (docs/failover.md, "The simulation"): as
# many seeds as fit in SECONDS (default 3600) on every core, from seed SIM_FIRST
# (default 1000000) on. Prints seeds, virtual steps, fault mixes covered and each
# failing seed with its mix; exits non-zero if any seed failed. Replay one with
#   SIM_SEED=n SIM_MIX=m cargo test -p common --lib set_sim::one_seed -- --ignored --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."
SIM_SECONDS=${1:-3600} exec cargo test -p common --release --lib set_sim::soak -- \
  --ignored --nocapture
