#!/usr/bin/env bash
# Installs everything vti-failover's tests and lab need on Debian (bookworm), as root:
# the Debian packages in labs/apt-packages.txt and a virtualenv in .venv with the agent.
# Idempotent: a second run installs nothing new.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

if [ "$(id -u)" -ne 0 ]; then
  echo "labs/install.sh: run as root (it installs Debian packages)" >&2
  exit 2
fi

mapfile -t pkgs < <(grep -vE '^\s*(#|$)' labs/apt-packages.txt)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  # Keep the daemons we install from starting system-wide: tests start their own.
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ $created_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$py" -m venv .venv
fi
if ! .venv/bin/python -c 'import agent, pytest, exabgp' 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  echo "==> pip install -e .[dev]"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  touch .venv/.installed
fi
# The VM lab (labs/lab on a kernel without ip_vti/esp4) boots the distribution kernel
# with virtme-ng.
if [ ! -x .venv/bin/vng ]; then
  echo "==> pip install virtme-ng (VM lab)"
  .venv/bin/pip install -q --disable-pip-version-check 'virtme-ng>=1.30,<2'
fi
echo "==> ready: $(.venv/bin/vti-failover --version)"
