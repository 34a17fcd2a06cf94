"""ROC curves: the figure of several curves. The points and the area come from
:mod:`facemargin.roc`, the package's one ROC, which sits below every layer."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Tuple, Union

import numpy as np

from ...roc import auc, roc_curve
from .common import ArrayLike, PathLike, _to_numpy, new_figure, save_png, series_colors

__all__ = ["roc_curve", "auc", "plot_roc"]


def plot_roc(curves: Mapping[str, Union[Tuple[ArrayLike, ArrayLike], Mapping[str, ArrayLike]]], path: PathLike,
             log_x: bool = True, title: Optional[str] = "ROC on the open-set pairs",
             colors: Optional[Mapping[str, tuple]] = None) -> Path:
    """All losses' ROC curves on one plot.

    Args:
        curves: ``{name: (fpr, tpr)}`` or ``{name: {"fpr": ..., "tpr": ..., "auc": optional}}``;
            the AUC in the legend is the given one or the trapezoid area of the curve.
        log_x: logarithmic false-accept-rate axis (the TAR@FAR regime of face verification).
    """
    if not curves:
        raise ValueError("plot_roc needs at least one curve")
    colors = dict(colors or series_colors(curves))
    fig = new_figure(7, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    min_pos = 1.0
    rows = []
    for name, c in curves.items():
        if isinstance(c, Mapping):
            if "fpr" not in c or "tpr" not in c:
                raise ValueError(f"curve {name!r} must have keys 'fpr' and 'tpr', got {sorted(c)}")
            fpr, tpr, area = c["fpr"], c["tpr"], c.get("auc")
        else:
            try:
                fpr, tpr = c
            except (TypeError, ValueError):
                raise ValueError(f"curve {name!r} must be (fpr, tpr) or a dict with fpr, tpr") from None
            area = None
        fpr = _to_numpy(fpr, f"fpr of {name!r}").astype(np.float64).reshape(-1)
        tpr = _to_numpy(tpr, f"tpr of {name!r}").astype(np.float64).reshape(-1)
        if fpr.shape != tpr.shape or fpr.size < 2:
            raise ValueError(f"curve {name!r}: fpr and tpr must have the same length >= 2, got {fpr.size} and {tpr.size}")
        if np.any((fpr < 0) | (fpr > 1) | (tpr < 0) | (tpr > 1)) or not np.all(np.isfinite(fpr + tpr)):
            raise ValueError(f"curve {name!r}: fpr and tpr must lie in [0, 1]")
        area = auc(fpr, tpr) if area is None else float(area)
        if np.any(fpr > 0):
            min_pos = min(min_pos, float(fpr[fpr > 0].min()))
        rows.append((area, name, fpr, tpr))
    for area, name, fpr, tpr in sorted(rows, key=lambda r: -r[0]):
        ax.plot(fpr, tpr, lw=1.4, color=colors.get(name), label=f"{name} (AUC {area:.4f})")
    if log_x:
        lo = max(min_pos, 1e-6)
        ax.set_xscale("log")
        ax.set_xlim(lo, 1.0)
        grid = np.logspace(np.log10(lo), 0, 100)
        ax.plot(grid, grid, ls=":", color="0.6", lw=1, label="chance")
        ax.set_xlabel("false accept rate (log scale)")
    else:
        ax.set_xlim(0, 1)
        ax.plot([0, 1], [0, 1], ls=":", color="0.6", lw=1, label="chance")
        ax.set_xlabel("false accept rate")
    ax.set_ylim(0, 1.01)
    ax.set_ylabel("true accept rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_png(fig, path)
