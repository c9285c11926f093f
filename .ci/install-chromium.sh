#!/usr/bin/env bash
# Headless Chromium for the status-page browser tests (tests/integration/test_statuspage_browser.py).
# Installs Debian's `chromium` when no chromium binary is on PATH; fails loudly otherwise.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    chromium --version
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
chromium --version
