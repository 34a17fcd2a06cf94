"""``facemargin eval``, ``facemargin embed`` and ``facemargin verify``: a trained checkpoint at work."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch


def register(sub) -> None:
    e = sub.add_parser(
        "eval", help="evaluate a checkpoint on verification pairs (LFW protocol)",
        description="Evaluate a checkpoint's backbone on pair sets: insightface .bin packs (lfw.bin, "
                    "cfp_fp.bin, agedb_30.bin), an LFW folder with pairs.txt, or 'fashion' (the open-set "
                    "Fashion-MNIST pairs of the run's config). Prints accuracy ± std, threshold, AUC, EER, TAR@FAR.",
    )
    e.add_argument("checkpoint", help="checkpoint.pt written by facemargin train")
    e.add_argument("--pairs", action="append", required=True, metavar="PATH",
                   help="a .bin pack, an LFW folder (with pairs.txt) or 'fashion'; repeatable")
    e.add_argument("--pairs-file", help="LFW: pairs.txt path when not inside the folder")
    e.add_argument("--flip", action="store_true", help="flip-test fusion (add the embedding of the mirrored image)")
    e.add_argument("--folds", type=int, default=10)
    e.add_argument("--resize", action="store_true", help="resize images to the model's input instead of refusing")
    e.add_argument("--batch-size", type=int, default=128)
    e.add_argument("--json", help="write the results (with each set's threshold) to this JSON file")
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


def prepare_images(images: np.ndarray, input_size: Tuple[int, int, int], where: str, resize: bool = False) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` RGB -> the model's normalised ``(N, C, H, W)``; checks the size."""
    from ..data.arrays import images_to_tensor
    from ..data.images import resize_image

    c, h, w = input_size
    if images.shape[1:3] != (h, w):
        if not resize:
            raise ValueError(f"{where}: images are {images.shape[1]}x{images.shape[2]} (HxW) but the model expects "
                             f"{h}x{w}; align them to that size (facemargin align) or pass --resize")
        images = np.stack([resize_image(im, (h, w)) for im in images])
    if c == 1 and images.ndim == 4:
        images = np.round(images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.uint8)
    return images_to_tensor(images)


def _load_pairs(spec: str, pairs_file, input_size, resize: bool, config: Dict):
    p = Path(spec)
    if spec == "fashion":
        from ..data.fashion import load_fashion_mnist
        from ..data.openset import OpenSetProtocol
        from ..train.data import to_tensor_images

        d = config["data"]
        images, labels = load_fashion_mnist("test", root=d.get("root") or None)
        proto = OpenSetProtocol(train_classes=tuple(d["train_classes"]), eval_classes=tuple(d["eval_classes"]),
                                num_pairs=int(d["num_pairs"]), folds=10, seed=int(config["train"]["seed"]))
        idx = np.flatnonzero(np.isin(labels, list(d["eval_classes"])))
        i1, i2, same = proto.pairs(labels[idx])
        x = to_tensor_images(images[idx])
        return x, (i1, i2), same
    if p.suffix == ".bin":
        from ..data.binpack import load_bin

        images, same = load_bin(p)
    elif p.is_dir():
        from ..data.lfw import load_lfw

        images, same = load_lfw(p, pairs_file)
    else:
        raise FileNotFoundError(f"pair set {spec!r}: expected a .bin file, an LFW folder or 'fashion'")
    x = prepare_images(images, input_size, str(p), resize)
    n = len(same)
    return x, (np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2)), same


def run_eval(args) -> int:
    from ..train.checkpoint import load_backbone
    from . import embed_images, verify

    model, config = load_backbone(args.checkpoint)
    results = {}
    for spec in args.pairs:
        x, (i1, i2), same = _load_pairs(spec, args.pairs_file, model.input_size, args.resize, config)
        emb = embed_images(model, x, batch_size=args.batch_size, flip=args.flip, progress=True)
        r = verify(emb[i1], emb[i2], issame=same, folds=args.folds)
        name = Path(spec).stem if spec != "fashion" else "fashion-openset"
        results[name] = {k: r[k] for k in ("accuracy", "accuracy_std", "threshold", "auc", "eer")}
        results[name]["tar_at_far"] = {str(k): float(v) for k, v in r["tar_at_far"].items()}
        results[name]["pairs"] = int(len(same))
        tars = ", ".join(f"TAR@FAR={k}: {v:.4f}" for k, v in r["tar_at_far"].items())
        print(f"{name}: accuracy {r['accuracy']:.4f} ± {r['accuracy_std']:.4f}, threshold {r['threshold']:.4f}, "
              f"AUC {r['auc']:.4f}, EER {r['eer']:.4f}" + (f", {tars}" if tars else "") + f" ({len(same)} pairs)")
    if args.json:
        from ..io import write_json

        write_json(args.json, {"checkpoint": str(args.checkpoint), "flip": args.flip, "sets": results})
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

    model, _ = load_backbone(args.checkpoint)
    # one image at a time: a wrongly sized image is reported by name with the expected size
    x = torch.cat([prepare_images(load_image(p)[None], model.input_size, str(p)) for p in (args.image_a, args.image_b)])
    e = embed_images(model, x, flip=args.flip)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    score = float(e[0] @ e[1])
    threshold = args.threshold
    if args.threshold_from:
        data = json.loads(Path(args.threshold_from).read_text())
        sets = data.get("sets", {})
        if not sets:
            raise ValueError(f"{args.threshold_from} holds no evaluated sets")
        key = args.pair_set or next(iter(sets))
        if key not in sets:
            raise ValueError(f"{args.threshold_from} has no set {key!r}; it has {', '.join(sets)}")
        threshold = float(sets[key]["threshold"])
    if threshold is None:
        print(f"cosine similarity: {score:.4f}")
    else:
        verdict = "same" if score > threshold else "different"
        print(f"cosine similarity: {score:.4f} (threshold {threshold:.4f}): {verdict}")
    return 0
