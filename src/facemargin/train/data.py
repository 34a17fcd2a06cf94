"""Training sets for the trainer, built from the ``data`` section of a config."""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch


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


def to_tensor_images(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W)`` or ``(N, H, W, C)`` -> float ``(N, C, H, W)`` in ``(x/255 − 0.5)/0.5``."""
    t = torch.from_numpy(np.ascontiguousarray(images))
    if t.dim() == 3:
        t = t.unsqueeze(1)
    elif t.dim() == 4:
        t = t.permute(0, 3, 1, 2)
    else:
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got {tuple(t.shape)}")
    return (t.float() / 255.0 - 0.5) / 0.5


def select_classes(labels: np.ndarray, classes: Sequence[int]):
    """Indices of samples whose label is in ``classes``, and their labels remapped to 0..k-1."""
    classes = [int(c) for c in classes]
    lut = {c: i for i, c in enumerate(classes)}
    idx = np.flatnonzero(np.isin(labels, classes))
    return idx, np.array([lut[int(v)] for v in labels[idx]], dtype=np.int64)


def build_train_set(data: Dict):
    """The training set named by ``data["name"]``: fashion-mnist (train classes only), folder or recordio."""
    name = data["name"]
    if name == "fashion-mnist":
        from ..data.fashion import load_fashion_mnist

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
            from ..data.recordio import RecordIO

            transform = None
            if data.get("degrade"):
                from pathlib import Path

                from ..data.glyphs import GlyphAugment, GlyphSet

                if (Path(data["root"]) / "manifest.json").is_file():  # a glyph set: in memory, batch-degraded
                    return GlyphSet(data["root"]).train_set(augment=True)
                transform = GlyphAugment()
            ds = RecordIO(data["root"], transform=transform)
        else:
            from ..data.folder import ImageFolder

            ds = ImageFolder(data["root"])
        if not hasattr(ds, "num_classes"):
            ds.num_classes = int(np.max(ds.labels)) + 1
        return ds
    raise ValueError(f"unknown data.name {name!r}; choose fashion-mnist, folder or recordio")
