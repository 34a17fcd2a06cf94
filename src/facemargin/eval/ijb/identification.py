"""IJB 1:N search: ranks of the mated probes (CMC) and TPIR at FPIR, in two readings."""
from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np

__all__ = ["IJB_FPIRS", "TPIR_RULES", "identify_open_set"]

#: FPIR levels of the published 1:N tables
IJB_FPIRS = (0.01, 0.1)


def _subject_scores(sims: np.ndarray, g_order: np.ndarray, g_starts: np.ndarray) -> np.ndarray:
    """Max over each subject's gallery templates (columns grouped by subject)."""
    if len(g_starts) == sims.shape[1]:
        return sims[:, g_order]
    return np.maximum.reduceat(sims[:, g_order], g_starts, axis=1)


#: the TPIR@FPIR readings :func:`identify_open_set` offers
TPIR_RULES = ("open_set", "insightface")
# f x N within this of a whole number counts as that number: 0.57 x 100 is 56.99999999999999 and
# 0.07 x 100 is 7.000000000000001 in floating point (insightface's script takes the ceiling as is)
_EPS = 1e-9


def _top_values(a: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` largest values of ``a`` (any order), all of them when ``a`` has fewer."""
    a = a.reshape(-1)
    if k <= 0:
        return a[:0]
    if a.size <= k:
        return a.copy()
    return np.partition(a, a.size - k)[a.size - k:]


def _open_set_levels(fpirs, r, own, nm) -> Dict:
    """TPIR@FPIR with at most ``floor(f N)`` of the ``N`` non-mated searches alarming."""
    n = len(nm)
    out = {}
    for f in fpirs:
        k = math.floor(f * n + _EPS)  # the false alarms level f allows
        if n == 0 or k < 1:
            continue  # no non-mated probe, or the level is finer than one alarm in N: not resolvable
        if k >= n:
            t = -math.inf  # every non-mated search may alarm
        else:
            t = float(nm[k])  # the (k+1)-th largest: at most k scores lie strictly above it, fewer with ties
        hit = (r == 1) & (own > t)
        alarms = int((nm > t).sum())
        out[f] = {"tpir": float(np.mean(hit)), "fpir": alarms / n,
                  "threshold": None if t == -math.inf else t,
                  "identified": int(hit.sum()), "false_alarms": alarms}
    return out


def _insightface_levels(fpirs, own_mated, neg_top, n_neg, n_probes) -> Dict:
    """TPIR@FPIR as insightface's ``ijb_1n.py`` reads it (see :func:`identify_open_set`)."""
    neg = np.sort(neg_top)[::-1]
    out = {}
    for f in fpirs:
        k = math.ceil(f * n_probes - _EPS)
        if k < 1 or k > n_neg:
            continue
        t = float(neg[k - 1])
        hit = own_mated > t
        alarms = int((neg > t).sum())  # every non-mated pair above t is among the k largest
        out[f] = {"tpir": float(np.mean(hit)), "fpir": alarms / n_probes, "threshold": t,
                  "identified": int(hit.sum()), "false_alarms": alarms}
    return out


def identify_open_set(probe_feats, probe_subjects, gallery_feats, gallery_subjects,
                      ranks: Sequence[int] = (1, 5, 10), fpirs: Sequence[float] = IJB_FPIRS,
                      chunk: int = 4096, tpir_rule: str = "open_set") -> Dict:
    """1:N search of probe templates in a gallery: CMC of the mated probes and TPIR at FPIR.

    Features are L2-normalised template features; scores are cosines.  A gallery subject scores
    its best template.  A probe is *mated* when its subject is in the gallery.

    * **Rank** of a mated probe: ``1 +`` the number of other gallery subjects scoring at least as
      high as its own subject (ties count against the probe).  ``top1/top5/top10`` (``cmc``) are
      shares of the mated probes.
    * **TPIR at FPIR**, ``tpir_rule="open_set"`` (the default): each search returns its best
      score, and a search *alarms* when that score is strictly above the threshold ``t``.  With
      ``N`` non-mated probes, FPIR ``f`` allows ``k = floor(f N)`` false alarms, so ``t`` is the
      ``(k+1)``-th largest best score of the non-mated probes: at most ``k`` of them score above
      it (fewer when scores tie at ``t``), and the realised FPIR, reported as ``fpir``, is at most
      ``f``.  When ``k >= N`` every search may alarm (``t`` is minus infinity, reported as
      ``None``).  TPIR is the share of mated probes whose own subject is at rank 1 with a score
      above ``t``.  Levels with ``f N < 1`` are omitted, and with no non-mated probe (a gallery
      holding every probe subject) this reading is not defined and left empty.
    * ``tpir_rule="insightface"``: the reading of insightface's ``ijb_1n.py``.  The negatives are
      all *non-mated pairs*, every probe (mated or not) against every gallery template of another
      subject, not one best score per non-mated probe.  With ``Q`` probes, ``t`` is the
      ``ceil(f Q)``-th largest non-mated pair score; TPIR is the share of mated probes whose own
      subject scores above ``t``, at any rank; ``fpir`` is the number of non-mated pairs above
      ``t`` over ``Q``.  It is defined for a closed set too.  Levels needing more pairs than there
      are are omitted.

    Both readings are computed in the one pass: ``tpir_at_fpir`` follows ``tpir_rule`` and
    ``tpir_at_fpir_insightface`` always holds the second.  Each level gives ``tpir``, ``fpir``,
    ``threshold`` and the counts behind them (``identified`` mated probes, ``false_alarms``).
    """
    if tpir_rule not in TPIR_RULES:
        raise ValueError(f"tpir_rule must be one of {', '.join(TPIR_RULES)}, got {tpir_rule!r}")
    P = np.asarray(probe_feats, dtype=np.float32)
    G = np.asarray(gallery_feats, dtype=np.float32)
    ps = np.asarray(probe_subjects, dtype=np.int64).reshape(-1)
    gs = np.asarray(gallery_subjects, dtype=np.int64).reshape(-1)
    if P.ndim != 2 or G.ndim != 2 or P.shape[1] != G.shape[1]:
        raise ValueError(f"probe and gallery features must be (N, D) of the same width, got {P.shape} and {G.shape}")
    if len(ps) != len(P) or len(gs) != len(G):
        raise ValueError("one subject id is needed per probe and per gallery template")
    if len(G) == 0 or len(P) == 0:
        raise ValueError("the gallery and the probe set must not be empty")
    fpirs = [float(f) for f in fpirs]
    for f in fpirs:
        if not 0 < f <= 1:
            raise ValueError(f"FPIR levels must lie in (0, 1], got {f}")
    g_order = np.argsort(gs, kind="stable")
    subjects, g_starts = np.unique(gs[g_order], return_index=True)
    mated = np.isin(ps, subjects)
    if not mated.any():
        raise ValueError("no probe subject is in the gallery: identification needs mated probes")
    pos = np.searchsorted(subjects, ps)
    per_subject = np.diff(np.append(g_starts, len(G)))  # gallery templates of each subject
    n_neg = int(len(P) * len(G) - per_subject[pos[mated]].sum())
    rank = np.zeros(len(P), dtype=np.int64)
    own = np.full(len(P), -np.inf)
    best = np.empty(len(P))
    k_pairs = max([math.ceil(f * len(P) - _EPS) for f in fpirs], default=0)
    neg_top = np.zeros(0, np.float32)
    for a in range(0, len(P), chunk):
        sims = P[a:a + chunk] @ G.T
        cls = _subject_scores(sims, g_order, g_starts)
        best[a:a + chunk] = cls.max(axis=1)
        m = mated[a:a + chunk]
        rows = np.flatnonzero(m)
        if rows.size:
            true = cls[rows, pos[a:a + chunk][rows]]
            own[a + rows] = true
            rank[a + rows] = (cls[rows] >= true[:, None]).sum(axis=1)
        if k_pairs:  # non-mated pairs: the k largest so far
            neg = np.where(gs[None, :] == ps[a:a + chunk, None], -np.inf, sims)
            neg_top = _top_values(np.concatenate([neg_top, _top_values(neg, k_pairs)]), k_pairs)
    r = rank[mated]
    ranks = [int(k) for k in ranks]
    cmc = {k: float(np.mean(r <= k)) for k in ranks}
    nm = np.sort(best[~mated])[::-1]
    open_set = _open_set_levels(fpirs, r, own[mated], nm)
    insight = _insightface_levels(fpirs, own[mated], neg_top[np.isfinite(neg_top)].astype(np.float64), n_neg, len(P))
    return {
        "cmc": cmc,
        **{f"top{k}": v for k, v in cmc.items()},
        "tpir_at_fpir": open_set if tpir_rule == "open_set" else insight,
        "tpir_at_fpir_insightface": insight,
        "num_probes": int(len(P)),
        "num_mated": int(mated.sum()),
        "num_non_mated": int((~mated).sum()),
        "num_non_mated_pairs": n_neg,
        "num_gallery_templates": int(len(G)),
        "num_gallery_subjects": int(len(subjects)),
        "ranks": rank,
        "best_scores": best,
        "mated": mated,
    }
