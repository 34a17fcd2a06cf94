"""``facemargin align``: align a folder of face images from a landmarks file (CSV or JSON), or from
the faces the MTCNN detector finds (``--detect``)."""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np

from ..io import read_text
from .templates import templates

Row = Tuple[str, str, np.ndarray]  # (where, relative path, (5, 2) landmarks)


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


def read_landmarks(path) -> List[Row]:
    """Read a landmarks file: CSV ``path,x1,y1,...,x5,y5`` (optional header) or JSON ``{path: [[x, y]*5]}``.

    JSON may also be a list of ``{"path": ..., "landmarks": [[x, y]*5]}``. Returns
    ``[(where, path, (5, 2) array), ...]`` where ``where`` names the row for error messages.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmarks file not found: {path}")
    rows: List[Row] = []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e})") from None
        except RecursionError:
            raise ValueError(f"{path}: JSON nested too deeply") from None
        if isinstance(data, dict):
            items = [(f"{path}, entry {k!r}", k, v) for k, v in data.items()]
        elif isinstance(data, list):
            items = []
            for i, e in enumerate(data):
                if not isinstance(e, dict) or "path" not in e or "landmarks" not in e:
                    raise ValueError(f"{path}, item {i}: expected {{\"path\": ..., \"landmarks\": [[x, y]*5]}}")
                items.append((f"{path}, item {i} ({e['path']!r})", e["path"], e["landmarks"]))
        else:
            raise ValueError(f"{path}: expected a JSON object {{path: [[x, y]*5]}} or a list of entries")
        for where, p, v in items:
            if not isinstance(p, str) or not p:
                raise ValueError(f"{where}: image path must be a non-empty string")
            rows.append((where, p, _points(v, where)))
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
                if len(rec) != 11:
                    raise ValueError(f"{where}: expected 11 columns path,x1,y1,...,x5,y5, got {len(rec)}")
                try:
                    vals = [float(c) for c in rec[1:]]
                except ValueError:
                    raise ValueError(f"{where}: coordinates must be numbers, got {rec[1:]}") from None
                rows.append((where, rec[0].strip(), _points(vals, where)))
    else:
        raise ValueError(f"{path}: landmarks file must be .csv or .json")
    if not rows:
        raise ValueError(f"{path}: no landmark rows")
    return rows


def aligned_name(rel) -> Path:
    """Output name of an aligned crop: ``.png`` stays PNG, every other format becomes ``.jpg``."""
    rel = Path(rel)
    return rel if rel.suffix.lower() in (".png", ".jpg", ".jpeg") else rel.with_suffix(".jpg")


def align_folder(images, landmarks, out, template: str = "arcface", size: int = 112, quality: int = 95,
                 skip_bad: bool = False, progress: bool = True, **kw) -> Tuple[int, List[str]]:
    """Align every image listed in ``landmarks`` (a file) from ``images`` into ``out``.

    Output files keep their relative paths (``.png`` stays PNG, other formats are written as
    JPEG with the same stem). Returns ``(number aligned, list of error messages skipped)``;
    without ``skip_bad`` the first bad row raises ``ValueError``/``FileNotFoundError`` naming it.
    """
    from ..data.images import load_image, save_image
    from .transform import estimate_transform, norm_crop

    images, out = Path(images), Path(out)
    if not images.is_dir():
        raise FileNotFoundError(f"image folder not found: {images}")
    rows = read_landmarks(landmarks)
    jobs = []
    errors: List[str] = []
    for where, rel, pts in rows:
        src = Path(rel) if Path(rel).is_absolute() else images / rel
        try:
            dst_rel = aligned_name(src.relative_to(images))
        except ValueError:
            dst_rel = aligned_name(src.name)
        try:
            if not src.is_file():
                raise FileNotFoundError(f"{where}: image not found: {src}")
            estimate_transform(pts, template=template, size=size, **kw)  # fail early on bad landmarks
        except (ValueError, FileNotFoundError) as e:
            msg = str(e) if str(e).startswith(where) else f"{where}: {e}"
            if not skip_bad:
                raise type(e)(msg) from None
            errors.append(msg)
            continue
        jobs.append((where, src, out / dst_rel, pts))
    it = jobs
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(jobs, desc=f"aligning ({template}, {size})", unit="img")
    done = 0
    for where, src, dst, pts in it:
        try:
            crop = norm_crop(load_image(src), pts, size=size, template=template, **kw)
        except (ValueError, FileNotFoundError) as e:
            msg = f"{where}: {e}"
            if not skip_bad:
                raise ValueError(msg) from None
            errors.append(msg)
            continue
        save_image(dst, crop, quality=quality)
        done += 1
    return done, errors


def run(args) -> int:
    """Entry point of ``facemargin align``."""
    if args.template != "ec_mc" and (args.ec_y is not None or args.ec_mc_y is not None):
        raise ValueError("--ec-y/--ec-mc-y only apply to --template ec_mc")
    kw = {k: v for k, v in (("ec_mc_y", args.ec_mc_y), ("ec_y", args.ec_y)) if v is not None}
    if args.detect:
        if args.landmarks:
            raise ValueError("--detect and --landmarks are exclusive: the detector finds the landmarks")
        return _run_detect(args, kw)
    if not args.landmarks:
        raise ValueError("give --landmarks FILE, or --detect to find the faces with the MTCNN detector")
    done, errors = align_folder(args.images, args.landmarks, args.out, template=args.template, size=args.size,
                                quality=args.quality, skip_bad=args.skip_bad, progress=not args.quiet, **kw)
    for msg in errors:
        print(f"skipped: {msg}", file=sys.stderr)
    print(f"aligned {done} image(s) into {args.out} (template {args.template}, size {args.size})"
          + (f"; skipped {len(errors)}" if errors else ""))
    return 0 if done or not errors else 1


def _run_detect(args, kw) -> int:
    from ..detect.cli import clear_missing_weights, print_summary
    from ..detect.folder import detect_folder

    out = Path(args.out)
    with clear_missing_weights():
        summary = detect_folder(args.images, out / "detections.json", log=out / "detections.log.csv", aligned=out,
                                templates=[args.template], size=args.size, flat=True, policy=args.policy,
                                workers=args.workers, quality=args.quality, min_face_size=args.min_face_size,
                                thresholds=args.thresholds, template_options=kw, progress=not args.quiet)
    print_summary(summary)
    print(f"aligned {summary['aligned']} face(s) into {out} (template {args.template}, size {args.size}); "
          f"detections in {out / 'detections.json'}")
    return 0 if summary["with_face"] else 1


def register(sub) -> None:
    """Add the ``align`` sub-command to an argparse sub-parsers object."""
    names = ", ".join(f"{k} ({v})" for k, v in templates().items())
    p = sub.add_parser(
        "align", help="align face images from 5-point landmarks (arcface/sphereface/ec_mc templates)",
        description="Warp each image listed in a landmarks file onto a template with a least-squares "
                    "similarity transform and write the crops. Landmarks (left eye, right eye, nose, left "
                    "mouth corner, right mouth corner; image x,y) come from any detector: CSV rows "
                    "'path,x1,y1,...,x5,y5' (optional header) or JSON {\"path\": [[x, y], ...5]}; or, with "
                    "--detect, from the built-in MTCNN detector (facemargin[detect]), which also writes "
                    "OUT/detections.json and a log of photos with no face or several faces. "
                    f"Templates: {names}.")
    p.add_argument("--images", required=True, help="folder the landmark paths are relative to")
    p.add_argument("--landmarks", help="landmarks file (.csv or .json); not with --detect")
    p.add_argument("--detect", action="store_true",
                   help="find the faces and their landmarks with the MTCNN detector (no landmarks file)")
    p.add_argument("--out", required=True, help="output folder (relative paths are kept)")
    p.add_argument("--template", default="arcface", choices=sorted(templates()), help="alignment template")
    p.add_argument("--size", type=int, default=112, help="crop height in pixels (default 112)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality of the crops (default 95)")
    p.add_argument("--ec-y", dest="ec_y", type=float, default=None,
                   help="ec_mc only: eye-centre row in a 112 crop (default 48)")
    p.add_argument("--ec-mc-y", dest="ec_mc_y", type=float, default=None,
                   help="ec_mc only: eye-centre to mouth-centre distance in a 112 crop (default 40)")
    p.add_argument("--skip-bad", action="store_true", help="report and skip bad rows instead of stopping")
    from ..detect.cli import add_detector_options

    add_detector_options(p.add_argument_group("with --detect"))
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
