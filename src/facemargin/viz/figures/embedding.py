"""Embedding spaces: 2-D features coloured by class, and 3-D features on the unit sphere."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple

import mpl_toolkits.mplot3d  # noqa: F401  (registers the "3d" projection)
import numpy as np

from .common import (ArrayLike, PathLike, _check_embeddings, _class_colors, _grid_shape, _label_name, _subsample,
                     new_figure, save_png)

__all__ = ["plot_features_2d", "plot_feature_grid", "plot_features_sphere", "plot_sphere_grid"]


def _scatter_2d(ax, x, y, class_names=None, max_points=5000, seed=0, legend=True):
    idx = _subsample(len(x), max_points, seed)
    x, y = x[idx], y[idx]
    classes = np.unique(y)
    colors = _class_colors(len(classes))
    for c, col in zip(classes, colors):
        sel = y == c
        label = _label_name(c, class_names)
        ax.scatter(x[sel, 0], x[sel, 1], s=3, color=col, alpha=0.6, label=label, linewidths=0, rasterized=True)
    ax.axhline(0, color="0.85", lw=0.6, zorder=0)
    ax.axvline(0, color="0.85", lw=0.6, zorder=0)
    ax.set_aspect("equal", adjustable="datalim")
    if legend and len(classes) <= 20:
        ax.legend(markerscale=4, fontsize=7, loc="best", frameon=False, ncol=2 if len(classes) > 6 else 1)


def plot_features_2d(embeddings: ArrayLike, labels: ArrayLike, path: PathLike, title: Optional[str] = None,
                     class_names: Optional[Sequence[str]] = None, max_points: int = 5000, seed: int = 0) -> Path:
    """Scatter of 2-D embeddings coloured by class (the center-loss / SphereFace feature figure).

    Args:
        embeddings: ``(N, 2)`` features (raw, not normalised: the radial spread is part of the story).
        labels: ``(N,)`` class ids.
        path: the PNG to write.
        title: figure title.
        class_names: names indexed by class id, for the legend.
        max_points: at most this many points are drawn (a seeded random subset).
    """
    x, y = _check_embeddings(embeddings, labels, dim=2)
    fig = new_figure(6, 6)
    ax = fig.add_subplot(1, 1, 1)
    _scatter_2d(ax, x, y, class_names, max_points, seed)
    ax.set_xlabel("feature 1")
    ax.set_ylabel("feature 2")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_png(fig, path)


def plot_feature_grid(features: Mapping[str, Tuple[ArrayLike, ArrayLike]], path: PathLike,
                      title: Optional[str] = None, class_names: Optional[Sequence[str]] = None,
                      max_points: int = 3000, seed: int = 0) -> Path:
    """A grid of 2-D feature scatters, one panel per loss: ``{name: (embeddings (N, 2), labels)}``."""
    if not features:
        raise ValueError("plot_feature_grid needs at least one (embeddings, labels) entry")
    checked = {name: _check_embeddings(e, l, f"embeddings of {name!r}", dim=2) for name, (e, l) in features.items()}
    rows, cols = _grid_shape(len(checked))
    fig = new_figure(3.6 * cols, 3.6 * rows)
    for i, (name, (x, y)) in enumerate(checked.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        _scatter_2d(ax, x, y, class_names, max_points, seed, legend=(i == 0))
        ax.set_title(name, fontsize=10)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


def _sphere_panel(fig, pos, x, y, title, max_points, seed, legend, class_names=None):
    idx = _subsample(len(x), max_points, seed)
    x, y = x[idx], y[idx]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.maximum(norms, 1e-12)
    ax = fig.add_subplot(*pos, projection="3d")
    u, v = np.mgrid[0:2 * np.pi:30j, 0:np.pi:16j]
    ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.8", lw=0.3)
    classes = np.unique(y)
    for c, col in zip(classes, _class_colors(len(classes))):
        sel = y == c
        label = _label_name(c, class_names)
        ax.scatter(x[sel, 0], x[sel, 1], x[sel, 2], s=3, color=col, alpha=0.7, label=label, depthshade=False)
    ax.set_box_aspect((1, 1, 1))
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_zlim(-1, 1)
    ax.tick_params(labelsize=6)
    if title:
        ax.set_title(title, fontsize=10)
    if legend and len(classes) <= 20:
        ax.legend(markerscale=4, fontsize=6, loc="upper left", frameon=False)
    return ax


def plot_features_sphere(embeddings: ArrayLike, labels: ArrayLike, path: PathLike, title: Optional[str] = None,
                         class_names: Optional[Sequence[str]] = None, max_points: int = 4000, seed: int = 0) -> Path:
    """3-D embeddings normalised onto the unit sphere, coloured by class (SphereFace's Fig.)."""
    x, y = _check_embeddings(embeddings, labels, dim=3)
    fig = new_figure(6, 6)
    _sphere_panel(fig, (1, 1, 1), x, y, title, max_points, seed, True, class_names)
    fig.tight_layout()
    return save_png(fig, path)


def plot_sphere_grid(features: Mapping[str, Tuple[ArrayLike, ArrayLike]], path: PathLike,
                     title: Optional[str] = None, max_points: int = 2000, seed: int = 0) -> Path:
    """A grid of unit-sphere panels, one per loss: ``{name: (embeddings (N, 3), labels)}``."""
    if not features:
        raise ValueError("plot_sphere_grid needs at least one (embeddings, labels) entry")
    checked = {name: _check_embeddings(e, l, f"embeddings of {name!r}", dim=3) for name, (e, l) in features.items()}
    rows, cols = _grid_shape(len(checked))
    fig = new_figure(3.8 * cols, 3.8 * rows)
    for i, (name, (x, y)) in enumerate(checked.items()):
        _sphere_panel(fig, (rows, cols, i + 1), x, y, name, max_points, seed, legend=(i == 0))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)
