"""``facemargin eval``, ``facemargin embed`` and ``facemargin verify``: a trained checkpoint at work."""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch


def _counts(text: str):
    try:
        out = [int(float(v)) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated distractor counts, got {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"distractor counts must be positive integers, got {text!r}")
    return out


def register(sub) -> None:
    from .ijb import GALLERIES

    e = sub.add_parser(
        "eval", help="evaluate a checkpoint: pair sets, IJB-B/IJB-C 1:1 and 1:N, identification with distractors",
        description="Evaluate a checkpoint's backbone on several targets at once and print one table: pair sets "
                    "(insightface .bin packs such as lfw.bin, cfp_fp.bin, agedb_30.bin; an LFW folder with pairs.txt; "
                    "'fashion', the open-set Fashion-MNIST pairs of the run's config) with the LFW protocol; IJB-B or "
                    "IJB-C (insightface layout: meta/ and loose_crop/) with the 1:1 template protocol and optionally "
                    "1:N; and MegaFace-style identification among distractors. --json writes every result, and the "
                    "ROC figure of the targets that have one is drawn beside it.",
    )
    e.add_argument("checkpoint", help="checkpoint.pt written by facemargin train")
    e.add_argument("--pairs", action="append", default=[], metavar="PATH",
                   help="a .bin pack, an LFW folder (with pairs.txt) or 'fashion'; repeatable")
    e.add_argument("--pairs-file", help="LFW: pairs.txt path when not inside the folder")
    e.add_argument("--flip", action="store_true",
                   help="pair sets and distractors: flip-test fusion (add the embedding of the mirrored image)")
    e.add_argument("--folds", type=int, default=10)
    e.add_argument("--resize", action="store_true", help="resize images to the model's input instead of refusing")
    e.add_argument("--batch-size", type=int, default=128)
    e.add_argument("--workers", type=int, default=0, help="DataLoader workers for image loading (IJB, folders)")
    e.add_argument("--cache", metavar="DIR",
                   help="where embeddings are cached as .npy (default: eval_cache/ beside the checkpoint)")
    e.add_argument("--json", help="write the results (with each pair set's threshold) to this JSON file")
    e.add_argument("--figure", metavar="PNG",
                   help="ROC figure of the pair sets and IJB 1:1 (default: beside --json, <json stem>_roc.png)")
    g = e.add_argument_group("IJB-B / IJB-C")
    g.add_argument("--ijb", metavar="ROOT", help="IJB folder with meta/ and loose_crop/ (or the folder holding IJBB/, IJBC/)")
    g.add_argument("--dataset", type=str.upper, choices=["IJBB", "IJBC"], help="which IJB set (required with --ijb)")
    g.add_argument("--ijb-flip", action=argparse.BooleanOptionalAction, default=True,
                   help="image feature = f(img) + f(mirrored img) (default on)")
    g.add_argument("--ijb-norm-weight", action=argparse.BooleanOptionalAction, default=True,
                   help="keep each image feature's norm, so it weights the image in its template; off: L2-normalise "
                        "each image feature first (default on)")
    g.add_argument("--ijb-faceness", action=argparse.BooleanOptionalAction, default=True,
                   help="multiply each image feature by its detector (faceness) score (default on)")
    g.add_argument("--ijb-1n", action="store_true", help="also run 1:N identification (needs the 1N gallery/probe CSVs)")
    g.add_argument("--ijb-gallery", choices=GALLERIES, default="average",
                   help="1:N gallery: G1 or G2 (IJB-B: S1 or S2; open set), both together (closed set, no TPIR), or "
                        "average (each in turn, results averaged; default)")
    m = e.add_argument_group("identification with distractors (MegaFace style)")
    m.add_argument("--megaface", metavar="PROBES",
                   help="probe faces: a folder <identity>/<image> of aligned images, or a .npy of embeddings with the "
                        ".csv index of facemargin embed beside it; each image searches for each other image of its identity")
    m.add_argument("--distractors", metavar="PATH", help="distractor faces: a folder of aligned images or a .npy of embeddings")
    m.add_argument("--distractor-counts", type=_counts, metavar="N,N,...",
                   help="distractor counts to report (default 10, 100, ... and all)")
    m.add_argument("--max-rank", type=int, default=10, help="CMC up to this rank (default 10)")
    e.set_defaults(func=run_eval)

    m = sub.add_parser(
        "embed", help="embed a folder of images or a RecordIO set (.npy + index CSV)",
        description="Embed every image of a folder (<class>/<image>) or a RecordIO set (train.rec/train.idx) "
                    "with a checkpoint's backbone; writes OUT.npy (float32, N x D) and OUT.csv (row, source, label).",
    )
    m.add_argument("checkpoint")
    m.add_argument("--images", required=True, help="image folder or RecordIO folder")
    m.add_argument("--out", required=True, help="output .npy path (the index goes beside it as .csv)")
    m.add_argument("--flip", action="store_true", help="flip-test fusion")
    m.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
    m.add_argument("--batch-size", type=int, default=128)
    m.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    m.set_defaults(func=run_embed)

    v = sub.add_parser(
        "verify", help="are two aligned face images the same person?",
        description="Cosine similarity of two aligned images' embeddings, and same/different at a threshold "
                    "(given, or read from the JSON written by 'facemargin eval --json').",
    )
    v.add_argument("checkpoint")
    v.add_argument("image_a")
    v.add_argument("image_b")
    g = v.add_mutually_exclusive_group()
    g.add_argument("--threshold", type=float, help="cosine threshold (same if score > threshold)")
    g.add_argument("--threshold-from", metavar="JSON", help="results JSON of facemargin eval --json")
    v.add_argument("--set", dest="pair_set", help="with --threshold-from: which evaluated set's threshold")
    v.add_argument("--flip", action="store_true")
    v.set_defaults(func=run_verify)


def run_eval(args) -> int:
    from ..train.checkpoint import load_backbone
    from .ijb import IJBOptions
    from .summary import evaluate_targets, summary_table, write_results

    if args.ijb and not args.dataset:
        raise ValueError("--ijb needs --dataset IJBB or IJBC")
    if args.dataset and not args.ijb:
        raise ValueError("--dataset is for --ijb ROOT; give the IJB folder too")
    if bool(args.megaface) != bool(args.distractors):
        raise ValueError("--megaface and --distractors go together")
    model, config = load_backbone(args.checkpoint)
    ijb = None
    if args.ijb:
        ijb = {"root": args.ijb, "dataset": args.dataset, "one_to_n": args.ijb_1n, "gallery": args.ijb_gallery,
               "options": IJBOptions(flip=args.ijb_flip, norm_weight=args.ijb_norm_weight, faceness_weight=args.ijb_faceness)}
    megaface = None
    if args.megaface:
        megaface = {"probes": args.megaface, "distractors": args.distractors, "counts": args.distractor_counts,
                    "max_rank": args.max_rank}
    cache = args.cache or str(Path(args.checkpoint).resolve().parent / "eval_cache")
    results = evaluate_targets(model, config, pairs=args.pairs, ijb=ijb, megaface=megaface, flip=args.flip,
                               folds=args.folds, batch_size=args.batch_size, pairs_file=args.pairs_file,
                               resize=args.resize, cache_dir=cache, workers=args.workers)
    print()
    print(summary_table(results))
    figure = args.figure
    if figure is None and args.json:
        figure = str(Path(args.json).with_name(Path(args.json).stem + "_roc.png"))
    drawn = write_results(results, args.json, figure, header={"checkpoint": str(args.checkpoint), "flip": args.flip})
    if args.json:
        print(f"results: {args.json}" + (f", ROC figure: {drawn}" if drawn else ""))
    elif drawn:
        print(f"ROC figure: {drawn}")
    return 0


def run_embed(args) -> int:
    from ..io import atomic_open
    from ..train.checkpoint import load_backbone
    from . import embed_images

    model, _ = load_backbone(args.checkpoint)
    root = Path(args.images)
    if (root / "train.rec").exists() or root.suffix == ".rec":
        from ..data.recordio import RecordIO

        ds = RecordIO(root)
        sources = [f"record:{i}" for i in range(len(ds))]
    else:
        from ..data.folder import ImageFolder

        c, h, w = model.input_size
        ds = ImageFolder(root, size=(h, w))
        sources = [str(p) for p in ds.paths]
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)
    emb = embed_images(model, loader, batch_size=args.batch_size, flip=args.flip, progress=True)
    if args.normalize:
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    out = Path(args.out)
    with atomic_open(out, "wb") as f:
        np.save(f, emb.astype(np.float32))
    with atomic_open(out.with_suffix(".csv"), "w", encoding="utf-8", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["row", "source", "label"])
        for i, (s, lab) in enumerate(zip(sources, ds.labels)):
            wr.writerow([i, s, int(lab)])
    print(f"[embed] {emb.shape[0]} embeddings of width {emb.shape[1]} -> {out} (index {out.with_suffix('.csv')})")
    return 0


def run_verify(args) -> int:
    from ..data.images import load_image
    from ..train.checkpoint import load_backbone
    from . import embed_images
    from .summary import prepare_images

    model, _ = load_backbone(args.checkpoint)
    # one image at a time: a wrongly sized image is reported by name with the expected size
    x = torch.cat([prepare_images(load_image(p)[None], model.input_size, str(p)) for p in (args.image_a, args.image_b)])
    e = embed_images(model, x, flip=args.flip)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    score = float(e[0] @ e[1])
    threshold = args.threshold
    if args.threshold_from:
        data = json.loads(Path(args.threshold_from).read_text())
        sets = {k: v for k, v in data.get("sets", {}).items() if isinstance(v, dict) and "threshold" in v}
        if not sets:
            raise ValueError(f"{args.threshold_from} holds no evaluated pair set with a threshold")
        key = args.pair_set or next(iter(sets))
        if key not in sets:
            raise ValueError(f"{args.threshold_from} has no pair set {key!r} with a threshold; it has {', '.join(sets)}")
        threshold = float(sets[key]["threshold"])
    if threshold is None:
        print(f"cosine similarity: {score:.4f}")
    else:
        verdict = "same" if score > threshold else "different"
        print(f"cosine similarity: {score:.4f} (threshold {threshold:.4f}): {verdict}")
    return 0
