"""PNG plots of the predictions: throughput and weak scaling by ranks, weight-distribution time."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

from dvla_hpc.config.schema import LayoutConfig  # noqa: E402


def plot_all(rows: list[dict], base: int, out: Path) -> list[Path]:
    params = sorted({r["params"] for r in rows})
    links = sorted({r["link_gbps"] for r in rows})
    paths = []
    fig, axes = plt.subplots(1, len(params), figsize=(5 * len(params), 4), squeeze=False)
    for ax, p in zip(axes[0], params):
        for link in links:
            pts = sorted((r["ranks"], r["async_steps_per_s"], r["sync_steps_per_s"]) for r in rows
                         if r["params"] == p and r["link_gbps"] == link)
            ranks = [x[0] for x in pts]
            ax.plot(ranks, [x[1] for x in pts], "o-", label=f"async {link:.0f} Gb/s")
            ax.plot(ranks, [x[2] for x in pts], "s--", label=f"sync {link:.0f} Gb/s")
        ideal = [r for r in rows if r["params"] == p and r["ranks"] == base and r["link_gbps"] == links[0]][0]
        xs = sorted({r["ranks"] for r in rows})
        ax.plot(xs, [ideal["async_steps_per_s"] * n / base for n in xs], ":", color="grey",
                label="linear (async)")
        ax.set(xscale="log", yscale="log", xlabel="ranks", ylabel="env steps/s", title=f"{p:.0e} parameters")
        ax.legend(fontsize=7)
    paths.append(_save(fig, out / "throughput.png"))

    fig, axes = plt.subplots(1, len(params), figsize=(5 * len(params), 4), squeeze=False)
    for ax, p in zip(axes[0], params):
        for link in links:
            pts = sorted((r["ranks"], r["broadcast_s"], r["broadcast_s_former_fanout"]) for r in rows
                         if r["params"] == p and r["link_gbps"] == link)
            ax.plot([x[0] for x in pts], [x[1] for x in pts], "o-", label=f"fan-out {LayoutConfig.tree_fanout}, {link:.0f} Gb/s")
            ax.plot([x[0] for x in pts], [x[2] for x in pts], "s--", label=f"fan-out 16 (former), {link:.0f} Gb/s")
        ax.set(xscale="log", yscale="log", xlabel="ranks", ylabel="seconds",
               title=f"weights of {p:.0e} params (fp32)")
        ax.legend(fontsize=7)
    paths.append(_save(fig, out / "broadcast.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    labels, effs = [], []
    scaled = [r for r in rows if r["ranks"] != base]
    for r in sorted(scaled, key=lambda r: (r["ranks"], r["params"], r["link_gbps"])):
        labels.append(f"{r['ranks']}/{r['params']:.0e}/{r['link_gbps']:.0f}")
        effs.append(r["async_weak_scaling"])
    ax.bar(range(len(effs)), effs)
    ax.axhline(0.9, color="red", linestyle="--", label="goal 90%")
    ax.set_xticks(range(len(effs)), labels, rotation=90, fontsize=6)
    ax.set(ylabel=f"async weak scaling vs {base} ranks", ylim=(0, 1.1), title="ranks/params/link Gb/s")
    ax.legend()
    paths.append(_save(fig, out / "weak_scaling.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
