#!/usr/bin/env bash
# Benchmark profile-gen's paths without debug packages, with baselines in the same run:
# wall time and peak RSS of
#   - profile-gen <vmlinuz>                 (target: <= 1 s, decompression included),
#   - profile-gen <vmlinuz> --full --format isf,
#   - profile-gen <raw BTF> <kallsyms>      (target: <= 0.3 s),
#   - baselines on the same files: decompressing the payload with Debian's xz/zstd tool,
#     `pahole -F btf` and `bpftool btf dump ... format c` on the raw BTF (each reads the
#     whole type graph, as --full does).
# The raw BTF is the image's .BTF section (what /sys/kernel/btf/vmlinux holds); the
# symbol list is the build's System.map, which has /proc/kallsyms' line format and size.
# Usage: scripts/bench-profile-gen-btf.sh [RUNS] [KERNEL...]
#   (default: 3 runs; 6.1.0-56-amd64, xz, and newest:7.2, zstd)
# The figures are printed, with each target marked met or missed; the script fails only
# when something does not run.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
shift || true
kernels=("$@")
[ "${#kernels[@]}" -gt 0 ] || kernels=(6.1.0-56-amd64 newest:7.2)

bash scripts/setup.sh
cargo build --release -q -p profile-gen -p vmi-lab
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# shellcheck source=scripts/bench-run.sh
source scripts/bench-run.sh

for kernel in "${kernels[@]}"; do
  paths=$(target/release/lab fetch "$kernel" --dbg)
  vmlinuz=$(awk '$1 == "vmlinuz" {print $2}' <<<"$paths")
  vmlinux=$(awk '$1 == "vmlinux" {print $2}' <<<"$paths")
  sysmap=$(awk '$1 == "sysmap" {print $2}' <<<"$paths")
  [ -f "$vmlinuz" ] && [ -f "$vmlinux" ] && [ -f "$sysmap" ] || {
    echo "bench: no vmlinuz/vmlinux/System.map for $kernel" >&2
    exit 1
  }
  objcopy -O binary --only-section=.BTF "$vmlinux" "$out/vmlinux.btf"
  # the compressed payload (setup header: payload_offset and payload_length) and its tool
  tool=$(python3 - "$vmlinuz" "$out/payload" <<'EOF'
import struct, sys
d = open(sys.argv[1], "rb").read()
setup = (d[0x1f1] or 4) + 1
off, length = struct.unpack_from("<II", d, 0x248)
p = d[setup * 512 + off : setup * 512 + off + length - 4]
open(sys.argv[2], "wb").write(p)
print("xz" if p.startswith(b"\xfd7zXZ\x00") else "zstd" if p.startswith(b"\x28\xb5\x2f\xfd") else "")
EOF
)
  cat "$vmlinuz" "$sysmap" "$out/vmlinux.btf" "$out/payload" >/dev/null # warm the page cache
  echo "bench: $kernel vmlinuz $(stat -c %s "$vmlinuz") bytes ($tool), raw BTF $(stat -c %s "$out/vmlinux.btf") bytes, best of $runs, $(nproc) cores"
  run "profile-gen vmlinuz (default profile)" 1 500 \
    target/release/profile-gen "$vmlinuz" -o "$out/native.json"
  run "profile-gen vmlinuz --full --format isf" - - \
    target/release/profile-gen "$vmlinuz" --full --format isf -o "$out/isf.json"
  run "profile-gen raw BTF + kallsyms" 0.3 500 \
    target/release/profile-gen "$out/vmlinux.btf" "$sysmap" -o "$out/raw.json"
  run "profile-gen raw BTF + kallsyms --full" - - \
    target/release/profile-gen "$out/vmlinux.btf" "$sysmap" --full -o "$out/raw-full.json"
  case "$tool" in
    xz) run "baseline: xz -d of the payload" - - xz -dc --single-stream "$out/payload" ;;
    zstd) run "baseline: zstd -d of the payload" - - zstd -dcq "$out/payload" ;;
  esac
  run "baseline: pahole -F btf (raw BTF)" - - pahole -F btf "$out/vmlinux.btf"
  run "baseline: bpftool btf dump format c" - - bpftool btf dump file "$out/vmlinux.btf" format c
done
