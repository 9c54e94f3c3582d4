#!/usr/bin/env bash
# Install what the browser test of the chat page needs: Debian's chromium and its
# WebDriver (chromium-driver). Nothing downloads a browser of its own. Idempotent.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
command -v chromium >/dev/null && command -v chromedriver >/dev/null
