#!/usr/bin/env bash
# Installs what the build and tests need on a fresh Debian machine that has Rust.
# Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the sqlite3 shell (SQL tests, interop), Debian's python3 with venv
# (it can load SQLite extensions, pyenv's cannot).
packages=(sqlite3 python3 python3-venv ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python venv with the anchors (litestream 0.5.17, its VFS) and moto's S3 server.
stamp=".venv/.requirements-$(sha256sum tools/requirements.txt | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: creating .venv with $(tr '\n' ' ' < tools/requirements.txt | sed 's/#[^=]*//g' | tr -s ' ')"
  [ -x .venv/bin/pip ] || /usr/bin/python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r tools/requirements.txt
  rm -f .venv/.requirements-*
  touch "$stamp"
fi
.venv/bin/litestream version >/dev/null
