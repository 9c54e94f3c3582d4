#!/usr/bin/env bash
# The Jepsen-style fault test on this machine (docs/faults.md, "The fault suite"):
# chorus-jepsen starts a set of JEPSEN_MEMBERS members on free loopback ports, runs
# writers (write concerns 1, majority and all, with requestIds) and readers (local and
# majority) while seeded nemeses kill, pause and partition members and move their
# clocks, then heals and checks the whole history. Exits non-zero on any violation, keeping the members' data
# directories and logs for a look.
#
#   scripts/jepsen.sh [SECONDS (60)] [SEED (random, printed)] [OUT_JSON]
#   JEPSEN_MEMBERS (3), JEPSEN_CLIENTS (4), BENCH_PROFILE release (default) or debug
#   JEPSEN_DOCKER=1: the members run in containers of the chorus image (built here
#                    from this checkout's binaries, tag chorus:jepsen): kills,
#                    pauses and restarts through the Docker engine, the same clients
#                    and checker. Skipped with a reason where no engine is reachable.
#
# Every member is killed when the tool ends or panics (not if the tool itself is
# SIGKILLed). The clock nemeses need Debian's libfaketime, installed here if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! dpkg -s libfaketime >/dev/null 2>&1; then
  echo "installing libfaketime from Debian's packages (the clock nemeses)"
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends libfaketime >/dev/null
fi
# shellcheck source=lib/profile.sh
. scripts/lib/profile.sh
seconds=${1:-60}
seed=${2:-$(( (RANDOM << 15) | RANDOM ))}
json=()
[ $# -ge 3 ] && json=(--json "$3")
docker=()
if [ "${JEPSEN_DOCKER:-0}" = 1 ]; then
  if ! docker info >/dev/null 2>&1; then
    echo "chorus-jepsen in containers: skipped (no Docker engine reachable)"
    exit 0
  fi
  CHORUS_IMAGE=chorus:jepsen CHORUS_PROFILE=$profile scripts/docker-image.sh
  label=chorus-jepsen-$$
  docker=(--docker chorus:jepsen --docker-label "$label")
  # The tool removes its containers when it ends; this is for when it cannot.
  trap 'docker ps -aq --filter "label=chorus.test=$label" | xargs -r docker rm -f -v >/dev/null 2>&1 || true' EXIT
fi
echo "chorus-jepsen: ${seconds} s of faults, seed ${seed}${docker:+, members in containers} (replay the schedule: ${JEPSEN_DOCKER:+JEPSEN_DOCKER=1 }scripts/jepsen.sh ${seconds} ${seed})"
"target/$profile/chorus-jepsen" --bin-dir "target/$profile" \
  --seconds "$seconds" --seed "$seed" --members "${JEPSEN_MEMBERS:-3}" \
  --clients "${JEPSEN_CLIENTS:-4}" "${json[@]}" "${docker[@]}"
