"""The report's figures (matplotlib, Agg backend), each a function of already-loaded results.

Every function returns a ``matplotlib`` Figure or None when there is nothing to draw; the caller
saves it. Small multiples share their axes so that methods compare at a glance; colours follow
one fixed order (the table's), so a method has the same colour in every figure.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

CURVE_KEYS = ("reward", "rewards/format", "format_rate", "val_mae")
CURVE_TITLES = {"reward": "total reward", "rewards/format": "format reward", "format_rate": "format rate",
                "val_mae": "validation MAE"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def colors(n: int) -> list:
    plt = _plt()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _grid(n: int, ncols: int = 4, size: tuple[float, float] = (3.6, 2.9), **kw):
    plt = _plt()
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False, **kw)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def mae_bars(names: list[str], maes: list[float], bayes_mae: float | None, warn: list[bool]):
    """Horizontal bars of MAE, best on top; the Bayes floor as a dashed line; constant ones hatched."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(names) + 1.4))
    y = np.arange(len(names))[::-1]
    bars = ax.barh(y, maes, color=colors(len(names)))
    for bar, w in zip(bars, warn, strict=True):
        if w:
            bar.set_hatch("//")
            bar.set_edgecolor("black")
    for yy, m in zip(y, maes, strict=True):
        ax.text(m, yy, f" {m:.3f}", va="center", fontsize=9)
    ax.set_yticks(y, names)
    ax.set_xlabel("MAE (lower is better)")
    if bayes_mae is not None:
        ax.axvline(bayes_mae, color="black", linestyle="--", linewidth=1.2, label=f"Bayes floor {bayes_mae:.3f}")
        ax.legend(loc="lower right", fontsize=9)
    ax.set_xlim(0, max(maes + [bayes_mae or 0, 0.01]) * 1.15)
    ax.set_title("MAE by method" + ("  (hatched: near-constant predictions)" if any(warn) else ""))
    fig.tight_layout()
    return fig


def training_curves(logs: dict[str, list[dict[str, Any]]], palette: dict[str, Any]):
    """One panel per key of :data:`CURVE_KEYS` present in any log, one line per run, against step."""
    from matplotlib.ticker import MaxNLocator

    present = [k for k in CURVE_KEYS if any(_series(rows, k)[0].size for rows in logs.values())]
    if not present:
        return None
    fig, axes = _grid(len(present), ncols=2, size=(5.2, 3.2))
    for ax, key in zip(axes, present, strict=True):
        for name, rows in logs.items():
            x, y = _series(rows, key)
            if x.size:
                ax.plot(x, y, marker="o" if x.size < 30 else None, markersize=3, label=name, color=palette.get(name))
        ax.set_title(CURVE_TITLES.get(key, key))
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = {}
    for ax in axes:                       # one legend for all panels: a run may log only some keys
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="upper center", ncols=min(len(handles), 5), fontsize=9)
    rows = math.ceil(len(axes) / 2)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (3.2 * rows)))
    return fig


def _series(rows: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for n, row in enumerate(rows):
        value = row.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            step = row.get("step", n)
            xs.append(step if isinstance(step, int | float) else n)
            ys.append(float(value))
    return np.asarray(xs), np.asarray(ys)


def error_histograms(errors: dict[str, np.ndarray], palette: dict[str, Any], step: float):
    """Histogram of ``prediction - rating`` per method, shared bins (width = the rating step)."""
    fig, axes = _grid(len(errors), sharex=True)
    lim = max(float(np.max(np.abs(e))) for e in errors.values()) + step / 2
    bins = np.arange(-math.ceil(lim / step) * step - step / 2, math.ceil(lim / step) * step + step, step / 2)
    for ax, (name, err) in zip(axes, errors.items(), strict=True):
        ax.hist(err, bins=bins, color=palette.get(name), alpha=0.85)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(f"{name}\nMAE {np.mean(np.abs(err)):.3f}, bias {np.mean(err):+.3f}", fontsize=9)
        ax.set_xlabel("prediction - rating")
    axes[0].set_ylabel("count")
    fig.tight_layout()
    return fig


def predicted_vs_true(pairs: dict[str, tuple[np.ndarray, np.ndarray]], palette: dict[str, Any], lo: float, hi: float):
    """Per true rating, a box plot of the predictions (the diagonal is a perfect predictor)."""
    fig, axes = _grid(len(pairs), sharex=True, sharey=True)
    for ax, (name, (truth, pred)) in zip(axes, pairs.items(), strict=True):
        levels = np.unique(truth)
        if levels.size > 12:            # continuous truth: jittered scatter instead of boxes
            ax.scatter(truth, pred, s=4, alpha=0.3, color=palette.get(name))
        else:
            data = [pred[truth == v] for v in levels]
            box = ax.boxplot(data, positions=levels, widths=(levels[1] - levels[0]) * 0.6 if levels.size > 1 else 0.5,
                             patch_artist=True, showfliers=False, manage_ticks=False)
            for patch in box["boxes"]:
                patch.set_facecolor(palette.get(name))
                patch.set_alpha(0.7)
            for v, d in zip(levels, data, strict=True):
                ax.text(v, hi + 0.05 * (hi - lo), f"n={d.size}", ha="center", fontsize=7, color="grey")
        ax.plot([lo, hi], [lo, hi], color="black", linestyle="--", linewidth=0.8)
        ax.set_xlim(lo - 0.5, hi + 0.5)
        ax.set_ylim(lo - 0.3, hi + 0.25 * (hi - lo))
        ax.set_yticks(np.unique(np.round(np.linspace(lo, hi, 5), 1)))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("true rating")
    axes[0].set_ylabel("prediction")
    fig.tight_layout()
    return fig


def by_history(buckets: dict[str, list[dict[str, Any]]], palette: dict[str, Any], *, key: str = "mae",
               label: str = "MAE", reference: tuple[str, list[dict[str, Any]]] | None = None):
    """``key`` (MAE, NDCG@10, ...) per user-history-length bucket, one line per method; ``reference``
    (name, buckets) is drawn dashed in black (the ranking ceiling)."""
    plt = _plt()
    labels = [b["bucket"] for b in next(iter(buckets.values()))]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    x = np.arange(len(labels))
    lines = [(name, rows, {"color": palette.get(name), "marker": "o"}) for name, rows in buckets.items()]
    if reference is not None:
        lines.append((reference[0], reference[1], {"color": "black", "linestyle": "--", "marker": "x"}))
    for name, rows, style in lines:
        y = [r[key] if r.get(key) is not None else np.nan for r in rows]
        ax.plot(x, y, label=name, **style)
    counts = [next(iter(buckets.values()))[j]["n"] for j in range(len(labels))]
    ax.set_xticks(x, [f"{lab}\n(n={c})" for lab, c in zip(labels, counts, strict=True)])
    ax.set_xlabel("user's earlier interactions")
    ax.set_ylabel(label)
    ax.set_title(f"{label} by user history length")
    ax.legend(fontsize=8, ncols=2)
    fig.tight_layout()
    return fig


def ranking_at_k(metrics: dict[str, dict[str, Any]], palette: dict[str, Any], ks: tuple[int, ...],
                 ceiling: dict[str, Any] | None):
    """Two panels, Hit@K and NDCG@K against K, one line per method; the ceiling dashed in black."""
    fig, axes = _grid(2, ncols=2, size=(5.2, 3.6), sharex=True)
    for ax, (prefix, title) in zip(axes, (("hit", "Hit@K"), ("ndcg", "NDCG@K")), strict=True):
        for name, m in metrics.items():
            ax.plot(ks, [m[f"{prefix}@{k}"] for k in ks], marker="o", label=name, color=palette.get(name))
        if ceiling is not None:
            ax.plot(ks, [ceiling[f"{prefix}@{k}"] for k in ks], color="black", linestyle="--", marker="x",
                    label="ceiling (best possible)")
        ax.set_xticks(ks)
        ax.set_xlabel("K")
        ax.set_title(title + " (higher is better)")
        ax.set_ylim(bottom=0)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncols=min(len(labels), 4), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.12 * math.ceil(len(labels) / 4)))
    return fig
