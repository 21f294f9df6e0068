#!/usr/bin/env bash
# Benchmark profile-gen against pahole (Debian's dwarves) on the same vmlinux, in the
# same run: wall time and peak RSS of
#   - profile-gen's default profile (target: <= 1.5 s, <= 500 MB),
#   - profile-gen --full --format isf (target: <= 2.5 s, <= 500 MB),
#   - profile-gen --full (native),
#   - pahole -F dwarf (every struct, the baseline).
# Usage: scripts/bench-profile-gen.sh [KERNEL] [RUNS]   (default 6.1.0-56-amd64, 3 runs)
# The figures are printed, with each target marked met or missed; the script fails only
# when something does not run.
set -euo pipefail
cd "$(dirname "$0")/.."
kernel="${1:-6.1.0-56-amd64}"
runs="${2:-3}"

bash scripts/setup.sh
cargo build --release -q -p profile-gen -p vmi-lab
paths=$(target/release/lab fetch "$kernel" --dbg)
vmlinux=$(awk '$1 == "vmlinux" {print $2}' <<<"$paths")
sysmap=$(awk '$1 == "sysmap" {print $2}' <<<"$paths")
[ -f "$vmlinux" ] && [ -f "$sysmap" ] || { echo "bench: no vmlinux/System.map for $kernel" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cat "$vmlinux" "$sysmap" >/dev/null # warm the page cache: every tool reads the same files

# shellcheck source=scripts/bench-run.sh
source scripts/bench-run.sh

echo "bench: $kernel vmlinux $(stat -c %s "$vmlinux") bytes, best of $runs, $(nproc) cores"
run "profile-gen (default profile)" 1.5 500 \
  target/release/profile-gen "$vmlinux" "$sysmap" -o "$out/native.json"
run "profile-gen --full --format isf" 2.5 500 \
  target/release/profile-gen "$vmlinux" "$sysmap" --full --format isf -o "$out/isf.json"
run "profile-gen --full" - - \
  target/release/profile-gen "$vmlinux" "$sysmap" --full -o "$out/full.json"
runs=1 run "pahole -F dwarf (baseline)" - - pahole -F dwarf "$vmlinux"
echo "bench: ISF $(stat -c %s "$out/isf.json") bytes; full native $(stat -c %s "$out/full.json") bytes"
