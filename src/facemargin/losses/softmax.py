"""Heads without a margin: plain softmax, L2-constrained softmax and NormFace."""
from __future__ import annotations

from .checks import NO_PROXIES, SCALE, Real
from .core import AdditiveMargin, MarginSpec
from .head import MarginHead
from .registry import LOSSES


@LOSSES.register("softmax")
class Softmax(MarginHead):
    """Plain softmax cross-entropy: logits ``W_j·x + b_j``."""

    PARAMS = NO_PROXIES

    def __init__(self, embedding_size, num_classes, bias=True, **kw):
        super().__init__(embedding_size, num_classes, MarginSpec("norm", False, AdditiveMargin()), bias=bias, **kw)


@LOSSES.register("l2softmax")
class L2Softmax(MarginHead):
    """L2-constrained softmax (Ranjan et al. 2017): logits ``W_j·(α x̂) + b_j``."""

    PARAMS = {"alpha": Real(0, lo_open=True, doc="the norm the features are scaled to"), **NO_PROXIES}

    def __init__(self, embedding_size, num_classes, alpha=24.0, bias=True, **kw):
        super().__init__(embedding_size, num_classes, MarginSpec("scale", False, AdditiveMargin()),
                         scale=alpha, bias=bias, **kw)

    @property
    def alpha(self):
        return self.scale


@LOSSES.register("normface")
class NormFace(MarginHead):
    """NormFace (Wang et al. 2017): logits ``s·cos θ_j``; ``learn_scale=True`` learns ``s``.

    The von Mises-Fisher mixture loss (Hasnat et al. 2017, "von Mises-Fisher Mixture Model-based
    Deep learning") has exactly this form: a mixture of vMF components with equal concentration
    ``κ = s`` and unit mean directions ``ŵ_j`` gives posteriors ``softmax(κ cos θ_j)``.
    """

    PARAMS = {"s": SCALE}

    def __init__(self, embedding_size, num_classes, s=16.0, learn_scale=False, **kw):
        super().__init__(embedding_size, num_classes, MarginSpec("scale", True, AdditiveMargin()),
                         scale=s, learn_scale=learn_scale, **kw)
