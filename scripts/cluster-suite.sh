#!/usr/bin/env bash
# The cluster fault suite (tests/tests/cluster): nodes in Docker containers on a private
# network, faults injected while writers run, a checker over the history. Skipped with a
# one-line reason where no Docker engine is reachable. Bounded (the suite gives up after
# 5 minutes of faults); it removes every container, network and volume it made.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! docker info >/dev/null 2>&1; then
  echo "cluster suite: skipped (no Docker engine reachable)"
  exit 0
fi
# Its own tag: the debug binaries never replace the chorus:latest a user built.
export CHORUS_IMAGE=${CHORUS_IMAGE:-chorus:fault-suite}
CHORUS_PROFILE=${CHORUS_PROFILE:-debug} scripts/docker-image.sh
export CHORUS_FAULT_PROJECT=chorus-fault-$$
cleanup() {
  local f="label=chorus.test=$CHORUS_FAULT_PROJECT"
  docker ps -aq --filter "$f" | xargs -r docker rm -f -v >/dev/null 2>&1 || true
  docker network ls -q --filter "$f" | xargs -r docker network rm >/dev/null 2>&1 || true
  docker volume ls -q --filter "$f" | xargs -r docker volume rm -f >/dev/null 2>&1 || true
}
trap cleanup EXIT
timeout 600 cargo test -p chorus-tests --test cluster -- --include-ignored --nocapture
