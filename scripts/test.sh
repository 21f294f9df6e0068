#!/usr/bin/env bash
# The tests: set up, check formatting and lints, then run every unit and integration
# test (the lab's tests boot real Debian kernels under QEMU; kernels are cached in
# $VMI_LAB_CACHE, default ~/.cache/vmi-lab).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -q -- -D warnings
cargo test --workspace --no-fail-fast "$@"
