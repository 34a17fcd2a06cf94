"""Input checks shared by every loss: clear ``ValueError`` s instead of silent garbage."""
from __future__ import annotations

from typing import Optional

import torch


def check_embeddings(x, embedding_size: Optional[int] = None, who: str = "loss") -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{who}: embeddings must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{who}: embeddings must have shape (B, D), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{who}: empty batch (0 embeddings); at least one sample is needed")
    if embedding_size is not None and x.shape[1] != embedding_size:
        raise ValueError(
            f"{who}: embedding width {x.shape[1]} does not match embedding_size={embedding_size}; "
            f"expected shape (B, {embedding_size}), got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{who}: embeddings must be floating point, got {x.dtype}")
    finite = torch.isfinite(x).all(dim=1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten()[:8].tolist()
        raise ValueError(f"{who}: non-finite embeddings (NaN or inf) in rows {bad}")


def check_labels(y, batch: int, num_classes: Optional[int] = None, who: str = "loss") -> None:
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{who}: labels must be a torch.Tensor, got {type(y).__name__}")
    if y.dim() != 1 or y.shape[0] != batch:
        raise ValueError(f"{who}: labels must have shape ({batch},) to match the batch, got {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise ValueError(f"{who}: labels must be integers (int64), got {y.dtype}")
    if num_classes is not None and y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            bad = y[(y < 0) | (y >= num_classes)][:8].tolist()
            raise ValueError(f"{who}: labels must lie in [0, {num_classes}), got {bad}")


def check_batch(x, y, embedding_size=None, num_classes=None, who="loss") -> None:
    check_embeddings(x, embedding_size, who)
    check_labels(y, x.shape[0], num_classes, who)
