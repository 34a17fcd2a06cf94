"""Align a folder of face images from a landmarks file: read the file, warp every listed image onto
a template and write the crops under their relative paths.

The landmarks file is CSV (``path,x1,y1,...,x5,y5``, optional header) or JSON (``{path: [[x, y]*5]}``
or a list of ``{"path": ..., "landmarks": ...}``); its rows are checked one by one, so a bad row is
reported with its file and line (or entry) and, when asked, skipped while the others are aligned.
:func:`aligned_name` gives the output name of a crop; the detector's folder run names its crops
the same way.
"""
from __future__ import annotations

import csv
import io
import json
from functools import partial
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from ..data.images import load_image, save_image
from ..data.pack import read_failure
from ..io import atomic_open, read_text
from .transform import estimate_transform, norm_crop

Row = Tuple[str, str, np.ndarray]  # (where, relative path, (5, 2) landmarks)
Bad = Tuple[str, str, str]  # (where, relative path or "", reason)


def _points(values, where: str) -> np.ndarray:
    try:
        pts = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: landmarks must be numbers, got {values!r}") from None
    if pts.shape == (10,):
        pts = pts.reshape(5, 2)
    if pts.shape != (5, 2):
        raise ValueError(f"{where}: expected five (x, y) points (10 numbers), got shape {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError(f"{where}: landmarks contain non-finite values")
    return pts


def _csv_rows(f, delim: str, path):
    """``csv.reader`` rows; the module's own errors (e.g. an overlong field) become a ValueError naming the line."""
    reader = csv.reader(f, delimiter=delim)
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise ValueError(f"{path}, line {reader.line_num}: {e}") from None


def read_landmarks(path, bad: Optional[List[Bad]] = None) -> List[Row]:
    """Read a landmarks file: CSV ``path,x1,y1,...,x5,y5`` (optional header) or JSON ``{path: [[x, y]*5]}``.

    JSON may also be a list of ``{"path": ..., "landmarks": [[x, y]*5]}``. Returns
    ``[(where, path, (5, 2) array), ...]`` where ``where`` names the row for error messages.

    A malformed row (too few or too many columns, a value that is not a number, a missing image
    path, the wrong number of points) raises ``ValueError`` naming the file and the line or entry.
    When ``bad`` is a list, such rows are appended to it as ``(where, path, reason)`` instead and
    reading goes on; a file that cannot be parsed at all still raises.
    """
    path = Path(path)
    return _parse(_entries(path), path, bad)


def _entries(path: Path) -> list:
    """The rows of a landmarks file, in file order, as ``(where, image path, points)``.

    ``points`` is a function returning the ``(5, 2)`` landmarks or raising ``ValueError`` naming ``where``.
    """
    if not path.is_file():
        raise FileNotFoundError(f"landmarks file not found: {path}")
    entries = []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e})") from None
        except RecursionError:
            raise ValueError(f"{path}: JSON nested too deeply") from None
        if isinstance(data, dict):
            for k, v in data.items():
                where = f"{path}, entry {k!r}"
                entries.append((where, k, partial(_points, v, where)))
        elif isinstance(data, list):
            for i, e in enumerate(data):
                if isinstance(e, dict) and "path" in e and "landmarks" in e:
                    where = f"{path}, item {i} ({e['path']!r})"
                    entries.append((where, e["path"], partial(_points, e["landmarks"], where)))
                else:
                    where = f"{path}, item {i}"
                    entries.append((where, e.get("path", "") if isinstance(e, dict) else "", partial(
                        _fail, f"{where}: expected {{\"path\": ..., \"landmarks\": [[x, y]*5]}}")))
        else:
            raise ValueError(f"{path}: expected a JSON object {{path: [[x, y]*5]}} or a list of entries")
    elif path.suffix.lower() in (".csv", ".txt", ".tsv"):
        with io.StringIO(read_text(path), newline="") as f:
            sample = f.read(4096)
            f.seek(0)
            delim = "\t" if "\t" in sample and "," not in sample else ","
            for lineno, rec in enumerate(_csv_rows(f, delim, path), 1):
                if not rec or all(not c.strip() for c in rec):
                    continue
                where = f"{path}, line {lineno}"
                if lineno == 1 and rec[0].strip().lower() in ("path", "file", "filename", "image"):
                    continue  # header
                entries.append((where, rec[0].strip(), partial(_csv_points, rec, where)))
    else:
        raise ValueError(f"{path}: landmarks file must be .csv or .json")
    return entries


def _parse(entries: list, path: Path, bad: Optional[List[Bad]]) -> List[Row]:
    rows: List[Row] = []
    for where, rel, points in entries:
        try:
            pts = points()
            if not isinstance(rel, str) or not rel:
                raise ValueError(f"{where}: image path must be a non-empty string")
            rows.append((where, rel, pts))
        except ValueError as e:
            if bad is None:
                raise
            msg = str(e)
            bad.append((where, rel if isinstance(rel, str) else str(rel),
                        msg[len(where) + 2:] if msg.startswith(f"{where}: ") else msg))
    if not rows and not bad:
        raise ValueError(f"{path}: no landmark rows")
    return rows


def _fail(msg: str):
    raise ValueError(msg)


def _csv_points(rec, where: str) -> np.ndarray:
    if len(rec) != 11:
        raise ValueError(f"{where}: expected 11 columns path,x1,y1,...,x5,y5, got {len(rec)}")
    try:
        vals = [float(c) for c in rec[1:]]
    except ValueError:
        raise ValueError(f"{where}: coordinates must be numbers, got {rec[1:]}") from None
    return _points(vals, where)


def aligned_name(rel) -> Path:
    """Output name of an aligned crop: ``.png`` stays PNG, every other format becomes ``.jpg``."""
    rel = Path(rel)
    return rel if rel.suffix.lower() in (".png", ".jpg", ".jpeg") else rel.with_suffix(".jpg")


def align_folder(images, landmarks, out, template: str = "arcface", size: int = 112, quality: int = 95,
                 skip_bad: bool = False, progress: bool = True, log=None, **kw) -> Tuple[int, List[str]]:
    """Align every image listed in ``landmarks`` (a file) from ``images`` into ``out``.

    Output files keep their relative paths (``.png`` stays PNG, other formats are written as
    JPEG with the same stem). The crop is warped out of the photo from its landmarks, so photos
    of any shape are accepted; ``size`` is the crop height (see :func:`~.templates.output_shape`).

    Without ``skip_bad`` the first bad row (malformed, a missing or unreadable image, degenerate
    landmarks) raises ``ValueError``/``FileNotFoundError`` naming the landmarks file and its line
    or entry. With ``skip_bad`` bad rows are skipped and, when ``log`` is given, listed there as
    CSV ``where,path,reason`` (written even when nothing was skipped, so that no older list stays).
    Returns ``(number aligned, list of "where: reason" messages of the rows skipped)``.
    """
    images, out = Path(images), Path(out)
    if not images.is_dir():
        raise FileNotFoundError(f"image folder not found: {images}")
    bad: List[Bad] = []
    entries = _entries(Path(landmarks))
    rows = _parse(entries, Path(landmarks), bad if skip_bad else None)
    jobs = []
    for where, rel, pts in rows:
        src = Path(rel) if Path(rel).is_absolute() else images / rel
        try:
            dst_rel = aligned_name(src.relative_to(images))
        except ValueError:
            dst_rel = aligned_name(src.name)
        try:
            if not src.is_file():
                raise FileNotFoundError(f"image not found: {src}")
            estimate_transform(pts, template=template, size=size, **kw)  # fail early on bad landmarks
        except (ValueError, FileNotFoundError) as e:
            reason = str(e)[len(where) + 2:] if str(e).startswith(f"{where}: ") else str(e)
            if not skip_bad:
                raise type(e)(f"{where}: {reason}") from None
            bad.append((where, rel, reason))
            continue
        jobs.append((where, rel, src, out / dst_rel, pts))
    it = jobs
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(jobs, desc=f"aligning ({template}, {size})", unit="img", disable=None)
    done = 0
    for where, rel, src, dst, pts in it:
        try:
            img = load_image(src)
        except (ValueError, FileNotFoundError) as e:
            reason = f"cannot read image {src}: {read_failure(e)}"
            if not skip_bad:
                raise ValueError(f"{where}: {reason}") from None
            bad.append((where, rel, reason))
            continue
        try:
            crop = norm_crop(img, pts, size=size, template=template, **kw)
        except ValueError as e:
            if not skip_bad:
                raise ValueError(f"{where}: {e}") from None
            bad.append((where, rel, str(e)))
            continue
        save_image(dst, crop, quality=quality)
        done += 1
    position = {e[0]: k for k, e in enumerate(entries)}
    bad.sort(key=lambda b: position[b[0]])  # in the landmarks file's order
    if skip_bad and log is not None:
        _write_log(Path(log), bad)
    return done, [f"{where}: {reason}" for where, _, reason in bad]


def _write_log(path: Path, bad: List[Bad]) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["where", "path", "reason"])
        w.writerows(bad)
