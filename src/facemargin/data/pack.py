"""Build training and verification sets from image files: ``.rec`` packs and ``.bin`` pair packs.

* :func:`pack_folder`: ``root/<identity>/<image>`` (photos, or crops from ``facemargin align``)
  -> ``train.rec``/``train.idx``/``property`` in insightface's layout (header record, images
  grouped by identity in keys ``1..N``, one identity record per class). Identities are numbered in
  sorted folder order; images in sorted file order.
* :func:`pack_list`: the same from a list file, either ``path label`` per line (whitespace or
  comma separated) or mxnet's ``.lst`` (``index<TAB>label<TAB>path``); relative paths are taken
  from ``root`` (default: the list file's folder).
* :func:`pack_pairs`: a pairs list -> a ``.bin`` verification pack. Lines ``path1 path2 same``
  (``same`` 1/0, true/false) or an LFW ``pairs.txt`` (``name n1 n2`` / ``name1 n1 name2 n2``).

Images are read by ``workers`` processes. A JPEG already at the wanted size is stored as it is
(its bytes are decoded once to check them, not re-encoded); other images are converted to RGB,
resized when ``size`` is given (bilinear) and encoded as JPEG at ``quality``.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .images import decode_image, encode_image, parse_size, resize_image

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------- one image (runs in workers)
def encode_file(path: str, size: Optional[Tuple[int, int]] = None, quality: int = 95) -> Tuple[bytes, Tuple[int, int], str]:
    """Read one image file for a pack: ``(JPEG bytes, (height, width), path)``.

    JPEG files already at ``size`` (or any size when ``size`` is None) keep their bytes; the rest is
    decoded, resized to ``size`` and re-encoded. Unreadable files raise ``ValueError`` naming them.
    """
    with open(path, "rb") as f:
        data = f.read()
    img = decode_image(data, path)
    if size is not None and img.shape[:2] != tuple(size):
        return encode_image(resize_image(img, size), "jpeg", quality), tuple(size), path
    if data[:3] == b"\xff\xd8\xff":
        return data, img.shape[:2], path
    return encode_image(img, "jpeg", quality), img.shape[:2], path


def _encode_job(job):
    path, size, quality = job
    try:
        return encode_file(path, size, quality)
    except FileNotFoundError:
        raise ValueError(f"image not found: {path}") from None


def encoded_files(paths: Sequence[PathLike], size=None, quality: int = 95, workers: int = 0) -> Iterator[Tuple[bytes, Tuple[int, int], str]]:
    """:func:`encode_file` over ``paths`` in order, by ``workers`` processes (0: in this process)."""
    size = parse_size(size)
    jobs = [(os.fspath(p), size, int(quality)) for p in paths]
    if workers <= 0:
        yield from map(_encode_job, jobs)
        return
    # fork where there is one: workers only decode and encode images, and start at once
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(workers) as pool:
        yield from pool.imap(_encode_job, jobs, chunksize=max(1, min(64, len(jobs) // (8 * workers) or 1)))


# ----------------------------------------------------------------------------- sources
def scan_identities(root: PathLike) -> Tuple[List[Path], np.ndarray, List[str]]:
    """``(paths, labels, identities)`` of ``root/<identity>/<image>``, identities in sorted order."""
    from .folder import ImageFolder

    folder = ImageFolder(root)
    return list(folder.paths), folder.labels.copy(), list(folder.classes)


def read_image_list(list_file: PathLike, root: Optional[PathLike] = None) -> Tuple[List[Path], np.ndarray]:
    """Parse a list file into ``(paths, labels)``; see the module doc for the two line formats."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"image list not found: {list_file}")
    base = Path(root) if root is not None else list_file.parent
    paths, labels = [], []
    with open(list_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{list_file}, line {lineno}"
            fields = line.split("\t") if line.count("\t") == 2 else line.replace(",", " ").split()
            if len(fields) == 3:   # mxnet .lst: index, label, path
                label, rel = fields[1].strip(), fields[2].strip()
            elif len(fields) == 2:
                rel, label = fields[0].strip(), fields[1].strip()
            else:
                raise ValueError(f"{where}: expected 'path label' or 'index<TAB>label<TAB>path', got {line!r}")
            try:
                value = float(label)
            except ValueError:
                raise ValueError(f"{where}: label {label!r} is not a number") from None
            if value < 0 or value != int(value):
                raise ValueError(f"{where}: label {label!r} must be a non-negative integer")
            p = Path(rel)
            paths.append(p if p.is_absolute() else base / p)
            labels.append(int(value))
    if not paths:
        raise ValueError(f"{list_file}: no images listed")
    return paths, np.asarray(labels, dtype=np.int64)


# ----------------------------------------------------------------------------- packs
def pack_images(paths: Sequence[PathLike], labels, out: PathLike, size=None, quality: int = 95,
                workers: int = 0, progress: bool = True, num_classes: Optional[int] = None) -> Dict:
    """Write ``out/train.rec``, ``train.idx`` and ``property`` (insightface's layout) from image files.

    Images are grouped by label (stable) before writing. All must share one size unless ``size``
    (int or ``(height, width)``) is given. Returns ``{"images", "classes", "size", "out"}``.
    """
    from .recordio import read_property, write_encoded_record

    labels = np.asarray(labels, dtype=np.int64)
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} images but {len(labels)} labels")
    if len(paths) == 0:
        raise ValueError("no images to pack")
    order = np.argsort(labels, kind="stable")
    ordered = [paths[i] for i in order]
    n = write_encoded_record(out, encoded_files(ordered, size, quality, workers), labels[order],
                             with_header=True, num_classes=num_classes, progress=progress)
    c, hw = read_property(Path(out) / "property")
    return {"images": n, "classes": c, "size": hw, "out": str(out)}


def pack_folder(root: PathLike, out: PathLike, **kw) -> Dict:
    """Pack ``root/<identity>/<image>`` into ``out`` (see :func:`pack_images` for the options).

    The result also lists the identity names in label order under ``"identities"``.
    """
    paths, labels, names = scan_identities(root)
    result = pack_images(paths, labels, out, num_classes=len(names), **kw)
    result["identities"] = names
    return result


def pack_list(list_file: PathLike, out: PathLike, root: Optional[PathLike] = None, **kw) -> Dict:
    """Pack the images of a list file into ``out`` (see :func:`read_image_list`, :func:`pack_images`)."""
    paths, labels = read_image_list(list_file, root)
    return pack_images(paths, labels, out, **kw)


def read_pairs_list(pairs_file: PathLike, root: Optional[PathLike] = None) -> Tuple[List[Path], List[Path], np.ndarray]:
    """``(paths1, paths2, issame)`` of a pairs list: ``path1 path2 same`` lines, or an LFW ``pairs.txt``.

    A file whose first pair line has an integer second field is read as LFW's ``pairs.txt``, with
    ``root`` the LFW image folder. Relative paths are taken from ``root`` (default: the pairs
    file's folder).
    """
    from .lfw import load_lfw_pairs

    pairs_file = Path(pairs_file)
    if not pairs_file.is_file():
        raise FileNotFoundError(f"pairs list not found: {pairs_file}")
    base = Path(root) if root is not None else pairs_file.parent
    rows = []
    with open(pairs_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.replace(",", " ").split()
            if fields and not line.lstrip().startswith("#"):
                rows.append((lineno, fields))
    if not rows:
        raise ValueError(f"{pairs_file}: no pairs listed")
    first = next((r for r in rows if len(r[1]) >= 3), rows[0])[1]
    if len(first) in (3, 4) and first[1].lstrip("-").isdigit():
        return load_lfw_pairs(base, pairs_file)
    yes, no = {"1", "true", "same", "yes"}, {"0", "false", "diff", "different", "no"}
    p1, p2, same = [], [], []
    for lineno, fields in rows:
        where = f"{pairs_file}, line {lineno}"
        if len(fields) != 3:
            raise ValueError(f"{where}: expected 'path1 path2 same', got {' '.join(fields)!r}")
        flag = fields[2].lower()
        if flag not in yes | no:
            raise ValueError(f"{where}: the third field must be 1/0 or true/false, got {fields[2]!r}")
        for rel, acc in ((fields[0], p1), (fields[1], p2)):
            p = Path(rel)
            acc.append(p if p.is_absolute() else base / p)
        same.append(flag in yes)
    return p1, p2, np.asarray(same, dtype=bool)


def pack_pairs(pairs_file: PathLike, out: PathLike, root: Optional[PathLike] = None, size=None,
               quality: int = 95, workers: int = 0, progress: bool = True) -> Dict:
    """Write a ``.bin`` verification pack (readable by :func:`~facemargin.data.load_bin` and insightface).

    Returns ``{"pairs", "same", "out"}``.
    """
    from .binpack import write_bin

    p1, p2, issame = read_pairs_list(pairs_file, root)
    paths = [p for pair in zip(p1, p2) for p in pair]
    it: Iterable = encoded_files(paths, size, quality, workers)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=len(paths), desc=f"packing {Path(out).name}", unit="img")
    bins = [data for data, _, _ in it]
    write_bin(out, bins, issame)
    return {"pairs": int(len(issame)), "same": int(issame.sum()), "out": str(out)}
