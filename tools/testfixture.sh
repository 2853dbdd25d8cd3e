#!/usr/bin/env bash
# SQLite's own WAL, locking and transaction tests through the litestream VFS.
#
# Builds SQLite 3.40.1's testfixture from Debian's source package (the version the
# machine's libsqlite3 is), with tools/testfixture_shim.c linked in: it loads our extension
# at sqlite3_initialize() and makes a VFS in front of `litestream` the default, giving each
# database its own file:// replica (see the shim for why). Then runs each selected test
# file twice, without the extension (the baseline: what fails here anyway) and with it, and
# prints one line per file: errors/tests for both runs, how many databases the run with the
# extension opened through our VFS (each gets a replica), and the tests failing only with
# it. Results: target/testfixture/results.txt, logs: target/testfixture/logs/.
#
#   tools/testfixture.sh                         # wal*.test lock*.test trans*.test
#   TESTFIXTURE_TESTS="wal.test wal2.test" tools/testfixture.sh
#   TESTFIXTURE_TIMEOUT=900 tools/testfixture.sh # seconds per test file and run
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${TESTFIXTURE_DIR:-$root/target/testfixture}
tests=${TESTFIXTURE_TESTS:-"wal*.test lock*.test trans*.test"}
timeout_s=${TESTFIXTURE_TIMEOUT:-600}
ext=$root/target/release/liblitestream_vfs.so
upstream=3.40.1
debian=3.40.1-2+deb12u2
pool=http://deb.debian.org/debian/pool/main/s/sqlite3
src=$work/sqlite3-$upstream

# Build prerequisites (Tcl headers for testfixture); only this target needs them.
missing=()
for p in tcl-dev make gcc curl xz-utils; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ -f "$ext" ] || { echo "testfixture: $ext is missing: run make build" >&2; exit 1; }

mkdir -p "$work"
cd "$work"
# The runs load a copy, so a `cargo build` during an hour-long run cannot swap the library
# under a live process (or mix two versions in one table).
cp "$ext" "$work/liblitestream_vfs.so.new" && mv "$work/liblitestream_vfs.so.new" "$work/liblitestream_vfs.so"
ext=$work/liblitestream_vfs.so
if [ ! -x "$src/testfixture" ] || [ "$root/tools/testfixture_shim.c" -nt "$src/testfixture" ]; then
  # Source: `apt-get source` when deb-src entries exist, else the same files from the pool,
  # checked against the SHA-256 sums in the .dsc either way.
  dsc=sqlite3_$debian.dsc
  if [ ! -f "$dsc" ]; then
    apt-get source --download-only "sqlite3=$debian" >/dev/null 2>&1 || true
  fi
  for f in "$dsc" "sqlite3_$upstream.orig.tar.xz" "sqlite3_$debian.debian.tar.xz"; do
    [ -f "$f" ] || curl -fsS -O "$pool/$f"
  done
  for f in "sqlite3_$upstream.orig.tar.xz" "sqlite3_$debian.debian.tar.xz"; do
    want=$(awk -v f="$f" '/^Checksums-Sha256:/{on=1;next} /^[^ ]/{on=0} on && $3==f {print $1}' "$dsc")
    echo "$want  $f" | sha256sum -c --quiet - || { echo "testfixture: $f does not match $dsc" >&2; exit 1; }
  done
  rm -rf "$src"
  tar xJf "sqlite3_$upstream.orig.tar.xz"
  tar xJf "sqlite3_$debian.debian.tar.xz" -C "$src"
  # Debian's patches, except those about packaging (lemon from the lemon package, cross
  # builds, the amalgamation's own configure).
  while read -r p; do
    case $p in
      ''|'#'*|02-use-packaged-lempar.c.patch|30-cross.patch|40-amalgamation_configure.patch) ;;
      *) patch -d "$src" -p1 --forward -s <"$src/debian/patches/$p" ;;
    esac
  done <"$src/debian/patches/series"
  (cd "$src" && ./configure --with-tcl=/usr/lib/tcl8.6 >"$work/configure.log" 2>&1)
  sed -i "s|^TESTSRC = \\\\|TESTSRC = $root/tools/testfixture_shim.c \\\\|" "$src/Makefile"
  echo "testfixture: building SQLite $upstream testfixture (log: $work/build.log)"
  make -C "$src" -j"$(nproc)" testfixture OPTS="-DSQLITE_EXTRA_INIT=litestream_fixture_init" \
    TLIBS="-lm -lz -ldl" >"$work/build.log" 2>&1
fi

# One run of one test file: "errors tests" from its last summary line, or why there is none.
run() {
  local file=$1 with_ext=$2 log=$3 scratch
  scratch=$(mktemp -d "$work/run.XXXXXX")
  local env=(env -u LITESTREAM_EXT -u LITESTREAM_REPLICA_URL)
  if [ "$with_ext" = 1 ]; then
    mkdir -p "$scratch/replicas"
    env+=(LITESTREAM_EXT="$ext" LITESTREAM_FIXTURE_REPLICAS="$scratch/replicas")
  fi
  local rc=0
  (cd "$scratch" && "${env[@]}" timeout "$timeout_s" "$src/testfixture" "$src/test/$file" >"$log" 2>&1) || rc=$?
  # Databases opened through the VFS: one replica directory each (proof it was in use).
  local opened=0
  [ -d "$scratch/replicas" ] && opened=$(find "$scratch/replicas" -mindepth 1 -maxdepth 1 | wc -l)
  rm -rf "$scratch"
  local summary
  summary=$(grep -Eo '^[0-9]+ errors out of [0-9]+ tests' "$log" | tail -1 || true)
  if [ -n "$summary" ]; then
    awk -v o="$opened" '{print $1, $5, o}' <<<"$summary"
  elif [ $rc -eq 124 ]; then
    echo "timeout - $opened"
  else
    echo "crash($rc) - $opened"
  fi
}

results=$work/results.txt
logs=$work/logs
mkdir -p "$logs"
printf '%-20s %12s %12s %7s  %s\n' "file" "plain err/n" "ours err/n" "dbs" "failing with ours only" | tee "$results"
total_plain=0 total_ours=0 total_tests=0 files=0
for pattern in $tests; do
  for path in "$src"/test/$pattern; do
    [ -f "$path" ] || continue
    file=$(basename "$path")
    read -r plain_err plain_n _ <<<"$(run "$file" 0 "$logs/$file.plain")"
    read -r ours_err ours_n dbs <<<"$(run "$file" 1 "$logs/$file.ours")"
    # Test names failing with our VFS but not without it.
    ours_only=$(comm -13 \
      <(grep -Eo '^!Failures on these tests: .*' "$logs/$file.plain" | cut -d: -f2 | tr ' ' '\n' | sort -u) \
      <(grep -Eo '^!Failures on these tests: .*' "$logs/$file.ours" | cut -d: -f2 | tr ' ' '\n' | sort -u) |
      grep -v '^$' | head -8 | tr '\n' ' ' || true)
    printf '%-20s %12s %12s %7s  %s\n' "$file" "$plain_err/$plain_n" "$ours_err/$ours_n" "$dbs" "$ours_only" |
      tee -a "$results"
    files=$((files + 1))
    [[ $plain_err =~ ^[0-9]+$ ]] && total_plain=$((total_plain + plain_err))
    [[ $ours_err =~ ^[0-9]+$ ]] && total_ours=$((total_ours + ours_err)) && total_tests=$((total_tests + ours_n))
  done
done
echo "testfixture: $files files; errors without the extension: $total_plain; with it: $total_ours of $total_tests tests" |
  tee -a "$results"
