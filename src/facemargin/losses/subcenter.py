"""Sub-center ArcFace: ``K`` weight rows per class, the closest one counts.

Each class ``j`` holds ``K`` sub-centers, rows ``j·K … j·K+K−1`` of ``head.weight`` ``(C·K, D)``.
The class cosine is ``c_j = max_k cos(x, W_jk)`` for every column (the gradient reaches the
arg-max sub-center only), and the combined margin ``cos(m1·θ_y + m2) − m3`` is applied on the
target, ArcFace's ``m2 = 0.5`` by default. Clean samples gather around one dominant sub-center
of their class; noisy ones sit on the others, which :func:`subcenter_outliers` uses to find
them (a sample whose cosine to its class's dominant sub-center is below ``cos 75°``).

Follows insightface's ``subcenter_arcface`` (``k = 3``) and pytorch-metric-learning's
``SubCenterArcFaceLoss`` (``sub_centers = 3``).
"""
from __future__ import annotations

import math
from typing import Dict

import torch
import torch.nn.functional as F

from .checks import ANGLE, ANGLE_FACTOR, COSINE, SCALE, Choice, Flag, Integer
from .core import AdditiveMargin, MarginSpec
from .head import MarginHead
from .registry import LOSSES

Tensor = torch.Tensor


@LOSSES.register("subcenter_arcface")
class SubCenterArcFace(MarginHead):
    """Sub-center ArcFace: ``K`` rows per class (default 3), ``c_j = max_k cos(x, W_jk)``, target
    ``s·cos(m1·θ_y + m2) − m3`` (defaults s=64, m=0.5 i.e. ``m2``, m1=1, m3=0; ArcFace's fallback
    past π and ``easy_margin`` as in :class:`~facemargin.losses.ArcFace`)."""

    PARAMS = {"K": Integer(1, doc="sub-centers per class"), "s": SCALE, "m": ANGLE, "m1": ANGLE_FACTOR, "m3": COSINE,
              "easy_margin": Flag(doc="no margin where cos θ_y <= 0"),
              "triplet": Choice(False, doc="rows replaced by samples need one row per class")}

    def __init__(self, embedding_size, num_classes, K=3, s=64.0, m=0.5, m1=1.0, m3=0.0, easy_margin=False, **kw):
        spec = MarginSpec("scale", True, AdditiveMargin(float(m1), float(m), float(m3), bool(easy_margin)))
        super().__init__(embedding_size, num_classes, spec, scale=s, rows_per_class=K, **kw)
        self.K = K

    @property
    def subcenters(self) -> Tensor:
        """The weight as ``(C, K, D)``: the ``K`` sub-centers of every class (a view)."""
        return self.weight.view(self.num_local, self.K, self.embedding_size)


@torch.no_grad()
def subcenter_outliers(centers: Tensor, embeddings: Tensor, labels: Tensor, threshold_deg: float = 75.0,
                       batch_size: int = 65536) -> Dict[str, Tensor]:
    """Find the samples far from their class's dominant sub-center.

    Args:
        centers: ``(C, K, D)`` sub-centers, e.g. ``head.subcenters``. The flat rows of
            ``head.weight`` ``(C·K, D)`` are refused (``K`` cannot be told from them): pass
            ``weight.view(C, K, D)``.
        embeddings: ``(N, D)`` features of the training samples; labels: ``(N,)`` their classes.
        threshold_deg: a sample is an outlier when the angle to its dominant sub-center exceeds
            this (its cosine is below ``cos threshold``).

    For each class the dominant sub-center is the one most of its samples are nearest to (ties:
    the lowest index). Returns ``outliers`` (indices into ``embeddings``, ascending), ``dominant``
    ``(C,)``, ``cosine`` ``(N,)`` to the dominant sub-center and ``nearest`` ``(N,)``.
    """
    if centers.dim() != 3:
        raise ValueError(f"centers must be (C, K, D) sub-centers, got shape {tuple(centers.shape)}")
    C, K, D = centers.shape
    if embeddings.dim() != 2 or embeddings.shape[1] != D:
        raise ValueError(f"embeddings must be (N, {D}), got {tuple(embeddings.shape)}")
    labels = labels.to(torch.long)
    if labels.shape != (embeddings.shape[0],):
        raise ValueError(f"labels must be ({embeddings.shape[0]},), got {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= C):
        raise ValueError(f"labels must lie in [0, {C})")
    if not 0.0 < float(threshold_deg) < 180.0:
        raise ValueError(f"threshold_deg must lie in (0, 180), got {threshold_deg}")
    W = F.normalize(centers.double(), dim=2)
    N = embeddings.shape[0]
    cos_all = torch.empty(N, K, dtype=torch.float64)
    for lo in range(0, N, batch_size):
        hi = min(N, lo + batch_size)
        x = F.normalize(embeddings[lo:hi].double(), dim=1)
        cos_all[lo:hi] = torch.einsum("nd,nkd->nk", x, W[labels[lo:hi]])
    nearest = cos_all.argmax(dim=1)
    counts = torch.bincount(labels * K + nearest, minlength=C * K).view(C, K)
    dominant = counts.argmax(dim=1)  # first maximum: the lowest index on ties
    cosine = cos_all.gather(1, dominant[labels].unsqueeze(1)).squeeze(1)
    outliers = (cosine < math.cos(math.radians(float(threshold_deg)))).nonzero().flatten()
    return {"outliers": outliers, "dominant": dominant, "cosine": cosine, "nearest": nearest}
