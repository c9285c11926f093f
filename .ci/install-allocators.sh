#!/usr/bin/env bash
# The allocators the router can be preloaded with, for the tests that run it on them
# (tests/router/test_memory.py, tests/integration/test_cli.py): gperftools' tcmalloc, which
# the container image preloads, and jemalloc. Installs Debian's libtcmalloc-minimal4 and
# libjemalloc2 when the loader cannot find them; fails loudly otherwise.
set -euo pipefail
found() { ldconfig -p | grep -q "$1 "; }
if found 'libtcmalloc_minimal\.so\.4' && found 'libjemalloc\.so\.2'; then
    echo "libtcmalloc_minimal.so.4, libjemalloc.so.2: installed"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends libtcmalloc-minimal4 libjemalloc2 >/dev/null
found 'libtcmalloc_minimal\.so\.4' && found 'libjemalloc\.so\.2'
echo "libtcmalloc_minimal.so.4, libjemalloc.so.2: installed"
