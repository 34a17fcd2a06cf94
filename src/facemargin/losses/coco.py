"""The congenerous cosine (COCO) loss: a margin-free classification head on normalised centroids
with a scale taken from the class count."""
from __future__ import annotations

import math
from typing import Optional

from .checks import Real
from .core import AdditiveMargin, MarginSpec
from .head import MarginHead
from .registry import LOSSES


@LOSSES.register("coco")
class COCOLoss(MarginHead):
    """Congenerous cosine (COCO) loss (Liu, Li, Wang, "Rethinking Feature Discrimination and
    Polymerization for Large-scale Recognition", NIPS workshop 2017, arXiv:1710.00870; v1:
    "Learning Deep Features via Congenerous Cosine Loss for Person Recognition", 2017).

    Learnable centroids ``weight`` ``(C, D)``; features are normalised and scaled to ``α·x̂``,
    centroids normalised to ``ĉ_k``; the loss is the mean cross-entropy of the softmax over the
    logits ``α·x̂·ĉ_k``::

        L = −mean_i log( exp(α x̂_i·ĉ_{y_i}) / Σ_k exp(α x̂_i·ĉ_k) )

    (the paper keeps ``k = y_i`` in the denominator, as here). It is a classification head
    without margin, so it shares :class:`MarginHead`'s ``weight``, ``logits(x, y=None)`` and
    ``forward``; ``y`` does not change the logits.

    Scale ``α``: given directly, or (``alpha=None``, default) from the lower bound of the
    paper's "optimal scale factor" analysis (v2, the reason for its rewrite): for a feature lying
    on its own centroid, every other centroid has cosine ≥ −1, so its posterior is at most
    ``e^α / (e^α + (K−1) e^{−α})``; reaching a posterior ``ε`` therefore needs::

        α ≥ ½ · log( (K − 1) · ε / (1 − ε) )   ( = ½ · log(−(K−1)·ε/(ε−1)) )

    with ``K = num_classes``; ``eps`` (default 0.99) is that target probability.
    See :meth:`alpha_bound`.

    Args:
        embedding_size, num_classes: ``D`` and ``K``.
        alpha: the feature scale, ``> 0``; ``None`` takes the bound above.
        eps: target posterior ``ε ∈ (0, 1)`` of the bound (only used when ``alpha`` is None).
        **kw: :class:`MarginHead` options (``learn_scale``, ``engine``...).
    """

    PARAMS = {"alpha": Real(0, lo_open=True, optional=True, doc="the feature scale; None: the bound from eps"),
              "eps": Real(0, 1, lo_open=True, hi_open=True, doc="the target posterior of the scale bound")}

    def __init__(self, embedding_size: int, num_classes: int, alpha: Optional[float] = None,
                 eps: float = 0.99, **kw):
        if alpha is None:
            alpha = self.alpha_bound(num_classes, eps)
        super().__init__(embedding_size, num_classes, MarginSpec("scale", True, AdditiveMargin()),
                         scale=float(alpha), **kw)
        self.eps = float(eps)

    @staticmethod
    def alpha_bound(num_classes: int, eps: float = 0.99) -> float:
        """``½·log((K−1)·ε/(1−ε))``: the smallest ``α`` at which a feature on its centroid can
        reach posterior ``ε`` among ``K`` classes (see the class docstring)."""
        K = int(num_classes)
        if K < 2:
            raise ValueError(f"COCOLoss: the alpha bound needs num_classes >= 2, got {num_classes}; pass alpha=")
        if not 0.0 < float(eps) < 1.0:
            raise ValueError(f"COCOLoss: eps must lie in (0, 1), got {eps!r}")
        eps = float(eps)
        return 0.5 * math.log((K - 1) * eps / (1.0 - eps))

    @property
    def alpha(self):
        """The feature scale ``α`` (a tensor; a parameter when ``learn_scale=True``)."""
        return self.scale
