"""Training curves: loss, accuracy and the multiplicative margin's lambda of several runs on shared axes."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np

from .common import PathLike, _auto_window, _moving_average, new_figure, save_png, series_colors

__all__ = ["plot_training_curves"]

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
    fig = new_figure(5.2 * npan, 4.4)
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
    return save_png(fig, path)
