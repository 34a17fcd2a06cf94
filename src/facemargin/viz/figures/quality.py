"""Verification by image quality: TAR@FAR per quality stratum, and error-versus-reject curves.

The drawers take the dicts the quality evaluation returns (one per run) and draw them as they are:

* a *stratified table* per run has ``bins``, a list of strata from worst to best quality, each with
  ``quality_low`` / ``quality_high`` (the range of the pair's lower quality in it) and ``tar`` (or
  ``tar_own``), a mapping ``{far: TAR}``; FAR keys may be numbers or their text (as after a JSON
  round trip);
* an *error-versus-reject curve* per run has ``fractions`` (the rejected shares of images) and
  ``fnmr`` (one value per share), and optionally ``area``.

Several runs of one series (seeds) are drawn as their mean, with the spread (sample standard
deviation) as error bars or a band.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from .common import PathLike, new_figure, save_png, series_colors

__all__ = ["plot_stratified_tar", "plot_error_vs_reject"]

Run = Union[Mapping, Sequence[Mapping]]


def _runs(name: str, value: Run, what: str) -> List[Mapping]:
    """One series' runs as a non-empty list of mappings."""
    runs = [value] if isinstance(value, Mapping) else list(value) if isinstance(value, (list, tuple)) else None
    if not runs or not all(isinstance(r, Mapping) for r in runs):
        raise ValueError(f"{name!r}: expected {what} (a dict) or a non-empty list of them, got {type(value).__name__}")
    return runs


def _far_value(table: Mapping, far: float, name: str, key: str) -> float:
    for k, v in table.items():
        try:
            if math.isclose(float(k), far, rel_tol=1e-9):
                return float("nan") if v is None else float(v)
        except (TypeError, ValueError):
            continue
    have = ", ".join(f"{float(k):g}" for k in table)
    raise ValueError(f"{name!r}: no {key} at FAR {far:g} (has {have or 'none'})")


def _mean_std(rows: np.ndarray):
    """Mean and sample standard deviation of each column over its finite entries (NaN / 0 without)."""
    finite = np.isfinite(rows)
    cnt = finite.sum(axis=0)
    mean = np.where(cnt > 0, np.where(finite, rows, 0.0).sum(axis=0) / np.maximum(cnt, 1), np.nan)
    dev = np.where(finite, rows - mean, 0.0)
    std = np.where(cnt > 1, np.sqrt((dev ** 2).sum(axis=0) / np.maximum(cnt - 1, 1)), 0.0)
    return mean, std


def _bin_label(b: Mapping) -> str:
    lo, hi = b.get("quality_low"), b.get("quality_high")
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return "?"
    return f"{lo:.3g}" if lo == hi else f"{lo:.3g}–{hi:.3g}"


def plot_stratified_tar(table: Mapping[str, Run], path: PathLike, far: float = 1e-3, threshold: str = "global",
                        title: Optional[str] = None, quality_name: str = "quality of the pair's lower image") -> Path:
    """TAR at one FAR per quality stratum, one line per series (a head), worst stratum on the left.

    Args:
        table: ``{name: stratified table}`` or ``{name: [tables of several seeds]}`` (see the module
            docstring); every table needs the same number of strata.
        far: the FAR to draw (a key of every stratum's ``tar``).
        threshold: ``"global"`` (the whole set's threshold, the ``tar`` entries) or ``"own"`` (each
            stratum's own threshold, ``tar_own``).
        quality_name: the x-axis label (what the quality number is).
    """
    if threshold not in ("global", "own"):
        raise ValueError(f"threshold must be 'global' or 'own', got {threshold!r}")
    if not isinstance(table, Mapping) or not table:
        raise ValueError("plot_stratified_tar needs at least one series: {name: stratified table}")
    far = float(far)
    key = "tar" if threshold == "global" else "tar_own"
    series: Dict[str, np.ndarray] = {}
    labels: Optional[List[str]] = None
    counts: Optional[List[int]] = None
    for name, value in table.items():
        rows = []
        for run in _runs(name, value, "a stratified table"):
            bins = run.get("bins")
            if not isinstance(bins, (list, tuple)) or not bins or not all(isinstance(b, Mapping) for b in bins):
                raise ValueError(f"{name!r}: a stratified table needs 'bins', a non-empty list of strata")
            if labels is None:
                labels = [_bin_label(b) for b in bins]
                counts = [b.get("num_genuine") for b in bins]
            elif len(bins) != len(labels):
                raise ValueError(f"{name!r}: {len(bins)} quality strata where the first series has {len(labels)}")
            vals = []
            for b in bins:
                if not isinstance(b.get(key), Mapping):
                    raise ValueError(f"{name!r}: a stratum without '{key}'")
                vals.append(_far_value(b[key], far, name, key))
            rows.append(vals)
        series[name] = np.asarray(rows, dtype=np.float64)
    colors = series_colors(series)
    nb = len(labels)
    fig = new_figure(max(6.5, 1.4 * nb + 3.5), 4.8)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(nb)
    for name, rows in series.items():
        mean, std = _mean_std(rows)
        label = name if rows.shape[0] == 1 else f"{name} (mean of {rows.shape[0]})"
        ax.errorbar(x, mean, yerr=std if rows.shape[0] > 1 else None, color=colors[name], marker="o", ms=4, lw=1.8,
                    capsize=3, label=label)
    ticks = labels
    if counts and all(isinstance(c, (int, np.integer)) for c in counts):
        ticks = [f"{t}\n({c} genuine)" for t, c in zip(labels, counts)]
    ax.set_xticks(x)
    ax.set_xticklabels(ticks, fontsize=8)
    ax.set_xlim(-0.4, nb - 0.6)
    ax.set_xlabel(f"{quality_name} (worst to best)")
    ax.set_ylabel(f"TAR @ FAR = {far:g}")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    reading = "one threshold for the whole set" if threshold == "global" else "each stratum's own threshold"
    ax.set_title(title or f"TAR by image quality ({reading})", fontsize=10)
    ax.legend(fontsize=7, ncol=2 if len(series) > 6 else 1)
    fig.tight_layout()
    return save_png(fig, path)


def plot_error_vs_reject(curves: Mapping[str, Run], path: PathLike, title: Optional[str] = None) -> Path:
    """FNMR against the share of images rejected, one line per ranking (lowest score rejected first).

    Args:
        curves: ``{name: curve}`` or ``{name: [curves of several seeds]}``, each curve with
            ``fractions`` and ``fnmr`` of equal length (at least two points); the curves of one name
            must share their fractions. The legend gives each line's ``area`` when the curves carry it;
            a name with "random" in it is drawn dashed, as the baseline.
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("plot_error_vs_reject needs at least one curve: {name: curve}")
    drawn = {}
    for name, value in curves.items():
        xs, ys, areas = None, [], []
        for c in _runs(name, value, "an error-versus-reject curve"):
            if "fractions" not in c or "fnmr" not in c:
                raise ValueError(f"{name!r}: a curve needs 'fractions' and 'fnmr'")
            fr = np.asarray(c["fractions"], dtype=np.float64).reshape(-1)
            fn = np.asarray([np.nan if v is None else v for v in c["fnmr"]], dtype=np.float64).reshape(-1)
            if fr.size < 2 or fr.shape != fn.shape:
                raise ValueError(f"{name!r}: fractions and fnmr must have the same length, at least 2 "
                                 f"(got {fr.size} and {fn.size})")
            if not np.all(np.isfinite(fr)) or np.any(np.diff(fr) <= 0):
                raise ValueError(f"{name!r}: fractions must be finite and strictly increasing")
            if xs is None:
                xs = fr
            elif not np.allclose(xs, fr):
                raise ValueError(f"{name!r}: its curves were read at different fractions")
            ys.append(fn)
            if c.get("area") is not None:
                areas.append(float(c["area"]))
        drawn[name] = (xs, np.asarray(ys), areas)
    colors = series_colors(drawn)
    fig = new_figure(7.5, 5)
    ax = fig.add_subplot(1, 1, 1)
    for name, (xs, ys, areas) in drawn.items():
        mean, std = _mean_std(ys)
        label = name
        if areas:
            label += f" (area {np.mean(areas):.4g})"
        if ys.shape[0] > 1:
            label += f", mean of {ys.shape[0]}"
        dashed = "random" in name.lower()
        ax.plot(xs, mean, color=colors[name], lw=1.8, ls="--" if dashed else "-", marker="o", ms=3, label=label)
        if ys.shape[0] > 1:
            ax.fill_between(xs, mean - std, mean + std, color=colors[name], alpha=0.15, lw=0)
    ax.set_xlabel("share of images rejected (lowest score first)")
    ax.set_ylabel("FNMR at the threshold fixed on the full set")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(title or "error versus reject", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)
