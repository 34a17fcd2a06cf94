"""The contrastive loss over every pair of the batch."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..checks import Real
from ..registry import LOSSES
from .common import NORMALIZE, MetricLoss, pairwise_sq_dist, safe_sqrt, work, zero

Tensor = torch.Tensor


@LOSSES.register("contrastive")
class ContrastiveLoss(MetricLoss):
    """Contrastive loss (Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an
    Invariant Mapping", CVPR 2006; used for faces by DeepID2, Sun et al. 2014).

    Over all pairs ``i < j`` of the batch, with ``d`` the Euclidean distance (of ``x̂ = x/‖x‖``
    when ``normalize``) and ``s_ij = 1`` for the same label, else 0::

        L = mean_{i<j} ½ [ s_ij d² + (1 − s_ij) max(0, margin − d)² ]

    A batch of one sample has no pair and gives 0. At ``d = 0`` (identical points) the gradient
    of ``d`` is taken as 0, so the loss never yields NaN gradients.

    Args:
        margin: the negative-pair margin, a distance: ``>= 0`` (default 1.0).
        normalize: L2-normalise the embeddings first (default True).
        embedding_size, num_classes: optional, checked against the inputs when given.
    """

    PARAMS = {"margin": Real(0, doc="a distance negative pairs are pushed beyond"), "normalize": NORMALIZE}

    def __init__(self, margin: float = 1.0, normalize: bool = True,
                 embedding_size: Optional[int] = None, num_classes: Optional[int] = None):
        super().__init__(embedding_size, num_classes)
        self.margin, self.normalize = float(margin), bool(normalize)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        self._check(x, y)
        B = x.shape[0]
        if B < 2:
            return zero(x)
        z = work(x)
        if self.normalize:
            z = F.normalize(z, dim=1)
        d2 = pairwise_sq_dist(z)
        iu = torch.triu_indices(B, B, offset=1, device=x.device)
        d2 = d2[iu[0], iu[1]]
        same = (y[iu[0]] == y[iu[1]]).to(d2.dtype)
        d = safe_sqrt(d2)
        per_pair = 0.5 * (same * d2 + (1.0 - same) * F.relu(self.margin - d).pow(2))
        return per_pair.mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}, normalize={self.normalize}"
