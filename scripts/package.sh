#!/usr/bin/env bash
# Build the vmi-detector Debian package from the workspace and print its path:
# release build of detector and profile-gen, their man pages and completions (generated
# from their own command lines), then cargo-deb (a pinned version, installed into the lab
# cache on first use) packs what detector/Cargo.toml [package.metadata.deb] lists.
# Honours CARGO_TARGET_DIR. The build's progress goes to stderr; stdout is the path.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
cache=${VMI_LAB_CACHE:-$HOME/.cache/vmi-lab}
cargo_deb_root=$cache/tools/cargo-deb-$CARGO_DEB_VERSION
target=${CARGO_TARGET_DIR:-$PWD/target}

if ! command -v dpkg-shlibdeps >/dev/null; then
  echo "package: dpkg-shlibdeps is missing (Debian package dpkg-dev; scripts/setup.sh installs it)" >&2
  exit 2
fi
if [ ! -x "$cargo_deb_root/bin/cargo-deb" ]; then
  echo "package: installing cargo-deb $CARGO_DEB_VERSION into $cargo_deb_root (a few minutes, once)" >&2
  mkdir -p "$cache/tools"
  # one install at a time; a finished one is kept
  (
    flock 9
    [ -x "$cargo_deb_root/bin/cargo-deb" ] ||
      cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION" --root "$cargo_deb_root"
  ) 9>"$cache/tools/.cargo-deb.lock"
fi

cargo build --release --locked -p detector -p profile-gen >&2
docs=$target/release/docs
rm -rf "$docs"
"$target/release/detector" generate-docs "$docs" >/dev/null
"$target/release/profile-gen" generate-docs "$docs" >/dev/null
# Debian ships man pages gzipped (cargo-deb leaves files under target/ as they are)
gzip -9n "$docs"/man/*.1

# --no-build: the binaries above; --strip: without the debug info [profile.release] keeps
out=$target/debian
mkdir -p "$out"
deb=$("$cargo_deb_root/bin/cargo-deb" --no-build --strip -p detector --output "$out" 2>&2 | tail -n 1)
if [ ! -f "$deb" ]; then
  echo "package: cargo-deb printed no package path: $deb" >&2
  exit 2
fi
echo "$deb"
