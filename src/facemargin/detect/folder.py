"""Detect faces in a folder of photos: boxes, scores and landmarks to JSON/CSV, aligned crops, a log of odd images.

:func:`detect_folder` walks ``images`` recursively (jpg/jpeg/png/bmp), runs :class:`~.mtcnn.MTCNN`
on every photo in ``workers`` processes with a progress bar, and writes:

* ``out`` (``.json``): a list with one entry per photo where a face was found,
  ``{"path", "box", "score", "landmarks", "faces": [every face]}``; ``box``/``score``/``landmarks``
  are those of the face kept by ``policy``. The file is a landmarks file that ``facemargin
  align --landmarks`` reads as it is.
  ``out`` (``.csv``): one row per face, ``path,face,kept,score,x1,y1,x2,y2,lx1,ly1,...,lx5,ly5``.
* ``log``: CSV ``path,status,faces,kept`` for every photo with no face (``no_face``), several faces
  (``several_faces``: ``kept`` is the index chosen by ``policy``), that could not be read
  (``unreadable``, with the reason in ``kept``: not an image file, corrupt or truncated, empty) or
  whose kept face could not be aligned (``align_failed``, with the reason), and for every other
  file of the folder, which is not a photo by its extension (``not_image``, with the reason).
  By default the log lies beside ``out`` and is named after it: ``faces.json`` logs to
  ``faces.log.csv``.
* with ``aligned``: the kept face of each photo aligned on every template named in ``templates``,
  in ``aligned/<template>/<relative path>`` (or straight in ``aligned/<relative path>`` when
  ``flat`` and one template).

All files are written atomically; the JSON and CSV rows follow the sorted relative paths, so
the result does not depend on the number of workers.
"""
from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from ..align.folder import aligned_name
from ..align.templates import templates as known_templates
from ..align.transform import norm_crop
from ..data.images import load_image, save_image
from ..data.pack import read_failure
from ..io import atomic_open

PathLike = Union[str, os.PathLike]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def list_images(root: PathLike, others: Optional[List[str]] = None) -> List[str]:
    """Relative paths (POSIX style, sorted) of the image files under ``root``, hidden files skipped.

    Image files are those with a ``.jpg``, ``.jpeg``, ``.png`` or ``.bmp`` extension (any case);
    the relative paths of the other files are appended, sorted, to ``others`` when it is a list.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    found, rest = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                is_image = os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
                (found if is_image else rest).append(Path(dirpath, name).relative_to(root).as_posix())
    if others is not None:
        others += sorted(rest)
    return sorted(found)


def _not_image(rel: str) -> Dict:
    ext = os.path.splitext(rel)[1]
    return {"path": rel, "not_image": f"not an image: extension {ext!r} is not one of {', '.join(IMAGE_EXTENSIONS)}"
            if ext else f"not an image: no extension (photos end in {', '.join(IMAGE_EXTENSIONS)})", "faces": []}


# ----------------------------------------------------------------------------- one photo (runs in workers)
_DETECTOR = None
_OPTIONS: Dict = {}


def _init_worker(options: Dict, threads: Optional[int]) -> None:
    global _DETECTOR, _OPTIONS
    if threads:
        import torch

        torch.set_num_threads(threads)
    from .mtcnn import MTCNN

    _OPTIONS = options
    _DETECTOR = MTCNN(**options["detector"])


def _process(rel: str) -> Dict:
    """Detect, pick and align the faces of one photo; returns a plain record (no arrays)."""
    o = _OPTIONS
    try:
        img = load_image(Path(o["images"]) / rel)
    except (ValueError, FileNotFoundError) as e:
        return {"path": rel, "error": f"cannot read: {read_failure(e)}", "faces": []}
    det = _DETECTOR(img)
    rec = {"path": rel, "faces": det.to_list(), "kept": None}
    if len(det):
        k = det.pick(o["policy"], img.shape[:2])
        rec["kept"] = k
        if o["aligned"]:
            for name in o["templates"]:
                sub = Path(o["aligned"]) if o["flat"] else Path(o["aligned"]) / name
                kw = o["template_options"] if name == "ec_mc" else {}
                try:
                    crop = norm_crop(img, det.landmarks[k], size=o["size"], template=name, **kw)
                except ValueError as e:  # degenerate landmarks: logged, the other photos go on
                    rec["align_error"] = f"{name}: {e}"
                    break
                save_image(sub / aligned_name(rel), crop, quality=o["quality"])
    return rec


# ----------------------------------------------------------------------------- the folder
def _write_json(path: Path, records: List[Dict]) -> None:
    items = []
    for r in records:
        if r.get("kept") is None:
            continue
        face = r["faces"][r["kept"]]
        items.append({"path": r["path"], "box": face["box"], "score": face["score"],
                      "landmarks": face["landmarks"], "faces": r["faces"]})
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(items, f, indent=1)
        f.write("\n")


def _write_csv(path: Path, records: List[Dict]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "face", "kept", "score", "x1", "y1", "x2", "y2"]
               + [f"l{a}{i}" for i in range(1, 6) for a in "xy"])
    for r in records:
        for i, face in enumerate(r["faces"]):
            w.writerow([r["path"], i, int(i == r["kept"]), face["score"], *face["box"],
                        *[v for pt in face["landmarks"] for v in pt]])
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(buf.getvalue())


def _write_log(path: Path, records: List[Dict]) -> int:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "status", "faces", "kept"])
    n = 0
    for r in records:
        if "not_image" in r:
            w.writerow([r["path"], "not_image", 0, r["not_image"]])
        elif "error" in r:
            w.writerow([r["path"], "unreadable", 0, r["error"]])
        elif not r["faces"]:
            w.writerow([r["path"], "no_face", 0, ""])
        elif "align_error" in r:
            w.writerow([r["path"], "align_failed", len(r["faces"]), r["align_error"]])
        elif len(r["faces"]) > 1:
            w.writerow([r["path"], "several_faces", len(r["faces"]), r["kept"]])
        else:
            continue
        n += 1
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(buf.getvalue())
    return n


def detect_folder(images: PathLike, out: Optional[PathLike] = None, *, log: Optional[PathLike] = None,
                  aligned: Optional[PathLike] = None, templates: Sequence[str] = ("arcface",), size: int = 112,
                  flat: bool = False, policy: str = "largest", workers: int = 0, quality: int = 95,
                  min_face_size: float = 20.0, thresholds: Sequence[float] = (0.6, 0.7, 0.8),
                  template_options: Optional[Dict] = None, progress: bool = True) -> Dict:
    """Detect (and optionally align) the faces of every photo under ``images``; see the module doc.

    Args:
        images: folder of photos (searched recursively).
        out: detections file, ``.json`` or ``.csv`` (none written when ``None``).
        log: CSV of photos with no face, several faces or read errors, and of the files that are
            not images (default: beside ``out``, named after it with ``.log.csv`` for its extension,
            ``faces.json`` -> ``faces.log.csv``; ``aligned/detections.log.csv`` without ``out``).
        aligned: folder for aligned crops of the kept face (none when ``None``).
        templates: alignment templates (``arcface``, ``sphereface``, ``ec_mc``); ``size`` crop height.
        flat: with one template, write crops in ``aligned/<relative path>`` (no template folder).
        policy: which face to keep when there are several: ``largest`` or ``central``.
        workers: processes (0: in this process). Each worker builds its own detector.
        min_face_size, thresholds: detector settings (see :class:`~.mtcnn.MTCNN`).
        template_options: ``ec_mc`` options (``ec_mc_y``, ``ec_y``).
        progress: draw a progress bar on stderr (only when it is a terminal).

    Returns ``{"images", "with_face", "no_face", "several_faces", "unreadable", "not_images", "aligned",
    "log", "records"}``; ``images`` counts the photos (files with an image extension), ``not_images``
    the other files, which are only logged.
    """
    from .mtcnn import POLICIES

    images = Path(images)
    others: List[str] = []
    rels = list_images(images, others)
    if not rels:
        raise ValueError(f"{images}: no images (.jpg, .jpeg, .png, .bmp) found"
                         + (f"; {len(others)} other file(s), e.g. {others[0]}" if others else ""))
    if policy not in POLICIES:
        raise ValueError(f"unknown face policy {policy!r}; choose one of {', '.join(POLICIES)}")
    templates = list(templates)
    bad = [t for t in templates if t not in known_templates()]
    if bad or not templates:
        raise ValueError(f"unknown alignment template(s) {bad or templates}; available: {', '.join(known_templates())}")
    if flat and len(templates) != 1:
        raise ValueError("flat output needs exactly one template")
    if out is not None and Path(out).suffix.lower() not in (".json", ".csv"):
        raise ValueError(f"{out}: the detections file must end in .json or .csv")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if log is None and (out is not None or aligned is not None):
        log = Path(out).with_suffix(".log.csv") if out is not None else Path(aligned) / "detections.log.csv"
    options = {"images": str(images), "aligned": str(aligned) if aligned is not None else None,
               "templates": templates, "size": int(size), "flat": bool(flat), "policy": policy,
               "quality": int(quality), "template_options": dict(template_options or {}),
               "detector": {"min_face_size": float(min_face_size), "thresholds": tuple(thresholds)}}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rels), desc="detecting faces", unit="img", disable=None)
    records: List[Dict] = []
    if workers == 0:
        _init_worker(options, None)
        results = map(_process, rels)
        pool = None
    else:
        from .mtcnn import MTCNN

        MTCNN(**options["detector"])  # fail here, once, on missing or altered weights (not in every worker)
        # each worker runs torch on one thread, as DataLoader workers do, so forking is safe where it exists
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        pool = mp.get_context(method).Pool(workers, initializer=_init_worker, initargs=(options, 1))
        results = pool.imap(_process, rels, chunksize=max(1, min(16, len(rels) // (4 * workers))))
    try:
        for rec in results:
            records.append(rec)
            if bar is not None:
                bar.update(1)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        if bar is not None:
            bar.close()
    if out is not None:
        (_write_json if Path(out).suffix.lower() == ".json" else _write_csv)(Path(out), records)
    if log is not None:
        _write_log(Path(log), sorted(records + [_not_image(rel) for rel in others], key=lambda r: r["path"]))
    with_face = sum(r.get("kept") is not None for r in records)
    return {"images": len(records), "with_face": with_face,
            "no_face": sum("error" not in r and not r["faces"] for r in records),
            "several_faces": sum(len(r["faces"]) > 1 for r in records),
            "unreadable": sum("error" in r for r in records), "not_images": len(others),
            "aligned": (with_face - sum("align_error" in r for r in records)) * len(templates)
            if aligned is not None else 0,
            "log": str(log) if log is not None else None, "records": records}
