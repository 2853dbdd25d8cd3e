#!/usr/bin/env bash
# Runs every sql-tests/*.sql through the sqlite3 shell with the extension loaded and
# compares the output with the matching .expected file. UPDATE=1 rewrites .expected.
# Each script runs in its own empty directory, so it may create files freely.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ext="${EXTENSION:-$here/../target/release/liblitestream_vfs}"
ext="$(cd "$(dirname "$ext")" && pwd)/$(basename "$ext")"
passed=0
failed=0
for script in "$here"/*.sql; do
  name="$(basename "$script" .sql)"
  expected="$here/$name.expected"
  work="$(mktemp -d)"
  actual="$(cd "$work" && sqlite3 -batch -cmd ".load $ext" :memory: < "$script" 2>&1)"
  rm -rf "$work"
  if [ "${UPDATE:-0}" = 1 ]; then
    printf '%s\n' "$actual" > "$expected"
  fi
  if [ -f "$expected" ] && [ "$actual" = "$(cat "$expected")" ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAIL sql-tests/$name.sql"
    diff -u "$expected" <(printf '%s\n' "$actual") | head -40
  fi
done
echo "sql-tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
