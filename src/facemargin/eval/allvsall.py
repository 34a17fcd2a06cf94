"""All-vs-all verification over a labelled set of embeddings, in bounded memory.

Every unordered pair ``i < j`` of ``N`` embeddings is compared (cosine similarity): pairs of the
same label are *genuine*, the others *impostors*. Face benchmarks report the true-accept rate at a
fixed false-accept rate (TAR@FAR) down to 1e-5 and below, where ``N²/2`` impostor scores cannot be
held at once. Scores are computed in row blocks of ``chunk`` rows against the later rows, and
kept as:

* every genuine score (their number is ``Σ n_c(n_c−1)/2``, small beside the impostors);
* the ``K`` highest impostor scores, merged block by block (``K = ⌊F · N_imp⌋ + 1`` with ``F`` the
  largest of ``keep_far`` and the requested FARs), which makes TAR exact for every FAR ≤ ``F``;
* a fine histogram of all impostor and genuine scores for the rest of the ROC (EER, AUC, plots).

TAR@FAR follows :func:`facemargin.eval.verification.tar_at_far`: a pair is accepted when its score
is ``>=`` the threshold, and TAR is the largest true-accept rate over thresholds whose false-accept
rate is at most FAR. With ``s_(k+1)`` the ``(k+1)``-th highest impostor score and
``k = ⌊FAR · N_imp⌋``, that is the share of genuine scores strictly above ``s_(k+1)``.

The same pass gives leave-one-out identification: the rank-1 rate is the share of images (whose
identity has another image) whose nearest other image has the same label.
"""
from __future__ import annotations

from typing import Dict, Iterable

import numpy as np

DEFAULT_FARS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def _normalise(emb, name: str = "embeddings") -> np.ndarray:
    e = np.asarray(emb.detach().cpu().numpy() if hasattr(emb, "detach") else emb, dtype=np.float32)
    if e.ndim != 2 or e.shape[0] < 2:
        raise ValueError(f"{name} must be (N, D) with N >= 2, got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError(f"{name} hold non-finite values")
    n = np.linalg.norm(e, axis=1, keepdims=True)
    return e / np.maximum(n, 1e-12)


def pair_counts(labels) -> tuple:
    """``(genuine, impostor)`` pair counts of an all-vs-all comparison of ``labels``."""
    y = np.asarray(labels)
    n = len(y)
    _, c = np.unique(y, return_counts=True)
    gen = int((c.astype(np.int64) * (c - 1) // 2).sum())
    return gen, n * (n - 1) // 2 - gen


def tar_from_top(genuine: np.ndarray, top_impostors: np.ndarray, num_impostors: int, far: float) -> float:
    """TAR at ``far`` from all genuine scores and the highest impostor scores (sorted descending)."""
    k = int(np.floor(far * num_impostors * (1 + 1e-9)))
    if k >= num_impostors:
        return 1.0
    if k >= len(top_impostors):
        raise ValueError(f"FAR {far} needs the {k + 1} highest impostor scores, only {len(top_impostors)} kept")
    t = top_impostors[k]
    return float(np.mean(genuine > t)) if len(genuine) else float("nan")


def all_vs_all(embeddings, labels, fars: Iterable[float] = DEFAULT_FARS, chunk: int = 512,
               keep_far: float = 1e-2, bins: int = 20000, progress: bool = False) -> Dict:
    """All-vs-all verification and leave-one-out rank-1 identification of labelled embeddings.

    Returns a dict with ``tar_at_far`` (``{far: tar}`` for the FARs with at least one impostor pair
    allowed, i.e. ``far · N_imp >= 1``), ``eer`` and ``auc`` (from the histogram, resolution
    ``2/bins`` in score), ``rank1``, ``num_genuine``, ``num_impostor``, and ``roc``: ``{"far",
    "tar"}`` on a log grid of FARs from ``1/N_imp`` to 1 (exact up to ``keep_far``, histogram above).
    """
    e = _normalise(embeddings)
    y = np.asarray(labels)
    if y.shape != (e.shape[0],):
        raise ValueError(f"labels must be ({e.shape[0]},) to match the embeddings, got {y.shape}")
    n = e.shape[0]
    n_gen, n_imp = pair_counts(y)
    if n_gen == 0 or n_imp == 0:
        raise ValueError(f"all-vs-all needs genuine and impostor pairs; got {n_gen} genuine, {n_imp} impostor")
    fars = [float(f) for f in fars]
    for f in fars:
        if not 0 < f <= 1:
            raise ValueError(f"FARs must lie in (0, 1], got {f}")
    k_keep = min(n_imp, int(np.floor(max([keep_far] + fars) * n_imp * (1 + 1e-9))) + 1)
    h_gen = np.zeros(bins, dtype=np.int64)
    h_imp = np.zeros(bins, dtype=np.int64)
    genuine = []
    top = np.empty(0, dtype=np.float32)
    best = np.full(n, -np.inf, dtype=np.float32)
    best_same = np.zeros(n, dtype=bool)
    starts = range(0, n, chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="all-vs-all", unit="block", leave=False)

    def to_bin(s):
        return np.clip(((s + 1.0) * (bins / 2.0)).astype(np.int64), 0, bins - 1)

    for a in starts:
        b = min(a + chunk, n)
        block = e[a:b] @ e[a:].T  # rows a..b-1 against columns a..n-1
        rows = np.arange(a, b)[:, None]
        cols = np.arange(a, n)[None, :]
        upper = cols > rows
        same = y[a:b, None] == y[None, a:]
        # nearest other image, both directions (each pair is seen once)
        masked = np.where(cols == rows, -np.inf, block)
        j = np.argmax(masked, axis=1)
        v = masked[np.arange(b - a), j]
        upd = v > best[a:b]
        best[a:b][upd] = v[upd]
        best_same[a:b][upd] = same[np.arange(b - a), j][upd]
        cm = np.where(upper, block, -np.inf)
        if b < n:
            part = cm[:, b - a:]  # columns b..n-1: update their nearest neighbour from these rows
            i = np.argmax(part, axis=0)
            v2 = part[i, np.arange(part.shape[1])]
            upd2 = v2 > best[b:]
            best[b:][upd2] = v2[upd2]
            best_same[b:][upd2] = same[i, b - a + np.arange(part.shape[1])][upd2]
        g = block[upper & same]
        im = block[upper & ~same]
        genuine.append(g.astype(np.float32))
        h_gen += np.bincount(to_bin(g), minlength=bins)
        h_imp += np.bincount(to_bin(im), minlength=bins)
        cand = np.concatenate([top, im.astype(np.float32)])
        if len(cand) > k_keep:
            cand = np.partition(cand, len(cand) - k_keep)[len(cand) - k_keep:]
        top = cand
    genuine = np.concatenate(genuine)
    top = np.sort(top)[::-1]
    tars = {f: tar_from_top(genuine, top, n_imp, f) for f in fars if f * n_imp >= 1 - 1e-9}
    # ROC from the histogram (thresholds at bin edges, accept score >= edge), for EER/AUC
    cg = np.concatenate([np.cumsum(h_gen[::-1])[::-1], [0]])  # genuine >= edge[i]
    ci = np.concatenate([np.cumsum(h_imp[::-1])[::-1], [0]])
    fpr_h, tpr_h = (ci / n_imp)[::-1], (cg / n_gen)[::-1]
    from ..roc import auc, equal_error_rate

    grid = np.logspace(np.log10(1.0 / n_imp), 0.0, 60)
    exact = len(top) / n_imp  # FARs up to here are exact
    roc_tar = np.array([tar_from_top(genuine, top, n_imp, f) if f * (1 + 1e-9) < exact or len(top) == n_imp
                        else float(np.interp(f, fpr_h, tpr_h)) for f in grid])
    has = ~np.isneginf(best)
    uniq, inv, cnt = np.unique(y, return_inverse=True, return_counts=True)
    probe = has & (cnt[inv] >= 2)
    return {
        "tar_at_far": tars,
        "eer": equal_error_rate(fpr_h, tpr_h),
        "auc": auc(fpr_h, tpr_h),
        "rank1": float(np.mean(best_same[probe])) if probe.any() else float("nan"),
        "num_genuine": int(n_gen),
        "num_impostor": int(n_imp),
        "roc": {"far": grid, "tar": roc_tar},
    }
