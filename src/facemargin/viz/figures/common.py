"""What every figure shares: a fresh Agg-rendered figure, an atomic PNG write, input checks, colours.

A figure is a :class:`matplotlib.figure.Figure` attached to an Agg canvas directly, so ``pyplot``
(and with it the caller's backend and global figure state) is never involved. :func:`save_png`
writes through :func:`facemargin.io.atomic_open`, so a reader never sees half a PNG.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ...io import atomic_open

PathLike = Union[str, os.PathLike]
ArrayLike = Union[np.ndarray, Sequence]

#: resolution of every PNG, dots per inch
DPI = 100

__all__ = ["DPI", "new_figure", "save_png", "series_colors"]


def new_figure(width: float, height: float) -> Figure:
    """A blank ``width`` x ``height`` inch figure drawn by the Agg canvas (no pyplot)."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: PathLike) -> Path:
    """Write ``fig`` to ``path`` as a PNG, atomically; returns the path."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=DPI)
    return path


def _to_numpy(a, name: str) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    try:
        return np.asarray(a)
    except Exception as e:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name}: cannot convert to an array ({e})") from e


def _check_embeddings(embeddings, labels, name: str = "embeddings", dim: Optional[int] = None):
    x = _to_numpy(embeddings, name).astype(np.float64, copy=False)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) array, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns (an embedding of width {dim}), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    y = _to_numpy(labels, "labels").reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"labels has {y.shape[0]} entries but {name} has {x.shape[0]} rows")
    return x, y


def _subsample(n: int, max_points: Optional[int], seed: int) -> np.ndarray:
    if max_points is None or n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=int(max_points), replace=False))


def _class_colors(k: int):
    if k <= 10:
        cmap = colormaps["tab10"]
        return [cmap(i) for i in range(k)]
    if k <= 20:
        cmap = colormaps["tab20"]
        return [cmap(i) for i in range(k)]
    cmap = colormaps["hsv"]
    return [cmap(i / k) for i in range(k)]


def series_colors(names: Iterable[str]) -> Dict[str, tuple]:
    """A stable colour per series name (losses keep their colour across figures)."""
    names = list(names)
    colors = _class_colors(max(len(names), 1))
    return {n: colors[i] for i, n in enumerate(names)}


def _label_name(c, class_names) -> str:
    if class_names is not None and isinstance(c, (int, np.integer)) and 0 <= int(c) < len(class_names):
        return str(class_names[int(c)])
    return str(c)


def _grid_shape(n: int, max_cols: int = 4) -> Tuple[int, int]:
    cols = min(max_cols, max(1, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    return rows, cols


def _moving_average(v: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or v.size < 2:
        return v
    window = min(window, v.size)
    # centred-free trailing mean, same length as v (the first values average what exists)
    c = np.cumsum(np.insert(v, 0, 0.0))
    out = np.empty_like(v, dtype=np.float64)
    idx = np.arange(v.size)
    lo = np.maximum(0, idx - window + 1)
    out[:] = (c[idx + 1] - c[lo]) / (idx + 1 - lo)
    return out


def _auto_window(n: int) -> int:
    return max(1, n // 50)
