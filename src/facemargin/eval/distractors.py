"""Identification among distractors (the MegaFace protocol): rank-1 against the distractor count.

A *search* looks for one true match among competitors.  Two forms:

* **MegaFace form** (no gallery given): the probe set holds several images per identity; every
  ordered pair ``(g, p)`` of two different images of one identity is a search of ``p`` for ``g``,
  and the competitors are the distractors only (as in MegaFace challenge 1, where each FaceScrub
  image in turn is added to the distractor set and the identity's other images are probes).
* **Gallery form**: probes search a labelled gallery; the true score is the best score over the
  gallery images of the probe's identity, and the competitors are the gallery images of other
  identities plus the distractors.

The rank of a search is ``1 +`` the number of competitors scoring at least the true score (ties
count against the search).  The first ``n`` distractors are used for each count ``n`` of
``counts`` (by default 10, 100, ..., and the full set), so the curve is nested like MegaFace's.

**Memory-bounded search.**  The distractors are read once, a chunk at a time (a ``numpy.memmap``
of a ``.npy`` file works), and for each probe only its ``max_rank`` best distractor scores are
kept (a running top-k, saved at each count).  That is enough to know every rank up to
``max_rank`` exactly: a search has rank ``<= k`` exactly when fewer than ``k`` competitors reach
its true score.  Memory is ``O(probes x (max_rank + chunk))`` whatever the number of distractors;
scores are float32 cosines.  :class:`NpyRows` reads a ``.npy`` file of distractor embeddings a
chunk at a time with plain reads, so not even the page cache of a memory map is held.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .verification import _to_numpy

__all__ = ["identify_with_distractors", "distractor_counts", "NpyRows"]


def distractor_counts(n: int) -> List[int]:
    """``10, 100, ...`` up to ``n``, and ``n`` itself: the MegaFace x-axis."""
    if n < 1:
        raise ValueError(f"need at least one distractor, got {n}")
    out, c = [], 10
    while c < n:
        out.append(c)
        c *= 10
    return out + [int(n)]


def _unit(x: np.ndarray, name: str, start: int = 0) -> torch.Tensor:
    t = torch.from_numpy(np.array(x, dtype=np.float32))  # a copy: memory-mapped rows stay untouched
    bad = ~torch.isfinite(t).all(dim=1)
    if bad.any():
        raise ValueError(f"{name} has non-finite values (NaN or inf) in row {start + int(torch.nonzero(bad)[0])}")
    return torch.nn.functional.normalize(t, dim=1, eps=1e-12)


def _matrix(x, name: str):
    # arrays, memory maps and row readers (anything with .shape and row slicing) are used as they are
    a = x if isinstance(x, (np.ndarray, NpyRows)) else _to_numpy(x, name)
    if len(a.shape) != 2 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) array, got shape {tuple(a.shape)}")
    return a


class NpyRows:
    """Rows of a 2-D ``.npy`` file read on demand with plain file reads (no memory map).

    ``rows[a:b]`` reads rows ``a..b-1`` into a new array, so a search over a file of any size
    holds only the chunk it works on; ``shape`` and ``dtype`` come from the header.
    """

    def __init__(self, path):
        from pathlib import Path

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"embedding file not found: {self.path}")
        with open(self.path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(f)
            except ValueError as e:
                raise ValueError(f"{self.path} is not a .npy file: {e}") from None
            self.offset = f.tell()
        if len(shape) != 2 or fortran or dtype.hasobject:
            raise ValueError(f"{self.path}: expected a C-ordered (N, D) numeric array, got shape {shape}, dtype {dtype}")
        self.shape, self.dtype = tuple(int(v) for v in shape), dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("NpyRows reads contiguous row slices only")
        a, b, _ = key.indices(self.shape[0])
        n = max(b - a, 0)
        row = self.shape[1] * self.dtype.itemsize
        with open(self.path, "rb") as f:
            f.seek(self.offset + a * row)
            out = np.fromfile(f, dtype=self.dtype, count=n * self.shape[1])
        if out.size != n * self.shape[1]:
            raise ValueError(f"{self.path} is truncated: rows {a}..{b - 1} could not be read")
        return out.reshape(n, self.shape[1])


def identify_with_distractors(probe_emb, probe_labels, distractors, gallery_emb=None, gallery_labels=None,
                              counts: Optional[Sequence[int]] = None, max_rank: int = 10,
                              memory_mb: int = 256, progress: bool = False) -> Dict:
    """Rank-1 and the CMC up to ``max_rank`` for each distractor count (module docstring).

    Returns ``{"counts": [...], "rank1": {n: share}, "cmc": {n: [share at rank 1..max_rank]},
    "num_searches", "num_probes", "num_distractors", "max_rank", "form"}``.
    ``memory_mb`` bounds the score block held at once.
    """
    P = _unit(_matrix(probe_emb, "probe_emb"), "probe_emb")
    pl = _to_numpy(probe_labels, "probe_labels").reshape(-1)
    if len(pl) != len(P):
        raise ValueError(f"probe_labels has {len(pl)} entries but probe_emb has {len(P)} rows")
    D = _matrix(distractors, "distractors")
    if D.shape[1] != P.shape[1]:
        raise ValueError(f"distractors are {D.shape[1]}-D but the probes are {P.shape[1]}-D")
    n_d = D.shape[0]
    counts = distractor_counts(n_d) if counts is None else sorted({int(c) for c in counts})
    if not counts or counts[0] < 1 or counts[-1] > n_d:
        raise ValueError(f"distractor counts must lie in 1..{n_d} (the number of distractors), got {counts}")
    K = int(max_rank)
    if K < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")

    # the searches: (probe row, true score, competitors from the gallery reaching it)
    if gallery_emb is None:
        form = "megaface"
        p_list, true_list = [], []
        for lab in np.unique(pl):  # one identity at a time: memory O(images of one identity^2)
            rows = np.flatnonzero(pl == lab)
            if len(rows) < 2:
                continue
            S = (P[rows] @ P[rows].T).numpy()
            pi, gi = np.nonzero(~np.eye(len(rows), dtype=bool))  # probe pi searches for gi
            p_list.append(rows[pi])
            true_list.append(S[pi, gi])
        p_idx = np.concatenate(p_list) if p_list else np.zeros(0, np.int64)
        true = np.concatenate(true_list) if true_list else np.zeros(0, np.float32)
        g_count = np.zeros(len(p_idx), dtype=np.int64)
    else:
        form = "gallery"
        G = _unit(_matrix(gallery_emb, "gallery_emb"), "gallery_emb")
        gl = _to_numpy(gallery_labels, "gallery_labels").reshape(-1)
        if len(gl) != len(G):
            raise ValueError(f"gallery_labels has {len(gl)} entries but gallery_emb has {len(G)} rows")
        if G.shape[1] != P.shape[1]:
            raise ValueError(f"gallery is {G.shape[1]}-D but the probes are {P.shape[1]}-D")
        S = (P @ G.T).numpy()
        mate = pl[:, None] == gl[None, :]
        p_idx = np.flatnonzero(mate.any(axis=1))
        true = np.where(mate[p_idx], S[p_idx], -np.inf).max(axis=1)
        g_count = (np.where(mate[p_idx], -np.inf, S[p_idx]) >= true[:, None]).sum(axis=1)
    if len(p_idx) == 0:
        raise ValueError("no searches: every identity needs two probe images (MegaFace form) or a gallery image")

    # running top-K distractor scores per probe, saved at each count
    n_p = len(P)
    # per chunk of c rows: the rows read, as float32, normalised (3 c D) and the scores with the
    # running top-K beside them (2 p_block (c + K)), in 4-byte floats, within memory_mb
    budget = max(int(memory_mb), 1) * (1 << 20) // 4
    dim = P.shape[1]
    p_block = min(n_p, max(1, budget // (4 * (K + 1024))))
    chunk = max(1024, (budget - 2 * p_block * K) // (3 * dim + 2 * p_block))
    top = torch.full((n_p, K), -np.inf)
    saved = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=counts[-1], desc="distractors", unit="face", unit_scale=True)
    pos = 0
    with torch.no_grad():
        for n in counts:
            while pos < n:
                end = min(pos + chunk, n)
                Dc = _unit(D[pos:end], "distractors", pos)
                for a in range(0, n_p, p_block):
                    s = P[a:a + p_block] @ Dc.T
                    merged = torch.cat([top[a:a + p_block], s], dim=1)
                    top[a:a + p_block] = torch.topk(merged, K, dim=1).values
                if bar is not None:
                    bar.update(end - pos)
                pos = end
            saved[n] = top.clone()
    if bar is not None:
        bar.close()

    rank1, cmc = {}, {}
    for n in counts:
        t = saved[n].numpy()[p_idx]  # (searches, K), descending
        d_count = (t >= true[:, None]).sum(axis=1)  # exact while < K
        rank = 1 + g_count + d_count
        curve = [float(np.mean(rank <= k)) for k in range(1, K + 1)]
        cmc[n] = curve
        rank1[n] = curve[0]
    return {
        "form": form,
        "counts": list(counts),
        "rank1": rank1,
        "cmc": cmc,
        "num_searches": int(len(p_idx)),
        "num_probes": int(n_p),
        "num_distractors": int(n_d),
        "max_rank": K,
    }
