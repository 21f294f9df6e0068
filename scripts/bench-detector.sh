#!/usr/bin/env bash
# Benchmark the detector on a real lab guest (Debian 6.1, 1 GiB, TCG): `detector check`
# on the live guest (target <= 50 ms), one scan as watch does it, `watch --interval 1s`
# CPU use (target <= 1 % of a core), `check` on an ELF dump, and Volatility 3's
# matching plugins on the same dump as the baseline, all in the same run. Figures are
# printed; the script fails only when something does not run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -q -p detector
cargo run --release -q -p detector --example bench_check
