"""``facemargin align``: align a folder of face images from a landmarks file (CSV or JSON), or from
the faces the MTCNN detector finds (``--detect``)."""
from __future__ import annotations

import sys
from pathlib import Path

from ..detect.folder import detect_folder
from ..detect.options import add_detector_options, clear_missing_weights, print_summary
from .folder import align_folder, aligned_name, read_landmarks  # noqa: F401  (also importable from here)
from .templates import templates

SKIPPED_LOG = "skipped.csv"


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
    log = Path(args.out) / SKIPPED_LOG if args.skip_bad else None
    done, errors = align_folder(args.images, args.landmarks, args.out, template=args.template, size=args.size,
                                quality=args.quality, skip_bad=args.skip_bad, progress=not args.quiet, log=log, **kw)
    for msg in errors:
        print(f"skipped: {msg}", file=sys.stderr)
    print(f"aligned {done} image(s) into {args.out} (template {args.template}, size {args.size})"
          + (f"; skipped {len(errors)}, listed in {log}" if log is not None else ""))
    return 0 if done or not errors else 1


def _run_detect(args, kw) -> int:
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
                    "OUT/detections.json and OUT/detections.log.csv, a log of the photos with no face or several "
                    "faces, that cannot be read, and of the files that are not images. "
                    f"Templates: {names}.")
    p.add_argument("--images", required=True, help="folder the landmark paths are relative to")
    p.add_argument("--landmarks", help="landmarks file (.csv or .json); not with --detect")
    p.add_argument("--detect", action="store_true",
                   help="find the faces and their landmarks with the MTCNN detector (no landmarks file)")
    p.add_argument("--out", required=True, help="output folder (relative paths are kept)")
    p.add_argument("--template", default="arcface", choices=sorted(templates()), help="alignment template")
    p.add_argument("--size", type=int, default=112,
                   help="crop height in pixels (default 112; the width follows the template). The crop is "
                        "warped out of the photo from its landmarks, so photos of any shape are accepted and "
                        "none is squashed or padded")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality of the crops (default 95)")
    p.add_argument("--ec-y", dest="ec_y", type=float, default=None,
                   help="ec_mc only: eye-centre row in a 112 crop (default 48)")
    p.add_argument("--ec-mc-y", dest="ec_mc_y", type=float, default=None,
                   help="ec_mc only: eye-centre to mouth-centre distance in a 112 crop (default 40)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip bad rows instead of stopping on the first (a malformed row: too few or too many "
                        "columns, values that are not numbers; a missing or unreadable image; degenerate "
                        "landmarks): each gets a 'skipped:' line on stderr and a row 'where,path,reason' in "
                        f"OUT/{SKIPPED_LOG}. Without it the error names the landmarks file and the line or entry. "
                        "With --detect, photos are never stopped on: odd ones go to OUT/detections.log.csv")
    add_detector_options(p.add_argument_group("with --detect"))
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (none is drawn either when stderr is not a terminal)")
    p.set_defaults(func=run)
