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

# Files not run, and why (also in docs/reliability.md).
declare -A skip=(
  [lock4.test]="waits in a loop (outside any test case) for test2.db-journal to appear; in WAL mode it never does, so the file hangs until the timeout"
)

# Why the tests failing only with our VFS fail, per file, as triaged (docs/reliability.md,
# "SQLite's own tests", has the details). Causes:
#   wal-at-open   the VFS puts a database in WAL mode when it opens it, creating it first
#                 if needed: a PRAGMA page_size/auto_vacuum the test sets afterwards has no
#                 effect, file sizes, frame counts and lock states differ from a database
#                 the test switches itself, fault/crash schedules counted from the first
#                 write land elsewhere
#   no-rollback   a rollback-journal mode is refused (the -journal open, or PRAGMA
#                 journal_mode=DELETE/TRUNCATE/PERSIST/MEMORY/OFF): replication needs WAL
#   snapshot-conn the VFS snapshots each new replica through a second connection of its own
#                 (SQLite's backup API): for a moment there is another reader, so a close
#                 cannot delete the WAL, RESTART/TRUNCATE checkpoints are BUSY, an EXCLUSIVE
#                 lock is refused; syncs of that connection add to sqlite_sync_count
#   test-vfs      the test wraps or replaces the VFS (testvfs, crash VFS, devsym, syscall
#                 faults, malloc faults) in ways that count on the plain unix VFS below
declare -A cause=(
  [wal.test]="wal-at-open (page_size/auto_vacuum too late: 6, 7.2, 8, 17, 22; frame counts: 23.4); snapshot-conn (WAL left at close: 6.*.2, 11.9, 19.3, 24)"
  [wal2.test]="wal-at-open (lock states, shm-lock sequence, page size, syncs of the switch: 6, 7.1.1, 15); no-rollback (6.1.4: leaving WAL); snapshot-conn (WAL/SHM left at close: 12; extra syncs or BUSY: 14)"
  [wal4.test]="wal-at-open: the test opens a 0-byte database beside a WAL and requires it to stay 0 bytes; the VFS writes page 1 (WAL mode) at open, in every fault iteration"
  [wal5.test]="wal-at-open (database/WAL page counts: 1.*, 2.1.1.4); snapshot-conn (checkpoints BUSY, backfilling nothing past our reader, more busy-handler calls: 1.*.11, 3.*, 4.2, 5.*.3); one run of four stopped on BUSY at ATTACH in the second process"
  [wal6.test]="no-rollback: PRAGMA journal_mode=DELETE/PERSIST/TRUNCATE/MEMORY/OFF refused (1.0.*, 1.2.*)"
  [walbak.test]="no-rollback: PRAGMA journal_mode=PERSIST at line 209 fails outside a test case and ends the script"
  [walcksum.test]="wal-at-open: the WAL holds 17 frames where the test rewrites the checksums of the 6 it expects, so recovery stops at frame 7 (plain SQLite does the same with that WAL)"
  [walcrash.test]="wal-at-open: the crash point (N-th sync of test.db or test.db-wal) is never reached, the child exits normally (*.1); the integrity checks after it pass"
  [walcrash3.test]="test-vfs: the crash VFS serves reads from copies of the files taken at its open; with any second connection in the crashing process (ours: the snapshot) the recovered database is corrupt, plain SQLite with a second reader gives the same; section 2 stops at its first error"
  [walcrash4.test]="snapshot-conn: database is locked in the crash child, likely while our connection recovers the WAL (one case; the next one compares its output with the previous)"
  [walfault.test]="wal-at-open (13.3 expects the heap-memory WAL index of a switch in exclusive mode); no-rollback (13.2, 2); snapshot-conn (13.1: locking_mode=EXCLUSIVE gets BUSY; some runs stop on BUSY in a -prep step, outside a test case)"
  [walmode.test]="no-rollback (every switch away from WAL); wal-at-open (1.4, 4.2, 4.5, 4.13: the database is WAL before the test switches it)"
  [walnoshm.test]="no-rollback: PRAGMA journal_mode=DELETE refused (2.2.2); the script then fails at line 166"
  [walpersist.test]="snapshot-conn: WAL/SHM left at close (1.2), a persistent WAL not truncated at close (3.3)"
  [walslow.test]="wal-at-open: the WAL holds 5 frames where the test corrupts bytes of the 1 it expects, the table is in the WAL (3.*)"
  [walvfs.test]="wal-at-open: WAL sizes and frame counts (2.2, 2.3, 5.3, 8.3)"
  [lock.test]="no-rollback: PRAGMA journal_mode=TRUNCATE refused"
  [lock2.test]="wal-at-open: the test expects rollback-journal locking (a reader locked out by a writer); in WAL mode readers go on"
  [lock3.test]="wal-at-open: the test expects rollback-journal locking (a reader locked out by a writer); in WAL mode readers go on"
  [lock5.test]="wal-at-open: the database an earlier open left in WAL mode cannot be opened through unix-dotfile, which has no shared memory"
  [lock7.test]="wal-at-open: PRAGMA lock_status shows WAL's SHARED lock where the test expects rollback-journal states"
)

# One run of one test file: "errors tests dbs" from its last summary line, or why there is
# none, also saved next to the log for the report.
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
  [ -d "$scratch/replicas" ] && opened=$(find "$scratch/replicas" -mindepth 1 -maxdepth 1 ! -name '*.staging' | wc -l)
  rm -rf "$scratch"
  local summary
  summary=$(grep -Eo '^[0-9]+ errors out of [0-9]+ tests' "$log" | tail -1 || true)
  if [ -n "$summary" ]; then
    awk -v o="$opened" '{print $1, $5, o}' <<<"$summary"
  elif [ $rc -eq 124 ]; then
    echo "timeout - $opened"
  elif [ $rc -gt 128 ]; then
    echo "signal$((rc - 128)) - $opened" # a crash of testfixture itself
  else
    echo "stopped - $opened" # a Tcl error outside any test case ended the script
  fi >"$log.result"
}

# Names of the failing tests in a log: the summary's list, or (a run that stopped early)
# the "! name expected:" lines.
failing() {
  {
    grep -Eo '^!Failures on these tests: .*' "$1" | cut -d: -f2 | tr ' ' '\n'
    grep -Eo '^! [^ ]+ expected:' "$1" | cut -d' ' -f2
  } | grep -v '^$' | sort -u || true
}

results=$work/results.txt
logs=$work/logs
mkdir -p "$logs"
files=()
for pattern in $tests; do
  for path in "$src"/test/$pattern; do
    [ -f "$path" ] && files+=("$(basename "$path")")
  done
done
if [ -z "${TESTFIXTURE_REPORT_ONLY:-}" ]; then
  for file in "${files[@]}"; do
    [ -n "${skip[$file]:-}" ] && continue
    run "$file" 0 "$logs/$file.plain"
    run "$file" 1 "$logs/$file.ours"
    echo "testfixture: $file plain $(cat "$logs/$file.plain.result") ours $(cat "$logs/$file.ours.result")" >&2
  done
fi

# The report, from the logs: TESTFIXTURE_REPORT_ONLY=1 prints it again without running.
printf '%-18s %-8s %11s %11s %5s %9s  %s\n' file status "plain e/n" "ours e/n" dbs "ours-only" "cause" | tee "$results"
n_run=0 n_skip=0 total_plain=0 total_ours=0 total_tests=0 total_only=0
for file in "${files[@]}"; do
  if [ -n "${skip[$file]:-}" ]; then
    printf '%-18s %-8s %s\n' "$file" skipped "${skip[$file]}" | tee -a "$results"
    n_skip=$((n_skip + 1))
    continue
  fi
  if [ ! -f "$logs/$file.ours.result" ]; then
    printf '%-18s %-8s\n' "$file" "not run" | tee -a "$results"
    continue
  fi
  read -r plain_err plain_n _ <"$logs/$file.plain.result"
  read -r ours_err ours_n dbs <"$logs/$file.ours.result"
  only=$(comm -13 <(failing "$logs/$file.plain") <(failing "$logs/$file.ours") | wc -l)
  status=ran
  [[ $ours_err =~ ^[0-9]+$ ]] || status=$ours_err
  why=${cause[$file]:-}
  [ "$only" -eq 0 ] && [ "$status" = ran ] && why=""
  [ -z "$why" ] && { [ "$only" -gt 0 ] || [ "$status" != ran ]; } && why="UNTRIAGED"
  printf '%-18s %-8s %11s %11s %5s %9s  %s\n' "$file" "$status" "$plain_err/$plain_n" "$ours_err/$ours_n" "$dbs" "$only" "$why" |
    tee -a "$results"
  n_run=$((n_run + 1)) total_only=$((total_only + only))
  [[ $plain_err =~ ^[0-9]+$ ]] && total_plain=$((total_plain + plain_err))
  [[ $ours_err =~ ^[0-9]+$ ]] && total_ours=$((total_ours + ours_err)) && total_tests=$((total_tests + ours_n))
done
echo "testfixture: $n_run files run, $n_skip skipped; errors without the extension: $total_plain;" \
  "with it: $total_ours of $total_tests tests; tests failing only with it: $total_only" | tee -a "$results"
