# Sourced by the benchmark scripts: servers started in the background, stopped by pid
# (SIGTERM, then SIGKILL after 5 s), and a temp directory removed however the script
# ends; on failure the last lines of every $work/*.log are shown.
#   work   the temp directory (made here)
#   pids   the servers to stop (append with pids+=($!))
work=$(mktemp -d)
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then
      echo "pid $p did not stop within 5 s of SIGTERM; killing it" >&2
      kill -9 "$p" 2>/dev/null || true
    fi
  done
  pids=()
}
cleanup() {
  local status=$?
  stop_all
  if [ "$status" != 0 ]; then
    for f in "$work"/*.log; do
      [ -e "$f" ] && { echo "--- last lines of $(basename "$f")" >&2; tail -n 15 "$f" >&2; }
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
