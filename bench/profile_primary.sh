#!/usr/bin/env bash
# Where does a commit through the litestream VFS spend its time, compared with plain
# SQLite? Runs the bench_primary.py worker (same workload: 1-row autocommit INSERTs,
# WAL, synchronous=NORMAL, file:// replica) for `plain` and `vfs`:
#   1. strace -c -f : syscalls per commit (does the VFS add any on the commit path?)
#   2. perf record  : CPU samples of the committing thread by library, and the
#                     symbols whose sample count grew the most (needs perf).
# Usage: bench/profile_primary.sh [commits]   (default 100000; keeps nothing)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
commits="${1:-100000}"
py=/usr/bin/python3
work="$(mktemp -d "${TMPDIR:-/tmp}/profile-primary-XXXXXX")"
trap 'rm -rf "$work"' EXIT

spec() { # mode dir n
  local vfs=false extra=""
  if [ "$1" = vfs ]; then vfs=true; extra=", \"replica\": \"file://$2/replica\", \"params\": {}"; fi
  echo "{\"name\":\"$1\",\"kind\":\"throughput\",\"db\":\"$2/app.db\",\"vfs\":$vfs,\"commits\":$3,\"warmup\":500,\"seed\":1 $extra}"
}

if command -v strace >/dev/null; then
  n=$((commits / 5))
  echo "== strace -c -f, $n commits (timings under strace are meaningless; counts are not)"
  for m in plain vfs; do
    mkdir -p "$work/s-$m"
    strace -c -f -o "$work/strace-$m.txt" $py "$here/bench_primary.py" --worker "$(spec $m "$work/s-$m" $n)" >/dev/null
  done
  $py - "$work" "$n" <<'EOF'
import sys, re
work, n = sys.argv[1], int(sys.argv[2])
def load(m):
    d = {}
    for line in open(f"{work}/strace-{m}.txt"):
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            d[f[-1]] = int(f[3])
    return d
a, b = load("plain"), load("vfs")
print(f"{'syscall':<14} {'plain/commit':>12} {'vfs/commit':>11}")
for k in sorted(set(a) | set(b), key=lambda k: -max(a.get(k, 0), b.get(k, 0)))[:12]:
    print(f"{k:<14} {a.get(k, 0) / n:12.3f} {b.get(k, 0) / n:11.3f}")
EOF
fi

if command -v perf >/dev/null && perf record -o /dev/null true >/dev/null 2>&1; then
  echo "== perf record, $commits commits each"
  for m in plain vfs; do
    mkdir -p "$work/p-$m"
    perf record -q -F 2000 -g -o "$work/perf-$m.data" \
      $py "$here/bench_primary.py" --worker "$(spec $m "$work/p-$m" "$commits")" >/dev/null 2>&1
    perf report -i "$work/perf-$m.data" --no-children --comm python3 -g none --sort dso,sym \
      -F sample,dso,sym --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' >"$work/sym-$m.txt"
  done
  $py - "$work" "$commits" <<'EOF'
import sys, collections
work, n = sys.argv[1], int(sys.argv[2])
def load(m):
    d, dso = collections.Counter(), collections.Counter()
    for line in open(f"{work}/sym-{m}.txt"):
        f = line.split()
        if len(f) < 3 or not f[0].isdigit():
            continue
        d[f[1] + " " + " ".join(f[3:])] += int(f[0])
        dso[f[1]] += int(f[0])
    return d, dso
(a, da), (b, db) = load("plain"), load("vfs")
us = lambda s: s * 1e6 / 2000 / n  # samples at 2000 Hz -> us per commit
print(f"committing thread, us/commit: plain {us(sum(a.values())):.2f}  vfs {us(sum(b.values())):.2f}")
print(f"{'library':<42} {'plain':>7} {'vfs':>7}")
for k in sorted(set(da) | set(db), key=lambda k: -db.get(k, 0))[:8]:
    print(f"{k:<42} {us(da.get(k, 0)):7.2f} {us(db.get(k, 0)):7.2f}")
print("symbols that grew most (us/commit):")
for d, k in sorted(((b[k] - a[k], k) for k in set(a) | set(b)), reverse=True)[:20]:
    print(f"  {us(d):+6.2f}  {k[:100]}")
EOF
else
  echo "perf not usable here; try: valgrind --tool=callgrind $py $here/bench_primary.py --worker '<spec>'"
fi
