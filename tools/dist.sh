#!/usr/bin/env bash
# make dist, after `cargo build --profile dist`: gathers what users install into
# target/packages/ — the extension and the command-line tool (stripped, LTO), the Python
# wheel (packaging/python) and the npm tarball (packaging/npm) — and prints their sizes
# beside upstream's extension, with the 8 MB goal checked.
set -euo pipefail
cd "$(dirname "$0")/.."

out="$PWD/target/packages"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
rm -rf "$out"
mkdir -p "$out"
# Stripped here rather than by the profile: target/dist keeps the symbols for cargo bloat.
strip --strip-all -o "$out/liblitestream_vfs.so" target/dist/liblitestream_vfs.so
strip --strip-all -o "$out/litestream-vfs" target/dist/litestream-vfs

.venv/bin/python packaging/python/build_wheel.py \
  --library "$out/liblitestream_vfs.so" --version "$version" --out "$out" >/dev/null

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp packaging/npm/package.json packaging/npm/index.js packaging/npm/index.d.ts packaging/npm/README.md "$stage/"
sed -i "s/@VERSION@/$version/" "$stage/package.json"
mkdir "$stage/lib"
cp "$out/liblitestream_vfs.so" "$stage/lib/"
(cd "$stage" && npm pack --pack-destination "$out" --loglevel=error >/dev/null)

size() { stat -c %s "$1"; }
mb() { awk -v b="$1" 'BEGIN { printf "%.2f MB", b / 1e6 }'; }
so_size="$(size "$out/liblitestream_vfs.so")"
goal=8000000
verdict="met"
[ "$so_size" -le "$goal" ] || verdict="NOT MET"
upstream="$(ls .venv/lib/python3*/site-packages/litestream_vfs/litestream-vfs.so 2>/dev/null | head -1 || true)"
{
  echo "make dist ($(uptime | sed 's/.*load/load/')):"
  printf '  %-60s %12s  %s\n' "liblitestream_vfs.so (all stores)" "$so_size" "$(mb "$so_size"), goal <= 8 MB: $verdict"
  printf '  %-60s %12s  %s\n' "litestream-vfs (CLI)" "$(size "$out/litestream-vfs")" "$(mb "$(size "$out/litestream-vfs")")"
  for f in "$out"/*.whl "$out"/*.tgz; do
    printf '  %-60s %12s  %s\n' "$(basename "$f")" "$(size "$f")" "$(mb "$(size "$f")")"
  done
  if [ -n "$upstream" ]; then
    printf '  %-60s %12s  %s\n' "upstream litestream-vfs 0.5.17 .so" "$(size "$upstream")" "$(mb "$(size "$upstream")")"
  fi
} | tee "$out/SIZES.txt"
mkdir -p target/figures
cp "$out/SIZES.txt" target/figures/dist.txt
