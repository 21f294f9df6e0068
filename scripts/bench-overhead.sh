#!/usr/bin/env bash
# Guest slowdown under continuous introspection (issue 7), on a real lab guest (Debian
# 6.1, 1 vCPU, 1 GiB, TCG): a fixed CPU-bound workload in the guest (plus process
# churn) with no introspection (the baseline, in the same run) and with `detector
# watch`, `detector watch --pause` and one `detector ps` process per tick, each at 1,
# 10 and 100 Hz. Prints a table; writes docs/overhead.json and docs/overhead.png.
# Options go to the benchmark: --repeats N (blocks, default 8), --rounds N (guest
# rounds per run, default 4), --round-secs S (default 1), --out DIR (default docs/).
# About 8 minutes here with the defaults (2 cores, TCG).
# --xen: the same on the lab's Xen rig (Xen 4.17 in QEMU, 2 emulated CPUs: dom0 on one,
# a PVH domU with the workload on the other), the detector in dom0; --rates 1,10 by
# default; writes docs/overhead-xen.json and docs/overhead-xen.png.
# --libvirt: the guest runs as a domain of a private libvirtd (its monitor owned by
# libvirtd) and watch reads it with --libvirt NAME (RAM through the QEMU process);
# writes docs/overhead-libvirt.json and .png.
# --rates HZ,HZ,...: the introspection rates (default 1,10,100).
# --modes M,M,...: the modes measured (watch, watch-pause, ps-per-tick; default all):
# e.g. --modes watch --rates 1,10 --repeats 30 --out DIR for the goal's two figures
# with more blocks (about 8.5 minutes; docs/overhead-watch.json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -q -p detector
cargo run --release -q -p detector --example overhead -- "$@"
