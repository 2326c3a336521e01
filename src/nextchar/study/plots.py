"""The study's plots: accuracy against parameters and time, learning curves, languages, and each anomaly."""

from __future__ import annotations

import io
import math
import statistics
from pathlib import Path
from typing import Any

from nextchar import files
from nextchar.study.findings import anomalies, by_accuracy, pareto
from nextchar.study.results import Row


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    files.atomic_write_bytes(path, buf.getvalue())


def write_plots(folder: Path, rows: list[Row], langs: list[str]) -> None:
    """FOLDER/*.png: top-3 against parameters and training time, learning curves, languages, anomalies."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    tf = [r for r in rows if not r.is_ngram]
    # A study folder without loss curves (docs/studies/cpu-300k kept only its results) has nothing for the curve
    # plots: the ones it holds are left as they are rather than redrawn as empty axes.
    curves = any(r.train_curve or r.dev_curve for r in tf)
    if curves:
        for old in folder.glob("anomaly-*.png"):
            old.unlink()  # anomalies of an earlier report may be gone
    ng = next((r for r in rows if r.is_ngram), None)
    names = sorted({r.name for r in tf})
    cmap = plt.get_cmap("tab20")
    # the dark shade of each tab20 hue first, then the light ones: neighbours in the legend stay distinguishable
    color = {n: cmap((2 * i) % 20 + (2 * i // 20) % 2) for i, n in enumerate(names)}
    marker = {"seed": "o", "modern": "s"}

    for cost, fname, xlabel in (("params", "top3_vs_params.png", "parameters (log scale)"),
                                ("train_seconds", "top3_vs_time.png", "training time, seconds (log scale)")):
        fig, ax = plt.subplots(figsize=(9, 6))
        for variant in ("seed", "modern"):
            rs = [r for r in tf if r.variant == variant]
            if not rs:
                continue
            ax.scatter([getattr(r, cost) for r in rs], [100 * r.top3 for r in rs], marker=marker[variant],
                       c=[color[r.name] for r in rs], edgecolors="black", s=55, label=f"{variant} recipe", zorder=3)
            for r in rs:
                ax.annotate(r.name, (getattr(r, cost), 100 * r.top3), fontsize=7, xytext=(4, 3),
                            textcoords="offset points")
        front = pareto(tf, cost)
        ax.plot([getattr(r, cost) for r in front], [100 * r.top3 for r in front], color="grey", lw=1, ls="-",
                drawstyle="steps-post", label="Pareto front", zorder=2)
        if ng is not None:
            ax.axhline(100 * ng.top3, color="black", ls="--", lw=1, label=ng.name)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test top-3 accuracy (%)")
        ax.set_title("Top-3 accuracy vs " + ("parameters" if cost == "params" else "training time"))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        _save(fig, folder / fname)
        plt.close(fig)

    if curves:
        _learning_curves(plt, folder, tf, ng, color)

    ordered = by_accuracy(rows)
    lang_order = sorted(langs, key=lambda lang: (-statistics.mean(r.langs[lang]["top3"] for r in rows
                                                                  if lang in r.langs), lang))
    grid = [[100 * r.langs[lang]["top3"] if lang in r.langs else math.nan for lang in lang_order] for r in ordered]
    fig, ax = plt.subplots(figsize=(0.5 * len(lang_order) + 4, 0.34 * len(ordered) + 1.8))
    im = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(lang_order)), lang_order)
    ax.set_yticks(range(len(ordered)), [r.name if r.is_ngram else f"{r.name} ({r.variant})" for r in ordered],
                  fontsize=7)
    for i, row in enumerate(grid):
        for k, v in enumerate(row):
            if not math.isnan(v):
                ax.text(k, i, f"{v:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if v < (min(map(min, grid)) + max(map(max, grid))) / 2 else "black")
    ax.set_xlabel("language (sorted by mean top-3)")
    ax.set_title("Test top-3 accuracy (%) per language")
    fig.colorbar(im, ax=ax, label="top-3 accuracy (%)")
    _save(fig, folder / "language_heatmap.png")
    plt.close(fig)

    if curves:
        _anomaly_plots(plt, folder, tf)


def _learning_curves(plt: Any, folder: Path, tf: list[Row], ng: Row | None, color: dict[str, Any]) -> None:
    """learning_curves.png: dev loss (solid) and training loss (dotted) against characters seen, per recipe."""
    variants = [v for v in ("seed", "modern") if any(r.variant == v for r in tf)]
    fig, axes = plt.subplots(1, max(1, len(variants)), figsize=(7 * max(1, len(variants)), 5.5), sharey=True,
                             squeeze=False)
    handles: dict[str, Any] = {}
    for ax, variant in zip(axes[0], variants):
        for r in sorted((r for r in tf if r.variant == variant), key=lambda r: r.name):
            if r.train_curve:
                ax.plot([t for t, _ in r.train_curve], [v for _, v in r.train_curve], color=color[r.name], lw=0.8,
                        alpha=0.35, ls=":")
            if r.dev_curve:
                (handles[r.name],) = ax.plot([t for t, _ in r.dev_curve], [v for _, v in r.dev_curve],
                                             color=color[r.name], marker="o", ms=3, lw=1.5)
        if ng is not None:
            handles[ng.name] = ax.axhline(ng.dev_loss, color="black", ls="--", lw=1)
        ax.set_xlabel("training characters seen")
        ax.set_title(f"{variant} recipe: dev loss (solid) and training loss (dotted)")
        ax.grid(True, alpha=0.3)
    dev = [v for r in tf for _, v in r.dev_curve]
    if dev:  # the first steps' losses would squash the part worth reading
        low = min(dev + ([ng.dev_loss] if ng is not None else []))
        axes[0][0].set_ylim(low - 0.2, max(dev) + 0.5)
    axes[0][0].set_ylabel("loss (nats per character)")
    names_in_order = sorted(handles, key=lambda n: (n == (ng.name if ng else None), n))
    fig.legend([handles[n] for n in names_in_order], names_in_order, loc="lower center", ncol=5, fontsize=8,
               bbox_to_anchor=(0.5, -0.02 - 0.035 * math.ceil(len(handles) / 5)))
    _save(fig, folder / "learning_curves.png")
    plt.close(fig)


def _anomaly_plots(plt: Any, folder: Path, tf: list[Row]) -> None:
    """anomaly-<dir>.png: the loss curves of each larger configuration next to the smaller one that beats it."""
    for a, b in anomalies(tf):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r, c in ((a, "tab:red"), (b, "tab:blue")):
            label = f"{r.name} ({r.params:,} params)"
            if r.train_curve:
                ax.plot([t for t, _ in r.train_curve], [v for _, v in r.train_curve], color=c, lw=0.8, alpha=0.5,
                        ls=":", label=f"{label}, training")
            if r.dev_curve:
                ax.plot([t for t, _ in r.dev_curve], [v for _, v in r.dev_curve], color=c, marker="o", ms=3,
                        label=f"{label}, dev")
        ax.set_xlabel("training characters seen")
        ax.set_ylabel("loss (nats per character)")
        ax.set_title(f"Anomaly ({a.variant}): {a.name} vs the smaller {b.name}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        _save(fig, folder / f"anomaly-{a.dir}.png")
        plt.close(fig)

