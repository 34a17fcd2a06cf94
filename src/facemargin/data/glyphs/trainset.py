"""The training identities in memory, degraded afresh batch by batch, in the backbones' input format."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ..arrays import normalize_uint8
from .degrade import DEGRADE, degrade_batch

__all__ = ["normalize_grey", "GlyphAugment", "GlyphTrainSet"]


def normalize_grey(x):
    """Grey images ``(B, H, W)`` on 0..255 -> the backbones' input ``(B, 3, H, W)`` in ``(x/255 − 0.5)/0.5``."""
    return normalize_uint8(x).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


class GlyphAugment:
    """Training-time degradation of one image, for :class:`~facemargin.data.RecordIO` (its
    ``transform``): :func:`degrade_batch` on a batch of one, from torch's random stream (which
    torch seeds per DataLoader worker from the run's seed). Returns the normalised float tensor
    ``(3, H, W)`` the backbones take. :class:`GlyphTrainSet` degrades whole batches instead, which
    is much faster."""

    def __init__(self, params: Optional[Dict] = None):
        self.params = dict(DEGRADE, **(params or {}))

    def __call__(self, img: np.ndarray):
        import torch

        grey = img[:, :, 0] if img.ndim == 3 else img
        x, _ = degrade_batch(torch.from_numpy(np.ascontiguousarray(grey))[None], self.params)
        return normalize_grey(x)[0]


class GlyphTrainSet:
    """The training identities' clean renderings held in memory (uint8 ``(N, H, W)``); every batch
    is degraded afresh (:func:`degrade_batch`) from torch's random stream, so a resumed run draws
    the same degradations. The trainer reads it through ``get_batch``, without DataLoader workers.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int, params: Optional[Dict] = None,
                 augment: bool = True):
        import torch

        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W), got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.num_classes, self.augment = int(num_classes), bool(augment)
        self.params = dict(DEGRADE, **(params or {}))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def get_batch(self, idx):
        x = self.images[idx]
        if self.augment:
            x, _ = degrade_batch(x, self.params)
        return normalize_grey(x), self.labels[idx]
