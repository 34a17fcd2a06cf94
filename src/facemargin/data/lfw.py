"""The LFW folder layout: ``<root>/<name>/<name>_NNNN.jpg`` with a ``pairs.txt`` of pairs.

``pairs.txt`` comes in two layouts, both read by :func:`load_lfw_pairs`:

* the 10-fold one of the LFW benchmark: a first line ``10<TAB>300`` (folds, pairs per half-fold),
  then for each fold 300 *same* lines ``name n1 n2`` followed by 300 *different* lines
  ``name1 n1 name2 n2``;
* the plain one (``pairsDevTrain.txt``-style and home-made lists): no header, or a header with a
  single number, then any sequence of 3-field (same) and 4-field (different) lines.

Fields are separated by tabs or spaces; image numbers are 1-based and written as 4 digits in the
file names (``Aaron_Peirsol/Aaron_Peirsol_0001.jpg``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np

from ..io import read_text
from .images import load_image, parse_size

PathLike = Union[str, os.PathLike]

_EXTS = (".jpg", ".jpeg", ".png")


def _image_path(root: Path, name: str, num: int) -> Optional[Path]:
    for ext in _EXTS:
        p = root / name / f"{name}_{num:04d}{ext}"
        if p.is_file():
            return p
    return None


def _find_pairs_file(root: Path) -> Path:
    for cand in (root / "pairs.txt", root.parent / "pairs.txt"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"pairs.txt not found in {root} or {root.parent}; pass pairs_file=")


def read_pairs_file(pairs_file: PathLike) -> Tuple[List[tuple], Optional[Tuple[int, int]]]:
    """Parse ``pairs.txt`` into ``([(lineno, name1, n1, name2, n2, same), ...], (folds, n) or None)``.

    Validates the 10-fold layout's counts and order (each fold: ``n`` same then ``n`` different).
    """
    pairs_file = Path(pairs_file)
    if not pairs_file.is_file():
        raise FileNotFoundError(f"pairs file not found: {pairs_file}")
    lines = [(i, ln.split()) for i, ln in enumerate(read_text(pairs_file).splitlines(), 1)]
    lines = [(i, f) for i, f in lines if f]
    header: Optional[Tuple[int, int]] = None
    if lines and all(v.isascii() and v.isdigit() for v in lines[0][1]) and len(lines[0][1]) in (1, 2):
        if len(lines[0][1]) == 2:
            header = (int(lines[0][1][0]), int(lines[0][1][1]))
        lines = lines[1:]
    pairs = []
    for lineno, f in lines:
        try:
            if len(f) == 3:
                pairs.append((lineno, f[0], int(f[1]), f[0], int(f[2]), True))
            elif len(f) == 4:
                pairs.append((lineno, f[0], int(f[1]), f[2], int(f[3]), False))
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"{pairs_file}, line {lineno}: expected 'name n1 n2' or 'name1 n1 name2 n2', "
                             f"got {' '.join(f)!r}") from None
    if header is not None:
        folds, n = header
        if len(pairs) != folds * 2 * n:
            raise ValueError(f"{pairs_file}: header announces {folds} folds of {n} same + {n} different pairs "
                             f"({folds * 2 * n} lines) but the file has {len(pairs)} pair lines")
        for k, p in enumerate(pairs):
            expect_same = (k % (2 * n)) < n
            if p[5] != expect_same:
                raise ValueError(f"{pairs_file}, line {p[0]}: fold {k // (2 * n) + 1} expects a "
                                 f"{'same' if expect_same else 'different'} pair here (each fold lists {n} same "
                                 f"then {n} different pairs)")
    return pairs, header


def load_lfw_pairs(root: PathLike, pairs_file: Optional[PathLike] = None) -> Tuple[List[Path], List[Path], np.ndarray]:
    """Read an LFW-layout folder and its ``pairs.txt``.

    Args:
        root: folder of ``<name>/<name>_NNNN.jpg`` (``.jpeg``/``.png`` also found).
        pairs_file: defaults to ``root/pairs.txt``, else ``root/../pairs.txt``.

    Returns ``(paths1, paths2, issame)`` in file order (bool array). A pair naming an image that
    does not exist raises ``FileNotFoundError`` naming the file and the ``pairs.txt`` line.
    """
    paths1, paths2, issame, _, _ = _pairs_with_lines(root, pairs_file)
    return paths1, paths2, issame


def _pairs_with_lines(root: PathLike, pairs_file: Optional[PathLike]):
    """:func:`load_lfw_pairs` plus the pairs file and the line number of each pair."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"LFW image folder not found: {root}")
    pairs_file = Path(pairs_file) if pairs_file is not None else _find_pairs_file(root)
    pairs, _ = read_pairs_file(pairs_file)
    paths1: List[Path] = []
    paths2: List[Path] = []
    for lineno, name1, n1, name2, n2, _same in pairs:
        for name, num, out in ((name1, n1, paths1), (name2, n2, paths2)):
            p = _image_path(root, name, num)
            if p is None:
                raise FileNotFoundError(f"{pairs_file}, line {lineno}: image {root / name / f'{name}_{num:04d}.jpg'} "
                                        f"not found (also looked for .jpeg and .png)")
            out.append(p)
    return paths1, paths2, np.asarray([p[5] for p in pairs], dtype=bool), pairs_file, [p[0] for p in pairs]


def load_lfw(root: PathLike, pairs_file: Optional[PathLike] = None, image_size=None,
             progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Load the pairs of an LFW folder as images, in the same form as :func:`load_bin`.

    Returns ``(images, issame)``: uint8 ``(2N, H, W, 3)`` RGB with pair ``k`` at rows ``2k, 2k+1``,
    and bool ``(N,)``. ``image_size`` (int or ``(height, width)``) resizes; without it all images
    must share one size. Each distinct file is decoded once. An image that does not decode, or
    whose size differs, raises ``ValueError`` naming the pairs file and line that list it.
    """
    paths1, paths2, issame, pairs_file, lines = _pairs_with_lines(root, pairs_file)
    hw = parse_size(image_size)
    order = [p for pair in zip(paths1, paths2) for p in pair]
    first_row = {}
    it = order
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(order, desc="loading LFW pairs", unit="img", disable=None)  # None: off unless a TTY
    out: Optional[np.ndarray] = None
    for k, p in enumerate(it):
        if p in first_row:  # already decoded: copy its row
            out[k] = out[first_row[p]]
            continue
        first_row[p] = k
        where = f"{pairs_file}, line {lines[k // 2]}"
        try:
            img = load_image(p, hw)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if out is None:
            out = np.empty((len(order),) + img.shape, dtype=np.uint8)
        elif img.shape != out.shape[1:]:
            raise ValueError(f"{where}: {p} is {img.shape[0]}x{img.shape[1]} but {order[0]} is "
                             f"{out.shape[1]}x{out.shape[2]}; pass image_size= to resize them to one size")
        out[k] = img
    if out is None:
        out = np.empty((0,) + ((hw or (0, 0)) + (3,)), dtype=np.uint8)
    return out, issame
