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
fitted to ``size`` when it is given and encoded as JPEG at ``quality``. Fitting keeps the aspect
ratio: a photo whose shape differs from ``size`` (a 100x140 photo for a square 112 pack) is scaled
(bilinear) until it fits and centred on black bars, never squashed.

A file that cannot be read (not an image, truncated, empty) stops a pack with an error naming it.
With ``skip_bad`` it is left out and listed, with the reason, in ``out/skipped.csv``. In a pack of
an identity folder, an identity left without any image is dropped and the others are numbered
again from 0 in sorted order, so labels stay contiguous; in a pack of a list file the labels are
the list's own and are kept, an identity left without images keeping its (empty) identity record.
"""
from __future__ import annotations

import csv
import multiprocessing as mp
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..io import atomic_open
from .images import decode_image, encode_image, parse_size, resize_image

PathLike = Union[str, os.PathLike]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
SKIPPED_LOG = "skipped.csv"
Skipped = Tuple[str, int, str]  # (path, label, reason)


def read_failure(exc: BaseException) -> str:
    """Why an image file could not be read, in a few words, from the error its reader raised.

    ``not an image file`` (no format recognised), ``empty file``, ``file not found``, or
    ``corrupt or truncated image (<the decoder's error>)``.
    """
    cause = exc.__cause__
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if cause is None:
        return "empty file" if "empty image data" in str(exc) else str(exc)
    if type(cause).__name__ == "UnidentifiedImageError":
        return "not an image file (no image format recognised)"
    return f"corrupt or truncated image ({type(cause).__name__}: {cause})"


def fit_image(image: np.ndarray, size) -> np.ndarray:
    """Fit an ``(H, W, 3)`` image into ``size`` keeping its aspect ratio: scale, then centre on black bars.

    An image that already has the shape of ``size`` (or its aspect ratio) is only resized.
    """
    h, w = parse_size(size, "size")
    ih, iw = image.shape[:2]
    scale = min(h / ih, w / iw)
    nh, nw = min(h, max(1, round(ih * scale))), min(w, max(1, round(iw * scale)))
    if (nh, nw) == (h, w):
        return resize_image(image, (h, w))
    out = np.zeros((h, w, 3), dtype=np.uint8)
    top, left = (h - nh) // 2, (w - nw) // 2
    out[top:top + nh, left:left + nw] = resize_image(image, (nh, nw))
    return out


# ----------------------------------------------------------------------------- one image (runs in workers)
def encode_file(path: str, size: Optional[Tuple[int, int]] = None, quality: int = 95) -> Tuple[bytes, Tuple[int, int], str]:
    """Read one image file for a pack: ``(JPEG bytes, (height, width), path)``.

    JPEG files already at ``size`` (or any size when ``size`` is None) keep their bytes; the rest is
    decoded, fitted to ``size`` (:func:`fit_image`: aspect ratio kept, black bars) and re-encoded.
    Unreadable files raise ``ValueError`` naming them and saying why.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
        img = decode_image(data, path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: {read_failure(e)}") from None
    if size is not None and img.shape[:2] != tuple(size):
        return encode_image(fit_image(img, size), "jpeg", quality), tuple(size), path
    if data[:3] == b"\xff\xd8\xff":
        return data, img.shape[:2], path
    return encode_image(img, "jpeg", quality), img.shape[:2], path


def _encode_job(job):
    path, size, quality, skip_bad = job
    try:
        return encode_file(path, size, quality)
    except ValueError as e:
        if not skip_bad:
            raise
        msg = str(e)
        return None, None, path, msg[len(path) + 2:] if msg.startswith(f"{path}: ") else msg


def encoded_files(paths: Sequence[PathLike], size=None, quality: int = 95, workers: int = 0,
                  skip_bad: bool = False) -> Iterator[tuple]:
    """:func:`encode_file` over ``paths`` in order, by ``workers`` processes (0: in this process).

    With ``skip_bad`` an unreadable file yields ``(None, None, path, reason)`` instead of raising.
    """
    size = parse_size(size)
    jobs = [(os.fspath(p), size, int(quality), bool(skip_bad)) for p in paths]
    if workers <= 0:
        yield from map(_encode_job, jobs)
        return
    # fork where there is one: workers only decode and encode images, and start at once
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(workers) as pool:
        yield from pool.imap(_encode_job, jobs, chunksize=max(1, min(64, len(jobs) // (8 * workers) or 1)))


# ----------------------------------------------------------------------------- sources
def scan_identities(root: PathLike, others: Optional[List[Path]] = None,
                    allow_empty: bool = False) -> Tuple[List[Path], np.ndarray, List[str]]:
    """``(paths, labels, identities)`` of ``root/<identity>/<image>``, identities in sorted order.

    Images are the files with a ``.jpg``, ``.jpeg``, ``.png`` or ``.bmp`` extension (any case),
    sorted by name; hidden files and folders are ignored. The other files of the identity folders
    are not images: they are appended to ``others`` when it is a list. An identity folder without
    images raises ``ValueError`` unless ``allow_empty`` (it then keeps its label and has no path).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise ValueError(f"{root} has no identity sub-folders; expected the layout root/<identity>/<image>")
    paths: List[Path] = []
    labels: List[int] = []
    for label, d in enumerate(dirs):
        files = sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        if others is not None:
            others += [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
        if not images and not allow_empty:
            raise ValueError(f"identity folder {d} contains no images with extensions {', '.join(IMAGE_EXTENSIONS)}")
        paths += images
        labels += [label] * len(images)
    return paths, np.asarray(labels, dtype=np.int64), [d.name for d in dirs]


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
                workers: int = 0, progress: bool = True, num_classes: Optional[int] = None,
                skip_bad: bool = False, relabel: bool = False, skipped: Sequence[Skipped] = ()) -> Dict:
    """Write ``out/train.rec``, ``train.idx`` and ``property`` (insightface's layout) from image files.

    Images are grouped by label (stable) before writing. All must share one size unless ``size``
    (int or ``(height, width)``) is given; images of another shape are fitted to it with their
    aspect ratio kept (:func:`fit_image`). An unreadable file raises ``ValueError`` naming it; with
    ``skip_bad`` it is left out and listed as ``path,label,reason`` in ``out/skipped.csv`` (sorted
    by path), with the entries given in ``skipped``. With ``relabel`` the labels that keep an
    image are numbered again ``0..K-1`` in their order (and ``num_classes`` becomes ``K``); the
    ``label`` of a skipped file is then its identity's label in the pack, empty when no image of
    that identity is left.

    Returns ``{"images", "classes", "size", "out", "skipped", "log", "labels"}``: ``skipped`` the
    ``(path, label, reason)`` of every file left out, ``log`` the path of ``skipped.csv``
    (``None`` without ``skip_bad``), ``labels`` the label given (before ``relabel``) of each class
    of the pack.
    """
    from .recordio import read_property, write_encoded_record

    labels = np.asarray(labels, dtype=np.int64)
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} images but {len(labels)} labels")
    if len(paths) == 0:
        raise ValueError("no images to pack")
    out = Path(out)
    order = np.argsort(labels, kind="stable")
    ordered = [paths[i] for i in order]
    labels = labels[order]
    items: Iterable = encoded_files(ordered, size, quality, workers, skip_bad=skip_bad)
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, total=len(ordered), desc=f"packing {out}", unit="img", disable=None)
    skipped = list(skipped)
    if not skip_bad:
        n = write_encoded_record(out, items, labels, with_header=True, num_classes=num_classes, progress=False)
        c, hw = read_property(out / "property")
        return {"images": n, "classes": c, "size": hw, "out": str(out), "skipped": skipped, "log": None,
                "labels": list(range(c))}
    out.mkdir(parents=True, exist_ok=True)
    log = out / SKIPPED_LOG
    # the header record holds the number of images, so the readable ones are known before writing:
    # their bytes wait in a temporary file beside the pack
    with tempfile.TemporaryFile(dir=out, prefix=".pack-", suffix=".tmp") as spool:
        kept, spans = [], []
        for i, (data, shape, where, *reason) in enumerate(items):
            if data is None:
                skipped.append((where, int(labels[i]), reason[0]))
                continue
            spans.append((spool.tell(), len(data), shape, where))
            spool.write(data)
            kept.append(i)
        kept_labels = labels[kept]
        if not kept:
            classes = []
        elif relabel:
            classes = np.unique(kept_labels).tolist()
            kept_labels = np.searchsorted(classes, kept_labels)
            num_classes = len(classes)
            new = {old: k for k, old in enumerate(classes)}
            skipped = [(p, new.get(label, ""), reason) for p, label, reason in skipped]
        else:
            classes = list(range(int(kept_labels.max()) + 1 if num_classes is None else int(num_classes)))
        skipped.sort(key=lambda t: t[0])
        _write_skipped(log, skipped)
        if not kept:
            raise ValueError(f"no readable image to pack: all {len(ordered)} were skipped (listed in {log})")

        def stored():
            spool.seek(0)
            for _offset, length, shape, where in spans:
                yield spool.read(length), shape, where

        n = write_encoded_record(out, stored(), kept_labels, with_header=True, num_classes=num_classes,
                                 progress=False)
    c, hw = read_property(out / "property")
    return {"images": n, "classes": c, "size": hw, "out": str(out), "skipped": skipped, "log": str(log),
            "labels": classes}


def _write_skipped(path: Path, skipped: Sequence[Skipped]) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "label", "reason"])
        w.writerows(skipped)


def pack_folder(root: PathLike, out: PathLike, skip_bad: bool = False, **kw) -> Dict:
    """Pack ``root/<identity>/<image>`` into ``out`` (see :func:`pack_images` for the options).

    The result also lists the identity names in label order under ``"identities"``, and under
    ``"others"`` the files of the identity folders left out because they are not images (by
    extension). With ``skip_bad`` those files are listed in ``skipped.csv`` too, and an identity
    without any readable image is dropped: the others are numbered again from 0 in sorted order,
    and its name goes to ``"dropped"``. Without ``skip_bad`` an unreadable image raises
    ``ValueError`` naming it.
    """
    others: List[Path] = []
    paths, labels, names = scan_identities(root, others, allow_empty=skip_bad)
    if not paths:
        raise ValueError(f"{root}: no images with extensions {', '.join(IMAGE_EXTENSIONS)} in its identity folders")
    label_of = {d: k for k, d in enumerate(names)}
    pre = [(str(p), label_of[p.parent.name], f"not an image (extension {p.suffix or '(none)'!r} is not one of "
            f"{', '.join(IMAGE_EXTENSIONS)})") for p in others] if skip_bad else []
    result = pack_images(paths, labels, out, num_classes=len(names), skip_bad=skip_bad, relabel=skip_bad,
                         skipped=pre, **kw)
    result["identities"] = [names[k] for k in result["labels"]]
    kept = set(result["labels"])
    result["dropped"] = [n for k, n in enumerate(names) if k not in kept]
    result["others"] = [str(p) for p in others]
    return result


def pack_list(list_file: PathLike, out: PathLike, root: Optional[PathLike] = None, skip_bad: bool = False,
              **kw) -> Dict:
    """Pack the images of a list file into ``out`` (see :func:`read_image_list`, :func:`pack_images`).

    Labels are the list's own: with ``skip_bad`` a label whose every file was skipped keeps an
    empty identity record, and the class count stays the largest label listed plus one.
    """
    paths, labels = read_image_list(list_file, root)
    kw.setdefault("num_classes", int(labels.max()) + 1)
    return pack_images(paths, labels, out, skip_bad=skip_bad, **kw)


def read_pairs_list(pairs_file: PathLike, root: Optional[PathLike] = None) -> Tuple[List[Path], List[Path], np.ndarray]:
    """``(paths1, paths2, issame)`` of a pairs list: ``path1 path2 same`` lines, or an LFW ``pairs.txt``.

    A file whose first pair line has an integer second field is read as LFW's ``pairs.txt``, with
    ``root`` the LFW image folder. Relative paths are taken from ``root`` (default: the pairs
    file's folder). A line naming an image that does not exist raises ``FileNotFoundError``
    naming the pairs file and the line.
    """
    p1, p2, issame, _ = _read_pairs(pairs_file, root)
    return p1, p2, issame


def _read_pairs(pairs_file: PathLike, root: Optional[PathLike]):
    """:func:`read_pairs_list` plus, for each pair, ``"<pairs file>, line <n>"``."""
    from .lfw import load_lfw_pairs, read_pairs_file

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
        p1, p2, issame = load_lfw_pairs(base, pairs_file)
        return p1, p2, issame, [f"{pairs_file}, line {r[0]}" for r in read_pairs_file(pairs_file)[0]]
    yes, no = {"1", "true", "same", "yes"}, {"0", "false", "diff", "different", "no"}
    p1, p2, same, wheres = [], [], [], []
    for lineno, fields in rows:
        where = f"{pairs_file}, line {lineno}"
        if len(fields) != 3:
            raise ValueError(f"{where}: expected 'path1 path2 same', got {' '.join(fields)!r}")
        flag = fields[2].lower()
        if flag not in yes | no:
            raise ValueError(f"{where}: the third field must be 1/0 or true/false, got {fields[2]!r}")
        for rel, acc in ((fields[0], p1), (fields[1], p2)):
            p = Path(rel)
            p = p if p.is_absolute() else base / p
            if not p.is_file():
                raise FileNotFoundError(f"{where}: image not found: {p}")
            acc.append(p)
        same.append(flag in yes)
        wheres.append(where)
    return p1, p2, np.asarray(same, dtype=bool), wheres


def pack_pairs(pairs_file: PathLike, out: PathLike, root: Optional[PathLike] = None, size=None,
               quality: int = 95, workers: int = 0, progress: bool = True) -> Dict:
    """Write a ``.bin`` verification pack (readable by :func:`~facemargin.data.load_bin` and insightface).

    A missing or unreadable image raises an error naming the pairs file and the line that lists
    it. With ``size``, images of another shape are fitted with their aspect ratio kept
    (:func:`fit_image`). Returns ``{"pairs", "same", "out"}``; a pack whose pairs are all of one
    kind (``same`` is 0 or ``pairs``) cannot measure verification accuracy, which the caller may
    want to say.
    """
    from .binpack import write_bin

    p1, p2, issame, wheres = _read_pairs(pairs_file, root)
    paths = [p for pair in zip(p1, p2) for p in pair]
    it: Iterable = encoded_files(paths, size, quality, workers)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=len(paths), desc=f"packing {Path(out).name}", unit="img", disable=None)
    bins: List[bytes] = []
    try:
        for data, _, _ in it:
            bins.append(data)
    except ValueError as e:
        raise ValueError(f"{wheres[len(bins) // 2]}: {e}") from None
    write_bin(out, bins, issame)
    return {"pairs": int(len(issame)), "same": int(issame.sum()), "out": str(out)}
