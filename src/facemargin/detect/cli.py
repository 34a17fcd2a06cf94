"""``facemargin detect``: MTCNN faces, boxes and landmarks for a folder of photos."""
from __future__ import annotations

from .options import add_detector_options, clear_missing_weights, print_summary


def run(args) -> int:
    """Entry point of ``facemargin detect``."""
    from .folder import detect_folder

    templates = [t.strip() for t in args.templates.split(",") if t.strip()]
    with clear_missing_weights():
        summary = detect_folder(args.images, args.out, log=args.log, aligned=args.aligned, templates=templates,
                                size=args.size, policy=args.policy, workers=args.workers,
                                min_face_size=args.min_face_size, thresholds=args.thresholds,
                                progress=not args.quiet)
    print_summary(summary)
    print(f"detections written to {args.out}")
    return 0 if summary["with_face"] else 1


def register(sub) -> None:
    """Add the ``detect`` sub-command to an argparse sub-parsers object."""
    p = sub.add_parser(
        "detect", help="detect faces and 5 landmarks in a folder of photos (MTCNN, offline)",
        description="Run the MTCNN detector (weights from the mtcnn wheel, installed with facemargin[detect]) on "
                    "every photo under --images and write boxes, scores and five landmarks (left eye, right eye, "
                    "nose, left and right mouth corners) per photo. A .json output is a landmarks file that "
                    "'facemargin align --landmarks' reads as it is; a .csv has one row per face. Photos with no face, "
                    "several faces, or that cannot be read (not an image, corrupt, truncated), and the files of "
                    "the folder that are not photos (extension other than .jpg, .jpeg, .png, .bmp), are listed "
                    "in a log named after --out: faces.json logs to faces.log.csv.")
    p.add_argument("--images", required=True, help="folder of photos (searched recursively)")
    p.add_argument("--out", required=True, help="detections file (.json or .csv)")
    p.add_argument("--log", help="log of photos with no face, several faces or read errors, and of non-image files "
                        "(default: --out with .log.csv for its extension, e.g. faces.json -> faces.log.csv)")
    p.add_argument("--aligned", help="also write the kept face of each photo aligned, in ALIGNED/<template>/<path>")
    p.add_argument("--templates", default="arcface,sphereface,ec_mc",
                   help="comma-separated templates for --aligned (default: all three)")
    p.add_argument("--size", type=int, default=112,
                   help="crop height of the aligned faces (default 112); crops are warped out of the photo from "
                        "the landmarks, so photos of any shape are accepted and none is squashed or padded")
    add_detector_options(p)
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (none is drawn either when stderr is not a terminal)")
    p.set_defaults(func=run)
