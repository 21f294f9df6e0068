#!/usr/bin/env bash
# Benchmark `detector serve` on two real lab guests (Debian 6.1 and 6.12, 512 MiB each,
# TCG): its CPU use watching both at 1 Hz (target <= 2 % of one core) and at 10 Hz, and,
# in the same run, the study's pattern as the baseline (a new `detector ps` process per
# guest per second). SECS=<seconds> sets each measurement's length (default 60).
# Figures are printed; the script fails only when something does not run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -q -p detector
cargo run --release -q -p detector --example bench_serve
