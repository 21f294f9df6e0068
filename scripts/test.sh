#!/usr/bin/env bash
# The tests: set up, check formatting and lints, then run every unit and integration
# test (the lab's tests boot real Debian kernels under QEMU; kernels are cached in
# $VMI_LAB_CACHE, default ~/.cache/vmi-lab).
#
# On an empty cache most of the time would go to downloads and builds inside the tests,
# one test waiting for another. So the lab's cache is filled first (`lab prepare`: the
# kernels' packages side by side, the build roots, the Xen image), while cargo builds
# the workspace, the tests and the release binaries the package test packs. The
# Rust-enabled kernel, the longest item (a kernel build), is built beside it and not
# waited for: the tests start once the rest is ready, and the two that boot that kernel
# run last (.config/nextest.toml) and wait for its build if it is still running. Then
# cargo-nextest runs the tests two at a time, the slowest first, and the doc tests run
# last. Arguments go to `cargo nextest run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check

start=$(date +%s)
cargo build -q -p vmi-lab --bin lab
prepare_log=$(mktemp)
rust_log=$(mktemp)
trap 'rm -f "$prepare_log" "$rust_log"' EXIT
target=${CARGO_TARGET_DIR:-target}
"$target/debug/lab" prepare --items base >"$prepare_log" 2>&1 &
prepare=$!
"$target/debug/lab" prepare --items rust-kernel >"$rust_log" 2>&1 &
rust=$!

cargo clippy --workspace --all-targets -q -- -D warnings
cargo nextest run --workspace --no-run --cargo-quiet
# the package test's release build and its cargo-deb (installed into the lab cache), and
# the static in-guest extractor the extract tests build (the same command as theirs)
bash scripts/package.sh >/dev/null
cargo rustc -q --release -p guest-module --bin vmi-extract -- \
  -C target-feature=+crt-static -C strip=debuginfo
echo "test: built in $(($(date +%s) - start)) s; waiting for the lab cache"

prepared=0
wait "$prepare" || prepared=$?
cat "$prepare_log"
if [ "$prepared" -ne 0 ]; then
  echo "test: lab prepare failed for some items (above): the tests that need them fetch them again"
fi
echo "test: ready to run in $(($(date +%s) - start)) s"

status=0
cargo nextest run --workspace --profile ci "$@" || status=$?
rust_status=0
wait "$rust" || rust_status=$?
cat "$rust_log"
if [ "$rust_status" -ne 0 ]; then
  echo "test: the Rust-enabled kernel's build failed (above): the tests that boot it built it again"
fi
cargo test --workspace --doc -q || status=$?
exit "$status"
