"""Verification by image quality: TAR@FAR per quality stratum and the error-versus-reject curve.

On the glyph identity set every unseen test image was degraded once by a known draw (the
resolution it was down-sampled to, a Gaussian blur radius and a noise level, listed per image in
``unseen.lst``), so the quality of each image is known instead of guessed. This module turns that
into a number per image and asks two questions of a set of embeddings:

* :func:`stratified_tar` - how well are pairs verified when one of their images is poor? All-vs-all
  pairs are grouped by the quality of the *lower*-quality image of the pair (a pair is only as good
  as its worse image) and TAR@FAR is read in each group;
* :func:`error_vs_reject` - does a quality score (a head's feature norm, say) know which images to
  drop? The lowest-scored images are rejected in steps and the false non-match rate of what is left
  is read at a threshold fixed on the full set.

Everything takes plain NumPy arrays (embeddings ``(N, D)``, labels ``(N,)``, per-image values
``(N,)``) and runs in bounded memory: pairs are scored in blocks of ``chunk`` rows against the later
rows, as :func:`facemargin.eval.allvsall.all_vs_all` does, so ~10 000 images (~5·10⁷ pairs) need
only the genuine scores and the few highest impostor scores at a time.

Threshold and acceptance follow :mod:`facemargin.eval.allvsall`: cosine similarity; a pair is
accepted when its score is strictly above the threshold; at a FAR ``f`` over ``N_imp`` impostor
pairs the threshold is the ``(k+1)``-th highest impostor score with ``k = ⌊f · N_imp⌋``, so at most
``k`` impostors are accepted. A FAR with ``f · N_imp < 1`` is not measurable and is not reported.
"""
from __future__ import annotations

from typing import Dict, Iterable, Mapping, Sequence, Union

import numpy as np

from .allvsall import DEFAULT_FARS, _normalise, pair_counts, tar_from_top

__all__ = ["QUALITY_METHODS", "DEFAULT_FRACTIONS", "image_quality", "quality_cuts", "stratified_tar",
           "error_vs_reject", "random_scores"]

#: the ways :func:`image_quality` turns a degradation into one number
QUALITY_METHODS = ("effective", "resolution", "rank")
#: shares of images rejected along the error-versus-reject curve
DEFAULT_FRACTIONS = tuple(round(0.05 * i, 2) for i in range(11))

_EPS = 1e-9  # slack on products like f · N, so that 0.25 · 12 counts as 3 and not 2.9999…


def _values(a, n: int, name: str) -> np.ndarray:
    """A finite float64 ``(n,)`` array, or a ValueError that says what is wrong with ``a``."""
    v = np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a, dtype=np.float64)
    if v.shape != (n,):
        raise ValueError(f"{name} must be ({n},), one value per image, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} hold non-finite values")
    return v


def _setup(embeddings, labels, chunk: int):
    e = _normalise(embeddings)
    y = np.asarray(labels)
    if y.shape != (e.shape[0],):
        raise ValueError(f"labels must be ({e.shape[0]},) to match the embeddings, got {y.shape}")
    if int(chunk) < 1:
        raise ValueError(f"chunk must be a positive number of rows, got {chunk}")
    n_gen, n_imp = pair_counts(y)
    if n_gen == 0 or n_imp == 0:
        raise ValueError(f"need genuine and impostor pairs; got {n_gen} genuine, {n_imp} impostor")
    return e, y, n_gen, n_imp


def _blocks(e: np.ndarray, y: np.ndarray, chunk: int):
    """Every pair ``i < j`` once, a block of rows at a time: ``(a, b, scores, upper, same)`` for
    rows ``a..b-1`` against columns ``a..N-1`` (``upper`` marks the columns after the row)."""
    n = e.shape[0]
    for a in range(0, n, int(chunk)):
        b = min(a + int(chunk), n)
        block = e[a:b] @ e[a:].T
        upper = np.arange(a, n)[None, :] > np.arange(a, b)[:, None]
        same = y[a:b, None] == y[None, a:]
        yield a, b, block, upper, same


def _keep_top(top: np.ndarray, new: np.ndarray, k: int, *extra):
    """The ``k`` highest of ``top`` and ``new`` (unsorted), with rows of the parallel ``extra`` arrays."""
    cand = np.concatenate([top[0], new[0]])
    others = [np.concatenate([t, x]) for t, x in zip(top[1:], new[1:])]
    if len(cand) > k:
        idx = np.argpartition(cand, len(cand) - k)[len(cand) - k:]
        cand, others = cand[idx], [o[idx] for o in others]
    return (cand, *others)


def _check_fars(fars: Iterable[float]) -> list:
    fars = [float(f) for f in fars]
    if not fars:
        raise ValueError("fars is empty: give at least one false-accept rate")
    for f in fars:
        if not 0 < f <= 1:
            raise ValueError(f"FARs must lie in (0, 1], got {f}")
    return fars


def _average_ranks(v: np.ndarray) -> np.ndarray:
    """Ranks ``0..n-1`` of ``v`` ascending, ties sharing the mean of their ranks."""
    order = np.argsort(v, kind="stable")
    sv = v[order]
    start = np.r_[True, sv[1:] != sv[:-1]]
    group = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    last = np.r_[first[1:], len(v)] - 1
    ranks = np.empty(len(v), dtype=np.float64)
    ranks[order] = ((first + last) / 2.0)[group]
    return ranks


# ------------------------------------------------------------------ quality of an image


def image_quality(degradation: Mapping[str, Sequence[float]], size: float, method: str = "effective") -> np.ndarray:
    """One quality number per image from its known degradation; higher is better.

    ``degradation`` holds ``(N,)`` arrays as a glyph set stores them (``GlyphSet.unseen()``'s third
    value, or the same keys of a run's ``unseen_norms.npz``): ``resolution`` (the side in pixels the
    image was down-sampled to and back up; ``size`` means not down-sampled), ``blur`` (Gaussian
    standard deviation in pixels of the full image, 0 when sharp) and ``noise`` (standard deviation of
    the added Gaussian noise on 0..255). ``size`` is the image side (the set manifest's ``size``).

    ``method``:

    * ``"effective"`` (default): the effective resolution in pixels,
      ``r_eff = 1 / sqrt(1 / r² + 3·σ² / S²)`` with ``r`` the resolution, ``σ`` the blur and ``S`` the
      size. Down-sampling and blur remove the same thing, fine detail, so they are put on one axis by
      the spread they give a point: Pillow's bilinear reduction from ``S`` to ``r`` pixels and the
      bilinear enlargement back each spread a point by a triangle of half-width ``S/r``, variance
      ``(S/r)²/6`` apiece, ``(S/r)²/3`` together; the blur adds variance ``σ²``; ``r_eff`` is the
      resolution whose round trip alone would spread a point as much as both. A sharp image keeps its
      resolution (``r_eff = r``); the strongest blur of the set (1.2 px at ``S = 32``) alone counts as
      about 15 pixels. Noise is left out: it removes no detail, and how much of it equals how much lost
      resolution could only be set by measuring; ``"rank"`` weighs it in.
    * ``"resolution"``: the resolution alone, the quantity low-resolution face benchmarks stratify by.
    * ``"rank"``: the mean of three percentile ranks in ``[0, 1]``: resolution (higher better), blur
      and noise (lower better), ties sharing their mean rank. Each degradation counts equally,
      whatever its units; the value depends on the whole set, not on the image alone.
    """
    if method not in QUALITY_METHODS:
        raise ValueError(f"unknown quality method {method!r}; choose one of {', '.join(QUALITY_METHODS)}")
    if "resolution" not in degradation:
        raise ValueError("degradation must hold 'resolution' (and 'blur', 'noise' as the method needs)")
    r = np.asarray(degradation["resolution"], dtype=np.float64)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"resolution must be a non-empty (N,) array, got shape {r.shape}")
    n = r.size
    r = _values(r, n, "resolution")
    if np.any(r <= 0):
        raise ValueError("resolution must be positive (pixels)")
    if method == "resolution":
        return r
    need = ("blur",) if method == "effective" else ("blur", "noise")
    for key in need:
        if key not in degradation:
            raise ValueError(f"quality method {method!r} needs degradation[{key!r}]")
    blur = _values(degradation["blur"], n, "blur")
    if np.any(blur < 0):
        raise ValueError("blur must not be negative")
    if method == "effective":
        size = float(size)
        if not size > 0:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        return 1.0 / np.sqrt(1.0 / r ** 2 + 3.0 * blur ** 2 / size ** 2)
    noise = _values(degradation["noise"], n, "noise")
    if np.any(noise < 0):
        raise ValueError("noise must not be negative")
    if n == 1:
        return np.ones(1)
    return (_average_ranks(r) + _average_ranks(-blur) + _average_ranks(-noise)) / (3.0 * (n - 1))


# ------------------------------------------------------------------ quality strata


def quality_cuts(quality, bins: int = 3) -> np.ndarray:
    """Cut points between ``bins`` strata of equal pair counts, from the per-pair minimum quality.

    The minimum quality of a pair takes the value of the pair's lower image. With the qualities sorted
    ascending ``q_(0) <= … <= q_(N-1)``, the pairs whose lower image is ``q_(i)`` number ``N-1-i``, so
    the distribution of the pair minimum over all ``N(N-1)/2`` pairs is known exactly without forming
    a pair. Cut ``t_k`` (``k = 1..bins-1``) is the smallest pair minimum whose cumulative share of
    pairs reaches ``k / bins``. Cuts that coincide (many pairs at one value) or that reach the largest
    pair minimum are dropped, so fewer strata come back instead of empty ones; then no stratum is empty,
    though with ties their shares are unequal. Returns the cuts ascending (``(bins-1,)`` at most).
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2 (or a sequence of cut points), got {bins!r}")
    q = np.asarray(quality, dtype=np.float64).reshape(-1)
    if q.size < 2:
        raise ValueError("quality needs at least two images to form a pair")
    q = _values(q, q.size, "quality")
    qs = np.sort(q)
    n = qs.size
    weights = (n - 1 - np.arange(n)).astype(np.int64)  # pairs whose lower image is q_(i)
    cum = np.cumsum(weights)
    total = int(cum[-1])
    cuts = []
    for k in range(1, int(bins)):
        i = int(np.searchsorted(cum * int(bins), k * total, side="left"))  # first cum/total >= k/bins
        cuts.append(qs[i])
    top = qs[-2]  # the largest pair minimum
    return np.unique(np.asarray([c for c in cuts if c < top], dtype=np.float64))


def _stratum_of(values: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Stratum of each value: 0 for ``v <= t_1``, ``k`` for ``t_k < v <= t_(k+1)``, last for ``v > t_(B-1)``."""
    return np.searchsorted(cuts, values, side="left")


def stratified_tar(embeddings, labels, quality, fars: Iterable[float] = DEFAULT_FARS,
                   bins: Union[int, Sequence[float]] = 3, chunk: int = 512) -> Dict:
    """TAR@FAR of all-vs-all pairs grouped by the quality of the lower-quality image of each pair.

    Args:
        embeddings: ``(N, D)``, compared by cosine similarity.
        labels: ``(N,)`` identities; a pair of one identity is genuine, else impostor.
        quality: ``(N,)`` per-image quality, higher is better (:func:`image_quality`).
        fars: false-accept rates in ``(0, 1]``.
        bins: an integer ``B >= 2``: strata of (about) equal pair counts, cut at quantiles of the
            per-pair minimum quality (:func:`quality_cuts`); or the cut points themselves, strictly
            increasing: ``t_1 < … < t_(B-1)`` give ``B`` strata.
        chunk: rows scored at a time (memory ``~ chunk · N`` scores); the result does not depend on it.

    A pair with minimum quality ``m`` belongs to stratum 0 when ``m <= t_1``, to stratum ``k`` when
    ``t_k < m <= t_(k+1)``, to the last when ``m > t_(B-1)``; stratum 0 holds the worst pairs.

    Two readings per stratum and FAR:

    * ``tar`` (the deployment view): one threshold for everything, the threshold that gives the FAR
      on the whole set; TAR is the share of the stratum's genuine pairs above it, and ``far`` the
      share of its impostor pairs above it (poor strata may falsely accept more or less than the
      target);
    * ``tar_own``: the stratum's own threshold, set on its own impostors to give the FAR within it
      (``NaN`` where ``f · N_imp`` of the stratum is below 1); it isolates how separable the stratum
      is from the threshold choice.

    Returns a dict: ``fars`` (those with ``f · N_imp >= 1`` on the whole set, the only ones reported),
    ``threshold`` and ``tar`` (``{far: value}``, the whole set; ``tar`` equals
    :func:`all_vs_all`'s), ``cuts``, ``num_genuine``, ``num_impostor``, and ``bins``: one dict per
    stratum, worst first, with ``quality_low`` / ``quality_high`` (the smallest and largest pair
    minimum in it), ``num_genuine``, ``num_impostor``, ``tar``, ``far``, ``tar_own`` and
    ``threshold_own`` (each ``{far: value}``; ``NaN`` for a stratum without genuine pairs).
    """
    e, y, n_gen, n_imp = _setup(embeddings, labels, chunk)
    n = e.shape[0]
    q = _values(quality, n, "quality")
    fars = _check_fars(fars)
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        cuts = quality_cuts(q, int(bins))
    else:
        try:
            cuts = np.asarray(bins, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(f"bins must be an integer or a sequence of cut points, got {bins!r}") from None
        if cuts.size == 0 or not np.all(np.isfinite(cuts)) or np.any(np.diff(cuts) <= 0):
            raise ValueError(f"cut points must be finite and strictly increasing, got {cuts.tolist()}")
    nb = cuts.size + 1
    k_keep = min(n_imp, int(np.floor(max(fars) * n_imp * (1 + _EPS))) + 1)
    gen_s, gen_b = [], []
    imp_count = np.zeros(nb, dtype=np.int64)
    tops = [np.empty(0, dtype=np.float32) for _ in range(nb)]
    for a, b, block, upper, same in _blocks(e, y, chunk):
        stratum = _stratum_of(np.minimum(q[a:b, None], q[None, a:]), cuts)
        g = upper & same
        gen_s.append(block[g])
        gen_b.append(stratum[g])
        im = upper & ~same
        s_imp, b_imp = block[im], stratum[im]
        imp_count += np.bincount(b_imp, minlength=nb)
        for k in range(nb):
            tops[k] = _keep_top((tops[k],), (s_imp[b_imp == k],), k_keep)[0]
    gen_s, gen_b = np.concatenate(gen_s), np.concatenate(gen_b)
    tops = [np.sort(t)[::-1] for t in tops]
    top_all = np.sort(np.concatenate(tops))[::-1][:k_keep]
    # the pair minima are the sorted qualities less the largest one (q_(i) is the minimum of (i, N-1))
    minima = np.sort(q)[:-1]
    in_stratum = _stratum_of(minima, cuts)
    reported = [f for f in fars if f * n_imp >= 1 - _EPS]
    threshold, overall = {}, {}
    for f in reported:
        k = int(np.floor(f * n_imp * (1 + _EPS)))
        threshold[f] = float(top_all[k]) if k < n_imp else float("-inf")
        overall[f] = tar_from_top(gen_s, top_all, n_imp, f)
    strata = []
    nan = float("nan")
    for k in range(nb):
        gk, ik, tk = gen_s[gen_b == k], int(imp_count[k]), tops[k]
        vals = minima[in_stratum == k]
        row = {"quality_low": float(vals.min()) if vals.size else nan,
               "quality_high": float(vals.max()) if vals.size else nan,
               "num_genuine": int(gk.size), "num_impostor": ik,
               "tar": {}, "far": {}, "tar_own": {}, "threshold_own": {}}
        for f in reported:
            t = threshold[f]
            row["tar"][f] = float(np.mean(gk > t)) if gk.size else nan
            row["far"][f] = float(np.sum(tk > t)) / ik if ik else nan
            if ik and f * ik >= 1 - _EPS:
                kk = int(np.floor(f * ik * (1 + _EPS)))
                row["threshold_own"][f] = float(tk[kk]) if kk < ik else float("-inf")
                row["tar_own"][f] = tar_from_top(gk, tk, ik, f)
            else:
                row["threshold_own"][f] = nan
                row["tar_own"][f] = nan
        strata.append(row)
    return {"fars": reported, "threshold": threshold, "tar": overall, "cuts": cuts.tolist(),
            "num_genuine": int(n_gen), "num_impostor": int(n_imp), "bins": strata}


# ------------------------------------------------------------------ error versus reject


def random_scores(n: int, seed: int = 0) -> np.ndarray:
    """``n`` seeded uniform scores in ``[0, 1)``: ranking by them is random rejection, the baseline
    an error-versus-reject curve is compared against."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return np.random.default_rng(seed).random(int(n))


def error_vs_reject(embeddings, labels, rank_scores, fmr: float = 1e-3,
                    fractions: Sequence[float] = DEFAULT_FRACTIONS, chunk: int = 512) -> Dict:
    """The error-versus-reject curve: FNMR at a fixed threshold as the lowest-scored images are dropped.

    Args:
        embeddings: ``(N, D)``, compared by cosine similarity.
        labels: ``(N,)`` identities.
        rank_scores: ``(N,)`` per-image scores, low = reject first (a head's feature norm, the known
            quality, :func:`random_scores`); or a mapping ``{name: (N,) scores}`` to read several
            rankings from one pass over the pairs.
        fmr: the false-match rate that fixes the threshold on the full set (``fmr · N_imp >= 1``).
        fractions: shares of the images to reject, in ``[0, 1)``, strictly increasing.
        chunk: rows scored at a time; the result does not depend on it.

    The threshold is set once, on all pairs (the ``(k+1)``-th highest impostor score, ``k = ⌊fmr ·
    N_imp⌋``), and kept while images are rejected, as quality-assessment evaluations of biometric
    samples do: the curve then shows only whether the rejected images were the ones causing false
    non-matches. At a share ``f`` the ``⌊f · N⌋`` images of lowest score are rejected (equal scores in
    index order, the lower index first), and every pair with a rejected image is dropped. FNMR is the
    share of the remaining genuine pairs whose score is not above the threshold (``NaN`` when none
    remain); ``fmr`` is the share of the remaining impostor pairs above it.

    Returns, for one ranking, a dict with ``fractions``, ``rejected`` (images), ``fnmr``, ``fmr``
    (lists, one entry per share), ``area`` (the trapezoid area under FNMR over ``fractions``, the
    single number for a table; lower is better, and it spans only the range the fractions cover),
    ``threshold``, ``fmr_target``, ``num_genuine`` and ``num_impostor`` of the full set; for a
    mapping, ``{name: that dict}``.
    """
    e, y, n_gen, n_imp = _setup(embeddings, labels, chunk)
    n = e.shape[0]
    single = not isinstance(rank_scores, Mapping)
    rankings = {"": rank_scores} if single else dict(rank_scores)
    if not rankings:
        raise ValueError("rank_scores is an empty mapping: give at least one ranking")
    scores = {name: _values(v, n, "rank_scores" if single else f"rank_scores[{name!r}]") for name, v in rankings.items()}
    fmr = float(fmr)
    if not 0 < fmr <= 1:
        raise ValueError(f"fmr must lie in (0, 1], got {fmr}")
    if fmr * n_imp < 1 - _EPS:
        raise ValueError(f"fmr {fmr:g} allows less than one of the {n_imp} impostor pairs; "
                         f"the smallest measurable is {1 / n_imp:.3g}")
    fr = np.asarray(fractions, dtype=np.float64).reshape(-1)
    if fr.size == 0 or not np.all(np.isfinite(fr)) or np.any(fr < 0) or np.any(fr >= 1):
        raise ValueError(f"fractions must be shares in [0, 1), got {fr.tolist()}")
    if np.any(np.diff(fr) <= 0):
        raise ValueError(f"fractions must be strictly increasing, got {fr.tolist()}")
    k = int(np.floor(fmr * n_imp * (1 + _EPS)))
    k_keep = min(n_imp, k + 1)
    gen_s, gen_i, gen_j = [], [], []
    top = (np.empty(0, np.float32), np.empty(0, np.int64), np.empty(0, np.int64))
    for a, b, block, upper, same in _blocks(e, y, chunk):
        g = upper & same
        r, c = np.nonzero(g)
        gen_s.append(block[g])
        gen_i.append(r + a)
        gen_j.append(c + a)
        # only impostors above the lowest kept score can still enter the top (ties with it never
        # matter: the threshold is at least that score, and a false match lies strictly above it)
        floor = top[0].min() if len(top[0]) >= k_keep else -np.inf
        r, c = np.nonzero(upper & ~same & (block > floor))
        top = _keep_top(top, (block[r, c], r + a, c + a), k_keep)
    gen_s, gen_i, gen_j = np.concatenate(gen_s), np.concatenate(gen_i), np.concatenate(gen_j)
    order = np.argsort(top[0], kind="stable")[::-1]
    t = float(top[0][order][k]) if k < n_imp else float("-inf")
    fm = top[0] > t  # the false matches at t: all among the kept scores, as at most k lie above it
    fm_i, fm_j = top[1][fm], top[2][fm]
    miss = gen_s <= t
    rejected = [int(np.floor(f * n * (1 + _EPS))) for f in fr]
    out = {}
    for name, s in scores.items():
        pos = np.empty(n, dtype=np.int64)
        pos[np.argsort(s, kind="stable")] = np.arange(n)  # rejection order
        g_first = np.minimum(pos[gen_i], pos[gen_j])  # a pair goes with its first-rejected image
        f_first = np.minimum(pos[fm_i], pos[fm_j])
        fnmr, fmr_left = [], []
        for m in rejected:
            kept = g_first >= m
            n_g = int(kept.sum())
            n_i = (n - m) * (n - m - 1) // 2 - n_g
            fnmr.append(float(miss[kept].mean()) if n_g else float("nan"))
            fmr_left.append(float(np.sum(f_first >= m)) / n_i if n_i else float("nan"))
        out[name] = {"fractions": fr.tolist(), "rejected": rejected, "fnmr": fnmr, "fmr": fmr_left,
                     "area": float(np.trapezoid(fnmr, fr)) if fr.size > 1 else 0.0,
                     "threshold": t, "fmr_target": fmr, "num_genuine": int(n_gen), "num_impostor": int(n_imp)}
    return out[""] if single else out

