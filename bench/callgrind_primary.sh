#!/usr/bin/env bash
# Instructions per commit, plain SQLite vs the litestream VFS, counted by callgrind:
# repeatable whatever else the machine is doing, unlike wall-clock throughput.
#
# Builds bench/commit_driver.c (the bench_primary.py workload in C: 1-row autocommit
# INSERTs, WAL, synchronous=NORMAL; the VFS with a file:// replica and the default
# sync_interval), runs it under `valgrind --tool=callgrind` for `plain` and `vfs`,
# and prints the committing thread's instructions per timed commit (the counters are
# zeroed after the warm-up and dumped after the loop), the ratio, and which
# functions account for the difference. Also counts syscalls per commit with strace
# when it is installed.
#
# Counts user-space instructions only: the kernel's share of a commit (pwrite, the
# fcntl locks of the -shm) is not in them, so the ratio here is a ceiling on what
# the VFS costs in time, not the throughput ratio.
#
# TIMING_REPS=N adds N interleaved timed runs (no valgrind) of plain, plain-thread
# (plain SQLite plus one idle thread), plain-thread-unshared (that thread after
# unshare(CLONE_FILES)) and vfs, reporting the committing thread's CPU per commit:
# what the mere presence of a background thread costs, kernel included. Timings,
# unlike the counts, move with the machine's load.
#
# PERF=1 samples the committing thread with `perf record -e cpu-clock` for plain,
# plain-thread and vfs and prints the kernel's file-reference functions per commit
# (fdget/fput: borrowed when the file table is the thread's alone, reference-counted
# when it is shared), plus the symbols whose time grew the most.
#
# Usage: bench/callgrind_primary.sh [commits] [warmup]   (default 20000, 500)
# Needs: valgrind, a C compiler, libsqlite3-dev (apt-get install valgrind gcc
# libsqlite3-dev), and target/release/liblitestream_vfs.so (cargo build --release).
# KEEP=1 keeps the work directory (callgrind files for callgrind_annotate).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
commits="${1:-20000}"
warmup="${2:-500}"
ext="${EXTENSION:-$root/target/release/liblitestream_vfs.so}"
for tool in valgrind callgrind_annotate cc; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install valgrind gcc libsqlite3-dev)" >&2; exit 2; }
done
[ -f "$ext" ] || { echo "no $ext: run cargo build --release" >&2; exit 2; }
work="$(mktemp -d "${TMPDIR:-/tmp}/callgrind-primary-XXXXXX")"
if [ "${KEEP:-0}" = 1 ]; then echo "keeping $work"; else trap 'rm -rf "$work"' EXIT; fi

cc -O2 -pthread -o "$work/driver" "$here/commit_driver.c" -lsqlite3

for mode in plain vfs; do
  mkdir -p "$work/$mode"
  args=("$mode" "$work/$mode" "$commits" "$warmup")
  [ "$mode" = vfs ] && args+=("$ext")
  valgrind --tool=callgrind --separate-threads=yes \
    --callgrind-out-file="$work/cg-$mode.%p" "$work/driver" "${args[@]}" >/dev/null 2>"$work/valgrind-$mode.log" ||
    { cat "$work/valgrind-$mode.log" >&2; exit 1; }
  # Part 1 of thread 1: the committing thread between the client requests.
  ln -sf "$(ls "$work"/cg-"$mode".*.1-01)" "$work/$mode.callgrind"
  if command -v strace >/dev/null; then
    mkdir -p "$work/strace-$mode"
    sargs=("$mode" "$work/strace-$mode" "$commits" "$warmup")
    [ "$mode" = vfs ] && sargs+=("$ext")
    strace -f -c -o "$work/strace-$mode.txt" "$work/driver" "${sargs[@]}" >/dev/null
  fi
done

/usr/bin/env python3 - "$work" "$commits" <<'EOF'
import collections, os, re, subprocess, sys
work, n = sys.argv[1], int(sys.argv[2])

ROOTS = ("(below main)", "__libc_start_main", "0x000000000001ab70")
ALLOC = ("malloc", "free", "_int_free", "_int_malloc", "calloc", "realloc", "cfree", "malloc_consolidate")

def functions(mode):
    """Exclusive instructions per function and per library (inlined code counts
    where it landed)."""
    out = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--auto=no", "--inclusive=no", f"{work}/{mode}.callgrind"],
        capture_output=True, text=True, check=True).stdout
    total, per, lib_of = 0, collections.Counter(), {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S.*?)(?: \[(.*)\])?$", line)
        if not m:
            continue
        count = int(m.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in line:
            total = count
            continue
        name = m.group(2).split(":", 1)[-1]
        if name.startswith(ROOTS):
            continue  # the call stack's roots at the dump, not code that ran
        per[name] += count
        if m.group(3):
            lib_of[name] = os.path.basename(m.group(3))
    return total, per, lib_of

def group(name, lib):
    if "litestream" in lib or "litestream_vfs" in name or name.startswith(("__rust", "alloc::", "core::", "hashbrown::")):
        return "litestream extension (Rust, incl. inlined std)"
    if lib.startswith("libsqlite3"):
        return "SQLite (unix VFS methods move out of line)"
    if name.split("@")[0] in ALLOC:
        return "libc malloc/free"
    if "memcpy" in name or "memmove" in name or "memset" in name:
        return "libc memcpy/memset"
    return f"other: {lib or '?'}"

(pt, pf, pl), (vt, vf, vl) = functions("plain"), functions("vfs")
libs = {**pl, **vl}
print(f"callgrind, committing thread, {n} commits of one 100-byte row (WAL, synchronous=NORMAL)")
print(f"  instructions/commit  plain {pt / n:9.0f}   vfs {vt / n:9.0f}   "
      f"extra {(vt - pt) / n:+7.0f}   plain/vfs {pt / vt:.3f}")
groups = collections.Counter()
for k in set(pf) | set(vf):
    groups[group(k, libs.get(k, ""))] += vf[k] - pf[k]
print("  the extra instructions/commit by where they ran:")
for g, d in sorted(groups.items(), key=lambda kv: -abs(kv[1])):
    if abs(d) / n >= 1:
        print(f"    {d / n:+7.0f}  {g}")
print("  top functions (exclusive instructions/commit, vfs minus plain):")
for k in sorted(set(pf) | set(vf), key=lambda k: -abs(vf[k] - pf[k]))[:14]:
    d = (vf[k] - pf[k]) / n
    if abs(d) >= 5:
        print(f"    {d:+7.0f}  {k[:100]}")

def syscalls(mode):
    path = f"{work}/strace-{mode}.txt"
    if not os.path.exists(path):
        return None
    calls = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            calls[f[-1]] = int(f[3])
    return calls

a, b = syscalls("plain"), syscalls("vfs")
if a is not None:
    print(f"strace -c -f, whole process (warm-up and start-up included), per commit:")
    for k in sorted(set(a) | set(b), key=lambda k: -max(a.get(k, 0), b.get(k, 0)))[:8]:
        print(f"    {k:<16} plain {a.get(k, 0) / n:7.3f}   vfs {b.get(k, 0) / n:7.3f}")
EOF

reps="${TIMING_REPS:-0}"
if [ "$reps" -gt 0 ]; then
  for i in $(seq 1 "$reps"); do
    for mode in plain plain-thread plain-thread-unshared vfs; do
      rm -rf "$work/t"; mkdir -p "$work/t"
      "$work/driver" "$mode" "$work/t" "$commits" "$warmup" "$ext" | sed "s/^/$i /"
    done
  done >"$work/timing.txt"
  /usr/bin/env python3 - "$work/timing.txt" "$reps" <<'EOF'
import collections, statistics, sys
runs = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    f = line.split()
    runs[f[0]][f[1]] = int(f[5])
print(f"committing thread CPU per commit, {sys.argv[2]} interleaved runs (median; paired = median of per-run plain/mode):")
for mode in ["plain", "plain-thread", "plain-thread-unshared", "vfs"]:
    cpu = [r[mode] for r in runs.values()]
    paired = statistics.median(r["plain"] / r[mode] for r in runs.values())
    print(f"    {mode:<22} {statistics.median(cpu) / 1000:6.2f} us   plain/mode paired {paired:.3f}")
EOF
fi

if [ "${PERF:-0}" = 1 ]; then
  n=$((commits * 5))
  for mode in plain plain-thread vfs; do
    rm -rf "$work/p"; mkdir -p "$work/p"
    perf record -q -e cpu-clock -F 10000 -o "$work/perf-$mode.data" \
      "$work/driver" "$mode" "$work/p" "$n" "$warmup" "$ext" >/dev/null 2>&1
    perf report -i "$work/perf-$mode.data" --no-children --comm driver --sort sym --stdio \
      -F sample,sym 2>/dev/null | grep -v '^#' | grep -v '^$' >"$work/perf-$mode.txt"
  done
  /usr/bin/env python3 - "$work" "$n" <<'EOF'
import collections, sys
work, n = sys.argv[1], int(sys.argv[2])
def load(mode):
    d = collections.Counter()
    for line in open(f"{work}/perf-{mode}.txt"):
        f = line.split(None, 1)
        if len(f) == 2 and f[0].isdigit():
            d[f[1].strip()] += int(f[0])
    return d
us = lambda samples: samples * 1e6 / 10000 / n  # 10 kHz samples -> us per commit
a, b, c = load("plain"), load("plain-thread"), load("vfs")
print(f"perf cpu-clock, committing thread, {n} commits, us/commit (timings follow the load):")
print(f"    {'':<28} {'plain':>7} {'+thread':>8} {'vfs':>7}")
print(f"    {'total':<28} {us(sum(a.values())):7.2f} {us(sum(b.values())):8.2f} {us(sum(c.values())):7.2f}")
for sym in ["[k] fdget", "[k] fdget_raw", "[k] fdget_pos", "[k] fput"]:
    print(f"    {sym:<28} {us(a[sym]):7.3f} {us(b[sym]):8.3f} {us(c[sym]):7.3f}")
print("    grew most from plain-thread to vfs:")
for k in sorted(set(b) | set(c), key=lambda k: -(c[k] - b[k]))[:8]:
    print(f"      {us(c[k] - b[k]):+7.3f}  {k[:90]}")
EOF
fi
