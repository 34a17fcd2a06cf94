"""One evaluation of a model over several targets: pair sets, IJB-B/IJB-C, distractor search.

:func:`evaluate_targets` embeds each target with the model and runs its protocol; the results
are one dict per target (``kind`` = ``pairs``, ``ijb_1to1``, ``ijb_1toN`` or ``distractors``).
:func:`summary_table` turns them into one table (plain text or Markdown), :func:`write_results`
writes the JSON and the ROC figure of the targets that have a ROC.

Reading the table:

* *pairs* (``.bin`` packs, LFW, the Fashion-MNIST open set): LFW protocol, accuracy ± std over
  10 folds, AUC, EER, and TAR at FAR read as the largest TAR whose FAR is at most the level.
* *IJB 1:1*: TAR at FAR 1e-6 .. 1e-1 read at the nearest FAR on the ROC, as the published
  tables are (the at-most reading is in the JSON), and the AUC.
* *IJB 1:N*: rank-1/5/10 of the mated probes and TPIR at FPIR 0.01 and 0.1 (the rule is in
  :func:`facemargin.eval.ijb.identify_open_set`).
* *distractors*: rank-1 (and rank-k) at each distractor count, MegaFace style.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..data.arrays import images_to_tensor, to_grey, to_tensor_images
from ..data.binpack import load_bin
from ..data.fashion import load_fashion_mnist
from ..data.folder import ImageFolder
from ..data.images import resize_image
from ..data.lfw import load_lfw
from ..data.openset import OpenSetProtocol
from ..io import atomic_open, write_json
from ..viz.figures import plot_roc

__all__ = [
    "prepare_images",
    "load_pair_set",
    "evaluate_pairs",
    "evaluate_ijb",
    "evaluate_distractors",
    "evaluate_targets",
    "summary_table",
    "write_results",
    "roc_curves",
    "jsonable",
]

PathLike = Union[str, os.PathLike]


# ------------------------------------------------------------------------------------------------
# pair sets
# ------------------------------------------------------------------------------------------------
def prepare_images(images: np.ndarray, input_size: Tuple[int, int, int], where: str, resize: bool = False) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` RGB -> the model's normalised ``(N, C, H, W)``; checks the size."""
    c, h, w = input_size
    if images.shape[1:3] != (h, w):
        if not resize:
            raise ValueError(f"{where}: images are {images.shape[1]}x{images.shape[2]} (HxW) but the model expects "
                             f"{h}x{w}; align them to that size (facemargin align) or pass --resize")
        images = np.stack([resize_image(im, (h, w)) for im in images])
    if c == 1 and images.ndim == 4:
        images = to_grey(images)
    return images_to_tensor(images)


def load_pair_set(spec: str, pairs_file, input_size, resize: bool, config: Dict):
    """A pair set as ``(name, images tensor, (first, second) indices, same flags)``.

    ``spec``: a ``.bin`` verification pack, an LFW folder (with ``pairs.txt`` or ``pairs_file``)
    or ``fashion`` (the open-set Fashion-MNIST pairs of the run's ``config``).
    """
    p = Path(spec)
    if spec == "fashion":
        d = config["data"]
        images, labels = load_fashion_mnist("test", root=d.get("root") or None)
        proto = OpenSetProtocol(train_classes=tuple(d["train_classes"]), eval_classes=tuple(d["eval_classes"]),
                                num_pairs=int(d["num_pairs"]), folds=10, seed=int(config["train"]["seed"]))
        idx = np.flatnonzero(np.isin(labels, list(d["eval_classes"])))
        i1, i2, same = proto.pairs(labels[idx])
        x = to_tensor_images(images[idx])
        return "fashion-openset", x, (i1, i2), same
    if p.suffix == ".bin":
        images, same = load_bin(p)
    elif p.is_dir():
        images, same = load_lfw(p, pairs_file)
    else:
        raise FileNotFoundError(f"pair set {spec!r}: expected a .bin file, an LFW folder or 'fashion'")
    x = prepare_images(images, input_size, str(p), resize)
    n = len(same)
    return p.stem, x, (np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2)), same


def evaluate_pairs(model, spec: str, config: Dict, flip: bool = False, folds: int = 10, batch_size: int = 128,
                   pairs_file=None, resize: bool = False, progress: bool = True) -> Dict:
    """One pair set with the LFW protocol (:func:`facemargin.eval.verify`)."""
    from .embed import embed_images
    from .verification import verify

    name, x, (i1, i2), same = load_pair_set(spec, pairs_file, model.input_size, resize, config)
    emb = embed_images(model, x, batch_size=batch_size, flip=flip, progress=progress)
    r = verify(emb[i1], emb[i2], issame=same, folds=folds)
    out = {k: r[k] for k in ("accuracy", "accuracy_std", "threshold", "auc", "eer")}
    out.update({"kind": "pairs", "name": name, "tar_at_far": dict(r["tar_at_far"]), "pairs": int(len(same)),
                "roc": r["roc"], "flip": bool(flip)})
    return out


# ------------------------------------------------------------------------------------------------
# IJB
# ------------------------------------------------------------------------------------------------
def evaluate_ijb(model, root: PathLike, dataset: str, options=None, one_to_n: bool = False, gallery: str = "average",
                 cache_dir: Optional[PathLike] = None, batch_size: int = 128, workers: int = 0,
                 progress: bool = True) -> List[Dict]:
    """IJB 1:1 (and with ``one_to_n`` the 1:N protocol) of one dataset; embeddings are cached."""
    from .ijb import IJBOptions, embed_ijb, ijb_1to1, ijb_1toN, read_ijb, read_ijb_1n

    options = options or IJBOptions()
    meta = read_ijb(root, dataset)
    lists = read_ijb_1n(meta) if one_to_n else None  # fail on a bad 1:N file before embedding
    emb, emb_f = embed_ijb(model, meta, cache_dir=cache_dir, batch_size=batch_size, workers=workers, progress=progress)
    r = ijb_1to1(meta, emb, emb_f, options, progress=progress)
    r.pop("scores")
    out = [{"kind": "ijb_1to1", "name": f"{meta.dataset} 1:1", **r}]
    if one_to_n:
        out.append({"kind": "ijb_1toN", "name": f"{meta.dataset} 1:N",
                    **ijb_1toN(meta, emb, emb_f, options, gallery=gallery, lists=lists)})
    return out


# ------------------------------------------------------------------------------------------------
# distractors
# ------------------------------------------------------------------------------------------------
def _cache_key(model, paths: Sequence[Path], flip: bool) -> str:
    from .ijb import model_fingerprint

    h = hashlib.sha256(model_fingerprint(model).encode())
    h.update(str(bool(flip)).encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _embed_folder(model, folder: Path, flip: bool, cache_dir: Optional[PathLike], batch_size: int, workers: int,
                  progress: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Embeddings and labels of an image folder ``<identity>/<image>``, cached by content key."""
    from .embed import embed_images

    c, h, w = model.input_size
    ds = ImageFolder(folder, size=(h, w), channels=c)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"{folder.name}_{_cache_key(model, [Path(p) for p in ds.paths], flip)}.npy"
        if cache.is_file():
            e = np.load(cache, mmap_mode="r")
            if e.shape[0] == len(ds):
                return e, ds.labels
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers)
    e = embed_images(model, loader, batch_size=batch_size, flip=flip, progress=progress)
    if cache is not None:
        with atomic_open(cache, "wb") as f:
            np.save(f, e)
    return e, ds.labels


def _load_embeddings(path: Path, need_labels: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """A ``.npy`` of embeddings (memory-mapped) and, beside it, the ``.csv`` index of ``facemargin embed``."""
    import csv

    if not path.is_file():
        raise FileNotFoundError(f"embedding file not found: {path}")
    e = np.load(path, mmap_mode="r", allow_pickle=False)
    if e.ndim != 2:
        raise ValueError(f"{path}: expected an (N, D) array of embeddings, got shape {e.shape}")
    if not need_labels:
        return e, None
    idx = path.with_suffix(".csv")
    if not idx.is_file():
        raise FileNotFoundError(f"{path}: the probe labels are read from {idx} (row,source,label), which is missing")
    labels = []
    with open(idx, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        next(rows, None)
        for i, row in enumerate(rows, 2):
            try:
                labels.append(int(row[2]))
            except (ValueError, IndexError):
                raise ValueError(f"{idx}, line {i}: expected row,source,label with an integer label, got {row!r}") from None
    if len(labels) != e.shape[0]:
        raise ValueError(f"{idx} lists {len(labels)} rows but {path} has {e.shape[0]} embeddings")
    return e, np.array(labels, dtype=np.int64)


def evaluate_distractors(model, probes: PathLike, distractors: PathLike, counts=None, max_rank: int = 10,
                         flip: bool = False, cache_dir: Optional[PathLike] = None, batch_size: int = 128,
                         workers: int = 0, progress: bool = True) -> Dict:
    """MegaFace-style identification: probe identities searched among ``distractors``.

    ``probes``: an image folder ``<identity>/<image>`` of aligned faces, or a ``.npy`` of
    embeddings with the ``.csv`` index of ``facemargin embed`` beside it (labels in its third
    column).  ``distractors``: a folder of aligned faces or a ``.npy`` of their embeddings
    (memory-mapped, so a million 512-D rows need not fit in memory).
    """
    from .distractors import identify_with_distractors

    probes, distractors = Path(probes), Path(distractors)
    if probes.suffix == ".npy":
        pe, pl = _load_embeddings(probes, True)
    else:
        pe, pl = _embed_folder(model, probes, flip, cache_dir, batch_size, workers, progress)
    if distractors.suffix == ".npy":
        from .distractors import NpyRows

        de = NpyRows(distractors)  # read a chunk at a time
    else:
        de, _ = _embed_folder(model, distractors, flip, cache_dir, batch_size, workers, progress)
    r = identify_with_distractors(np.asarray(pe), pl, de, counts=counts, max_rank=max_rank, progress=progress)
    return {"kind": "distractors", "name": "distractors", "probes": str(probes), "distractors": str(distractors),
            "flip": bool(flip), **r}


# ------------------------------------------------------------------------------------------------
# all targets, one table
# ------------------------------------------------------------------------------------------------
def _one_line(r: Dict) -> str:
    k = r["kind"]
    if k == "pairs":
        tars = ", ".join(f"TAR@FAR={f}: {v:.4f}" for f, v in r["tar_at_far"].items())
        return (f"{r['name']}: accuracy {r['accuracy']:.4f} ± {r['accuracy_std']:.4f}, threshold {r['threshold']:.4f}, "
                f"AUC {r['auc']:.4f}, EER {r['eer']:.4f}" + (f", {tars}" if tars else "") + f" ({r['pairs']} pairs)")
    if k == "ijb_1to1":
        tars = ", ".join(f"{f:g}: {v:.4f}" for f, v in r["tar_at_far"].items())
        return (f"{r['name']}: TAR@FAR {tars}; AUC {r['auc']:.4f} ({r['num_pairs']} pairs, {r['num_templates']} "
                f"templates; {r['options']})")
    if k == "ijb_1toN":
        tp = ", ".join(f"{f:g}: {v['tpir']:.4f}" for f, v in r["tpir_at_fpir"].items()) or "n/a"
        return (f"{r['name']} (gallery {r['gallery']}): top-1 {r['top1']:.4f}, top-5 {r['top5']:.4f}, "
                f"top-10 {r['top10']:.4f}; TPIR@FPIR {tp} ({r['num_probes']} probes)")
    if k == "distractors":
        curve = ", ".join(f"{n}: {v:.4f}" for n, v in r["rank1"].items())
        return f"{r['name']}: rank-1 by distractor count {curve} ({r['num_searches']} searches)"
    raise ValueError(f"unknown result kind {k!r}")


def evaluate_targets(model, config: Dict, pairs: Sequence[str] = (), ijb: Optional[Dict] = None,
                     megaface: Optional[Dict] = None, flip: bool = False, folds: int = 10, batch_size: int = 128,
                     pairs_file=None, resize: bool = False, cache_dir: Optional[PathLike] = None, workers: int = 0,
                     progress: bool = True, echo=print) -> List[Dict]:
    """Run every target in turn and return their results (one line each is passed to ``echo``).

    ``ijb``: ``{"root", "dataset", "options" (IJBOptions), "one_to_n", "gallery"}``;
    ``megaface``: ``{"probes", "distractors", "counts", "max_rank"}``.
    """
    if not pairs and not ijb and not megaface:
        raise ValueError("nothing to evaluate: give --pairs, --ijb or --megaface")
    results: List[Dict] = []

    def add(r):
        results.append(r)
        if echo is not None:
            echo(_one_line(r))

    for spec in pairs:
        add(evaluate_pairs(model, spec, config, flip=flip, folds=folds, batch_size=batch_size,
                           pairs_file=pairs_file, resize=resize, progress=progress))
    if ijb:
        for r in evaluate_ijb(model, ijb["root"], ijb["dataset"], ijb.get("options"), ijb.get("one_to_n", False),
                              ijb.get("gallery", "average"), cache_dir, batch_size, workers, progress):
            add(r)
    if megaface:
        add(evaluate_distractors(model, megaface["probes"], megaface["distractors"], megaface.get("counts"),
                                 megaface.get("max_rank", 10), flip, cache_dir, batch_size, workers, progress))
    return results


def _fmt(v, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def summary_table(results: Sequence[Dict], markdown: bool = False) -> str:
    """One table over every target: a row each, the columns any of them has.

    Columns: accuracy ± std, AUC, EER (pairs); TAR at each FAR level present (pairs: at-most
    reading; IJB 1:1: nearest reading); rank-1/5/10 (IJB 1:N, and rank-1 at the largest
    distractor count); TPIR at FPIR 0.01/0.1; and a note (options, gallery, sizes).
    """
    fars = sorted({float(f) for r in results for f in r.get("tar_at_far", {})})
    fpirs = sorted({float(f) for r in results for f in r.get("tpir_at_fpir", {})})
    cols = ["target", "accuracy", "AUC", "EER"] + [f"TAR@{f:g}" for f in fars] + ["rank-1", "rank-5", "rank-10"] \
        + [f"TPIR@{f:g}" for f in fpirs] + ["note"]
    rows = []
    for r in results:
        row = {c: "" for c in cols}
        row["target"] = r["name"]
        k = r["kind"]
        if "auc" in r:
            row["AUC"] = _fmt(r["auc"])
        if k == "pairs":
            row["accuracy"] = f"{r['accuracy']:.4f} ± {r['accuracy_std']:.4f}"
            row["EER"] = _fmt(r["eer"])
            row["note"] = f"{r['pairs']} pairs, LFW protocol{', flip' if r.get('flip') else ''}"
        for f, v in r.get("tar_at_far", {}).items():
            row[f"TAR@{float(f):g}"] = _fmt(v)
        if k == "ijb_1to1":
            row["note"] = f"{r['num_pairs']} pairs, {r['num_templates']} templates; {r['options']}"
        if k == "ijb_1toN":
            for n in (1, 5, 10):
                if f"top{n}" in r:
                    row[f"rank-{n}"] = _fmt(r[f"top{n}"])
            for f, v in r["tpir_at_fpir"].items():
                row[f"TPIR@{float(f):g}"] = _fmt(v["tpir"])
            row["note"] = f"gallery {r['gallery']}, {r['num_probes']} probes; {r['options']}"
        if k == "distractors":
            n = max(r["rank1"])
            cmc = r["cmc"][n]
            for kk in (1, 5, 10):
                if kk <= len(cmc):
                    row[f"rank-{kk}"] = _fmt(cmc[kk - 1])
            row["note"] = f"{n} distractors, {r['num_searches']} searches ({r['form']} form)"
        rows.append(row)
    used = [c for c in cols if c in ("target", "note") or any(row[c] for row in rows)]
    table = [[row[c] for c in used] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(used) + " |", "|" + "---|" * len(used)]
        lines += ["| " + " | ".join(t) + " |" for t in table]
    else:
        widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(used)]
        fmt = lambda cells: "  ".join(s.ljust(w) for s, w in zip(cells, widths)).rstrip()
        lines = [fmt(used), fmt(["-" * w for w in widths])] + [fmt(t) for t in table]
    notes = []
    if any(r["kind"] == "pairs" for r in results) and fars:
        notes.append("pair sets: TAR = largest TAR with FAR <= level")
    if any(r["kind"] == "ijb_1to1" for r in results):
        notes.append("IJB 1:1: TAR at the ROC point with the FAR nearest each level, as in the published tables")
    if any(r["kind"] == "ijb_1toN" for r in results):
        notes.append("IJB 1:N: FPIR f allows floor(f x non-mated probes) false alarms; TPIR counts rank-1 hits above it")
    if any(r["kind"] == "distractors" for r in results):
        notes.append("distractors: rank-k at the largest count; rank-1 per count in the JSON")
    return "\n".join(lines + ([""] + [f"* {n}" for n in notes] if notes else []))


def roc_curves(results: Sequence[Dict], points: int = 2000) -> Dict[str, Dict]:
    """``{target: {"fpr", "tpr", "auc"}}`` of the targets with a ROC, sampled for drawing (the AUC
    is the one computed on the full curve)."""
    from ..roc import roc_for_plot

    out = {}
    for r in results:
        if "roc" in r:
            fpr, tpr = roc_for_plot(r["roc"]["fpr"], r["roc"]["tpr"], points=points)
            out[r["name"]] = {"fpr": fpr, "tpr": tpr, "auc": r["auc"]}
    return out


def jsonable(obj):
    """Results -> plain JSON types: float keys become strings, arrays and ROC curves are dropped."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items() if k != "roc" and not isinstance(v, np.ndarray)}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_results(results: Sequence[Dict], json_path: Optional[PathLike] = None, figure: Optional[PathLike] = None,
                  header: Optional[Dict] = None) -> Optional[Path]:
    """Write the JSON (``header`` + ``{"sets": {target: result}}``) and the ROC figure, atomically.

    Returns the figure's path when one was drawn (only targets with a ROC are drawn).
    """
    if json_path is not None:
        write_json(json_path, {**jsonable(header or {}), "sets": {r["name"]: jsonable(r) for r in results}})
    curves = roc_curves(results)
    if figure is not None and curves:
        return plot_roc(curves, figure, log_x=True, title="ROC of the evaluated targets")
    return None
