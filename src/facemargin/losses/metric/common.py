"""What the metric losses share: distances from the Gram matrix, a zero with a gradient path, and
the base of the losses without class weights."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ..checks import CheckedParams, Flag, Integer, check_batch

Tensor = torch.Tensor


def work(x: Tensor) -> Tensor:
    """``x`` in at least float32 (bf16/fp16 Gram matrices lose too many digits)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def pairwise_sq_dist(x: Tensor) -> Tensor:
    """``(B, B)`` squared Euclidean distances ``‖x_i − x_j‖²`` (exactly 0 on the diagonal)."""
    sq = (x * x).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.t())
    d2 = d2.clamp_min(0.0)
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return d2.masked_fill(eye, 0.0)


def safe_sqrt(d2: Tensor) -> Tensor:
    """``sqrt(d2)`` with value 0 and gradient 0 (not inf/NaN) where ``d2 == 0``."""
    pos = d2 > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, d2, torch.ones_like(d2))), torch.zeros_like(d2))


def zero(x: Tensor) -> Tensor:
    """A scalar 0 connected to ``x`` (so ``backward()`` works and gives zero gradients)."""
    return x.sum() * 0.0


#: ``embedding_size`` / ``num_classes`` of a loss without class weights: optional
OPTIONAL_SIZE = Integer(1, optional=True, doc="checked against the inputs when given")
#: L2-normalise the embeddings first
NORMALIZE = Flag(doc="L2-normalise the embeddings first")


class MetricLoss(CheckedParams, nn.Module):
    """Base of the weight-free metric losses: optional width/class-count checks."""

    PARAMS = {"embedding_size": OPTIONAL_SIZE, "num_classes": OPTIONAL_SIZE}

    def __init__(self, embedding_size: Optional[int] = None, num_classes: Optional[int] = None):
        super().__init__()
        self.embedding_size = None if embedding_size is None else int(embedding_size)
        self.num_classes = None if num_classes is None else int(num_classes)

    def _check(self, x: Tensor, y: Tensor) -> None:
        check_batch(x, y, self.embedding_size, self.num_classes, type(self).__name__)
