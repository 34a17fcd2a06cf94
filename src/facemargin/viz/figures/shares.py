"""Shares of easy, semi-hard and hard samples over training (the mask of the Angular Triplet Loss)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .common import PathLike, _auto_window, _grid_shape, _moving_average, new_figure, save_png

__all__ = ["plot_sample_shares"]

_SHARE_KEYS = ("easy", "semihard", "hard")


def _shares(history: Sequence[Mapping], name: str) -> Tuple[np.ndarray, np.ndarray]:
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
        raise ValueError(f"history of {name!r} must be a list of dicts")
    recs = [r for r in history if isinstance(r, Mapping) and all(r.get(k) is not None for k in _SHARE_KEYS)]
    if not recs:
        raise ValueError(f"history of {name!r} has no record with all of {', '.join(_SHARE_KEYS)}")
    steps = np.asarray([float(r.get("step", i)) for i, r in enumerate(recs)])
    vals = np.asarray([[float(r[k]) for k in _SHARE_KEYS] for r in recs])
    if not np.all(np.isfinite(vals)) or np.any(vals < 0) or np.any(vals > 1 + 1e-6):
        raise ValueError(f"history of {name!r}: easy/semihard/hard must be fractions in [0, 1]")
    return steps, vals


def plot_sample_shares(history: Union[Sequence[Mapping], Mapping[str, Sequence[Mapping]]], path: PathLike,
                       title: Optional[str] = None, smooth: Optional[int] = None) -> Path:
    """Stacked area of the share of easy / semi-hard / hard samples over training (ATL's mask).

    Easy: the label wins even with the margin; semi-hard: it wins without the margin only (the
    samples ATL trains on); hard: it loses even without the margin.

    Args:
        history: a list of ``{"step", "easy", "semihard", "hard"}`` records (others are skipped),
            or ``{name: list}`` for one panel per run.
        smooth: moving-average window in records (None: ~1/50 of the records).
    """
    runs = dict(history) if isinstance(history, Mapping) else {"": history}
    if not runs:
        raise ValueError("plot_sample_shares needs at least one history")
    data = {name: _shares(h, name or "history") for name, h in runs.items()}
    k = len(data)
    rows, cols_n = _grid_shape(k)
    fig = new_figure(4.6 * cols_n, 3.4 * rows)
    colors = ["tab:green", "tab:orange", "tab:red"]
    for i, (name, (s, v)) in enumerate(data.items()):
        ax = fig.add_subplot(rows, cols_n, i + 1)
        w = _auto_window(len(s)) if smooth is None else int(smooth)
        cols = [_moving_average(v[:, j], w) for j in range(3)]
        ax.stackplot(s, *cols, labels=["easy", "semi-hard", "hard"], colors=colors, alpha=0.8)
        ax.set_xlim(s.min(), s.max() if s.max() > s.min() else s.min() + 1)
        ax.set_ylim(0, max(1.0, float(np.max(np.sum(cols, axis=0)))))
        ax.set_xlabel("step")
        if i % cols_n == 0:
            ax.set_ylabel("share of the batch" + (f" (avg of {w} records)" if w > 1 else ""))
        ax.set_title(title if (title and k == 1) else (name or "sample shares"), fontsize=10)
        if i == 0:
            ax.legend(loc="lower left", fontsize=8)
    if title and k > 1:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)
