"""Intra- against inter-class angles between embeddings: the statistics and their histograms.

A good embedding puts every pair of the same class at a smaller angle than every pair of two
classes; :func:`angle_stats` measures how far that holds and the figures show the two
distributions.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from .common import ArrayLike, PathLike, _check_embeddings, _grid_shape, _subsample, new_figure, save_png

__all__ = ["angle_stats", "plot_angle_histograms", "plot_angle_grid"]


def _pair_angles(embeddings, labels, max_points: int, seed: int):
    x, y = _check_embeddings(embeddings, labels)
    idx = _subsample(len(x), max_points, seed)
    x, y = x[idx], y[idx]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("embeddings contain an all-zero row: its angle is undefined")
    xh = x / norms
    cos = np.clip(xh @ xh.T, -1.0, 1.0)
    iu = np.triu_indices(len(x), k=1)
    ang = np.degrees(np.arccos(cos[iu]))
    same = y[iu[0]] == y[iu[1]]
    intra, inter = ang[same], ang[~same]
    if intra.size == 0:
        raise ValueError("angle statistics need a class with at least two samples (no intra-class pair)")
    if inter.size == 0:
        raise ValueError("angle statistics need at least two classes (no inter-class pair)")
    return intra, inter


def _stats_from(intra: np.ndarray, inter: np.ndarray) -> Dict[str, float]:
    st = {
        "max_intra_deg": float(intra.max()),
        "min_inter_deg": float(inter.min()),
        "mean_intra_deg": float(intra.mean()),
        "mean_inter_deg": float(inter.mean()),
        "p95_intra_deg": float(np.percentile(intra, 95)),
        "p5_inter_deg": float(np.percentile(inter, 5)),
        "n_intra_pairs": int(intra.size),
        "n_inter_pairs": int(inter.size),
    }
    st["gap_deg"] = st["min_inter_deg"] - st["max_intra_deg"]
    st["gap_p_deg"] = st["p5_inter_deg"] - st["p95_intra_deg"]
    return st


def angle_stats(embeddings: ArrayLike, labels: ArrayLike, max_points: int = 2000, seed: int = 0) -> Dict[str, float]:
    """Pairwise angles (degrees) between embeddings of the same and of different classes.

    The seeds' criterion of a good embedding is ``max intra-class angle < min inter-class angle``,
    i.e. ``gap_deg = min_inter_deg − max_intra_deg > 0``. Extremes are noisy, so the 95th
    percentile of intra-class and the 5th of inter-class angles are given too (``gap_p_deg``).

    Returns a dict with ``max_intra_deg, min_inter_deg, mean_intra_deg, mean_inter_deg, gap_deg,
    p95_intra_deg, p5_inter_deg, gap_p_deg, n_intra_pairs, n_inter_pairs``. With more than
    ``max_points`` samples a seeded random subset of that size is used.
    """
    return _stats_from(*_pair_angles(embeddings, labels, max_points, seed))


def _draw_angles(ax, intra, inter, st, legend=True):
    bins = np.linspace(0, 180, 73)
    ax.hist(intra, bins=bins, density=True, alpha=0.55, color="tab:blue", label="intra-class")
    ax.hist(inter, bins=bins, density=True, alpha=0.55, color="tab:orange", label="inter-class")
    ax.axvline(st["max_intra_deg"], color="tab:blue", lw=1.3, label=f"max intra {st['max_intra_deg']:.1f}°")
    ax.axvline(st["min_inter_deg"], color="tab:orange", lw=1.3, label=f"min inter {st['min_inter_deg']:.1f}°")
    ax.axvline(st["p95_intra_deg"], color="tab:blue", lw=1.1, ls="--", label=f"95% intra {st['p95_intra_deg']:.1f}°")
    ax.axvline(st["p5_inter_deg"], color="tab:orange", lw=1.1, ls="--", label=f"5% inter {st['p5_inter_deg']:.1f}°")
    ax.set_xlim(0, 180)
    ax.set_xlabel("angle between embeddings (degrees)")
    ax.set_ylabel("density")
    ok = "holds" if st["gap_deg"] > 0 else "fails"
    ax.text(0.02, 0.97, f"gap min-inter − max-intra: {st['gap_deg']:.1f}° ({ok})\n"
                        f"gap 5%-inter − 95%-intra: {st['gap_p_deg']:.1f}°",
            transform=ax.transAxes, va="top", fontsize=7,
            bbox=dict(boxstyle="round", fc="white", ec="0.8", alpha=0.9))
    if legend:
        ax.legend(fontsize=7, loc="upper right")


def plot_angle_histograms(embeddings: ArrayLike, labels: ArrayLike, path: PathLike, title: Optional[str] = None,
                          max_points: int = 2000, seed: int = 0) -> Path:
    """Histograms of intra- and inter-class angles with max-intra/min-inter (and the 95%/5%
    percentiles) marked: the ATL write-up's "max intra-class angle < min inter-class angle" criterion."""
    intra, inter = _pair_angles(embeddings, labels, max_points, seed)
    st = _stats_from(intra, inter)
    fig = new_figure(7, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    _draw_angles(ax, intra, inter, st)
    ax.set_title(title or "intra- vs inter-class angles", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def plot_angle_grid(features: Mapping[str, Tuple[ArrayLike, ArrayLike]], path: PathLike,
                    title: Optional[str] = None, max_points: int = 2000, seed: int = 0) -> Path:
    """Angle histograms, one panel per loss: ``{name: (embeddings (N, D), labels)}``."""
    if not features:
        raise ValueError("plot_angle_grid needs at least one (embeddings, labels) entry")
    computed = {}
    for name, (e, l) in features.items():
        try:
            intra, inter = _pair_angles(e, l, max_points, seed)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
        computed[name] = (intra, inter, _stats_from(intra, inter))
    rows, cols = _grid_shape(len(computed), max_cols=3)
    fig = new_figure(5.0 * cols, 3.6 * rows)
    for i, (name, (intra, inter, st)) in enumerate(computed.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        _draw_angles(ax, intra, inter, st, legend=(i == 0))
        ax.set_title(name, fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)
