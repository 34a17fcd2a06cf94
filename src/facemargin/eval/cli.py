"""``facemargin eval``, ``facemargin embed`` and ``facemargin verify``: a trained model at work.

Each takes a checkpoint written by ``facemargin train`` or the ``.onnx`` file written by
``facemargin export`` (see :mod:`facemargin.eval.inference`).  torch and NumPy are imported inside
the functions, so that ``facemargin --help`` does not wait for them.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from ..io import atomic_open

MODEL_HELP = "checkpoint.pt written by 'facemargin train', or the .onnx file written by 'facemargin export'"


def _counts(text: str):
    try:
        out = [int(float(v)) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated distractor counts, got {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"distractor counts must be positive integers, got {text!r}")
    return out


def _folds(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer number of folds, got {text!r}") from None
    if k < 2:
        raise argparse.ArgumentTypeError(f"the LFW protocol needs at least 2 folds, got {k}")
    return k


def _progress(args) -> bool:
    """Progress bars: not with --quiet, and only on a terminal (never into a log file or a pipe)."""
    if getattr(args, "quiet", False):
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _load_model(path):
    """The model of a checkpoint or ONNX file; a missing onnxruntime becomes one error line."""
    from .inference import load_model

    try:
        return load_model(path)
    except ImportError as e:
        raise ValueError(f"{path}: {e}") from None


# the 1:N gallery choices of facemargin.eval.ijb (GALLERIES), spelled out here so that building the
# parser does not import ijb, and with it torch
IJB_GALLERIES = ("G1", "G2", "both", "average")


def register(sub) -> None:
    e = sub.add_parser(
        "eval", help="evaluate a checkpoint: pair sets, IJB-B/IJB-C 1:1 and 1:N, identification with distractors",
        description="Evaluate a checkpoint's backbone on several targets at once and print one table: pair sets "
                    "(insightface .bin packs such as lfw.bin, cfp_fp.bin, agedb_30.bin; an LFW folder with pairs.txt; "
                    "'fashion', the open-set Fashion-MNIST pairs of the run's config) with the LFW protocol; IJB-B or "
                    "IJB-C (insightface layout: meta/ and loose_crop/) with the 1:1 template protocol and optionally "
                    "1:N; and MegaFace-style identification among distractors. --json writes every result, and the "
                    "ROC figure of the targets that have one is drawn beside it.",
    )
    e.add_argument("checkpoint", help=MODEL_HELP)
    e.add_argument("--pairs", action="append", default=[], metavar="PATH",
                   help="a .bin pack, an LFW folder (with pairs.txt) or 'fashion'; repeatable")
    e.add_argument("--pairs-file", help="LFW: pairs.txt path when not inside the folder")
    e.add_argument("--flip", action="store_true",
                   help="pair sets and distractors: flip-test fusion (add the embedding of the mirrored image)")
    e.add_argument("--folds", type=_folds, default=10,
                   help="pair sets: folds of the LFW protocol (default 10); the pairs are split in file order, "
                        "so each fold should hold both same and different pairs")
    e.add_argument("--resize", action="store_true", help="resize images to the model's input instead of refusing")
    e.add_argument("--batch-size", type=int, default=128)
    e.add_argument("--workers", type=int, default=0, help="DataLoader workers for image loading (IJB, folders)")
    e.add_argument("--cache", metavar="DIR",
                   help="where embeddings are cached as .npy (default: eval_cache/ beside the checkpoint)")
    e.add_argument("--json", help="write the results (with each pair set's threshold) to this JSON file")
    e.add_argument("--figure", metavar="PNG",
                   help="ROC figure of the pair sets and IJB 1:1 (default: beside --json, <json stem>_roc.png)")
    e.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bars (they are only drawn when stderr is a terminal anyway)")
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
    g.add_argument("--ijb-gallery", choices=IJB_GALLERIES, default="average",
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
                    "with a checkpoint's backbone or its exported ONNX model; writes OUT.npy (float32, N x D) and "
                    "OUT.csv (row, source, label).",
    )
    m.add_argument("checkpoint", help=MODEL_HELP)
    m.add_argument("--images", required=True, help="image folder or RecordIO folder")
    m.add_argument("--out", required=True, help="output .npy path (the index goes beside it as .csv)")
    m.add_argument("--flip", action="store_true", help="flip-test fusion")
    m.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
    m.add_argument("--batch-size", type=int, default=128)
    m.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    m.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar (it is only drawn when stderr is a terminal anyway)")
    m.set_defaults(func=run_embed)

    v = sub.add_parser(
        "verify", help="are two aligned face images the same person?",
        description="Cosine similarity of two aligned images' embeddings, and same/different at a threshold "
                    "(given, or read from the JSON written by 'facemargin eval --json'). The model is a "
                    "checkpoint or its exported ONNX file.",
    )
    v.add_argument("checkpoint", help=MODEL_HELP)
    v.add_argument("image_a")
    v.add_argument("image_b")
    g = v.add_mutually_exclusive_group()
    g.add_argument("--threshold", type=float, help="cosine threshold (same if score > threshold)")
    g.add_argument("--threshold-from", metavar="JSON", help="results JSON of facemargin eval --json")
    v.add_argument("--set", dest="pair_set", help="with --threshold-from: which evaluated set's threshold")
    v.add_argument("--flip", action="store_true", help="flip-test fusion (add the embedding of the mirrored image)")
    v.add_argument("--resize", action="store_true",
                   help="resize each image to the model's input size (bilinear) instead of refusing another size; "
                        "the faces must still be aligned, resizing does not align them")
    v.set_defaults(func=run_verify)


def _pair_labels(spec: str, pairs_file, config):
    """The same/different flags of a pair set, read without decoding an image (None: left to the loader)."""
    import numpy as np

    p = Path(spec)
    if spec == "fashion":
        if config is None:
            raise ValueError("--pairs fashion: the Fashion-MNIST pairs are drawn from the run config of a checkpoint, "
                             "and an ONNX model has none; give the checkpoint instead")
        # the open-set protocol's layout: 10 folds, each half same then half different pairs
        half = int(config["data"]["num_pairs"]) // 20
        return "fashion-openset", np.tile(np.repeat([True, False], half), 10)
    if p.suffix == ".bin" and p.is_file():
        from ..data.binpack import read_bin_raw

        return p.stem, read_bin_raw(p)[1]
    if p.is_dir():
        from ..data.lfw import load_lfw_pairs

        return p.stem, load_lfw_pairs(p, pairs_file)[2]  # also finds a missing image, by pairs-file line
    return spec, None


def check_pair_sets(pairs, pairs_file, config, folds: int, warn=None):
    """Check each pair set against the fold count before anything is embedded.

    Raises ``ValueError`` naming ``--folds`` when a set has fewer pairs than folds, or when it
    lacks same or different pairs; calls ``warn(line)`` for a set with folds of one class only,
    whose k-fold accuracy is then not meaningful.
    """
    from .verification import one_class_folds

    for spec in pairs:
        name, same = _pair_labels(spec, pairs_file, config)
        if same is None:
            continue
        n, n_same = len(same), int(same.sum())
        if n < 2:
            raise ValueError(f"{name}: {n} pair(s); the LFW protocol needs at least 2 (one per fold)")
        if n < folds:
            raise ValueError(f"{name}: cannot split {n} pairs into {folds} folds: use --folds {n} or fewer")
        if n_same == 0 or n_same == n:
            raise ValueError(f"{name}: verification needs both same and different pairs; got {n_same} same, "
                             f"{n - n_same} different")
        bad = one_class_folds(same, folds)
        if bad and warn is not None:
            warn(f"{name}: {len(bad)} of {folds} folds hold pairs of one class only (the pairs are split into "
                 f"folds in file order), so the accuracy is not meaningful; list the pairs shuffled or with same "
                 f"and different pairs interleaved, as LFW's pairs.txt does (AUC, EER and TAR@FAR are unaffected)")


def run_eval(args) -> int:
    from .ijb import IJBOptions
    from .summary import evaluate_targets, summary_table, write_results

    if args.ijb and not args.dataset:
        raise ValueError("--ijb needs --dataset IJBB or IJBC")
    if args.dataset and not args.ijb:
        raise ValueError("--dataset is for --ijb ROOT; give the IJB folder too")
    if bool(args.megaface) != bool(args.distractors):
        raise ValueError("--megaface and --distractors go together")
    model, config = _load_model(args.checkpoint)
    check_pair_sets(args.pairs, args.pairs_file, config, args.folds,
                    warn=lambda line: print(f"facemargin eval: warning: {line}", file=sys.stderr))
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
                               resize=args.resize, cache_dir=cache, workers=args.workers, progress=_progress(args))
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
    import numpy as np
    import torch

    from . import embed_images

    model, _ = _load_model(args.checkpoint)
    root = Path(args.images)
    if (root / "train.rec").exists() or root.suffix == ".rec":
        from ..data.recordio import RecordIO

        ds = RecordIO(root)
        sources = [f"record:{i}" for i in range(len(ds))]
    else:
        from ..data.folder import ImageFolder

        c, h, w = model.input_size
        ds = ImageFolder(root, size=(h, w), channels=c)
        sources = [str(p) for p in ds.paths]
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)
    emb = embed_images(model, loader, batch_size=args.batch_size, flip=args.flip, progress=_progress(args))
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
    import numpy as np
    import torch

    from ..data.images import load_image
    from . import embed_images
    from .summary import prepare_images

    model, _ = _load_model(args.checkpoint)
    # one image at a time: a wrongly sized image is reported by name with the expected size
    x = torch.cat([prepare_images(load_image(p)[None], model.input_size, str(p), resize=args.resize)
                   for p in (args.image_a, args.image_b)])
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
