"""Accuracy vs latency plots (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path


def pareto_plot(decision, path: str | Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    boards = sorted({c.board for c in decision.candidates})
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    markers = "osD^v<>"
    for i, b in enumerate(boards):
        pts = [c for c in decision.candidates if c.board == b and c.accuracy is not None]
        ax.scatter([c.latency_ms for c in pts], [c.accuracy for c in pts], marker=markers[i % len(markers)],
                   color="#9aa5b1", label=f"{b}: measured", zorder=2)
        for c in pts:
            if c.ci_low_ms is not None:
                ax.plot([c.ci_low_ms, c.ci_high_ms], [c.accuracy, c.accuracy], color="#cbd2d9", lw=1, zorder=1)
        front = sorted([c for c in pts if c.on_front], key=lambda c: c.latency_ms)
        if front:
            ax.scatter([c.latency_ms for c in front], [c.accuracy for c in front], marker=markers[i % len(markers)],
                       color="#1f6feb", label=f"{b}: Pareto front (accuracy, latency, size)", zorder=3)
        for c in front:
            ax.annotate(c.label, (c.latency_ms, c.accuracy), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if decision.chosen is not None:
        c = decision.chosen
        ax.scatter([c.latency_ms], [c.accuracy], s=160, facecolors="none", edgecolors="#d1242f", linewidths=2,
                   label=f"chosen: {c.label}", zorder=4)
    budget = decision.budget.get("max_latency_ms")
    if budget is not None:
        ax.axvline(budget, color="#d1242f", ls="--", lw=1, label=f"budget {budget:g} ms")
    if decision.budget.get("min_accuracy") is not None:
        ax.axhline(decision.budget["min_accuracy"], color="#bf8700", ls=":", lw=1, label="accuracy floor")
    ax.set_xlabel(f"latency {decision.percentile} (ms)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"accuracy vs latency: {decision.target}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
