"""A PNG chart of one benchmark run: each test's main figure per backend,
relative to anyio trio (trio = 1.0; higher is better on every panel)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from measure import Outcome
from report import Results

#: panel title -> (test, value of an outcome where higher is better)
Panel = tuple[str, Callable[[Outcome], float | None]]


def _per_cpu(key: str) -> Callable[[Outcome], float | None]:
    def get(o: Outcome) -> float | None:
        v = o.load.get(key)
        return float(v) / o.server_cpu_s if v is not None and o.server_cpu_s else None

    return get


def _inverse(key: str) -> Callable[[Outcome], float | None]:
    def get(o: Outcome) -> float | None:
        v = o.load.get(key)
        return 1.0 / float(v) if v else None

    return get


def _inverse_rss(o: Outcome) -> float | None:
    held = o.load.get("held")
    if not held or o.server_rss_peak is None or o.server_rss_before is None:
        return None
    growth = o.server_rss_peak - o.server_rss_before
    return float(held) / growth if growth > 0 else None


PANELS: dict[str, Panel] = {
    "echo 1: 1 / median RTT": ("echo1", _inverse("rtt_median_us")),
    "echo 64: round trips per server CPU-s": ("echo64", _per_cpu("ops")),
    "churn: exchanges per server CPU-s": ("churn", _per_cpu("exchanges")),
    "bulk: MB/s": ("bulk", lambda o: o.load.get("mb_per_s")),
    "storm: 1 / elapsed": ("storm", _inverse("elapsed_s")),
    "idle: connections per RSS byte": ("idle", _inverse_rss),
}


def write_chart(results: Results, backends: list[str], path: Path, title: str) -> bool:
    """Write the chart; False (and nothing written) without matplotlib or trio."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = []
    for name, (test, value) in PANELS.items():
        base = results.get(("trio", test))
        base_value = value(base) if base is not None and base.error is None else None
        if not base_value:
            continue
        bars = []
        for backend in backends:
            o = results.get((backend, test))
            v = value(o) if o is not None and o.error is None else None
            bars.append(0.0 if v is None else v / base_value)
        panels.append((name, bars))
    if not panels:
        return False
    cols = 3
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (name, bars) in zip(axes.flat, panels, strict=False):
        ax.bar(range(len(backends)), bars, color=[cmap(i % 10) for i in range(len(bars))])
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(backends)))
        ax.set_xticklabels(backends, rotation=30, ha="right", fontsize=8)
        for i, v in enumerate(bars):
            ax.text(i, v, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title + "  (relative to anyio trio = 1.0, higher is better)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
