#!/usr/bin/env bash
# The main job on a real default: fetch Debian's 6.1 kernel, make its profile from the
# boot image alone (its BTF and kallsyms), boot it under QEMU with KASLR and the lab's
# standard scenario, dump its memory, and read the guest from outside: which kernel runs
# and where, its processes, its modules, and the intrusion checks. The guest's own view
# (what it reports about itself over the lab channel) is printed first, for comparison.
# Last, test rootkits are loaded in a second guest and the checks name what they did
# (the modules build for 6.1 and 6.12, whose headers this machine's gcc builds for).
# Usage: scripts/demo.sh [KERNEL]   (default 6.1.0-56-amd64; e.g. 6.12.117+deb12-amd64)
set -euo pipefail
cd "$(dirname "$0")/.."
kernel="${1:-6.1.0-56-amd64}"
bash scripts/setup.sh
cargo build --release -q -p vmi-lab -p profile-gen -p detector
cargo build --release -q -p detector --example rootkit_guest
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bin=target/release

vmlinuz=$("$bin/lab" fetch "$kernel" | awk '$1 == "vmlinuz" {print $2}')
echo "== 1. the profile, from the boot image alone: $vmlinuz"
mkdir -p "$work/profiles"
"$bin/profile-gen" "$vmlinuz" -o "$work/profiles/$kernel.json" --timings

echo
echo "== 2. the guest boots (QEMU TCG, KASLR on) and reports about itself; then a dump of its memory"
"$bin/lab" boot "$kernel" --dump-elf "$work/guest.elf"

echo
echo "== 3. from outside the guest, with no help from it"
args=(--dump "$work/guest.elf" --profiles "$work/profiles")
"$bin/detector" identify "${args[@]}"
echo
"$bin/detector" ps --tree "${args[@]}"
echo
"$bin/detector" lsmod "${args[@]}"
echo
status=0
"$bin/detector" check "${args[@]}" || status=$?
# detector: 0 clean, 1 findings, 2 error
[ "$status" -le 1 ] || exit "$status"

echo
echo "== 4. test rootkits in a fresh guest: a process unlinked from the tasks list, two modules"
echo "==    off the modules list, sys_call_table[180] and IDT vector 15 hooked, init_cred"
echo "==    handed to a user process; then the checks on its dump"
if "$bin/examples/rootkit_guest" "$kernel" "$work/rootkit.elf"; then
    status=0
    "$bin/detector" check --dump "$work/rootkit.elf" --profiles "$work/profiles" || status=$?
    [ "$status" -le 1 ] || exit "$status"
else
    echo "(the test rootkits do not build for $kernel here: use 6.1.0-56-amd64 or 6.12.117+deb12-amd64)"
fi
