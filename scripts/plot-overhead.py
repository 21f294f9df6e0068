"""Plot docs/overhead.json or docs/overhead-xen.json (written by
detector/examples/overhead.rs): guest slowdown (host clock, 95 % interval) and
the guest-clock view per mode and rate; the same without the vCPU's waits for a host
core; and the detector's CPU (on Xen: in dom0, with all of dom0's).
Usage: python plot-overhead.py IN.json OUT.png"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

doc = json.load(open(sys.argv[1]))
recs = [r for r in doc["records"] if r["mode"] != "baseline"]
base = next(r for r in doc["records"] if r["mode"] == "baseline")
xen = "dom0_cpu_pct" in base
modes = ["watch", "watch-pause", "ps-per-tick"]
colors = {"watch": "tab:green", "watch-pause": "tab:orange", "ps-per-tick": "tab:red"}
fig, (ax, ux, bx) = plt.subplots(1, 3, figsize=(15, 4.4))
for i, m in enumerate(modes):
    rs = sorted((r for r in recs if r["mode"] == m), key=lambda r: r["rate_hz"])
    if not rs:
        continue
    x = [r["rate_hz"] * (1 + 0.06 * (i - 1)) for r in rs]
    y = [r["slowdown_pct"] for r in rs]
    err = [[r["slowdown_pct"] - r["ci95_pct"][0] for r in rs],
           [r["ci95_pct"][1] - r["slowdown_pct"] for r in rs]]
    ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=colors[m], label=f"{m} (host clock)")
    ax.plot(x, [r["guest_clock_slowdown_pct"] for r in rs], linestyle=":", marker="x",
            color=colors[m], label=f"{m} (guest clock)")
    uy = [r["uncontended_slowdown_pct"] for r in rs]
    uerr = [[r["uncontended_slowdown_pct"] - r["uncontended_ci95_pct"][0] for r in rs],
            [r["uncontended_ci95_pct"][1] - r["uncontended_slowdown_pct"] for r in rs]]
    ux.errorbar(x, uy, yerr=uerr, marker="o", capsize=3, color=colors[m], label=m)
    if xen:
        bx.plot([r["rate_hz"] for r in rs], [r["dom0_cpu_pct"] for r in rs], marker="s",
                linestyle="--", color=colors[m], label=f"{m}: all of dom0")
    bx.plot([r["rate_hz"] for r in rs], [r["host_cpu_pct"] for r in rs], marker="o",
            color=colors[m], label=m)
ax.axhline(14.77, color="grey", linestyle="--", linewidth=1)
ax.text(1, 14.77, " study: libVMI 1 Hz on Xen, 14.77 %", va="bottom", fontsize=8, color="grey")
ax.axhline(0, color="black", linewidth=0.5)
ax.set_xscale("log")
ax.set_xlabel("introspection rate (Hz)")
ax.set_ylabel("guest CPU-bench slowdown (%), 95 % CI")
where = "Xen domU, TCG" if xen else "TCG"
ax.set_title(f"Guest slowdown ({doc['kernel']}, {doc['guest']['vcpus']} vCPU, {where})", fontsize=10)
ax.legend(fontsize=7)
if xen:
    bx.axhline(base["dom0_cpu_pct"], color="black", linestyle=":", linewidth=1)
    bx.text(1, base["dom0_cpu_pct"], " dom0, baseline", va="bottom", fontsize=8)
    bx.axhline(39, color="grey", linestyle="--", linewidth=1)
    bx.text(1, 39, " study: dom0 under libVMI, 1 Hz", va="bottom", fontsize=8, color="grey")
for a in (ux,):
    a.axhline(14.77, color="grey", linestyle="--", linewidth=1)
    a.axhline(0, color="black", linewidth=0.5)
    a.set_xscale("log")
    a.set_xlabel("introspection rate (Hz)")
    a.set_ylabel("slowdown (%), 95 % CI")
    a.set_title("Without the vCPU's waits for a host core" + (" (domU's CPU)" if xen else ""),
                fontsize=10)
    a.legend(fontsize=7)
bx.set_xscale("log")
bx.set_yscale("symlog", linthresh=0.01)
bx.set_ylim(bottom=0)
bx.set_xlabel("introspection rate (Hz)")
bx.set_ylabel("CPU in dom0 (% of its one vCPU)" if xen else "detector host CPU (% of one core)")
bx.set_title("CPU of the detector (and all of dom0)" if xen else "Host CPU of the introspection side",
             fontsize=10)
bx.legend(fontsize=7)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
