#!/usr/bin/env bash
# Build the image's base from Debian packages with debootstrap (no container registry needed)
# and tag it as the Dockerfile's BASE_IMAGE. Debian bookworm, minbase, plus python3 (3.11,
# the version the router is tested with) and python3-venv. Idempotent: an existing tag is kept
# unless REBUILD=1.
#
#   deploy/docker/base-image.sh [TAG]      (default arrakis-router-base:bookworm)
#
# Needs root, debootstrap and a running docker daemon.
set -euo pipefail
TAG="${1:-arrakis-router-base:bookworm}"
SUITE="${SUITE:-bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

if [ "${REBUILD:-0}" != 1 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG exists (REBUILD=1 to rebuild)"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "base-image: debootstrap is not installed" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "base-image: debootstrap needs root" >&2; exit 1; }

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
started=$(date +%s)
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$root" "$MIRROR" >/dev/null
# what a container never needs: apt lists and caches, docs, man pages, locales
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
tar -C "$root" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap $SUITE minbase + python3 python3-venv" - "$TAG" >/dev/null
echo "base image $TAG built in $(( $(date +%s) - started )) s: $(docker image inspect -f '{{.Id}}' "$TAG")"
