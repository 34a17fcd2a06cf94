"""``facemargin clean``: find (and drop) outliers of a training set with a sub-center head."""
from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser(
        "clean", help="list the outliers of a RecordIO set with a trained sub-center head (optionally write a cleaned set)",
        description="Embed every image of a RecordIO training set with the backbone of a checkpoint trained with "
                    "loss.name=subcenter_arcface. For each class the dominant sub-center is the one most of its "
                    "samples are nearest to; a sample whose angle to it exceeds --threshold degrees is an outlier. "
                    "Writes their record keys (one per line) to --out, and with --clean-rec a copy of the set "
                    "without them.")
    p.add_argument("checkpoint", help="checkpoint.pt of a sub-center run")
    p.add_argument("--data", required=True, help="folder with train.rec, train.idx and property")
    p.add_argument("--out", required=True, help="text file for the outlier record keys")
    p.add_argument("--clean-rec", metavar="DIR", help="also write DIR/train.rec, train.idx, property without the outliers")
    p.add_argument("--threshold", type=float, default=75.0, help="angle to the dominant sub-center, degrees (default 75)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from .clean import clean_dataset

    summary = clean_dataset(args.checkpoint, args.data, args.out, clean_rec=args.clean_rec,
                            threshold_deg=args.threshold, batch_size=args.batch_size, workers=args.workers,
                            progress=not args.no_progress)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("keys", "per_class")}))
    return 0
