#!/usr/bin/env bash
# Incremental watch scans (issue 24) against full scans, in the same run, on a real lab
# guest (Debian 6.1, 1 vCPU, 3 GiB, TCG): two watchers of every check ticking in turn at
# 10 Hz, idle, with 20 short-lived processes a second, and with 10,000 more processes.
# Prints scan and tick latencies (p50/p90/p99), what QEMU's monitor and the census
# cost, and the units kept and run per tick. About 10 minutes here (2 cores, TCG).
# Options go to the benchmark: --ticks N (per phase, default 300), --spawn N.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -q -p detector
cargo run --release -q -p detector --example bench_watch -- "$@"
