"""Pair verification with the LFW protocol: k-fold accuracy, ROC, AUC, EER and TAR@FAR.

All functions work on *similarity scores* where higher means "same identity" (cosine similarity
of L2-normalised embeddings).  Everything is computed here in float64 with NumPy; scikit-learn is
not needed (the tests use it only as an independent check).

Conventions, fixed once for the whole module:

* **Folds** are contiguous and not shuffled: pair ``i`` belongs to fold ``f`` exactly as in
  ``numpy.array_split(range(n), folds)`` (the first ``n % folds`` folds get one extra pair),
  which is also scikit-learn's ``KFold(shuffle=False)``.  With LFW's 6000 pairs and 10 folds each
  fold is one block of 600 pairs of ``pairs.txt``.
* **Accuracy threshold**: a pair is predicted "same" when ``score > threshold`` (strict).
  The threshold of a fold is chosen on the *other* folds among these candidates: the midpoints
  between consecutive distinct training scores, plus ``lowest - 1`` (everything "same") and
  ``highest + 1`` (everything "different").  This is exact: every distinct split of the sorted
  training scores is tried once.  When several candidates reach the same best training accuracy
  the **smallest** threshold wins (deterministic).
* **ROC, AUC, EER** come from :mod:`facemargin.eval.roc`, where the whole ROC family lives (the
  functions are re-exported here).
* **TAR@FAR** is the largest true-accept rate among ROC points whose false-accept rate is at most
  ``far`` (no interpolation: a threshold that can really be used).  It is reported only for the
  FAR levels the data can resolve, i.e. when the number of different pairs is at least ``1/far``.
* **One-class folds**: the protocol assumes every fold holds both same and different pairs (LFW's
  ``pairs.txt`` lists 300 of each per fold).  A fold of one class only -- pairs listed sorted by
  label, say -- is scored by a threshold fitted to the other folds alone, so its accuracy says
  little (all genuine pairs first, then all impostors, can score 0 while the AUC is high).
  :func:`one_class_folds` finds such folds before anything is embedded, and :func:`verify`
  reports them as ``one_class_folds``.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from ..roc import (  # noqa: F401  (re-exported: the ROC family used to live here)
    _as_issame,
    _as_scores,
    _to_numpy,
    auc,
    equal_error_rate,
    resolvable_fars,
    roc_auc,
    roc_curve,
    tar_at_far,
)

__all__ = [
    "verify",
    "roc_curve",
    "auc",
    "roc_auc",
    "equal_error_rate",
    "tar_at_far",
    "best_threshold",
    "fold_slices",
    "one_class_folds",
    "cosine_scores",
]

DEFAULT_FARS = (1e-1, 1e-2, 1e-3, 1e-4)


def cosine_scores(emb1, emb2) -> np.ndarray:
    """Row-wise cosine similarity of two ``(N, D)`` embedding arrays (NumPy or torch).

    Both are L2-normalised first (a zero row stays zero and scores 0).
    """
    a = _to_numpy(emb1, "emb1")
    b = _to_numpy(emb2, "emb2")
    for name, e in (("emb1", a), ("emb2", b)):
        if e.ndim != 2:
            raise ValueError(f"{name} must be a 2-D (N, D) embedding array, got shape {e.shape}")
        if e.dtype == bool or not np.issubdtype(e.dtype, np.number):
            raise ValueError(f"{name} must be numeric, got dtype {e.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"emb1 and emb2 must have the same shape, got {a.shape} and {b.shape}")
    if a.shape[0] == 0:
        raise ValueError("emb1 and emb2 are empty: verification needs at least one pair")
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    for name, e in (("emb1", a), ("emb2", b)):
        bad = ~np.isfinite(e).all(axis=1)
        if bad.any():
            raise ValueError(
                f"{name} has non-finite values (NaN or inf) in row {int(np.flatnonzero(bad)[0])}"
            )
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.einsum("nd,nd->n", a, b)


# ----------------------------------------------------------------------------- folds/threshold
def fold_slices(n: int, folds: int) -> List[slice]:
    """Contiguous, unshuffled folds over ``n`` pairs (the first ``n % folds`` get one extra)."""
    if not isinstance(folds, (int, np.integer)) or isinstance(folds, bool) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    if n < folds:
        raise ValueError(f"cannot split {n} pair(s) into {folds} folds: need at least {folds} pairs")
    base, extra = divmod(n, folds)
    out, start = [], 0
    for f in range(folds):
        size = base + (1 if f < extra else 0)
        out.append(slice(start, start + size))
        start += size
    return out


def one_class_folds(issame, folds: int) -> List[int]:
    """Indices of the folds (as :func:`fold_slices` cuts them) that hold only same or only different pairs.

    Raises ``ValueError`` like :func:`fold_slices` when there are fewer pairs than folds.
    """
    y = _as_issame(issame)
    return [f for f, sl in enumerate(fold_slices(len(y), folds)) if y[sl].all() or not y[sl].any()]


def best_threshold(scores, issame) -> Tuple[float, float]:
    """The accuracy-maximising threshold on ``(scores, issame)`` and the accuracy it reaches.

    "Same" is predicted when ``score > threshold``.  Candidates are the midpoints between
    consecutive distinct scores plus ``min - 1`` and ``max + 1``; ties go to the smallest
    threshold.  Runs in O(n log n).
    """
    s = _as_scores(scores)
    y = _as_issame(issame, len(s))
    u, inv = np.unique(s, return_inverse=True)
    inv = inv.reshape(-1)
    pos_le = np.cumsum(np.bincount(inv[y], minlength=len(u)))  # same pairs with score <= u_k
    neg_le = np.cumsum(np.bincount(inv[~y], minlength=len(u)))  # different pairs with score <= u_k
    n_pos = int(y.sum())
    # candidate 0 lies below every score (all predicted same); candidate k >= 1 lies between
    # u_{k-1} and u_k (or above all when k == len(u)): scores <= u_{k-1} are predicted different.
    correct = np.concatenate([[n_pos], n_pos - pos_le + neg_le])
    mids = u[:-1] + (u[1:] - u[:-1]) / 2.0
    # for adjacent floats the midpoint may round up to u_k; u_{k-1} then splits identically
    mids = np.where(mids < u[1:], mids, u[:-1])
    cands = np.concatenate([[u[0] - 1.0], mids, [u[-1] + 1.0]])
    k = int(np.argmax(correct))  # first maximum = smallest threshold
    return float(cands[k]), float(correct[k]) / len(s)


# ----------------------------------------------------------------------------- main entry point
def verify(
    scores_or_emb1,
    emb2=None,
    issame=None,
    folds: int = 10,
    far_targets: Optional[Iterable[float]] = DEFAULT_FARS,
) -> Dict:
    """Evaluate pair verification with the LFW protocol (see the module docstring).

    Call either ``verify(scores, issame=issame)`` with 1-D cosine scores (higher = same), or
    ``verify(emb1, emb2, issame)`` with two ``(N, D)`` embedding arrays, which are L2-normalised
    and scored by their row-wise dot product.  NumPy arrays and torch tensors are accepted; as a
    convenience ``verify(scores, issame)`` (issame passed second) is understood too.

    Returns a dict with:

    * ``accuracy``, ``accuracy_std``: mean and population std (ddof=0) of the fold accuracies;
    * ``threshold``: the mean of the fold thresholds; ``thresholds``, ``fold_accuracies``: lists;
    * ``auc``, ``eer``: from the ROC over all pairs;
    * ``tar_at_far``: ``{far: tar}`` for the FAR levels with at least ``1/far`` different pairs;
    * ``roc``: ``{"fpr", "tpr", "thresholds"}`` NumPy arrays; ``num_pairs``, ``folds``;
    * ``one_class_folds``: indices of the folds holding pairs of one class only (empty when each
      fold has both; otherwise the accuracy is not a meaningful measure, see the module docstring).

    Raises ``ValueError`` for mismatched lengths, empty input, fewer pairs than folds, a
    non-boolean ``issame``, non-finite scores, or pairs of only one kind.
    """
    if emb2 is not None and issame is None:
        e2 = _to_numpy(emb2, "emb2")
        if e2.ndim == 1 and _to_numpy(scores_or_emb1, "scores").ndim == 1:
            emb2, issame = None, e2  # verify(scores, issame)
    if issame is None:
        raise ValueError("issame is required: verify(scores, issame=...) or verify(e1, e2, issame)")
    if emb2 is None:
        s = _as_scores(scores_or_emb1)
    else:
        s = cosine_scores(scores_or_emb1, emb2)
    y = _as_issame(issame, len(s))
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"verification needs both same and different pairs; got {n_pos} same, {n_neg} different"
        )
    slices = fold_slices(len(s), folds)

    fold_acc, fold_thr = [], []
    for sl in slices:
        train = np.ones(len(s), dtype=bool)
        train[sl] = False
        thr, _ = best_threshold(s[train], y[train])
        pred = s[sl] > thr
        fold_acc.append(float(np.mean(pred == y[sl])))
        fold_thr.append(thr)

    fpr, tpr, roc_thr = roc_curve(s, y)
    tars = {far: tar_at_far(fpr, tpr, far) for far in resolvable_fars(n_neg, far_targets or ())}
    return {
        "accuracy": float(np.mean(fold_acc)),
        "accuracy_std": float(np.std(fold_acc)),
        "threshold": float(np.mean(fold_thr)),
        "auc": auc(fpr, tpr),
        "eer": equal_error_rate(fpr, tpr),
        "tar_at_far": tars,
        "fold_accuracies": fold_acc,
        "thresholds": fold_thr,
        "roc": {"fpr": fpr, "tpr": tpr, "thresholds": roc_thr},
        "num_pairs": int(len(s)),
        "folds": int(folds),
        "one_class_folds": one_class_folds(y, folds),
    }
