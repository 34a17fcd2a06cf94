"""The files of an IJB set: where it is, its image lists and landmarks, its 1:1 pairs and 1:N lists.

Every reader checks what it reads and names the file and line of a problem: a line of the wrong
shape, image lists that disagree, a label other than 0/1, a template without images.
"""
from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

__all__ = ["DATASETS", "IJBMeta", "find_ijb_root", "read_ijb", "read_ijb_1n", "check_images"]

DATASETS = ("IJBB", "IJBC")
PathLike = Union[str, os.PathLike]


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
