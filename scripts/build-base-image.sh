#!/usr/bin/env bash
# Builds kubelab's base image locally, for machines where no registry can be pulled from
# (docker build then uses it through BASE_IMAGE=kubelab/base:bookworm):
#   debootstrap a minimal Debian bookworm root with python3 and the programs the image catalog
#   and the pod network use, then `docker import` it.
# Also fills docker/wheelhouse/ with the Python wheels kubelab needs (downloaded on the host:
# containers on a --iptables=false engine have no route out).
# Usage: scripts/build-base-image.sh [--force]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${KUBELAB_BASE_IMAGE:-kubelab/base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PKGS=python3,python3-venv,python3-pip,iproute2,procps,util-linux,iputils-ping,ca-certificates,curl,nginx-light,redis-server,busybox,bind9-dnsutils,netbase

if [ "${1:-}" != "--force" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE exists (use --force to rebuild)"
else
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
  tmp="$(mktemp -d /tmp/kubelab-rootfs.XXXXXX)"
  trap 'rm -rf "$tmp"' EXIT
  echo "debootstrap bookworm into $tmp (about a minute)"
  debootstrap --variant=minbase --include="$PKGS" bookworm "$tmp" "$MIRROR" >"$tmp.log" 2>&1 \
    || { tail -20 "$tmp.log"; exit 1; }
  rm -f "$tmp.log"
  # no services start in the image; apt caches go
  rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
  tar -C "$tmp" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    - "$IMAGE" >/dev/null
  echo "built $IMAGE"
fi

# Python wheels for the image (its python3 is Debian bookworm's 3.11: the host's python3 must be
# 3.11 too, as on these machines; sdists such as pysyncobj are built into wheels here)
mkdir -p "$ROOT/docker/wheelhouse"
python3 -m pip wheel -q -w "$ROOT/docker/wheelhouse" \
  $(python3 -c 'import tomllib,sys; print(" ".join(tomllib.load(open(sys.argv[1],"rb"))["project"]["dependencies"]))' "$ROOT/pyproject.toml")
echo "wheelhouse ready in docker/wheelhouse ($(ls "$ROOT/docker/wheelhouse" | wc -l) wheels)"
