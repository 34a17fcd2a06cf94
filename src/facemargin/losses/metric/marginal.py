"""The marginal loss: pairs pushed to either side of a distance threshold."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..checks import Real
from ..registry import LOSSES
from .common import MetricLoss, pairwise_sq_dist, work, zero

Tensor = torch.Tensor


@LOSSES.register("marginal")
class MarginalLoss(MetricLoss):
    """Marginal loss (Deng, Zhou, Zafeiriou, "Marginal Loss for Deep Face Recognition",
    CVPR Workshops 2017).

    With ``x̂`` the normalised embeddings, ``m`` the batch size and ``y_ij = +1`` for the same
    identity, ``−1`` otherwise::

        L = 1/(m² − m) · Σ_{i≠j} max(0, ξ − y_ij (θ − ‖x̂_i − x̂_j‖²₂))

    ``θ`` is the distance threshold separating positive from negative pairs and ``ξ`` the error
    margin around it. Paper defaults: ``θ = 1.2``, ``ξ = 0.3`` (the paper trains with
    ``L_softmax + λ·L_marginal``, λ the caller's weight). A batch of one sample gives 0.

    Args:
        theta: ``θ`` (default 1.2), ``0 <= θ <= 4``: a squared distance between unit vectors
            lies in [0, 4].
        xi: ``ξ`` (default 0.3), ``>= 0``.
        embedding_size, num_classes: optional, checked against the inputs when given.
    """

    PARAMS = {"theta": Real(0, 4, doc="a squared distance between unit vectors"),
              "xi": Real(0, doc="the error margin around theta")}

    def __init__(self, theta: float = 1.2, xi: float = 0.3,
                 embedding_size: Optional[int] = None, num_classes: Optional[int] = None):
        super().__init__(embedding_size, num_classes)
        self.theta, self.xi = float(theta), float(xi)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        self._check(x, y)
        m = x.shape[0]
        if m < 2:
            return zero(x)
        z = F.normalize(work(x), dim=1)
        d2 = pairwise_sq_dist(z)
        sign = (y[:, None] == y[None, :]).to(d2.dtype) * 2.0 - 1.0
        off = ~torch.eye(m, dtype=torch.bool, device=x.device)
        terms = F.relu(self.xi - sign * (self.theta - d2))[off]
        return terms.sum() / (m * m - m)

    def extra_repr(self) -> str:
        return f"theta={self.theta}, xi={self.xi}"
