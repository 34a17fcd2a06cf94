"""Training sets for the trainer, built from the ``data`` section of a config."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from .. import models
from ..data.arrays import select_classes, to_tensor_images  # noqa: F401  (also importable from here)
from ..data.fashion import load_fashion_mnist
from ..data.folder import ImageFolder
from ..data.glyphs import GlyphAugment, GlyphSet
from ..data.recordio import RecordIO

#: ``model.name = "auto"`` picks the first of these whose input size is the data's image size
AUTO_BACKBONES = ("lenetpp", "smallcnn", "mobilefacenet", "sphere20")


class InMemorySet:
    """Images held as one normalised float tensor ``(N, C, H, W)``; batches by fancy indexing.

    ``flip=True`` mirrors each sample of a batch with probability ½ (torch's global RNG, so a
    resumed run draws the same flips).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, flip: bool = False):
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.images, self.labels, self.num_classes, self.flip = images, labels.long(), int(num_classes), flip

    def __len__(self) -> int:
        return self.images.shape[0]

    def get_batch(self, idx: torch.Tensor):
        x, y = self.images[idx], self.labels[idx]
        if self.flip:
            mask = torch.rand(x.shape[0]) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(-1), x)
        return x, y


def build_train_set(data: Dict):
    """The training set named by ``data["name"]``: fashion-mnist (train classes only), folder or recordio."""
    name = data["name"]
    if name == "fashion-mnist":
        images, labels = load_fashion_mnist("train", root=data.get("root") or None)
        overlap = set(map(int, data["train_classes"])) & set(map(int, data["eval_classes"]))
        if overlap:
            raise ValueError(f"data.train_classes and data.eval_classes overlap on {sorted(overlap)}: open-set needs disjoint classes")
        idx, y = select_classes(labels, data["train_classes"])
        return InMemorySet(to_tensor_images(images[idx]), torch.from_numpy(y), len(data["train_classes"]), bool(data.get("flip")))
    if name in ("recordio", "folder"):
        if not data.get("root"):
            raise ValueError(f"data.root must name the {name} dataset folder")
        if name == "recordio":
            transform = None
            if data.get("degrade"):
                if (Path(data["root"]) / "manifest.json").is_file():  # a glyph set: in memory, batch-degraded
                    return GlyphSet(data["root"]).train_set(augment=True)
                transform = GlyphAugment()
            ds = RecordIO(data["root"], transform=transform)
        else:
            ds = ImageFolder(data["root"])
        if not hasattr(ds, "num_classes"):
            ds.num_classes = int(np.max(ds.labels)) + 1
        return ds
    raise ValueError(f"unknown data.name {name!r}; choose fashion-mnist, folder or recordio")


def sample_shape(train_set) -> Optional[Tuple[int, int, int]]:
    """The ``(C, H, W)`` of one training image as the backbone receives it, or ``None`` when the set
    cannot tell. Reading the sample leaves torch's and NumPy's random streams as they were, so a
    run is the same whether or not its data was probed."""
    images = getattr(train_set, "images", None)
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return tuple(int(v) for v in images.shape[1:])
    if len(train_set) == 0:
        return None
    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            if hasattr(train_set, "get_batch"):
                x = train_set.get_batch(torch.tensor([0]))[0][0]
            else:
                x = train_set[0][0]
    finally:
        np.random.set_state(np_state)
    return tuple(int(v) for v in x.shape) if isinstance(x, torch.Tensor) and x.dim() == 3 else None


def fitting_backbones(shape: Tuple[int, int, int]) -> List[str]:
    """The registered backbones whose default input size is ``shape`` ``(C, H, W)``."""
    return [n for n in models.available() if tuple(models.input_size(n)) == tuple(shape)]


def _size(shape) -> str:
    return "x".join(str(v) for v in shape)


def _input_size_with(name: str, params: Dict) -> Optional[Tuple[int, int, int]]:
    """The input size of backbone ``name`` built with ``params``; ``None`` when they do not apply."""
    try:
        return tuple(models.build(name, embedding_size=8, **params).input_size)
    except (TypeError, ValueError):
        return None


def choose_backbone(name: str, shape: Optional[Tuple[int, int, int]], params: Optional[Dict] = None):
    """``(name, params)`` as given, or for ``"auto"`` the backbone made for images of ``shape``:
    LeNet++ for 28×28 grey, the small CNN for 32×32 RGB, MobileFaceNet for 112×112 RGB faces,
    SphereFace-20 for 112×96. The given ``params`` are kept; when no backbone takes ``shape`` with
    them, ``in_channels`` is set to the data's channel count where a backbone accepts it."""
    params = dict(params or {})
    if name != "auto":
        return name, params
    if shape is None:
        raise ValueError("model.name=auto: the training set does not tell its image size; name a backbone "
                         f"with model.name (one of {', '.join(models.available())})")
    for extra in ({}, {"in_channels": int(shape[0])}):
        for cand in AUTO_BACKBONES:
            trial = {**params, **extra}
            if _input_size_with(cand, trial) == tuple(shape):
                return cand, trial
    others = fitting_backbones(shape)
    if others:
        return others[0], params
    sizes = ", ".join(f"{n} {_size(models.input_size(n))}" for n in models.available())
    raise ValueError(f"model.name=auto: no backbone takes {_size(shape)} images (C x H x W); the backbones take: "
                     f"{sizes}. Resize the data or register a backbone for this size")


def check_backbone_fits(model, name: str, shape: Optional[Tuple[int, int, int]]) -> None:
    """Raise a ``ValueError`` naming a backbone that fits when ``model`` cannot take images of ``shape``."""
    if shape is None or tuple(model.input_size) == tuple(shape):
        return
    fits = fitting_backbones(shape)
    hint = (f"use model.name={fits[0]}" + (f" (also fits: {', '.join(fits[1:])})" if fits[1:] else "")
            + " or model.name=auto") if fits else "no registered backbone takes this size"
    raise ValueError(f"model.name={name} takes {_size(model.input_size)} images but the training set holds "
                     f"{_size(shape)} images: {hint}")
