#!/usr/bin/env bash
# Builds the demo guest for QEMU (Debian's generic kernel + a busybox initramfs) into
# .vimha-cache/guest/ (or $VIMHA_CACHE/guest/) and prints the bundle's path. Idempotent: a
# second run finds the bundle and prints its path at once. --refresh asks apt for a newer
# kernel. Needs busybox-static and apt (scripts/install-system-deps.sh installs the first).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$root/.venv/bin/python"
[ -x "$py" ] || py=python3
export VIMHA_CACHE="${VIMHA_CACHE:-$root/.vimha-cache}"
PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m vimha.cloud.guest_image "$@"
