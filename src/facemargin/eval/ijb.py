"""IJB-B and IJB-C template protocols: 1:1 verification and 1:N identification.

The layout is the one insightface distributes (``IJB_release/IJBC``), with ``ds`` = ``ijbb`` or
``ijbc``::

    ROOT/meta/<ds>_face_tid_mid.txt            image template_id media_id       (one line per image)
    ROOT/meta/<ds>_template_pair_label.txt     template_1 template_2 label      (1 = same subject)
    ROOT/meta/<ds>_name_5pts_score.txt         image x1 y1 ... x5 y5 faceness   (same images, same order)
    ROOT/loose_crop/<image>                    the face crops the landmarks refer to
    ROOT/meta/ijbc_1N_gallery_G1.csv, ..._G2.csv, ijbc_1N_probe_mixed.csv     (1:N; IJB-B: ijbb_1N_gallery_S1.csv,
                                                                              ..._S2.csv, ijbb_1N_probe_mixed.csv)

``ROOT`` may also be the folder above (``IJB_release``) holding ``IJBB/`` and ``IJBC/``.

The protocol, step by step (as insightface's ``eval_ijbc.py`` computes it):

1. **Alignment**: each crop is warped to the arcface 5-point template (112x112 for the usual
   backbones) by a least-squares similarity transform, then normalised like the training images.
2. **Image feature**: ``f(img) + f(flipped img)`` (flip on) or ``f(img)`` (flip off), **not**
   L2-normalised, so the feature norm weights the image in the template (norm weighting on; off
   divides by the norm), multiplied by the detector's faceness score (faceness weighting on).
3. **Template**: the image features of one media (the frames of one video, or a single still) are
   averaged; the media features of a template are summed; the sum is L2-normalised.
4. **1:1 score**: the cosine of the two template features.  TAR is reported at FAR 1e-6 ... 1e-1,
   read at the ROC point whose FAR is nearest each level on the ROC that scikit-learn returns by
   default, as the published tables are (:func:`facemargin.eval.roc.tar_at_far_nearest`); the
   conservative reading (largest TAR with FAR at most the level) is reported beside it.
5. **1:N**: probes are the mixed-media probe templates; the gallery is G1, G2 (IJB-B: S1, S2), both
   together, or each one in turn with the two results pooled (CMC and TPIR both count every
   mated search of the two galleries once).  See :func:`identify_open_set` for the ranks and the
   TPIR@FPIR rule: FPIR ``f`` allows ``floor(f N)`` of the ``N`` non-mated probes to alarm, a
   search alarming when its best score is above the threshold, and TPIR counts the mated probes
   found at rank 1 above it.

   This open-set reading is not the one of insightface's ``recognition/_evaluation_/ijb/ijb_1n.py``.
   That script searches every probe in G1 and G2 together (every probe is mated), takes the
   threshold from all non-mated pairs (each probe against every gallery template of another
   subject, not one best score per non-mated probe): the ``ceil(f Q)``-th largest of those
   scores, ``Q`` the number of probes; and counts a mated probe when its own score is above the
   threshold, with no rank-1 condition.  Its top-k ranks break ties in sort order where this
   module counts them against the probe.  ``tpir_rule="insightface"`` gives that reading, and
   the results always carry it as ``tpir_at_fpir_insightface``.

Embeddings are computed once per model and image list and cached as ``.npy`` (plain and flipped
separately, so flip on/off needs no second pass); pooling and pair scoring are vectorised.
"""
from __future__ import annotations

import csv
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .roc import (IJB_FARS, _as_issame, _as_scores, _roc_counts, _thin_mask, auc, resolvable_fars, tar_at_far,
                  tar_at_far_nearest)

__all__ = [
    "IJBMeta",
    "IJBOptions",
    "find_ijb_root",
    "read_ijb",
    "read_ijb_1n",
    "check_images",
    "image_features",
    "pool_templates",
    "score_pairs",
    "verification_1to1",
    "identify_open_set",
    "ijb_1to1",
    "ijb_1toN",
    "IJBImages",
    "embed_ijb",
    "GALLERIES",
    "TPIR_RULES",
    "model_fingerprint",
]

DATASETS = ("IJBB", "IJBC")
#: gallery choices of the 1:N protocol
GALLERIES = ("G1", "G2", "both", "average")
#: FPIR levels of the published 1:N tables
IJB_FPIRS = (0.01, 0.1)
PathLike = Union[str, os.PathLike]


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
def _dataset(name: str) -> str:
    d = str(name).upper().replace("-", "")
    if d not in DATASETS:
        raise ValueError(f"dataset must be IJBB or IJBC, got {name!r}")
    return d


def find_ijb_root(root: PathLike, dataset: str) -> Path:
    """The folder holding ``meta/`` for ``dataset``: ``root`` itself or ``root/<dataset>``."""
    d = _dataset(dataset)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"IJB root not found: {root}")
    meta = f"meta/{d.lower()}_face_tid_mid.txt"
    for cand in (root, root / d):
        if (cand / meta).is_file():
            return cand
    raise FileNotFoundError(f"{root}: no {meta} (looked in {root} and {root / d}); expected the insightface "
                            f"IJB layout with meta/ and loose_crop/")


def _read_int_table(path: Path, cols: int) -> np.ndarray:
    """Whitespace-separated integer table with ``cols`` columns, fast; errors name the line."""
    if not path.is_file():
        raise FileNotFoundError(f"missing IJB file: {path}")
    text = path.read_bytes()
    import warnings

    n_lines = text.count(b"\n") + (0 if text.endswith(b"\n") or not text else 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            flat = np.fromstring(text, dtype=np.int64, sep=" ")  # any whitespace separates; stops at a bad token
        except ValueError:
            flat = None
    if flat is not None and flat.size == n_lines * cols:
        return flat.reshape(n_lines, cols)
    rows = []  # slow path: blank lines, or a line to report
    for i, ln in enumerate(text.decode("utf-8", "replace").splitlines(), 1):
        parts = ln.split()
        if not parts:
            continue
        if len(parts) != cols:
            raise ValueError(f"{path}, line {i}: expected {cols} integers, got {len(parts)} fields: {ln.strip()!r}")
        try:
            rows.append([int(p) for p in parts])
        except ValueError:
            raise ValueError(f"{path}, line {i}: expected {cols} integers, got {ln.strip()!r}") from None
    return np.array(rows, dtype=np.int64).reshape(-1, cols)


def _slow_image_lists(tid_path: Path, lmk_path: Path):
    """Line by line, naming the first bad line."""
    names, tids, mids = [], [], []
    with open(tid_path, encoding="utf-8") as f:
        for i, ln in enumerate(f, 1):
            p = ln.split()
            if not p:
                continue
            if len(p) != 3:
                raise ValueError(f"{tid_path}, line {i}: expected 'image template_id media_id', got {ln.strip()!r}")
            try:
                tids.append(int(p[1]))
                mids.append(int(p[2]))
            except ValueError:
                raise ValueError(f"{tid_path}, line {i}: template and media ids must be integers, "
                                 f"got {ln.strip()!r}") from None
            names.append(p[0])
    if not names:
        raise ValueError(f"{tid_path} lists no images")
    lmk = np.empty((len(names), 11), dtype=np.float32)
    n = 0
    with open(lmk_path, encoding="utf-8") as f:
        for i, ln in enumerate(f, 1):
            p = ln.split()
            if not p:
                continue
            if len(p) != 12:
                raise ValueError(f"{lmk_path}, line {i}: expected 'image' + 10 landmark values + faceness score "
                                 f"(12 fields), got {len(p)}")
            if n >= len(names):
                raise ValueError(f"{lmk_path} lists more images than {tid_path} ({len(names)})")
            if p[0] != names[n]:
                raise ValueError(f"{lmk_path}, line {i}: image {p[0]!r} but {tid_path} has {names[n]!r} at that "
                                 f"position; the two lists must name the same images in the same order")
            try:
                lmk[n] = [float(v) for v in p[1:]]
            except ValueError:
                raise ValueError(f"{lmk_path}, line {i}: landmarks and score must be numbers, got {ln.strip()!r}") from None
            n += 1
    if n != len(names):
        raise ValueError(f"{lmk_path} lists {n} images but {tid_path} lists {len(names)}")
    if not np.isfinite(lmk).all():
        i = int(np.flatnonzero(~np.isfinite(lmk).all(axis=1))[0])
        raise ValueError(f"{lmk_path}: non-finite landmark or score for image {names[i]!r}")
    return names, np.array(tids, dtype=np.int64), np.array(mids, dtype=np.int64), lmk


def _token_table(path: Path, cols: int) -> Optional[np.ndarray]:
    """All whitespace-separated tokens as an ``(n, cols)`` bytes array, or None unless every line has ``cols``."""
    text = path.read_bytes()
    tok = text.split()
    n_lines = text.count(b"\n") + (0 if text.endswith(b"\n") or not text else 1)
    if not tok or len(tok) != n_lines * cols:
        return None
    return np.array(tok).reshape(-1, cols)


def _fast_image_lists(tid_path: Path, lmk_path: Path):
    """The two image lists parsed in bulk, or None when anything is off (the slow path then names it)."""
    try:
        a, b = _token_table(tid_path, 3), _token_table(lmk_path, 12)
        if a is None or b is None or len(a) != len(b) or not np.array_equal(a[:, 0], b[:, 0]):
            return None
        lmk = b[:, 1:].astype(np.float32)
        out = a[:, 0].astype(str), a[:, 1].astype(np.int64), a[:, 2].astype(np.int64), lmk
    except (ValueError, UnicodeError, OverflowError):
        return None
    return out if np.isfinite(lmk).all() else None


@dataclass
class IJBMeta:
    """The 1:1 files of an IJB set, read and checked (see :func:`read_ijb`)."""

    root: Path
    dataset: str
    names: np.ndarray          # (N,) image file names, relative to loose_crop/
    templates: np.ndarray      # (N,) int64 template id of each image
    medias: np.ndarray         # (N,) int64 media id of each image
    landmarks: np.ndarray      # (N, 5, 2) float32, image x, y
    faceness: np.ndarray       # (N,) float32 detector score
    pair_t1: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pair_t2: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pair_label: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    @property
    def image_dir(self) -> Path:
        return self.root / "loose_crop"

    def file(self, suffix: str) -> Path:
        return self.root / "meta" / f"{self.dataset.lower()}_{suffix}"


def read_ijb(root: PathLike, dataset: str, pairs: bool = True) -> IJBMeta:
    """Read and check an IJB set's image list, templates, landmarks and (with ``pairs``) 1:1 pairs.

    Errors name the file and line: a line of the wrong shape, image lists that disagree between
    ``face_tid_mid`` and ``name_5pts_score``, a label other than 0/1, and a pair whose template
    has no images (an unknown template id).
    """
    d = _dataset(dataset)
    root = find_ijb_root(root, d)
    meta = IJBMeta(root=root, dataset=d, names=np.zeros(0, str), templates=np.zeros(0, np.int64),
                   medias=np.zeros(0, np.int64), landmarks=np.zeros((0, 5, 2), np.float32),
                   faceness=np.zeros(0, np.float32))
    tid_path = meta.file("face_tid_mid.txt")
    lmk_path = meta.file("name_5pts_score.txt")
    for path in (tid_path, lmk_path):
        if not path.is_file():
            raise FileNotFoundError(f"missing IJB file: {path}")
    lists = _fast_image_lists(tid_path, lmk_path) or _slow_image_lists(tid_path, lmk_path)
    names, tids, mids, lmk = lists
    meta.names = np.asarray(names)
    meta.templates = tids
    meta.medias = mids
    meta.landmarks = lmk[:, :10].reshape(-1, 5, 2).copy()
    meta.faceness = lmk[:, 10].copy()
    if pairs:
        pair_path = meta.file("template_pair_label.txt")
        tab = _read_int_table(pair_path, 3)
        if len(tab) == 0:
            raise ValueError(f"{pair_path} lists no pairs")
        bad = ~np.isin(tab[:, 2], (0, 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{pair_path}, pair {i + 1}: label must be 0 or 1, got {int(tab[i, 2])}")
        known = np.unique(meta.templates)
        for c in (0, 1):
            unknown = ~np.isin(tab[:, c], known)
            if unknown.any():
                i = int(np.flatnonzero(unknown)[0])
                raise ValueError(f"{pair_path}, pair {i + 1}: template {int(tab[i, c])} has no images in {tid_path} "
                                 f"({int(unknown.sum())} pair(s) name unknown templates)")
        meta.pair_t1, meta.pair_t2 = tab[:, 0].copy(), tab[:, 1].copy()
        meta.pair_label = tab[:, 2].astype(bool)
    return meta


def _read_template_subjects(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """``TEMPLATE_ID,SUBJECT_ID,...`` CSV (header, one row per image) -> unique templates, subjects."""
    if not path.is_file():
        raise FileNotFoundError(f"missing IJB 1:N file: {path}")
    t, s = [], []
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None:
            raise ValueError(f"{path} is empty")
        for i, row in enumerate(rows, 2):
            if not row:
                continue
            try:
                t.append(int(row[0]))
                s.append(int(row[1]))
            except (ValueError, IndexError):
                raise ValueError(f"{path}, line {i}: expected TEMPLATE_ID,SUBJECT_ID,... integers, got {row!r}") from None
    if not t:
        raise ValueError(f"{path} lists no templates")
    t, s = np.array(t, np.int64), np.array(s, np.int64)
    ut, first = np.unique(t, return_index=True)
    us = s[first]
    # one subject per template
    inv = np.searchsorted(ut, t)
    clash = s != us[inv]
    if clash.any():
        i = int(np.flatnonzero(clash)[0])
        raise ValueError(f"{path}: template {int(t[i])} is listed with subjects {int(us[inv[i]])} and {int(s[i])}")
    return ut, us


def read_ijb_1n(meta: IJBMeta) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """The 1:N files: ``{"G1": (templates, subjects), "G2": ..., "probe": ...}``.

    IJB-C names its galleries G1/G2 and IJB-B S1/S2; both are returned as ``G1``/``G2``.  Every
    template must have images in ``face_tid_mid.txt``, else a ``ValueError`` names it and the file.
    """
    ds = meta.dataset.lower()
    g = ("G1", "G2") if meta.dataset == "IJBC" else ("S1", "S2")
    files = {"G1": f"{ds}_1N_gallery_{g[0]}.csv", "G2": f"{ds}_1N_gallery_{g[1]}.csv", "probe": f"{ds}_1N_probe_mixed.csv"}
    known = np.unique(meta.templates)
    out = {}
    for key, name in files.items():
        path = meta.root / "meta" / name
        t, s = _read_template_subjects(path)
        missing = ~np.isin(t, known)
        if missing.any():
            raise ValueError(f"{path}: template {int(t[missing][0])} has no images in "
                             f"{meta.file('face_tid_mid.txt')} ({int(missing.sum())} such template(s))")
        out[key] = (t, s)
    overlap = np.intersect1d(out["G1"][1], out["G2"][1])
    if overlap.size:
        raise ValueError(f"subjects {overlap[:5].tolist()} are in both galleries; G1 and G2 must be disjoint")
    return out


def check_images(meta: IJBMeta) -> None:
    """Raise ``FileNotFoundError`` naming the first missing crop (and how many are missing)."""
    d = meta.image_dir
    if not d.is_dir():
        raise FileNotFoundError(f"IJB image folder not found: {d}")
    missing = [n for n in meta.names if not (d / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} IJB image(s) missing under {d}, first: {d / missing[0]}")


# ------------------------------------------------------------------------------------------------
# features, templates, scores
# ------------------------------------------------------------------------------------------------
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
    """Per-image features (float32) for pooling, with ``options`` (module docstring, step 2)."""
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
    import warnings

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


# ------------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------------
def verification_1to1(scores, labels, fars: Sequence[float] = IJB_FARS) -> Dict:
    """TAR at each FAR level (two readings), AUC and the ROC of template-pair scores.

    ``tar_at_far``: the nearest-FAR reading on the thinned ROC (how the published IJB tables are
    computed); ``tar_at_far_at_most``: the largest TAR whose FAR does not exceed the level.
    Levels finer than ``1/#impostor pairs`` are omitted.
    """
    raw = scores.numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    s = _as_scores(raw)
    y = _as_issame(labels, len(s))
    key = raw.reshape(-1) if raw.dtype == np.float32 else None  # same order, faster to sort
    fps, tps, thr, n_pos, n_neg = _roc_counts(s, y, key)  # one sort serves both readings
    keep = _thin_mask(fps, tps) if len(fps) > 2 else np.ones(len(fps), bool)
    fpr = np.concatenate([[0.0], fps / n_neg])
    tpr = np.concatenate([[0.0], tps / n_pos])
    thr = np.concatenate([[np.inf], thr])
    keep = np.concatenate([[True], keep])
    tfpr, ttpr = fpr[keep], tpr[keep]
    levels = resolvable_fars(n_neg, fars)
    return {
        "tar_at_far": {far: tar_at_far_nearest(tfpr, ttpr, far) for far in levels},
        "tar_at_far_at_most": {far: tar_at_far(fpr, tpr, far) for far in levels},
        "auc": auc(fpr, tpr),
        "num_pairs": int(len(s)),
        "num_genuine": int(y.sum()),
        "num_impostor": n_neg,
        "roc": {"fpr": fpr, "tpr": tpr, "thresholds": thr},
    }


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


# ------------------------------------------------------------------------------------------------
# the protocols, given per-image embeddings
# ------------------------------------------------------------------------------------------------
def ijb_1to1(meta: IJBMeta, emb, emb_flip=None, options: IJBOptions = IJBOptions(),
             fars: Sequence[float] = IJB_FARS, progress: bool = False) -> Dict:
    """The IJB 1:1 protocol on per-image embeddings (rows in the order of the image list)."""
    tids, feats = pool_templates(emb, meta.templates, meta.medias, emb_flip, meta.faceness, options)
    scores = score_pairs(tids, feats, meta.pair_t1, meta.pair_t2, progress=progress)
    r = verification_1to1(scores, meta.pair_label, fars)
    r.update({"dataset": meta.dataset, "options": options.describe(), "code": options.code,
              "num_templates": int(len(tids)), "scores": scores,
              "far_rule": "TAR at the ROC point with the FAR nearest each level (thinned ROC, as the published "
                          "tables); tar_at_far_at_most: largest TAR with FAR <= level"})
    return r


def _summarise_1n(res: Dict) -> Dict:
    return {k: v for k, v in res.items() if k not in ("ranks", "best_scores", "mated")}


_RULE_TEXT = {
    "open_set": "with N non-mated probes, FPIR f allows k = floor(f x N) false alarms: threshold = the (k+1)-th "
                "largest best score of the non-mated probes; alarm when score > threshold; TPIR = rank-1 and "
                "score > threshold",
    "insightface": "insightface ijb_1n.py: threshold = the ceil(f x #probes)-th largest score of all non-mated "
                   "(probe, gallery template) pairs; TPIR = own score > threshold at any rank; FPIR = non-mated "
                   "pairs above it / #probes",
}


def _pool_levels(r1: Dict, r2: Dict, key: str, rule: str) -> Dict:
    """TPIR@FPIR of two galleries pooled: every mated search and every false-alarm chance counts once."""
    out = {}
    for f in r1[key]:
        if f not in r2[key]:
            continue
        a, b = r1[key][f], r2[key][f]
        fden = "num_non_mated" if rule == "open_set" else "num_probes"
        out[f] = {"tpir": (a["identified"] + b["identified"]) / (r1["num_mated"] + r2["num_mated"]),
                  "fpir": (a["false_alarms"] + b["false_alarms"]) / (r1[fden] + r2[fden]),
                  "identified": a["identified"] + b["identified"], "false_alarms": a["false_alarms"] + b["false_alarms"]}
    return out


def ijb_1toN(meta: IJBMeta, emb, emb_flip=None, options: IJBOptions = IJBOptions(), gallery: str = "average",
             ranks: Sequence[int] = (1, 5, 10), fpirs: Sequence[float] = IJB_FPIRS,
             lists: Optional[Dict] = None, tpir_rule: str = "open_set") -> Dict:
    """The IJB 1:N protocol with mixed-media probes against ``gallery``.

    ``gallery``: ``"G1"`` or ``"G2"`` (open set: probes of the other gallery are non-mated),
    ``"both"`` (one gallery of G1 and G2 together: closed set, so the open-set TPIR@FPIR is empty),
    or ``"average"`` (G1 and G2 each in turn, each with its own thresholds).  IJB-B's S1/S2 are
    G1/G2.  In ``"average"`` the two galleries are *pooled*, CMC and TPIR alike: each is the share
    of all mated searches of both galleries (so a gallery weighs by its number of mated probes),
    and the realised FPIR is the false alarms of both over the false-alarm chances of both
    (non-mated searches; non-mated pairs' probes for the insightface reading).
    ``per_gallery`` keeps each gallery's own figures and thresholds.

    ``tpir_rule`` chooses the reading in ``tpir_at_fpir`` (see :func:`identify_open_set`);
    ``tpir_at_fpir_insightface`` always holds insightface's.  With ``gallery="both"`` the latter is
    the setup of insightface's ``ijb_1n.py`` (G1 and G2 as one gallery, every probe mated).
    """
    if gallery not in GALLERIES:
        raise ValueError(f"gallery must be one of {', '.join(GALLERIES)}, got {gallery!r}")
    if tpir_rule not in TPIR_RULES:
        raise ValueError(f"tpir_rule must be one of {', '.join(TPIR_RULES)}, got {tpir_rule!r}")
    lists = lists or read_ijb_1n(meta)
    pt, psub = lists["probe"]
    wanted = np.concatenate([pt, lists["G1"][0], lists["G2"][0]])
    tids, feats = pool_templates(emb, meta.templates, meta.medias, emb_flip, meta.faceness, options, select=wanted)

    def feats_of(t):
        return feats[_template_index(tids, t, "template")]

    P = feats_of(pt)

    def run(gt, gsub):
        return identify_open_set(P, psub, feats_of(gt), gsub, ranks=ranks, fpirs=fpirs, tpir_rule=tpir_rule)

    base = {"dataset": meta.dataset, "options": options.describe(), "code": options.code, "gallery": gallery,
            "tpir_rule": _RULE_TEXT[tpir_rule], "tpir_rule_insightface": _RULE_TEXT["insightface"]}
    if gallery in ("G1", "G2"):
        r = _summarise_1n(run(*lists[gallery]))
    elif gallery == "both":
        r = _summarise_1n(run(np.concatenate([lists["G1"][0], lists["G2"][0]]),
                              np.concatenate([lists["G1"][1], lists["G2"][1]])))
    else:
        r1, r2 = run(*lists["G1"]), run(*lists["G2"])
        n1, n2 = r1["num_mated"], r2["num_mated"]
        cmc = {k: (r1["cmc"][k] * n1 + r2["cmc"][k] * n2) / (n1 + n2) for k in r1["cmc"]}
        r = {"cmc": cmc, **{f"top{k}": v for k, v in cmc.items()},
             "tpir_at_fpir": _pool_levels(r1, r2, "tpir_at_fpir", tpir_rule),
             "tpir_at_fpir_insightface": _pool_levels(r1, r2, "tpir_at_fpir_insightface", "insightface"),
             "num_probes": r1["num_probes"], "num_mated": n1 + n2,
             "num_non_mated": r1["num_non_mated"] + r2["num_non_mated"],
             "average_rule": "pooled over G1 and G2: CMC and TPIR are shares of all mated searches of both, "
                             "FPIR of all false-alarm chances of both",
             "per_gallery": {"G1": _summarise_1n(r1), "G2": _summarise_1n(r2)}}
    r.update(base)
    return r


# ------------------------------------------------------------------------------------------------
# embedding the crops (cached)
# ------------------------------------------------------------------------------------------------
def _align_spec(input_size) -> Tuple[str, int]:
    c, h, w = input_size
    if h == w:
        return "arcface", h
    if w == round(96 * h / 112):
        return "sphereface", h
    raise ValueError(f"a model input of {h}x{w} (HxW) has no alignment template; IJB crops are aligned to the "
                     f"arcface (square) or sphereface (96x112) template")


class IJBImages(torch.utils.data.Dataset):
    """The IJB crops, aligned from their 5 landmarks and normalised as in training: ``(C, H, W)``.

    ``input_size`` is the model's ``(C, H, W)``: square inputs use the arcface template (112x112
    for the usual backbones), 96x112-style inputs the sphereface template; one channel means the
    aligned RGB crop is converted to grey (ITU-R 601 weights, as in evaluation elsewhere).
    """

    def __init__(self, meta: IJBMeta, input_size=(3, 112, 112)):
        self.meta = meta
        self.channels = int(input_size[0])
        self.template, self.size = _align_spec(input_size)

    def __len__(self) -> int:
        return len(self.meta.names)

    def __getitem__(self, i: int) -> torch.Tensor:
        from ..align import norm_crop
        from ..data.arrays import images_to_tensor, to_grey
        from ..data.images import load_image

        path = self.meta.image_dir / self.meta.names[i]
        img = load_image(path)
        crop = norm_crop(img, self.meta.landmarks[i], size=self.size, template=self.template)
        if self.channels == 1:
            crop = to_grey(crop)
        return images_to_tensor(crop[None])[0]


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's weights and input size: the key of its cached embeddings."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    h.update(repr(tuple(getattr(model, "input_size", ()))).encode())
    return h.hexdigest()[:16]


def _fingerprint(model: torch.nn.Module, meta: IJBMeta) -> str:
    h = hashlib.sha256(model_fingerprint(model).encode())
    h.update("\n".join(meta.names.tolist()).encode())
    h.update(np.ascontiguousarray(meta.landmarks).tobytes())
    return h.hexdigest()[:16]


def embed_ijb(model: torch.nn.Module, meta: IJBMeta, cache_dir: Optional[PathLike] = None, batch_size: int = 128,
              workers: int = 0, progress: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Embeddings of every crop and of its mirror image, ``(N, D)`` float32 each, cached.

    With ``cache_dir`` the two arrays are stored as ``<dataset>_<fingerprint>.npy`` and
    ``..._flip.npy``, the fingerprint covering the model weights, its input size and the image
    list with its landmarks; a later call with the same model and list loads them.
    """
    from ..io import atomic_open
    from .embed import embed_images

    cache = None
    if cache_dir is not None:
        key = f"{meta.dataset.lower()}_{_fingerprint(model, meta)}"
        cache = (Path(cache_dir) / f"{key}.npy", Path(cache_dir) / f"{key}_flip.npy")
        if cache[0].is_file() and cache[1].is_file():
            e, ef = np.load(cache[0], mmap_mode="r"), np.load(cache[1], mmap_mode="r")
            if e.shape[0] == len(meta.names) and e.shape == ef.shape:
                return e, ef
    check_images(meta)
    ds = IJBImages(meta, getattr(model, "input_size", (3, 112, 112)))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    sizes: List[int] = []

    def both():  # each batch with its mirror images appended: one forward pass per batch
        for x in loader:
            sizes.append(len(x))
            yield torch.cat([x, torch.flip(x, dims=[3])])

    class _Batches:
        def __iter__(self):
            return both()

        def __len__(self):
            return len(loader)

    out = embed_images(model, _Batches(), flip=False, progress=progress)
    e = np.empty((len(ds), out.shape[1]), np.float32)
    ef = np.empty_like(e)
    a = b = 0
    for n in sizes:
        e[a:a + n] = out[b:b + n]
        ef[a:a + n] = out[b + n:b + 2 * n]
        a += n
        b += 2 * n
    if cache is not None:
        for path, arr in zip(cache, (e, ef)):
            with atomic_open(path, "wb") as f:
                np.save(f, arr)
    return e, ef
