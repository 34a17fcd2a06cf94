"""Closed-set identification: rank-k / CMC with a gallery and probes, and class-mean accuracy.

Similarities are cosine similarities of L2-normalised embeddings.

Ranking rule of :func:`identify`: each gallery *class* is scored by its best-matching gallery
sample (max cosine over that class's samples), and classes are ranked by that score.  The rank of
a probe is ``1 + the number of other classes whose score is >= the true class's score``, so ties
count against the probe (a pessimistic, deterministic rule).  A probe is correct at rank ``k``
when its rank is ``<= k``; the CMC value at ``k`` is the share of such probes.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from .verification import _to_numpy

__all__ = ["identify", "gallery_probe_split", "closed_set_accuracy"]


def _embeddings(x, name: str) -> np.ndarray:
    a = _to_numpy(x, name)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) embedding array, got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise ValueError(f"{name} has non-finite values in row {int(np.flatnonzero(bad)[0])}")
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def _labels(y, n: int, name: str, emb_name: str) -> np.ndarray:
    a = _to_numpy(y, name)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} entries but {emb_name} has {n} rows")
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise ValueError(f"{name} must be integer class labels, got dtype {a.dtype}")
    return a.astype(np.int64)


def _check_dims(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{na} and {nb} have different embedding widths: {a.shape[1]} vs {b.shape[1]}"
        )


def identify(
    gallery_emb,
    gallery_labels,
    probe_emb,
    probe_labels,
    ranks: Sequence[int] = (1, 5, 10),
    chunk: int = 1024,
) -> Dict:
    """Closed-set identification of probes against a gallery by cosine nearest neighbour.

    Returns ``{"rank1": float, "cmc": {k: float}, "ranks": per-probe rank array,
    "num_probes": int, "num_classes": int}`` (ranking rule in the module docstring).  Every
    probe label must occur in the gallery (closed set), else ``ValueError``.
    """
    g = _embeddings(gallery_emb, "gallery_emb")
    p = _embeddings(probe_emb, "probe_emb")
    _check_dims(g, p, "gallery_emb", "probe_emb")
    gl = _labels(gallery_labels, len(g), "gallery_labels", "gallery_emb")
    pl = _labels(probe_labels, len(p), "probe_labels", "probe_emb")
    classes, g_inv = np.unique(gl, return_inverse=True)
    g_inv = g_inv.reshape(-1)
    pos = np.searchsorted(classes, pl)
    pos_c = np.minimum(pos, len(classes) - 1)
    missing = classes[pos_c] != pl
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise ValueError(
            f"probe {i} has label {int(pl[i])}, which has no gallery sample (closed-set "
            f"identification needs every probe class in the gallery)"
        )
    ranks_k = [int(k) for k in ranks]
    if any(k < 1 for k in ranks_k):
        raise ValueError(f"ranks must be positive integers, got {tuple(ranks)}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")

    probe_rank = np.empty(len(p), dtype=np.int64)
    for start in range(0, len(p), chunk):
        sim = p[start : start + chunk] @ g.T  # (b, G)
        cls = np.full((len(classes), sim.shape[0]), -np.inf)
        np.maximum.at(cls, g_inv, sim.T)  # best gallery sample per class
        cls = cls.T  # (b, K)
        true = cls[np.arange(cls.shape[0]), pos_c[start : start + chunk]]
        # rank = 1 + other classes scoring >= the true one; the count includes the true class
        probe_rank[start : start + chunk] = (cls >= true[:, None]).sum(axis=1)
    cmc = {k: float(np.mean(probe_rank <= k)) for k in ranks_k}
    return {
        "rank1": float(np.mean(probe_rank <= 1)),
        "cmc": cmc,
        "ranks": probe_rank,
        "num_probes": int(len(p)),
        "num_classes": int(len(classes)),
    }


def gallery_probe_split(
    labels, gallery_per_class: int = 1, seed: int = 0
) -> Tuple[np.ndarray, np.ndarray]:
    """Split sample indices into a gallery and probes, per class, reproducibly.

    For every class, ``gallery_per_class`` of its samples (chosen at random with ``seed``) go to
    the gallery and the rest become probes.  A class with at most ``gallery_per_class`` samples
    goes to the gallery whole (it is a distractor with no probe).  Returns sorted int64 index
    arrays ``(gallery_idx, probe_idx)``.
    """
    y = _to_numpy(labels, "labels")
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    if isinstance(gallery_per_class, bool) or int(gallery_per_class) != gallery_per_class \
            or gallery_per_class < 1:
        raise ValueError(f"gallery_per_class must be an integer >= 1, got {gallery_per_class!r}")
    rng = np.random.default_rng(seed)
    gallery, probe = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        gallery.append(idx[:gallery_per_class])
        probe.append(idx[gallery_per_class:])
    return (
        np.sort(np.concatenate(gallery)).astype(np.int64),
        np.sort(np.concatenate(probe)).astype(np.int64),
    )


def _class_mean_predict(tr: np.ndarray, ytr: np.ndarray, te: np.ndarray) -> np.ndarray:
    classes, inv = np.unique(ytr, return_inverse=True)
    means = np.zeros((len(classes), tr.shape[1]))
    np.add.at(means, inv.reshape(-1), tr)
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    return classes[np.argmax(te @ means.T, axis=1)]


def nearest_class_mean(train_emb, train_labels, test_emb) -> np.ndarray:
    """Predicted labels of ``test_emb`` by nearest class mean with cosine similarity.

    Each class mean is the mean of the class's L2-normalised training embeddings; a test sample
    is assigned the class whose mean has the highest cosine similarity (ties: lowest label).
    """
    tr = _embeddings(train_emb, "train_emb")
    te = _embeddings(test_emb, "test_emb")
    _check_dims(tr, te, "train_emb", "test_emb")
    ytr = _labels(train_labels, len(tr), "train_labels", "train_emb")
    return _class_mean_predict(tr, ytr, te)


def closed_set_accuracy(train_emb, train_labels, test_emb, test_labels) -> float:
    """Nearest class-mean accuracy with cosine similarity (see :func:`nearest_class_mean`).

    Every test label must be a training class, else ``ValueError``.
    """
    tr = _embeddings(train_emb, "train_emb")
    te = _embeddings(test_emb, "test_emb")
    _check_dims(tr, te, "train_emb", "test_emb")
    ytr = _labels(train_labels, len(tr), "train_labels", "train_emb")
    yte = _labels(test_labels, len(te), "test_labels", "test_emb")
    unknown = ~np.isin(yte, np.unique(ytr))
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise ValueError(
            f"test sample {i} has label {int(yte[i])}, which is not a training class"
        )
    return float(np.mean(_class_mean_predict(tr, ytr, te) == yte))
