#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine (as root), then runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

# Debian packages the integration tests drive for real: Slurm + munge (a real cluster on
# loopback), ipmitool (talks to the test BMCs), systemd (systemd-analyze verify), git.
APT_PACKAGES=(slurm-wlm munge ipmitool systemd git)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python3 -m pip install -q -e '.[test]'
exec python3 -m pytest -q -p no:cacheprovider --basetemp=/tmp/au-pytest "$@"
