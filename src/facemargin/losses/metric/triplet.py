"""The triplet loss with in-batch mining (semi-hard, hard or all negatives)."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..checks import Choice, Real
from ..registry import LOSSES
from .common import NORMALIZE, MetricLoss, pairwise_sq_dist, work, zero

Tensor = torch.Tensor


@LOSSES.register("triplet")
class TripletLoss(MetricLoss):
    """Triplet loss with in-batch mining (Schroff, Kalenichenko, Philbin, "FaceNet: A Unified
    Embedding for Face Recognition and Clustering", CVPR 2015).

    ``d`` is the squared Euclidean distance (of ``x̂`` when ``normalize``). Every ordered
    positive pair ``(a, p)``, ``a ≠ p``, ``y_a = y_p`` whose anchor has at least one negative
    gets negatives by ``mining``:

    * ``"semihard"`` (FaceNet): ``n = argmin {d_an : y_n ≠ y_a, d_an > d_ap}``; when no such
      negative exists, ``n = argmax {d_an : y_n ≠ y_a}`` (the easiest one);
    * ``"hard"``: ``n = argmin_{y_n ≠ y_a} d_an``;
    * ``"all"``: every negative ``n``, each its own triplet.

    ``L = mean over triplets of max(0, d_ap − d_an + margin)``; 0 (with a gradient path) when
    the batch has no triplet. Mining is done without gradient; ties go to the lowest index.
    Everything is vectorised (no Python loop over anchors). :meth:`triplets` lists the chosen
    ``(a, p, n)``.

    Args:
        margin: ``α`` of FaceNet, a squared-distance gap ``>= 0`` (default 0.2, the paper's value).
        mining: ``"semihard"`` (default), ``"hard"`` or ``"all"``.
        normalize: L2-normalise the embeddings first (default True; FaceNet's embeddings live on
            the unit hypersphere).
        embedding_size, num_classes: optional, checked against the inputs when given.
    """

    MINING = ("semihard", "hard", "all")
    PARAMS = {"margin": Real(0, doc="the gap between positive and negative squared distances"),
              "mining": Choice(*MINING, doc="how negatives are chosen"), "normalize": NORMALIZE}

    def __init__(self, margin: float = 0.2, mining: str = "semihard", normalize: bool = True,
                 embedding_size: Optional[int] = None, num_classes: Optional[int] = None):
        super().__init__(embedding_size, num_classes)
        self.margin, self.mining, self.normalize = float(margin), mining, bool(normalize)

    def _distances(self, x: Tensor) -> Tensor:
        z = work(x)
        if self.normalize:
            z = F.normalize(z, dim=1)
        return pairwise_sq_dist(z)

    @torch.no_grad()
    def _mine(self, d: Tensor, y: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        B = y.shape[0]
        same = y[:, None] == y[None, :]
        neg = ~same
        eye = torch.eye(B, dtype=torch.bool, device=y.device)
        pos = same & ~eye & neg.any(dim=1, keepdim=True)  # anchors without negatives form no triplet
        a, p = pos.nonzero(as_tuple=True)
        if self.mining == "all":
            pair, n = neg[a].nonzero(as_tuple=True)  # (P, B) mask: every negative of each pair
            return a[pair], p[pair], n
        rows = d[a]  # (P, B) distances from each pair's anchor
        negs = neg[a]
        inf = torch.tensor(math.inf, dtype=d.dtype, device=d.device)
        closest = torch.where(negs, rows, inf).argmin(dim=1)
        if self.mining == "hard":
            return a, p, closest
        semi = negs & (rows > d[a, p][:, None])
        semi_n = torch.where(semi, rows, inf).argmin(dim=1)
        easiest = torch.where(negs, rows, -inf).argmax(dim=1)
        n = torch.where(semi.any(dim=1), semi_n, easiest)
        return a, p, n

    def triplets(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """The mined triplets as three int64 index tensors ``(a, p, n)`` into the batch."""
        self._check(x, y)
        return self._mine(self._distances(x.detach()), y)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        self._check(x, y)
        d = self._distances(x)
        a, p, n = self._mine(d.detach(), y)
        if a.numel() == 0:
            return zero(x)
        return F.relu(d[a, p] - d[a, n] + self.margin).mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}, normalize={self.normalize}"
