#!/usr/bin/env bash
# tools/same-features.sh (make lint): fails when `cargo test` would compile a crate with
# other features than `cargo build` does. Cargo's resolver 2 adds the features
# dev-dependencies ask of shared crates only to the test build; one such difference
# rebuilds that crate, everything above it and our library a second time (Cargo.toml,
# "One build"). The fix is to ask for the feature in [dependencies] too.
set -euo pipefail
cd "$(dirname "$0")/.."

# One line per crate: "name@version [feature,...]".
features() {
    cargo tree --offline --prefix none -f '{p} [{f}]' "$@" |
        sed -E 's/ \(\*\)$//; s/^([^ ]+) v([^ ]+)( \([^)]*\))? (\[.*\])$/\1@\2 \4/' | sort -u
}

normal="$(features -e no-dev)"
all="$(features)"
[ -n "$normal" ] && [ -n "$all" ] || { echo "same-features: cargo tree listed nothing" >&2; exit 1; }

# Crates in both builds whose features differ.
differ="$(join <(echo "$normal") <(echo "$all") | awk '$2 != $3 { print "  " $1 ": build " $2 ", test " $3 }')"
if [ -n "$differ" ]; then
    echo "cargo test would build these crates with other features than cargo build:" >&2
    echo "$differ" >&2
    echo "ask for the test build's features in Cargo.toml's [dependencies] (\"One build\")." >&2
    exit 1
fi
echo "same-features: cargo build and cargo test share every compiled crate"
