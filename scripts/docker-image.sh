#!/usr/bin/env bash
# Build the chorus image here, where no image can be pulled: binaries compiled on this
# host, runtime stage of the Dockerfile on the base image from scripts/docker-base.sh.
#   CHORUS_IMAGE    the tag (default chorus:latest)
#   CHORUS_PROFILE  release (default) or debug: which host binaries go in
set -euo pipefail
cd "$(dirname "$0")/.."
image=${CHORUS_IMAGE:-chorus:latest}
profile=${CHORUS_PROFILE:-release}
flag=()
[ "$profile" = release ] && flag=(--release)
cargo build --workspace --bins "${flag[@]}"
scripts/docker-base.sh
# The classic builder: BuildKit needs buildx, which is not installed here. It builds the
# stages up to the target only, so the Rust stage (after it) is never touched.
DOCKER_BUILDKIT=0 docker build -q \
  --build-arg BASE="${CHORUS_BASE_IMAGE:-chorus-base:bookworm}" \
  --build-arg PROFILE="$profile" \
  --target runtime-host -t "$image" . >/dev/null
echo "built $image ($profile binaries)"
