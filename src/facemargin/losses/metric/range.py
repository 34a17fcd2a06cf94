"""The range loss for long-tailed training data: intra-class ranges and the inter-class margin."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..checks import Flag, Integer, Real
from ..registry import LOSSES
from .common import MetricLoss, pairwise_sq_dist, safe_sqrt, work, zero

Tensor = torch.Tensor


@LOSSES.register("range")
class RangeLoss(MetricLoss):
    """Range loss (Zhang, Fang, Wen, Li, Qiao, "Range Loss for Deep Face Recognition with
    Long-Tailed Training Data", ICCV 2017; arXiv:1611.08976).

    ``L = α·L_intra + β·L_inter`` over one batch:

    * ``L_intra = Σ_{classes i in the batch} k / Σ_{j=1..k} 1/D_j`` — for each class the harmonic
      mean of its ``k`` largest intra-class pairwise distances ``D_1 ≥ D_2 ≥ …`` (the class's
      "ranges"). A class with a single sample has no range and contributes 0; a class with fewer
      than ``k`` pairs uses all of its pairs (``k`` replaced by their number).
    * ``L_inter = max(margin − D_center, 0)`` with ``D_center`` the smallest distance between the
      centres (batch means) of two classes of the batch; 0 when the batch holds one class.

    Distances are squared Euclidean (``‖a − b‖²₂``, as in the paper's ``D_center``); set
    ``squared=False`` for plain Euclidean. The features are not normalised (the large default
    margin is meant for raw deep features). Defaults: ``k = 2`` (the paper's choice),
    ``margin = 2·10⁴``, ``alpha = 1e-4`` and ``beta = 1e-3`` — the values of the public Caffe
    range-loss layer (``choose_k: 2``, ``margin: 2e4``, ``intra_weight: 10e-5``,
    ``inter_weight: 10e-4``). The paper trains with ``L_softmax + λ·L_range``; λ is the caller's
    weight. A zero distance in the harmonic mean is clamped to ``1e-12`` (the class's term is
    then ~0, with finite gradients).

    Args:
        k: number of largest ranges per class.
        margin: inter-class margin ``m``.
        alpha, beta: weights of the intra- and inter-class terms.
        squared: use squared Euclidean distances (default True).
        embedding_size, num_classes: optional, checked against the inputs when given.
    """

    PARAMS = {"k": Integer(1, doc="the number of largest ranges per class"),
              "margin": Real(0, doc="the inter-class margin, a distance"),
              "alpha": Real(0, doc="the weight of the intra-class term"),
              "beta": Real(0, doc="the weight of the inter-class term"),
              "squared": Flag(doc="squared Euclidean distances")}

    def __init__(self, k: int = 2, margin: float = 2e4, alpha: float = 1e-4, beta: float = 1e-3,
                 squared: bool = True, embedding_size: Optional[int] = None,
                 num_classes: Optional[int] = None):
        super().__init__(embedding_size, num_classes)
        self.k, self.margin, self.alpha, self.beta = int(k), float(margin), float(alpha), float(beta)
        self.squared = bool(squared)

    def _dist(self, d2: Tensor) -> Tensor:
        return d2 if self.squared else safe_sqrt(d2)

    def intra(self, x: Tensor, y: Tensor) -> Tensor:
        """``L_intra``: Σ over classes of the harmonic mean of their ``k`` largest ranges."""
        z = work(x)
        B = z.shape[0]
        iu = torch.triu_indices(B, B, offset=1, device=x.device)
        same = y[iu[0]] == y[iu[1]]
        i, j = iu[0][same], iu[1][same]
        if i.numel() == 0:
            return zero(z)
        dist = self._dist(pairwise_sq_dist(z)[i, j])
        cls = y[i]
        # rank every pair within its class by decreasing distance: sort by distance, then
        # stably by class, so each class's pairs are contiguous and in decreasing order
        with torch.no_grad():
            order = torch.argsort(dist.detach(), descending=True, stable=True)
            order = order[torch.argsort(cls[order], stable=True)]
            c_sorted = cls[order]
            _, counts = torch.unique_consecutive(c_sorted, return_counts=True)
            starts = torch.cumsum(counts, 0) - counts
            group = torch.repeat_interleave(torch.arange(counts.numel(), device=x.device), counts)
            rank = torch.arange(order.numel(), device=x.device) - starts[group]
            keep = rank < self.k
        top = dist[order][keep].clamp_min(1e-12)
        g = group[keep]
        inv_sum = torch.zeros(counts.numel(), dtype=top.dtype, device=x.device).index_add(0, g, 1.0 / top)
        k_used = torch.clamp(counts, max=self.k).to(top.dtype)
        return (k_used / inv_sum).sum()

    def inter(self, x: Tensor, y: Tensor) -> Tensor:
        """``L_inter = max(margin − D_center, 0)`` over the class centres of the batch."""
        z = work(x)
        uniq, inv = torch.unique(y, return_inverse=True)
        if uniq.numel() < 2:
            return zero(z)
        sums = torch.zeros(uniq.numel(), z.shape[1], dtype=z.dtype, device=z.device).index_add(0, inv, z)
        centres = sums / torch.bincount(inv, minlength=uniq.numel()).to(z.dtype)[:, None]
        U = uniq.numel()
        iu = torch.triu_indices(U, U, offset=1, device=z.device)
        d_center = self._dist(pairwise_sq_dist(centres)[iu[0], iu[1]]).min()
        return F.relu(self.margin - d_center)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        self._check(x, y)
        return self.alpha * self.intra(x, y) + self.beta * self.inter(x, y)

    def extra_repr(self) -> str:
        return (f"k={self.k}, margin={self.margin}, alpha={self.alpha}, beta={self.beta}, "
                f"squared={self.squared}")
