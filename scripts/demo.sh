#!/usr/bin/env bash
# The demo: set up, fetch a real Debian kernel, boot it under QEMU with the standard
# scenario and print what the guest reports about itself. Extra arguments go to
# `lab boot` (e.g. a kernel name such as `newest:7`, or `--nokaslr`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -q -p vmi-lab --bin lab
exec ./target/release/lab boot "$@"
