#!/usr/bin/env bash
# The guest-memory fuzzer (issue 23): lab dumps of Debian 6.1 (clean and with the test
# rootkits) and the newest 7.x (clean), their kernel objects mutated by the profile's
# layout (pointers, list links, counts, strings, XArray and maple nodes, page-table
# entries), every command (ps, lsmod, sockets, bpf, maps, check with every check) run on
# each mutant in a release build: no panic, at most 2 s (--bound-ms), bounded heap,
# every guest string escaped. Exit 1 when a mutant breaks a rule; it is printed with
# its seed and index.
#
#   bash scripts/fuzz-guest.sh --ci                 # the bounded CI mode (the test `fuzz`)
#   bash scripts/fuzz-guest.sh [--minutes 15] [--seed S] [--mutants N] [--bound-ms MS]
#   bash scripts/fuzz-guest.sh --replay DUMP:SEED:INDEX    # one mutant again
#
# The dumps and profiles are kept in $VMI_FUZZ_DIR (default: the lab cache's fuzz/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${1:-}" = "--ci" ]; then
  shift
  exec cargo test -q -p detector --test fuzz -- --nocapture "$@"
fi
dir=${VMI_FUZZ_DIR:-${VMI_LAB_CACHE:-$HOME/.cache/vmi-lab}/fuzz}
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--minutes 15)
cargo build --release -q -p detector --example fuzz_guest
target=${CARGO_TARGET_DIR:-target}
exec "$target/release/examples/fuzz_guest" "$dir" "${args[@]}"
