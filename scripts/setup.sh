#!/usr/bin/env bash
# Install the Debian packages the lab and the tests need (idempotent; a no-op when all
# are present). Run as root, or with sudo available.
set -euo pipefail

packages=(
  qemu-system-x86     # guests (TCG)
  busybox-static      # the guest userland
  gcc libc6-dev make  # the static guest worker and test kernel modules
  debootstrap         # a Debian root with the gcc of kernels the host gcc did not build (7.x)
  xz-utils zstd       # compressed kernel modules in the archive's packages
  gzip bzip2 lz4 lzop # every boot-image compression, for profile-gen's decompression tests
  dwarves             # pahole, the reference for struct layouts
  bpftool             # a baseline reader of BTF in scripts/bench-profile-gen-btf.sh
  time                # /usr/bin/time: peak RSS in scripts/bench-*.sh
  libxen-dev          # Xen 4.17's headers: vmi-core's Xen source is checked against their layouts
  dpkg-dev            # dpkg-shlibdeps: the Depends of the Debian package (scripts/package.sh)
  binutils            # strip (the Xen rig's test programs); readelf, objdump (dump-module's tests)
  # what the package test checks the .deb with (detector/tests/package.rs)
  lintian systemd man-db groff-base zsh fish
  # the Rust-enabled 6.12 kernel the guest module is built against (tests/lab/src/rustkernel.rs)
  linux-source-6.12 rustc-web rust-web-src libclang-dev flex bison bc libelf-dev libssl-dev
  debian-archive-keyring apt dpkg tar
  # a private libvirtd for the libvirt source's test (detector/tests/libvirt.rs)
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
)

# cargo-nextest runs the tests (scripts/test.sh); machines of this kind come with it
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest" >&2
  cargo install --locked --quiet cargo-nextest
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
