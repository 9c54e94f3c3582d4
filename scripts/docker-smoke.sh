#!/usr/bin/env bash
# Checks the README's Docker path: the image builds here, `docker compose up` starts a
# replicating set whose members share a cluster key made on first start, containers
# report healthy, a secondary killed and started again
# catches up from its volume, and the master's container killed is replaced by an
# elected one while the old master, started again, follows it. Bounded; removes its
# containers, network and volumes (by its own project name), also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/hello.sh
. scripts/lib/hello.sh
if ! docker info >/dev/null 2>&1; then
  echo "docker smoke: skipped (no Docker engine reachable)"
  exit 0
fi
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi

# Its own tag (compose reads CHORUS_IMAGE): the debug binaries never replace the
# chorus:latest a user built.
export CHORUS_IMAGE=${CHORUS_IMAGE:-chorus:smoke}
CHORUS_PROFILE=${CHORUS_PROFILE:-debug} scripts/docker-image.sh
project=chorus-smoke-$$
base=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768-): no client holds it
export CHORUS_HTTP_PORT=$base CHORUS_S1_HTTP_PORT=$((base + 1)) CHORUS_S2_HTTP_PORT=$((base + 2))
dc() { "${compose[@]}" -p "$project" "$@"; }
cleanup() { dc down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; dc logs --tail 30 || true; exit 1; }

dc up -d --no-build >/dev/null 2>&1 || fail "compose up"
deadline=$((SECONDS + 120))
for svc in master s1 s2; do
  until [ "$(docker inspect -f '{{.State.Health.Status}}' "$(dc ps -q $svc)")" = healthy ]; do
    [ $SECONDS -gt $deadline ] && fail "$svc never became healthy"
    sleep 0.5
  done
done
until curl -fsS -m 2 "http://127.0.0.1:$base/health" | grep -q '"memberCount":3'; do
  [ $SECONDS -gt $deadline ] && fail "secondaries never joined"
  sleep 0.3
done
# The members run with the cluster key compose made on this first start (mode 600).
curl -fsS -m 2 "http://127.0.0.1:$base/status" | grep -q '"clusterKey":true' || fail "the master runs without the cluster key"
[ "$(docker exec "$(dc ps -q s2)" stat -c %a /etc/chorus/cluster.key)" = 600 ] || fail "cluster key file is not mode 600"
post() { curl -sS -m 30 -X POST "http://127.0.0.1:$base/newMessage" -d "{\"message\":\"$1\",\"writeConcern\":$2}"; }
post one 3 | grep -q '"acks":3' || fail "w=3 write"
docker kill -s KILL "$(dc ps -q s1)" >/dev/null
post two 2 | grep -q '"id":2' || fail "w=2 write with s1 down"
dc start s1 >/dev/null 2>&1
want='[{"id":1,"message":"one"},{"id":2,"message":"two"}]'
for port in $((base + 1)) $((base + 2)); do
  until [ "$(curl -fsS -m 2 "http://127.0.0.1:$port/messages" 2>/dev/null)" = "$want" ]; do
    [ $SECONDS -gt $deadline ] && fail "node on $port did not converge"
    sleep 0.3
  done
done

# Failover: kill the master's container; s1 or s2 is elected and takes writes; the old
# master, started again, follows the new one and ends with the same log.
docker kill -s KILL "$(dc ps -q master)" >/dev/null
deadline=$((SECONDS + 60))
new=$(writable_primary 60 $((base + 1)) $((base + 2))) || fail "no new master after the master's container was killed"
resp=$(curl -sS -m 30 -X POST "http://127.0.0.1:$new/newMessage" -d '{"message":"three","writeConcern":2}')
echo "$resp" | grep -q '"id":3' || fail "w=2 write on the new master: $resp"
dc start master >/dev/null 2>&1
want="${want%]},{\"id\":3,\"message\":\"three\"}]"
until [ "$(curl -fsS -m 2 "http://127.0.0.1:$base/messages" 2>/dev/null)" = "$want" ]; do
  [ $SECONDS -gt $deadline ] && fail "the old master did not catch up"
  sleep 0.3
done
curl -fsS -m 2 "http://127.0.0.1:$base/hello" | grep -q '"secondary":true' || fail "the old master is not a secondary"
echo "docker smoke: 2 passed, 0 failed"
