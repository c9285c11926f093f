#!/usr/bin/env bash
# `make image`: build the router image without any container registry.
#   1. the base image (deploy/docker/base-image.sh, debootstrap) unless it exists;
#   2. the wheels the image installs offline, pinned by constraints.txt, into build/image-wheels;
#   3. docker build. Prints the build time and the image size.
# Fails (non-zero, saying why) when docker is missing or its daemon does not answer.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PY:-.venv/bin/python}"
IMAGE="${IMAGE:-arrakis-router:dev}"
BASE_IMAGE="${BASE_IMAGE:-arrakis-router-base:bookworm}"

if ! command -v docker >/dev/null; then
    echo "make image: docker is not installed (Debian: apt-get install docker.io debootstrap; .ci/ops.sh does)" >&2
    exit 1
fi
if ! docker info >/dev/null 2>&1; then
    echo "make image: the docker daemon does not answer (start dockerd; .ci/ops.sh does)" >&2
    exit 1
fi
started=$(date +%s)
deploy/docker/base-image.sh "$BASE_IMAGE"
rm -rf build/image-wheels
# the wheels of the build stack too: the image builds the router's wheel (and its native
# output stage) offline from these
"$PY" -m pip wheel --quiet --disable-pip-version-check -c constraints.txt --no-build-isolation \
    --wheel-dir build/image-wheels . hatchling Cython
rm -f build/image-wheels/arrakis_router-*.whl  # built from source inside the image
docker build --quiet \
    --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --build-arg VERSION="$("$PY" -c 'import router; print(router.__version__)')" \
    --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    -t "$IMAGE" . >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
echo "image $IMAGE built in $(( $(date +%s) - started )) s, $(( size / 1000000 )) MB"
