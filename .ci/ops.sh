#!/usr/bin/env bash
# Tools the operations tests and `make image-test` need, from Debian packages, and a running
# docker daemon. Fails loudly when something cannot be installed or started.
#   systemd-analyze (systemd): tests/test_deploy.py verifies the systemd unit
#   promtool (prometheus):     tests/integration/test_sre_metrics.py checks the exposition
#   docker.io, debootstrap:    make image / make image-test (base image built from Debian)
#   docker-compose:            make image-test runs the compose demo (deploy/compose)
#   g++, python3-dev:          make venv compiles the native output stage (hatch_build.py)
set -euo pipefail
need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v promtool >/dev/null || need+=(prometheus)
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
command -v g++ >/dev/null || need+=(g++)
python3 -c 'import pathlib, sys, sysconfig; sys.exit(not (pathlib.Path(sysconfig.get_paths()["include"]) / "Python.h").exists())' \
    || need+=(python3-dev)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
    nohup dockerd >/tmp/dockerd.log 2>&1 &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { echo ".ci/ops.sh: dockerd did not start:" >&2; tail -20 /tmp/dockerd.log >&2; exit 1; }
fi
echo ".ci/ops.sh: g++, systemd-analyze, promtool, docker $(docker version -f '{{.Server.Version}}') ready"
