# shellcheck shell=bash
# Build every binary in BENCH_PROFILE (release by default, or debug) and set $profile,
# for the scripts that run the tools of bench/ (bench-failover.sh, jepsen.sh).
profile=${BENCH_PROFILE:-release}
flag=()
[ "$profile" = release ] && flag=(--release)
cargo build "${flag[@]}" --workspace --bins -q
