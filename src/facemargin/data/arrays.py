"""In-memory image arrays as a torch ``Dataset`` with the project's normalisation.

Every backbone takes float images normalised as ``(x/255 - 0.5)/0.5``, i.e.
uint8 0 maps to -1.0 and 255 to +1.0.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["ArrayDataset", "images_to_tensor", "normalize_uint8", "select_classes", "to_tensor_images"]


def _images_array(images, name: str = "images") -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    a = np.asarray(images)
    if a.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 (0..255), got dtype {a.dtype}")
    if a.ndim not in (3, 4):
        raise ValueError(f"{name} must be (N, H, W) or (N, H, W, C), got shape {a.shape}")
    return a


def normalize_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 tensor -> float32 ``(x/255 - 0.5)/0.5`` in [-1, 1]."""
    return (x.to(torch.float32) / 255.0 - 0.5) / 0.5


def images_to_tensor(images) -> torch.Tensor:
    """Whole uint8 array ``(N, H, W)`` or ``(N, H, W, C)`` -> normalised float ``(N, C, H, W)``."""
    a = _images_array(images)
    t = torch.from_numpy(np.ascontiguousarray(a))
    t = t.unsqueeze(1) if a.ndim == 3 else t.permute(0, 3, 1, 2)
    return normalize_uint8(t).contiguous()


class ArrayDataset(Dataset):
    """``(images, labels)`` arrays as a Dataset of ``(float tensor (C, H, W), int label)``.

    ``images``: uint8 ``(N, H, W)`` (grey, C=1) or ``(N, H, W, C)``, NumPy or torch.
    ``labels``: ``N`` integer labels (kept as int64 in ``.labels``).
    Each item is normalised as ``(x/255 - 0.5)/0.5``.  With ``augment=True`` the image is flipped
    horizontally with probability 1/2 (drawn from torch's RNG, so ``torch.manual_seed`` and
    DataLoader worker seeding make it reproducible).  ``transform``, when given, is called on the
    normalised tensor last.
    """

    def __init__(
        self,
        images,
        labels,
        transform: Optional[Callable] = None,
        augment: bool = False,
    ):
        self.images = _images_array(images)
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        y = np.asarray(labels)
        if y.ndim != 1:
            raise ValueError(f"labels must be 1-D, got shape {y.shape}")
        if len(y) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(y)} labels")
        if y.size and not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {y.dtype}")
        self.labels = y.astype(np.int64)
        self.transform = transform
        self.augment = bool(augment)

    @property
    def num_classes(self) -> int:
        """``max(label) + 1`` (0 when empty)."""
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for ArrayDataset of size {len(self)}")
        img = torch.from_numpy(np.ascontiguousarray(self.images[i]))
        img = img.unsqueeze(0) if img.ndim == 2 else img.permute(2, 0, 1)
        x = normalize_uint8(img)
        if self.augment and torch.rand(()) < 0.5:
            x = torch.flip(x, dims=[2])
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])


#: ITU-R BT.601 luma weights: how an RGB image becomes the grey image a one-channel backbone takes
LUMA = (0.299, 0.587, 0.114)


def to_grey(images: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(..., H, W, 3)`` -> uint8 grey ``(..., H, W)`` (BT.601 luma, rounded)."""
    return np.round(images.astype(np.float32) @ np.array(LUMA, dtype=np.float32)).astype(np.uint8)


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
