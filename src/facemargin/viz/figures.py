"""The figures of facemargin: embedding spaces, ROC and training curves, angle and norm
analyses, decision boundaries of the margin heads, and ATL's sample shares.

Every ``plot_*`` function draws on a fresh :class:`matplotlib.figure.Figure` rendered by the Agg
canvas directly (``pyplot`` is never imported, so the caller's pyplot backend and state are left
alone) and writes one PNG atomically (:func:`facemargin.io.atomic_open`). Each returns the path
it wrote.

The numeric helpers (:func:`angle_stats`, :func:`decision_boundary`, :func:`roc_curve`) are public
too: the report and the tests use them without drawing anything.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..eval.verification import auc as _eval_auc, roc_curve  # the package has one ROC
from ..io import atomic_open

PathLike = Union[str, os.PathLike]
ArrayLike = Union[np.ndarray, Sequence]

DPI = 100

__all__ = [
    "angle_stats",
    "decision_boundary",
    "head_margin",
    "roc_curve",
    "plot_features_2d",
    "plot_feature_grid",
    "plot_features_sphere",
    "plot_sphere_grid",
    "plot_roc",
    "plot_training_curves",
    "plot_angle_histograms",
    "plot_angle_grid",
    "plot_norm_vs_correctness",
    "plot_norm_grid",
    "plot_decision_boundaries",
    "plot_sample_shares",
]


# ------------------------------------------------------------------------------------------------
# plumbing
# ------------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: PathLike) -> Path:
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
    from matplotlib import colormaps

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


# ------------------------------------------------------------------------------------------------
# 1. features in 2-D and on the sphere
# ------------------------------------------------------------------------------------------------


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
    fig = _new_figure(6, 6)
    ax = fig.add_subplot(1, 1, 1)
    _scatter_2d(ax, x, y, class_names, max_points, seed)
    ax.set_xlabel("feature 1")
    ax.set_ylabel("feature 2")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_feature_grid(features: Mapping[str, Tuple[ArrayLike, ArrayLike]], path: PathLike,
                      title: Optional[str] = None, class_names: Optional[Sequence[str]] = None,
                      max_points: int = 3000, seed: int = 0) -> Path:
    """A grid of 2-D feature scatters, one panel per loss: ``{name: (embeddings (N, 2), labels)}``."""
    if not features:
        raise ValueError("plot_feature_grid needs at least one (embeddings, labels) entry")
    checked = {name: _check_embeddings(e, l, f"embeddings of {name!r}", dim=2) for name, (e, l) in features.items()}
    rows, cols = _grid_shape(len(checked))
    fig = _new_figure(3.6 * cols, 3.6 * rows)
    for i, (name, (x, y)) in enumerate(checked.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        _scatter_2d(ax, x, y, class_names, max_points, seed, legend=(i == 0))
        ax.set_title(name, fontsize=10)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _sphere_panel(fig, pos, x, y, title, max_points, seed, legend, class_names=None):
    import mpl_toolkits.mplot3d  # noqa: F401  (registers the "3d" projection)

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
    fig = _new_figure(6, 6)
    _sphere_panel(fig, (1, 1, 1), x, y, title, max_points, seed, True, class_names)
    fig.tight_layout()
    return _save(fig, path)


def plot_sphere_grid(features: Mapping[str, Tuple[ArrayLike, ArrayLike]], path: PathLike,
                     title: Optional[str] = None, max_points: int = 2000, seed: int = 0) -> Path:
    """A grid of unit-sphere panels, one per loss: ``{name: (embeddings (N, 3), labels)}``."""
    if not features:
        raise ValueError("plot_sphere_grid needs at least one (embeddings, labels) entry")
    checked = {name: _check_embeddings(e, l, f"embeddings of {name!r}", dim=3) for name, (e, l) in features.items()}
    rows, cols = _grid_shape(len(checked))
    fig = _new_figure(3.8 * cols, 3.8 * rows)
    for i, (name, (x, y)) in enumerate(checked.items()):
        _sphere_panel(fig, (rows, cols, i + 1), x, y, name, max_points, seed, legend=(i == 0))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------
# 2. ROC curves
# ------------------------------------------------------------------------------------------------


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
    fig = _new_figure(7, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    min_pos = 1.0
    rows = []
    for name, c in curves.items():
        if isinstance(c, Mapping):
            if "fpr" not in c or "tpr" not in c:
                raise ValueError(f"curve {name!r} must have keys 'fpr' and 'tpr', got {sorted(c)}")
            fpr, tpr, auc = c["fpr"], c["tpr"], c.get("auc")
        else:
            try:
                fpr, tpr = c
            except (TypeError, ValueError):
                raise ValueError(f"curve {name!r} must be (fpr, tpr) or a dict with fpr, tpr") from None
            auc = None
        fpr = _to_numpy(fpr, f"fpr of {name!r}").astype(np.float64).reshape(-1)
        tpr = _to_numpy(tpr, f"tpr of {name!r}").astype(np.float64).reshape(-1)
        if fpr.shape != tpr.shape or fpr.size < 2:
            raise ValueError(f"curve {name!r}: fpr and tpr must have the same length >= 2, got {fpr.size} and {tpr.size}")
        if np.any((fpr < 0) | (fpr > 1) | (tpr < 0) | (tpr > 1)) or not np.all(np.isfinite(fpr + tpr)):
            raise ValueError(f"curve {name!r}: fpr and tpr must lie in [0, 1]")
        auc = _eval_auc(fpr, tpr) if auc is None else float(auc)
        if np.any(fpr > 0):
            min_pos = min(min_pos, float(fpr[fpr > 0].min()))
        rows.append((auc, name, fpr, tpr))
    for auc, name, fpr, tpr in sorted(rows, key=lambda r: -r[0]):
        ax.plot(fpr, tpr, lw=1.4, color=colors.get(name), label=f"{name} (AUC {auc:.4f})")
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
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------
# 3. training curves
# ------------------------------------------------------------------------------------------------

_ACC_KEYS = ("train_acc", "acc", "accuracy")


def _series(records: Sequence[Mapping], key: str) -> Tuple[np.ndarray, np.ndarray]:
    steps, vals = [], []
    for i, r in enumerate(records):
        if key in r and r[key] is not None:
            v = float(r[key])
            if math.isfinite(v):
                steps.append(float(r.get("step", i)))
                vals.append(v)
    return np.asarray(steps), np.asarray(vals)


def plot_training_curves(histories: Mapping[str, Sequence[Mapping]], path: PathLike,
                         normalize: bool = True, smooth: Optional[int] = None,
                         title: Optional[str] = None, colors: Optional[Mapping[str, tuple]] = None) -> Path:
    """Loss and accuracy over training steps for several losses on shared axes.

    The losses of the zoo live on very different scales (s = 64 margin logits against a
    contrastive loss below 1), so by default each loss curve is divided by its own first logged
    value and drawn on a log axis; the axis label says so. A third panel shows λ when the
    histories log it (SphereFace, L-Softmax, ATL).

    Args:
        histories: ``{name: [{"step": int, "loss": float, "train_acc"|"acc": float, "lambda": float}, ...]}``;
            records without ``loss`` (e.g. evaluation events) are ignored.
        normalize: divide each loss by its first value (False: raw values, log axis when positive).
        smooth: moving-average window in steps-records (None: ~1/50 of the records; 1: raw).
    """
    if not histories:
        raise ValueError("plot_training_curves needs at least one history")
    colors = dict(colors or series_colors(histories))
    cleaned = {}
    for name, recs in histories.items():
        if isinstance(recs, (str, bytes)) or not isinstance(recs, Sequence):
            raise ValueError(f"history of {name!r} must be a list of dicts, got {type(recs).__name__}")
        recs = [r for r in recs if isinstance(r, Mapping) and r.get("loss") is not None]
        if not recs:
            raise ValueError(f"history of {name!r} has no record with a 'loss'")
        cleaned[name] = recs
    acc_key = {name: next((k for k in _ACC_KEYS if any(k in r for r in recs)), None) for name, recs in cleaned.items()}
    has_acc = any(k is not None for k in acc_key.values())
    has_lambda = any(any("lambda" in r for r in recs) for recs in cleaned.values())
    npan = 1 + has_acc + has_lambda
    fig = _new_figure(5.2 * npan, 4.4)
    ax_loss = fig.add_subplot(1, npan, 1)
    positive = True
    windows = []
    for name, recs in cleaned.items():
        s, v = _series(recs, "loss")
        if v.size == 0:
            continue
        w = _auto_window(v.size) if smooth is None else int(smooth)
        windows.append(w)
        v = _moving_average(v, w)
        if normalize:
            v = v / v[0] if v[0] != 0 else v
        positive &= bool(np.all(v > 0))
        ax_loss.plot(s, v, lw=1.2, color=colors.get(name), label=name)
    log = positive
    if log:
        ax_loss.set_yscale("log")
    what = "loss / its first value" if normalize else "loss"
    ax_loss.set_ylabel(what + (" (log scale)" if log else ""))
    ax_loss.set_xlabel("step")
    sm = max(windows) if windows else 1
    ax_loss.set_title("training loss" + (f" (moving average, {sm} records)" if sm > 1 else ""), fontsize=10)
    ax_loss.grid(True, which="both", alpha=0.3)
    ax_loss.legend(fontsize=7, ncol=2 if len(cleaned) > 6 else 1)
    pan = 2
    if has_acc:
        ax = fig.add_subplot(1, npan, pan)
        pan += 1
        for name, recs in cleaned.items():
            if acc_key[name] is None:
                continue
            s, v = _series(recs, acc_key[name])
            w = _auto_window(v.size) if smooth is None else int(smooth)
            ax.plot(s, _moving_average(v, w), lw=1.2, color=colors.get(name), label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("training accuracy (batch)")
        ax.set_title("training accuracy", fontsize=10)
        ax.grid(True, alpha=0.3)
    if has_lambda:
        ax = fig.add_subplot(1, npan, pan)
        for name, recs in cleaned.items():
            s, v = _series(recs, "lambda")
            if v.size:
                ax.plot(s, v, lw=1.2, color=colors.get(name), label=name)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("λ (log scale)")
        ax.set_title("λ of the multiplicative margin", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------
# 4. intra- vs inter-class angles
# ------------------------------------------------------------------------------------------------


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
    fig = _new_figure(7, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    _draw_angles(ax, intra, inter, st)
    ax.set_title(title or "intra- vs inter-class angles", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


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
    fig = _new_figure(5.0 * cols, 3.6 * rows)
    for i, (name, (intra, inter, st)) in enumerate(computed.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        _draw_angles(ax, intra, inter, st, legend=(i == 0))
        ax.set_title(name, fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------
# 5. feature norm vs correctness
# ------------------------------------------------------------------------------------------------


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
    fig = _new_figure(11, 4.3)
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
    return _save(fig, path)


def plot_norm_grid(data: Mapping[str, Tuple[ArrayLike, ArrayLike]], path: PathLike, title: Optional[str] = None) -> Path:
    """Norm histograms of correct vs wrong samples, one panel per loss: ``{name: (norms, correct)}``."""
    if not data:
        raise ValueError("plot_norm_grid needs at least one (norms, correct) entry")
    checked = {name: _check_norms(nv, cv, f"norms of {name!r}") for name, (nv, cv) in data.items()}
    rows, cols = _grid_shape(len(checked), max_cols=4)
    fig = _new_figure(4.2 * cols, 3.3 * rows)
    for i, (name, (n, c)) in enumerate(checked.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        _draw_norm_hist(ax, n, c)
        ax.set_title(name, fontsize=10)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------
# 6. decision boundaries of the margin heads
# ------------------------------------------------------------------------------------------------


def head_margin(name: str, lambda_: float = 0.0, **hyper):
    """The target transform ``φ(cos θ)`` of a head, as a NumPy function of the cosine.

    The head is built by :func:`facemargin.losses.build` (``embedding_size=2, num_classes=2``)
    and its ``spec.margin`` is used as is, so the diagram shows exactly what the loss computes.
    Multiplicative margins (SphereFace, L-Softmax, ATL) take the blend ``lambda_`` (default 0:
    the pure ``ψ_m``). The feature scale (``s`` or ``‖x‖``) multiplies both sides of the
    two-class comparison and cancels; heads with unnormalised weights (softmax, L-Softmax) are
    drawn for equal weight norms and zero bias.

    Returns ``(phi, spec)`` with ``phi(c: ndarray) -> ndarray``.
    """
    import torch

    from .. import losses
    from ..losses.margin import MultiplicativeMargin

    head = losses.build(name, embedding_size=2, num_classes=2, **hyper)
    spec = getattr(head, "spec", None)
    if spec is None:
        raise ValueError(f"{name!r} is not a classification head with a margin; "
                         f"decision boundaries need one of the heads (e.g. softmax, sphereface, cosface, arcface, combined)")
    margin = spec.margin
    lam = float(lambda_) if isinstance(margin, MultiplicativeMargin) else None
    if lam is not None and lam < 0:
        raise ValueError(f"lambda_ must be >= 0, got {lambda_}")

    def phi(c):
        t = torch.as_tensor(np.asarray(c, dtype=np.float64))
        with torch.no_grad():
            return margin(t, lam).numpy()

    return phi, spec


def _boundary_from_phi(phi, theta2: np.ndarray, iters: int = 60) -> np.ndarray:
    # solve φ(cos θ1) = cos θ2 for θ1 in [0, π] by bisection (φ(cos θ) decreasing in θ)
    target = np.cos(theta2)
    lo = np.zeros_like(theta2)
    hi = np.full_like(theta2, np.pi)
    f_lo = phi(np.cos(lo)) - target
    f_hi = phi(np.cos(hi)) - target
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        f_mid = phi(np.cos(mid)) - target
        right = f_mid > 0  # class 1 still wins at mid: boundary lies further out
        lo = np.where(right, mid, lo)
        hi = np.where(right, hi, mid)
    out = 0.5 * (lo + hi)
    out = np.where(f_hi >= 0, np.pi, out)      # class 1 wins everywhere along θ1
    out = np.where(f_lo < 0, np.nan, out)      # class 1 never wins, not even at θ1 = 0
    return out


def decision_boundary(name: str, theta2: ArrayLike, lambda_: float = 0.0, **hyper) -> np.ndarray:
    """Class 1's decision boundary of a head for two classes: the ``θ1`` with ``φ(cos θ1) = cos θ2``.

    A sample of class 1 at angles ``θ1`` to ``ŵ1`` and ``θ2`` to ``ŵ2`` satisfies the margin
    (its margin logit beats the other class's plain logit) exactly when ``θ1`` is below the
    returned value. Examples: softmax ``θ1 = θ2``; ArcFace ``θ1 = θ2 − m``; CosFace
    ``θ1 = arccos(cos θ2 + m)``; SphereFace with ``λ = 0`` ``θ1 = θ2 / m``. Class 2's boundary is
    the mirror image (swap the axes).

    Args:
        name: head name of the registry (softmax, sphereface, cosface, arcface, combined, ...).
        theta2: angles to ``ŵ2`` in radians, within ``[0, π]``.
        lambda_: blend of multiplicative margins (see :func:`head_margin`); hyper: head options
            (e.g. ``m=0.4``).

    Returns:
        ``θ1`` in radians, same shape as ``theta2``; NaN where no ``θ1 ∈ [0, π]`` satisfies the
        margin (the target is too close to ``ŵ2``), ``π`` where every ``θ1`` does.
    """
    t2 = _to_numpy(theta2, "theta2").astype(np.float64)
    if not np.all(np.isfinite(t2)) or np.any(t2 < 0) or np.any(t2 > np.pi + 1e-12):
        raise ValueError("theta2 must hold angles in radians within [0, π]")
    phi, _ = head_margin(name, lambda_, **hyper)
    return _boundary_from_phi(phi, np.clip(t2, 0.0, np.pi))


_HEAD_TITLES = {"softmax": "Softmax", "sphereface": "SphereFace", "cosface": "CosFace", "arcface": "ArcFace",
                "combined": "Combined", "normface": "NormFace", "lsoftmax": "L-Softmax", "atl": "ATL",
                "l2softmax": "L2-Softmax", "asoftmax": "A-Softmax", "amsoftmax": "AM-Softmax"}


def _margin_label(name: str, spec, lambda_: float) -> str:
    from ..losses.margin import AdditiveMargin, MultiplicativeMargin

    m = spec.margin
    base = _HEAD_TITLES.get(name.lower(), name)
    if isinstance(m, MultiplicativeMargin):
        return f"{base} (m={m.m}, λ={lambda_:g})" if m.active else base
    if isinstance(m, AdditiveMargin) and m.active:
        parts = [f"m1={m.m1:g}"] if m.m1 != 1 else []
        parts += [f"m2={m.m2:g}"] if m.m2 else []
        parts += [f"m3={m.m3:g}"] if m.m3 else []
        if name.lower() in ("cosface", "amsoftmax") and m.m1 == 1 and not m.m2:
            parts = [f"m={m.m3:g}"]
        elif name.lower() == "arcface" and m.m1 == 1 and not m.m3:
            parts = [f"m={m.m2:g}"]
        return f"{base} ({', '.join(parts)})"
    return base


def plot_decision_boundaries(path: PathLike,
                             heads: Sequence[str] = ("softmax", "sphereface", "cosface", "arcface", "combined"),
                             angle_deg: float = 90.0, lambda_: float = 0.0, resolution: int = 361) -> Path:
    """Decision boundaries of margin heads for two classes, as in the ArcFace paper.

    Top row: the ``(θ1, θ2)`` plane. A class-1 sample satisfies its margin left of the dashed red
    line ``φ(cos θ1) = cos θ2``, a class-2 sample below the blue one ``φ(cos θ2) = cos θ1``;
    the grey band between them is the decision margin, where neither class satisfies it.
    Bottom row: the same on the unit circle of a 2-D embedding with ``ŵ1``, ``ŵ2`` ``angle_deg``
    apart; the arc coloured red (blue) is where a class-1 (class-2) feature satisfies its margin.
    Boundaries are computed with each head's own margin function (:func:`head_margin`).
    """
    heads = list(heads)
    if not heads:
        raise ValueError("plot_decision_boundaries needs at least one head name")
    if not 0.0 < float(angle_deg) < 180.0:
        raise ValueError(f"angle_deg must lie strictly between 0 and 180, got {angle_deg}")
    margins = [(h,) + head_margin(h, lambda_) for h in heads]
    k = len(heads)
    fig = _new_figure(3.2 * k, 6.6)
    t = np.linspace(0.0, np.pi, int(resolution))
    deg = np.degrees(t)
    from matplotlib.colors import ListedColormap

    region_cmap = ListedColormap(["#d9d9d9", "#f4c7c3", "#c6dbef"])  # neither, class 1, class 2
    for i, (name, phi, spec) in enumerate(margins):
        # rows: θ2, columns: θ1; φ depends on one angle only, so evaluate it once per angle
        phi_t, cos_t = phi(np.cos(t)), np.cos(t)
        ok1 = phi_t[None, :] > cos_t[:, None]
        ok2 = phi_t[:, None] > cos_t[None, :]
        region = np.where(ok1, 1, np.where(ok2, 2, 0))
        ax = fig.add_subplot(2, k, i + 1)
        ax.pcolormesh(deg, deg, region, cmap=region_cmap, vmin=0, vmax=2, shading="auto", rasterized=True)
        b = _boundary_from_phi(phi, t)
        ax.plot(np.degrees(b), deg, ls="--", color="tab:red", lw=1.5, label="class 1 boundary")
        ax.plot(deg, np.degrees(b), ls="--", color="tab:blue", lw=1.5, label="class 2 boundary")
        ax.set_xlim(0, 180)
        ax.set_ylim(0, 180)
        ax.set_aspect("equal")
        ax.set_xticks([0, 45, 90, 135, 180])
        ax.set_yticks([0, 45, 90, 135, 180])
        ax.tick_params(labelsize=7)
        ax.set_xlabel("θ1 (deg)", fontsize=8)
        if i == 0:
            ax.set_ylabel("θ2 (deg)", fontsize=8)
            ax.legend(fontsize=6, loc="upper left")
        ax.set_title(_margin_label(name, spec, lambda_), fontsize=9)

        # unit circle, ŵ1 and ŵ2 angle_deg apart, symmetric about the vertical
        half = np.radians(angle_deg) / 2
        a1, a2 = np.pi / 2 + half, np.pi / 2 - half
        alpha = np.linspace(0, 2 * np.pi, 1441)
        c1, c2 = np.clip(np.cos(alpha - a1), -1, 1), np.clip(np.cos(alpha - a2), -1, 1)
        in1 = phi(c1) > c2
        in2 = phi(c2) > c1
        ax = fig.add_subplot(2, k, k + i + 1)
        cx, cy = np.cos(alpha), np.sin(alpha)
        ax.plot(cx, cy, color="0.75", lw=4, solid_capstyle="butt")
        ax.plot(np.where(in1, cx, np.nan), np.where(in1, cy, np.nan), color="tab:red", lw=4, solid_capstyle="butt")
        ax.plot(np.where(in2, cx, np.nan), np.where(in2, cy, np.nan), color="tab:blue", lw=4, solid_capstyle="butt")
        for a, col, lab in ((a1, "tab:red", "ŵ1"), (a2, "tab:blue", "ŵ2")):
            ax.annotate("", xy=(0.8 * np.cos(a), 0.8 * np.sin(a)), xytext=(0, 0),
                        arrowprops=dict(arrowstyle="->", color=col, lw=1.5))
            ax.text(0.93 * np.cos(a), 0.93 * np.sin(a) - 0.02, lab, color=col, ha="center", va="center", fontsize=8)
        ax.set_xlim(-1.25, 1.25)
        ax.set_ylim(-1.25, 1.25)
        ax.set_aspect("equal")
        ax.axis("off")
        if i == 0:
            ax.set_title(f"unit circle, ∠(ŵ1, ŵ2) = {angle_deg:g}°\nred/blue: margin met, grey: neither", fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------
# 7. shares of easy / semi-hard / hard samples (ATL)
# ------------------------------------------------------------------------------------------------

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
    fig = _new_figure(4.6 * cols_n, 3.4 * rows)
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
    return _save(fig, path)
