"""Cleaning a training set with a trained sub-center head (``facemargin clean``).

A sub-center head (``subcenter_arcface``) keeps ``K`` centers per class. Clean samples gather
around one dominant center of their class, and noisy or mislabelled ones around the others.
:func:`clean_dataset` embeds every image of a RecordIO set with a checkpoint's backbone, finds the
samples whose angle to their class's dominant sub-center exceeds a threshold (75° by default),
and writes their record keys. Optionally it also writes a cleaned copy of the set, with the
outliers dropped and the encoded images copied byte for byte.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import torch

from .. import losses
from ..data.recordio import RecordIO, write_encoded_record
from ..eval.embed import embed_images
from ..io import atomic_open
from .checkpoint import build_backbone_from_config, load_checkpoint

PathLike = Union[str, Path]


def subcenter_head_from_checkpoint(state: Dict, path: PathLike):
    """The trained sub-center head of a loaded checkpoint (a ValueError naming ``path`` otherwise)."""
    cfg = state["config"]
    table = cfg.get("loss", {})
    if not table.get("name") or not losses.is_head(table["name"]):
        raise ValueError(f"{path}: its loss {table.get('name')!r} is not a classification head")
    loss_state = state.get("loss")
    if not loss_state or "weight" not in loss_state:
        raise ValueError(f"{path}: the checkpoint holds no class weights")
    emb = int(cfg["model"]["embedding_size"])
    K = int(dict(table.get("params", {})).get("K", 3)) if table["name"] == "subcenter_arcface" else 1
    num_classes = loss_state["weight"].shape[0] // K
    head = losses.build_from_config(table, emb, num_classes)
    if head.rows_per_class < 2:
        raise ValueError(f"{path}: loss {table['name']!r} has one row per class; cleaning needs a sub-center "
                         "head (train with loss.name=subcenter_arcface)")
    head.load_state_dict(loss_state)
    return head


def clean_dataset(checkpoint: PathLike, data: PathLike, out: PathLike, clean_rec: Optional[PathLike] = None,
                  threshold_deg: float = 75.0, batch_size: int = 256, workers: int = 0,
                  progress: bool = True) -> Dict:
    """Find the outliers of the RecordIO set ``data`` with the sub-center head of ``checkpoint``.

    Writes ``out``: a text file with one outlier record key per line (after a ``#`` header line
    stating the threshold and counts). With ``clean_rec`` a folder, also writes
    ``clean_rec/train.rec``, ``train.idx`` and ``property`` without the outliers (same labels).
    Returns a summary dict (``images``, ``outliers``, ``keys``, ``per_class``).
    """
    state = load_checkpoint(checkpoint)
    head = subcenter_head_from_checkpoint(state, checkpoint)
    model = build_backbone_from_config(state["config"])
    model.load_state_dict(state["model"])
    ds = RecordIO(data)
    if ds.num_classes > head.num_classes:
        raise ValueError(f"{data}: {ds.num_classes} classes, but the head of {checkpoint} has {head.num_classes}")
    loader = torch.utils.data.DataLoader(ds, batch_size=int(batch_size), num_workers=int(workers))
    emb = embed_images(model, loader, progress=progress)
    labels = torch.as_tensor(ds.labels, dtype=torch.long)
    found = losses.subcenter_outliers(head.subcenters.detach(), torch.from_numpy(emb), labels, threshold_deg)
    idx = found["outliers"].numpy()
    keys = np.asarray(ds.keys)[idx]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "w", encoding="utf-8") as f:
        f.write(f"# record keys of {len(idx)} outliers among {len(ds)} images of {data} "
                f"(angle to the dominant sub-center > {threshold_deg:g} degrees)\n")
        f.writelines(f"{int(k)}\n" for k in keys)
    summary = {"images": len(ds), "outliers": int(len(idx)), "keys": [int(k) for k in keys],
               "per_class": np.bincount(ds.labels[idx], minlength=ds.num_classes).tolist() if len(idx) else
               [0] * ds.num_classes, "threshold_deg": float(threshold_deg), "list": str(out)}
    if clean_rec is not None:
        keep = np.setdiff1d(np.arange(len(ds)), idx)
        size = tuple(ds.image_size) if ds.image_size is not None else None

        def items():
            for i in keep:
                _, data_bytes = ds.record(int(i))
                yield data_bytes, size or ds.image(int(i)).shape[:2], f"{data} record {int(ds.keys[i])}"

        write_encoded_record(clean_rec, items(), ds.labels[keep], num_classes=ds.num_classes, progress=progress)
        summary["clean_rec"] = str(clean_rec)
    return summary
