#!/usr/bin/env bash
# Install the Debian packages the local fleet runs (real Prometheus, real HAProxy) when missing.
# As root: apt-get installs them. Otherwise: print the exact command and fail, changing nothing.
set -euo pipefail
declare -A binary_of=([prometheus]=prometheus [haproxy]=haproxy)
missing=()
for pkg in "$@"; do
  bin=${binary_of[$pkg]:-$pkg}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "gpufleet needs these Debian packages: ${missing[*]}" >&2
  echo "run: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 2
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian packages start system services; the local fleet runs its own processes on free ports.
for svc in "${missing[@]}"; do
  (systemctl stop "$svc" && systemctl disable "$svc") >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
done
