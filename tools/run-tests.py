#!/usr/bin/env python3
"""Runs every test binary of `cargo test --release`, TEST_LANES (default 2) at a time.

Why not plain `cargo test`: it runs one binary after another, and most of our suites spend
their time waiting (sleeps between SIGKILLs, sync intervals, fault-proxy stalls, store
round trips). Measured on the 2-core CI machine (README "Development"): the binaries
took 846 s of wall time one at a time for 566 s of CPU. Two lanes keep both cores
busy; each suite still runs its own tests on its own threads exactly as under cargo.

Longest suites start first so that no long one is left alone at the end. Each binary's
output goes to target/test-logs/<name>.log and is printed in full only if it failed.
Arguments, if any, are binary names to run (`litestream_vfs` is the library's unit tests).
Exit status: 0 when every binary passed.
"""

import json
import os
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Wall seconds of the long suites in a CI run (one at a time, 2 cores); the rest take
# under ten. Only their order matters: the longest start first.
KNOWN_SECONDS = {
    "multi_process_crash": 143,
    "s3_stores": 62,
    "multi_process": 56,
    "pit_restore": 51,
    "network_faults": 51,
    "soak": 43,
    "primary_large": 35,
    "stalled_store": 34,
    "primary_crash": 29,
    "isolation": 28,
    "primary_nats": 28,
    "compaction_crash": 27,
    "scale": 21,
    "crash_everywhere": 20,
    "restore_interop": 18,
    "encryption": 15,
    "litestream_vfs": 12,
    "wal_restart_handoff": 12,
}


def test_binaries():
    """Builds the test binaries (as `cargo test --release` would) and returns
    (name, path) for each."""
    cargo = os.environ.get("CARGO", "cargo")
    build = subprocess.run(
        [cargo, "test", "--release", "--no-run", "--message-format=json-render-diagnostics"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        check=True,
    )
    found = []
    for line in build.stdout.decode().splitlines():
        message = json.loads(line)
        if message.get("reason") != "compiler-artifact" or not message.get("executable"):
            continue
        if not message["profile"]["test"]:
            continue
        found.append((message["target"]["name"], message["executable"]))
    return found


def summary_of(log_text):
    """'N passed, M failed, K ignored' summed over the log's libtest result lines."""
    passed = failed = ignored = 0
    for line in log_text.splitlines():
        if line.startswith("test result:"):
            words = line.replace(";", "").split()
            for count, word in zip(words, words[1:]):
                if count.isdigit():
                    passed += int(count) if word == "passed" else 0
                    failed += int(count) if word == "failed" else 0
                    ignored += int(count) if word == "ignored" else 0
    return f"{passed} passed, {failed} failed, {ignored} ignored"


class Runner:
    def __init__(self, binaries, lanes):
        self.queue = sorted(binaries, key=lambda b: -KNOWN_SECONDS.get(b[0], 0))
        self.lanes = lanes
        self.lock = threading.Lock()
        self.failed = []
        self.logs = os.path.join(ROOT, "target", "test-logs")
        os.makedirs(self.logs, exist_ok=True)

    def next_binary(self):
        with self.lock:
            return self.queue.pop(0) if self.queue else None

    def run_one(self, name, path):
        log_path = os.path.join(self.logs, f"{name}.log")
        env = dict(os.environ, CARGO_MANIFEST_DIR=ROOT)
        started = time.monotonic()
        with open(log_path, "wb") as log:
            status = subprocess.run([path], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        seconds = time.monotonic() - started
        with open(log_path, errors="replace") as log:
            text = log.read()
        with self.lock:
            if status.returncode == 0:
                print(f"ok      {seconds:6.1f} s  {name} ({summary_of(text)})", flush=True)
            else:
                self.failed.append(name)
                print(f"FAILED  {seconds:6.1f} s  {name} (exit {status.returncode}), "
                      f"its output ({log_path}):", flush=True)
                print(text, flush=True)

    def lane(self):
        while (binary := self.next_binary()) is not None:
            self.run_one(*binary)

    def run(self):
        threads = [threading.Thread(target=self.lane) for _ in range(self.lanes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def main():
    lanes = int(os.environ.get("TEST_LANES", "2"))
    binaries = test_binaries()
    wanted = set(sys.argv[1:])
    if wanted:
        unknown = wanted - {name for name, _ in binaries}
        if unknown:
            sys.exit(f"run-tests: no test binary named {', '.join(sorted(unknown))}")
        binaries = [b for b in binaries if b[0] in wanted]
    started = time.monotonic()
    print(f"run-tests: {len(binaries)} test binaries, {lanes} at a time", flush=True)
    runner = Runner(binaries, lanes)
    runner.run()
    took = time.monotonic() - started
    if runner.failed:
        print(f"run-tests: {len(runner.failed)} of {len(binaries)} binaries FAILED in "
              f"{took:.0f} s: {' '.join(runner.failed)}", flush=True)
        sys.exit(1)
    print(f"run-tests: all {len(binaries)} binaries passed in {took:.0f} s", flush=True)


if __name__ == "__main__":
    main()
