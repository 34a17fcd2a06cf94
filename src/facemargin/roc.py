"""The ROC family in one place: ROC points, AUC, EER and true-accept rate at a false-accept rate.

Every function works on *similarity scores* where higher means "same identity" (cosine similarity
of L2-normalised embeddings).  Everything is computed in float64 with NumPy, and nothing else of
the package is imported, so every layer can use it: pair verification
(:mod:`facemargin.eval.verification`), the IJB template protocols (:mod:`facemargin.eval.ijb`) and
the figures (:mod:`facemargin.viz`).

Conventions:

* **ROC**: at threshold ``t`` a pair is accepted when ``score >= t``; one ROC point per distinct
  score (plus the origin), as in scikit-learn's ``roc_curve(drop_intermediate=False)``.
  AUC is the trapezoidal area under those points, which equals the Mann-Whitney probability that
  a random same pair outscores a random different pair, ties counting one half.
* **EER** is the rate where the false-accept rate equals the false-reject rate, linearly
  interpolated between the two ROC points where ``FPR - FNR`` changes sign.
* **TAR@FAR, two readings.**

  - :func:`tar_at_far` (*at most*): the largest true-accept rate among ROC points whose
    false-accept rate is at most ``far``; a threshold that can really be used.
  - :func:`tar_at_far_nearest` (*nearest*): the true-accept rate of the ROC point whose
    false-accept rate is nearest to ``far`` (absolute difference; among equally near points the
    one further along the curve, i.e. the larger TAR).  This is how the published IJB-B/IJB-C
    1:1 tables are read (insightface's evaluation scripts), on the ROC thinned as scikit-learn's
    ``roc_curve`` thins it by default (:func:`thin_roc`).  It can sit slightly above ``far``.

* All-vs-all verification of a labelled set, in bounded memory, is in
  :mod:`facemargin.eval.allvsall`.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple

import numpy as np

__all__ = [
    "roc_curve",
    "thin_roc",
    "auc",
    "roc_auc",
    "equal_error_rate",
    "tar_at_far",
    "tar_at_far_nearest",
    "tar_at_fars",
    "resolvable_fars",
    "roc_for_plot",
    "IJB_FARS",
]

#: the FAR levels of the IJB-B/IJB-C 1:1 tables
IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


# ----------------------------------------------------------------------------- input handling
def _to_numpy(x, name: str) -> np.ndarray:
    """Convert a NumPy array, torch tensor or nested sequence to a NumPy array."""
    if x is None:
        raise ValueError(f"{name} is required")
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            if x.is_floating_point():
                x = x.double()  # bfloat16/half have no NumPy dtype
            return x.numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return np.asarray(x)


def _as_scores(x, name: str = "scores") -> np.ndarray:
    a = _to_numpy(x, name)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of similarity scores, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty: verification needs at least one pair")
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf), first at index {i}"
        )
    return a


def _as_issame(x, n: Optional[int] = None) -> np.ndarray:
    a = _to_numpy(x, "issame")
    if a.ndim != 1:
        raise ValueError(f"issame must be a 1-D boolean array, got shape {a.shape}")
    if a.dtype != bool:
        if not np.issubdtype(a.dtype, np.number):
            raise ValueError(f"issame must be boolean (or 0/1), got dtype {a.dtype}")
        ok = np.isin(a, (0, 1))
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise ValueError(
                f"issame must be boolean (or 0/1); found value {a[i]!r} at index {i}"
            )
        a = a.astype(bool)
    if n is not None and a.shape[0] != n:
        raise ValueError(f"issame has {a.shape[0]} entries but there are {n} pairs")
    return a


# ----------------------------------------------------------------------------- ROC family
def _roc_counts(s: np.ndarray, y: np.ndarray, key: Optional[np.ndarray] = None
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Cumulative (false, true) accept counts at each distinct score, in decreasing score order.

    ``key``: the same scores in a narrower dtype that orders them identically (e.g. the float32
    originals of ``s``), sorted instead of ``s`` because it is faster.  The order within a run of
    equal scores does not matter: only the counts at the end of each run are kept.
    """
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"a ROC needs both same and different pairs; got {n_pos} same and {n_neg} different"
        )
    # sort the two classes apart (a plain sort is several times faster than an index sort), then
    # merge the two sorted runs with a stable index sort, which is linear on runs
    k = s if key is None else key
    k_neg, k_pos = np.sort(k[~y]), np.sort(k[y])
    merged = np.concatenate([k_neg, k_pos])
    del k_neg, k_pos
    order = np.argsort(merged, kind="stable")[::-1]  # decreasing score
    s_sorted = merged[order].astype(np.float64, copy=False)
    y_sorted = order >= n_neg
    del order, merged
    # last index of each run of equal scores
    ends = np.flatnonzero(np.diff(s_sorted) != 0)
    ends = np.concatenate([ends, [len(s_sorted) - 1]])
    tps = np.cumsum(y_sorted, dtype=np.int64)[ends]
    fps = (ends + 1) - tps
    return fps, tps, s_sorted[ends], n_pos, n_neg


def roc_curve(scores, issame, thin: bool = False) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)`` with a pair accepted when ``score >= threshold``.

    ``thresholds`` are the distinct scores in decreasing order, preceded by ``+inf`` (the origin
    point ``(0, 0)``); the last point is always ``(1, 1)``.  Needs both same and different pairs.
    ``thin=True`` drops the points scikit-learn's ``roc_curve`` drops by default (see
    :func:`thin_roc`).
    """
    s = _as_scores(scores)
    y = _as_issame(issame, len(s))
    fps, tps, thr, n_pos, n_neg = _roc_counts(s, y)
    if thin and len(fps) > 2:
        keep = _thin_mask(fps, tps)
        fps, tps, thr = fps[keep], tps[keep], thr[keep]
    fpr = np.concatenate([[0.0], fps / n_neg])
    tpr = np.concatenate([[0.0], tps / n_pos])
    thresholds = np.concatenate([[np.inf], thr])
    return fpr, tpr, thresholds


def _thin_mask(fps: np.ndarray, tps: np.ndarray) -> np.ndarray:
    # a point is kept when the step of the false or the true count changes there (a non-zero
    # second difference), and always at both ends; computed on integer counts, so it is exact
    d2 = (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0)
    return np.concatenate([[True], d2, [True]])


def thin_roc(scores, issame) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC as scikit-learn's ``roc_curve`` returns it by default (``drop_intermediate=True``).

    Among the per-distinct-score points (before the origin is prepended), a point is dropped when
    both the false-accept count and the true-accept count change by the same amount on its two
    sides as on the previous step (zero second differences), e.g. the inner points of a run of
    different pairs with distinct scores.  The first and last points and the origin are kept.  The
    published IJB tables read TAR@FAR off this curve with :func:`tar_at_far_nearest`.
    """
    return roc_curve(scores, issame, thin=True)


def auc(fpr, tpr) -> float:
    """Trapezoidal area under a curve given by increasing ``fpr`` and its ``tpr``."""
    x = np.asarray(fpr, dtype=np.float64)
    y = np.asarray(tpr, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"fpr and tpr must be 1-D of equal length >= 2, got {x.shape}, {y.shape}")
    if np.any(np.diff(x) < 0):
        raise ValueError("fpr must be non-decreasing")
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def roc_auc(scores, issame) -> float:
    """Area under the ROC of ``scores`` (Mann-Whitney probability, ties count one half)."""
    fpr, tpr, _ = roc_curve(scores, issame)
    return auc(fpr, tpr)


def equal_error_rate(fpr, tpr) -> float:
    """Rate where FPR equals FNR = 1 - TPR, interpolated linearly between ROC points."""
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    g = fpr + tpr - 1.0  # FPR - FNR, non-decreasing along the ROC
    i = int(np.argmax(g >= 0))  # g[-1] = 1 at the (1, 1) point, so a crossing exists
    if g[i] == 0 or i == 0:
        return float(fpr[i])
    t = -g[i - 1] / (g[i] - g[i - 1])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def tar_at_far(fpr, tpr, far: float) -> float:
    """Largest TPR among ROC points with ``fpr <= far`` (a threshold that exists)."""
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    ok = fpr <= far * (1 + 1e-9)
    return float(tpr[ok].max()) if ok.any() else 0.0


def tar_at_far_nearest(fpr, tpr, far: float) -> float:
    """TPR of the ROC point whose FPR is nearest to ``far`` (the published IJB reading).

    Distance is ``|fpr - far|``; when several points are equally near, the last one along the
    curve wins (the largest TPR at a repeated FPR; the point above ``far`` when one lies at the
    same distance below and above).  Use it on :func:`thin_roc` to reproduce the published tables.
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    if fpr.shape != tpr.shape or fpr.ndim != 1 or fpr.size == 0:
        raise ValueError(f"fpr and tpr must be 1-D of equal, non-zero length, got {fpr.shape}, {tpr.shape}")
    d = np.abs(fpr - float(far))
    i = len(d) - 1 - int(np.argmin(d[::-1]))
    return float(tpr[i])


def resolvable_fars(n_neg: int, fars: Iterable[float]) -> Tuple[float, ...]:
    """The FAR levels that ``n_neg`` different pairs can resolve (at least ``1/far`` of them)."""
    out = []
    for far in fars:
        far = float(far)
        if not 0 < far <= 1:
            raise ValueError(f"FAR levels must lie in (0, 1], got {far}")
        if n_neg * far >= 1 - 1e-9:
            out.append(far)
    return tuple(out)


def tar_at_fars(scores, issame, fars: Iterable[float] = IJB_FARS, rule: str = "nearest",
                only_resolvable: bool = True) -> Dict[float, float]:
    """TAR at each FAR level of ``fars`` from raw scores, with one of the two readings.

    ``rule="nearest"``: :func:`tar_at_far_nearest` on :func:`thin_roc` (the published IJB
    reading); ``rule="at_most"``: :func:`tar_at_far` on the full ROC.  With ``only_resolvable``
    the levels finer than ``1/#different pairs`` are left out.
    """
    if rule not in ("nearest", "at_most"):
        raise ValueError(f"rule must be 'nearest' or 'at_most', got {rule!r}")
    s = _as_scores(scores)
    y = _as_issame(issame, len(s))
    fars = tuple(float(f) for f in fars)
    if only_resolvable:
        fars = resolvable_fars(int((~y).sum()), fars)
    fpr, tpr, _ = roc_curve(s, y, thin=(rule == "nearest"))
    pick = tar_at_far_nearest if rule == "nearest" else tar_at_far
    return {far: pick(fpr, tpr, far) for far in fars}


def roc_for_plot(fpr, tpr, points: int = 1000, lowest: float = 1e-7) -> Tuple[np.ndarray, np.ndarray]:
    """At most ``points`` ROC points on a log-spaced FPR grid, for drawing a curve of millions.

    At each grid value ``g`` the TPR is the largest one among points with ``fpr <= g`` (the ROC
    is a staircase), so the drawn curve never claims more than the data shows.
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    if fpr.shape != tpr.shape or fpr.ndim != 1 or len(fpr) < 2:
        raise ValueError(f"fpr and tpr must be 1-D of equal length >= 2, got {fpr.shape}, {tpr.shape}")
    if len(fpr) <= points:
        return fpr, tpr
    lo = max(float(fpr[fpr > 0].min()) if np.any(fpr > 0) else 1.0, lowest)
    grid = np.unique(np.concatenate([np.logspace(np.log10(lo), 0.0, max(points - 1, 2)), [1.0]]))
    idx = np.searchsorted(fpr, grid * (1 + 1e-12), side="right") - 1
    return np.concatenate([[0.0], grid]), np.concatenate([[0.0], tpr[np.maximum(idx, 0)]])
