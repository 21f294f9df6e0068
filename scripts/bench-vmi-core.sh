#!/usr/bin/env bash
# Benchmark vmi-core on real lab guests (Debian 6.1): cold start on a 1 GiB ELF dump
# (target <= 150 ms), one live process walk (target <= 200 us for ~100 tasks), growth
# with 1k and 10k tasks, and Volatility 3's linux.pslist on the same dump as the
# baseline, all in the same run. Usage: scripts/bench-vmi-core.sh [TASK_COUNTS]
# (default 1000,10000). Figures are printed; the script fails only when something does
# not run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo run --release -q -p vmi-core --example bench_kernel -- --tasks "${1:-1000,10000}"
