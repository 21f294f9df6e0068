#!/usr/bin/env bash
# Benchmark zero-touch onboarding on a live Debian 6.1 lab guest: attach with an empty
# profile directory until the profile is made from guest memory, checked, written and the
# kernel identified (target <= 2 s), with the warm attach and profile-gen's vmlinuz path
# as baselines in the same run. Figures are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo run --release -q -p detector --example bench_zero_touch
