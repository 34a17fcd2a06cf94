"""From per-image embeddings to template features, and cosine scores of template pairs.

An image feature is the embedding (plus its mirror image's with flip fusion), optionally divided
by its norm and multiplied by the detector's faceness score; the images of one media are averaged,
the media of one template summed, and the sum L2-normalised.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch

__all__ = ["IJBOptions", "image_features", "pool_templates", "score_pairs"]


@dataclass(frozen=True)
class IJBOptions:
    """How image features are made: flip fusion, norm weighting, faceness weighting."""

    flip: bool = True
    norm_weight: bool = True
    faceness_weight: bool = True

    @property
    def code(self) -> str:
        """insightface's short name: F flip, N norm kept (weights), D detector (faceness) score."""
        return f"F{int(self.flip)}N{int(self.norm_weight)}D{int(self.faceness_weight)}"

    def describe(self) -> str:
        return (f"flip {'on' if self.flip else 'off'}, norm weighting {'on' if self.norm_weight else 'off'}, "
                f"faceness weighting {'on' if self.faceness_weight else 'off'}")


def image_features(emb, emb_flip=None, faceness=None, options: IJBOptions = IJBOptions()) -> np.ndarray:
    """Per-image features (float32) for pooling, with ``options`` (step 2 of the package docstring)."""
    f = np.asarray(emb, dtype=np.float32)
    if options.flip:
        if emb_flip is None:
            raise ValueError("flip is on but no flipped-image embeddings were given")
        f = f + np.asarray(emb_flip, dtype=np.float32)
    if not options.norm_weight:
        f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    if options.faceness_weight:
        if faceness is None:
            raise ValueError("faceness weighting is on but no faceness scores were given")
        f = f * np.asarray(faceness, dtype=np.float32)[:, None]
    return f


def _check_rows(name: str, a, n: int) -> None:
    if a is not None and (a.ndim != 2 or a.shape[0] != n):
        raise ValueError(f"{name} must be ({n}, D) (one row per image of the list), got shape {tuple(a.shape)}")


def pool_templates(emb, templates, medias, emb_flip=None, faceness=None, options: IJBOptions = IJBOptions(),
                   select=None, chunk: int = 65536) -> Tuple[np.ndarray, np.ndarray]:
    """Template features: media averages summed per template, L2-normalised (float32).

    ``emb`` (and ``emb_flip``) are ``(N, D)`` per-image embeddings (NumPy, memmap or torch) in the
    order of ``templates``/``medias`` (``(N,)`` ids); ``faceness`` the ``(N,)`` scores.  Returns
    ``(template_ids, features)`` with the ids sorted ascending.  ``select``: only these templates
    (each must have images, else ``ValueError`` naming it).  The image features are never formed:
    each image gets the scalar weight that pooling gives it (faceness / images in its media /
    own norm when norm weighting is off) and one sparse product per array sums the templates
    (float32); ``chunk`` rows at a time are read to get the norms.  Memory is O(#templates x D)
    beyond the inputs.
    """
    t = np.asarray(templates, dtype=np.int64).reshape(-1)
    m = np.asarray(medias, dtype=np.int64).reshape(-1)
    n = len(t)
    if len(m) != n:
        raise ValueError(f"templates has {n} entries but medias has {len(m)}")
    if n == 0:
        raise ValueError("no images to pool")
    emb = emb.numpy() if isinstance(emb, torch.Tensor) else emb
    emb_flip = emb_flip.numpy() if isinstance(emb_flip, torch.Tensor) else emb_flip
    _check_rows("emb", emb, n)
    _check_rows("emb_flip", emb_flip, n)
    if emb_flip is not None and emb_flip.shape != emb.shape:
        raise ValueError(f"emb_flip has shape {emb_flip.shape} but emb has {emb.shape}")
    fs = None if faceness is None else np.asarray(faceness, dtype=np.float32).reshape(-1)
    if fs is not None and len(fs) != n:
        raise ValueError(f"faceness has {len(fs)} entries but there are {n} images")
    rows = np.arange(n)
    if select is not None:
        sel = np.unique(np.asarray(select, dtype=np.int64))
        present = np.isin(sel, t)
        if not present.all():
            raise ValueError(f"template {int(sel[~present][0])} has no images ({int((~present).sum())} selected "
                             f"template(s) without images)")
        rows = np.flatnonzero(np.isin(t, sel))
    tr, mr = t[rows], m[rows]
    # one group per (template, media); each image weighs 1/(images in its media), so summing the
    # weighted features of a template sums its media averages: one sparse product per array
    mlo, mhi = int(mr.min()), int(mr.max())
    key = (tr - int(tr.min())) * (mhi - mlo + 1) + (mr - mlo)
    _, g_of_row, g_count = np.unique(key, return_inverse=True, return_counts=True)
    w = 1.0 / g_count[g_of_row.reshape(-1)].astype(np.float64)
    if options.faceness_weight:
        if fs is None:
            raise ValueError("faceness weighting is on but no faceness scores were given")
        w *= fs[rows]
    if options.flip and emb_flip is None:
        raise ValueError("flip is on but no flipped-image embeddings were given")
    if not options.norm_weight:  # each image feature divided by its own norm first
        norms = np.empty(len(rows))
        raw = IJBOptions(flip=options.flip, norm_weight=True, faceness_weight=False)
        for a in range(0, len(rows), chunk):
            r = rows[a:a + chunk]
            f = image_features(emb[r], None if emb_flip is None else emb_flip[r], None, raw)
            norms[a:a + chunk] = np.linalg.norm(f, axis=1)
        w /= np.maximum(norms, 1e-12)
    tids, t_of_row = np.unique(tr, return_inverse=True)
    t_of_row = t_of_row.reshape(-1)
    order = np.argsort(t_of_row, kind="stable")
    crow = np.concatenate([[0], np.cumsum(np.bincount(t_of_row, minlength=len(tids)))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CSR "beta" notice; read-only memmaps are only read
        W = torch.sparse_csr_tensor(torch.from_numpy(crow.astype(np.int64)), torch.from_numpy(rows[order].astype(np.int64)),
                                    torch.from_numpy(w[order].astype(np.float32)), size=(len(tids), n))
        tmpl = torch.sparse.mm(W, torch.from_numpy(np.asarray(emb, dtype=np.float32)))
        if options.flip:
            tmpl += torch.sparse.mm(W, torch.from_numpy(np.asarray(emb_flip, dtype=np.float32)))
    bad = ~torch.isfinite(tmpl).all(dim=1)
    if bad.any():
        raise ValueError(f"template {int(tids[int(torch.nonzero(bad)[0])])} has a non-finite feature: an image embedding "
                         f"or faceness score of it is NaN or inf")
    tmpl = torch.nn.functional.normalize(tmpl.double(), dim=1, eps=1e-12)
    return tids, tmpl.float().numpy()


def _template_index(tids: np.ndarray, wanted: np.ndarray, what: str) -> np.ndarray:
    """Row of each id of ``wanted`` in the sorted ``tids``; ``ValueError`` names an unknown one."""
    wanted = np.asarray(wanted, dtype=np.int64)
    lo, hi = int(tids[0]), int(tids[-1])
    if hi - lo <= 4 * len(tids) + 1_000_000:  # small id range: one table look-up per pair
        lut = np.full(hi - lo + 1, -1, dtype=np.int64)
        lut[tids - lo] = np.arange(len(tids))
        inside = (wanted >= lo) & (wanted <= hi)
        idx = np.full(len(wanted), -1, dtype=np.int64)
        idx[inside] = lut[wanted[inside] - lo]
        bad = idx < 0
    else:
        idx = np.minimum(np.searchsorted(tids, wanted), len(tids) - 1)
        bad = tids[idx] != wanted
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what} {i}: template {int(wanted[i])} has no template feature (no images)")
    return idx


def _used_rows(tids: np.ndarray, wanted: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Rows (in ``tids``) of the distinct ids of ``wanted``, and each entry's position among them."""
    lo, hi = int(min(tids[0], wanted.min())), int(max(tids[-1], wanted.max()))
    if hi - lo > 8 * (len(tids) + len(wanted)) + 1_000_000:  # sparse ids: sort-based
        rows = _template_index(tids, wanted, "pair")
        u, pos = np.unique(rows, return_inverse=True)
        return u, pos.reshape(-1).astype(np.int32)
    w = wanted - lo  # one pass over the pairs per step: offsets, counts, table look-up
    used = np.bincount(w, minlength=hi - lo + 1) > 0
    row_of = np.full(hi - lo + 1, -1, dtype=np.int64)
    row_of[tids - lo] = np.arange(len(tids))
    unknown = used & (row_of < 0)
    if unknown.any():
        _template_index(tids, wanted, "pair")  # raises, naming the first pair with an unknown id
    ids = np.flatnonzero(used)
    pos_of = np.zeros(hi - lo + 1, dtype=np.int32)
    pos_of[ids] = np.arange(len(ids), dtype=np.int32)
    return row_of[ids], pos_of[w]


def score_pairs(tids, feats, t1, t2, block_elems: int = 1 << 24, progress: bool = False) -> np.ndarray:
    """Cosine scores (float32) of template pairs ``(t1[i], t2[i])`` from :func:`pool_templates`.

    When the pairs use few distinct first and second templates (as in IJB, gallery against
    probes), blocks of first templates are multiplied by all distinct second templates at once
    (``block_elems`` scores per block) and each pair reads its score from the product; otherwise
    the pairs are scored row by row.  Both give the same float32 dot products.
    """
    tids = np.asarray(tids, dtype=np.int64)
    t1 = np.asarray(t1, dtype=np.int64).reshape(-1)
    t2 = np.asarray(t2, dtype=np.int64).reshape(-1)
    if len(t1) != len(t2):
        raise ValueError(f"t1 has {len(t1)} entries but t2 has {len(t2)}")
    if len(t1) == 0:
        raise ValueError("no pairs to score")
    F = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
    # the templates used on each side, renumbered densely, and each pair's positions in them
    (u1, j1), (u2, j2) = _used_rows(tids, t1), _used_rows(tids, t2)
    out = np.empty(len(t1), dtype=np.float32)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(t1), desc="score pairs", unit="pair", unit_scale=True)
    with torch.no_grad():
        if len(u1) * len(u2) <= 8 * len(t1):
            F2t = F[torch.from_numpy(u2)].T.contiguous()  # (D, U2)
            block = max(1, block_elems // max(len(u2), 1))
            for a in range(0, len(u1), block):
                sel = np.flatnonzero((j1 >= a) & (j1 < a + block))
                if sel.size == 0:
                    continue
                S = (F[torch.from_numpy(u1[a:a + block])] @ F2t).numpy()  # (<=block, U2)
                flat = (j1[sel] - a).astype(np.int64) * S.shape[1] + j2[sel]
                out[sel] = np.take(S.reshape(-1), flat)  # a flat take is faster than 2-D fancy indexing
                if bar is not None:
                    bar.update(len(sel))
        else:
            step = 65536
            for a in range(0, len(t1), step):
                x = F[torch.from_numpy(u1[j1[a:a + step]])]
                y = F[torch.from_numpy(u2[j2[a:a + step]])]
                out[a:a + step] = (x * y).sum(1).numpy()
                if bar is not None:
                    bar.update(len(x))
    if bar is not None:
        bar.close()
    return out
