#!/usr/bin/env bash
# Build the runtime base image chorus-base:bookworm from Debian's packages (debootstrap,
# then `docker import`), because no image can be pulled from a registry here. Installs
# debootstrap on this host with apt-get if it is missing (and says so first). Users with
# registry access do not need this: the Dockerfile defaults to debian:bookworm-slim.
#   CHORUS_BASE_IMAGE  the tag to build (default chorus-base:bookworm)
#   DEBIAN_MIRROR      (default http://deb.debian.org/debian)
set -euo pipefail
tag=${CHORUS_BASE_IMAGE:-chorus-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag exists"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  echo "installing debootstrap on this host with apt-get (it builds $tag from Debian's packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm (minbase) into $root ..."
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -20 "$root.log"; rm -f "$root.log"; exit 1
}
rm -f "$root.log"
# Keep the image small: no apt lists, caches, docs or man pages.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'CMD ["/bin/bash"]' \
  --message "Debian bookworm minbase, by chorus scripts/docker-base.sh" \
  - "$tag" >/dev/null
echo "built $tag ($(docker image inspect "$tag" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}'))"
