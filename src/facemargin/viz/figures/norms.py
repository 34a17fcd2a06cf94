"""Feature norm against closed-set correctness: do wrongly classified samples get smaller norms?"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Tuple

import numpy as np

from .common import ArrayLike, PathLike, _grid_shape, _to_numpy, new_figure, save_png

__all__ = ["plot_norm_vs_correctness", "plot_norm_grid"]


def _check_norms(norms, correct, name="norms"):
    n = _to_numpy(norms, name).astype(np.float64).reshape(-1)
    c = _to_numpy(correct, "correct").reshape(-1)
    if n.size == 0:
        raise ValueError(f"{name} is empty")
    if c.shape != n.shape:
        raise ValueError(f"correct has {c.size} entries but {name} has {n.size}")
    if not np.all(np.isfinite(n)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return n, c.astype(bool)


def _draw_norm_hist(ax, n, c, legend=True):
    lo, hi = float(n.min()), float(n.max())
    if hi <= lo:
        hi = lo + 1.0
    bins = np.linspace(lo, hi, 41)
    ax.hist(n[c], bins=bins, density=True, alpha=0.55, color="tab:green",
            label=f"correct ({int(c.sum())}), median {np.median(n[c]):.3g}" if c.any() else "correct (0)")
    if (~c).any():
        ax.hist(n[~c], bins=bins, density=True, alpha=0.55, color="tab:red",
                label=f"wrong ({int((~c).sum())}), median {np.median(n[~c]):.3g}")
    else:
        ax.text(0.5, 0.9, "no misclassified sample", transform=ax.transAxes, ha="center", fontsize=8)
    ax.set_xlabel("feature norm ‖x‖")
    ax.set_ylabel("density")
    if legend:
        ax.legend(fontsize=7)


def plot_norm_vs_correctness(norms: ArrayLike, correct: ArrayLike, path: PathLike, title: Optional[str] = None,
                             bins: int = 10) -> Path:
    """Feature-norm distribution of correctly vs wrongly classified samples, and the error rate
    per norm decile (the ATL write-up's "norm" analysis: hard samples get small norms).

    Args:
        norms: ``(N,)`` feature norms ``‖x‖``; correct: ``(N,)`` bool, closed-set prediction right.
        bins: number of equal-count norm bins of the error-rate panel.
    """
    n, c = _check_norms(norms, correct)
    fig = new_figure(11, 4.3)
    ax = fig.add_subplot(1, 2, 1)
    _draw_norm_hist(ax, n, c)
    ax.set_title("feature norm by closed-set correctness", fontsize=10)
    ax = fig.add_subplot(1, 2, 2)
    order = np.argsort(n, kind="mergesort")
    groups = [g for g in np.array_split(order, max(1, min(int(bins), n.size))) if g.size]
    centers = [float(np.median(n[g])) for g in groups]
    err = [float(1.0 - c[g].mean()) for g in groups]
    ax.plot(range(len(groups)), err, marker="o", color="tab:red")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{v:.3g}" for v in centers], rotation=45, fontsize=7)
    ax.set_xlabel(f"feature-norm bin ({len(groups)} equal-count bins, median norm shown)")
    ax.set_ylabel("error rate")
    ax.set_ylim(bottom=0)
    ax.set_title("error rate from small to large norm", fontsize=10)
    ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


def plot_norm_grid(data: Mapping[str, Tuple[ArrayLike, ArrayLike]], path: PathLike, title: Optional[str] = None) -> Path:
    """Norm histograms of correct vs wrong samples, one panel per loss: ``{name: (norms, correct)}``."""
    if not data:
        raise ValueError("plot_norm_grid needs at least one (norms, correct) entry")
    checked = {name: _check_norms(nv, cv, f"norms of {name!r}") for name, (nv, cv) in data.items()}
    rows, cols = _grid_shape(len(checked), max_cols=4)
    fig = new_figure(4.2 * cols, 3.3 * rows)
    for i, (name, (n, c)) in enumerate(checked.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        _draw_norm_hist(ax, n, c)
        ax.set_title(name, fontsize=10)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)
