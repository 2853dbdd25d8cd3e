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

cc -O2 -o "$work/driver" "$here/commit_driver.c" -lsqlite3

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
