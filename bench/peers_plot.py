"""bench.peers' pictures: PNGs drawn from one run's results (matplotlib, no display needed).

* ``peers_latency.png``: the distribution (empirical CDF, log time axis) of the live end-to-end latency
  and of the resume latency, one line per peer and protocol;
* ``peers_throughput.png``: appends/s per peer and durability setting, and live deliveries/s;
* ``peers_bytes.png``: bytes per finished short answer per peer, beside the answer's own text.

Only what the run measured is drawn; a peer that cannot do a workload is named in the legend as n/a.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only: never a window, works without a display
import matplotlib.pyplot as plt  # noqa: E402

if TYPE_CHECKING:
    from .peers import Results

AFTER_COLOR, BEFORE_COLOR = "#1f77b4", "#ff7f0e"


def _ecdf(ax: plt.Axes, series: dict[str, list[float] | str], title: str) -> None:
    for name, xs in series.items():
        if isinstance(xs, str):
            ax.plot([], [], linestyle="none", label=f"{name}: n/a")
            continue
        s = sorted(xs)
        ax.step(s, [(i + 1) / len(s) for i in range(len(s))], where="post", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("ms (log scale)")
    ax.set_ylabel("fraction of samples <= x")
    ax.axhline(0.99, color="grey", linewidth=0.6, linestyle=":")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def write(res: Results, out_dir: Path, subtitle: str) -> list[Path]:
    """Draws the three figures into ``out_dir`` (created if needed); returns their paths. (Duck-typed
    on the results: under ``python -m bench.peers`` their classes are ``__main__``'s, not ``bench.peers``'.)"""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5))
    live = {k: (v if isinstance(v, str) else v.lat_ms) for k, v in res.live.items()}
    p = res.params
    _ecdf(
        a1,
        live,
        f"live: {p.subs} subscribers, {p.tokens} chunks at {p.rate:g}/s\nsend -> subscriber holds it",
    )
    _ecdf(a2, dict(res.resume), "resume a finished answer at a random offset\nrequest -> last byte")
    fig.suptitle(f"Latency distributions ({subtitle}); dotted line: p99", fontsize=10)
    fig.tight_layout()
    paths.append(out_dir / "peers_latency.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    labels, values, colors = [], [], []
    for peer, settings in res.appends.items():
        for setting, v in settings.items():
            if isinstance(v, str):
                continue
            labels.append(f"{peer}\n{setting}")
            values.append(v)
            colors.append(AFTER_COLOR if setting in res.after_settings else BEFORE_COLOR)
    a1.barh(labels, values, color=colors)
    a1.invert_yaxis()
    a1.set_xscale("log")
    a1.set_xlabel("appends/s (log scale)")
    a1.set_title(
        f"appends/s, {p.writers} writers, one append in flight each\nblue: ack after fsync, orange: before"
    )
    for y, v in enumerate(values):
        a1.text(v, y, f" {v:,.0f}", va="center", fontsize=7)
    a1.tick_params(axis="y", labelsize=7)
    a1.grid(True, axis="x", which="both", alpha=0.3)
    names = [k for k, v in res.live.items() if not isinstance(v, str)]
    rates = [v.delivered_per_s for v in res.live.values() if not isinstance(v, str)]
    a2.barh(names, rates, color="#2ca02c")
    a2.invert_yaxis()
    a2.set_xlabel("chunks delivered/s")
    a2.set_title(f"live deliveries/s (offered: {p.subs * p.rate:,.0f}/s)")
    a2.tick_params(axis="y", labelsize=7)
    a2.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"Throughput ({subtitle})", fontsize=10)
    fig.tight_layout()
    paths.append(out_dir / "peers_throughput.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4))
    names, sizes, shown, notes = [], [], [], []
    for peer, b in res.bytes_per_answer.items():
        if isinstance(b, str):
            notes.append(f"{peer}: {b}")
            continue
        names.append(f"{peer}\n({b[1]})")
        sizes.append(max(b[0], 1.0))  # a log axis has no zero
        shown.append(b[0])
    ax.barh(names, sizes, color="#9467bd")
    ax.invert_yaxis()
    ax.axvline(res.raw_per_answer, color="black", linestyle="--", linewidth=1)
    ax.text(res.raw_per_answer, len(sizes) - 0.55, f" the text: {res.raw_per_answer:,.0f} B", fontsize=8)
    for y, (v, real) in enumerate(zip(sizes, shown, strict=True)):
        ax.text(v, y, f" {real:,.0f}", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(left=min([100.0, *sizes]) / 2)  # bars start well left of the smallest, so lengths compare
    ax.set_xlabel("bytes per finished answer (log scale)")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"Disk or RAM per finished short answer, {p.answers} answers ({subtitle})", fontsize=9)
    if notes:
        ax.text(0.01, -0.28, "\n".join(notes), transform=ax.transAxes, fontsize=7, va="top")
    fig.tight_layout()
    paths.append(out_dir / "peers_bytes.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
