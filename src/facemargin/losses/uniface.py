"""UniFace (ICCV 2023): the unified cross-entropy, one binary loss per class column.

Follows CVI-SZU/UniFace ``head.py`` (``Unified_Cross_Entropy_Loss``).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .binary import BinaryMarginHead, softplus_grad
from .checks import COSINE, SCALE, Choice, Flag, Real
from .core import AdditiveMargin, MarginSpec
from .registry import LOSSES

Tensor = torch.Tensor


@LOSSES.register("uniface")
class UniFace(BinaryMarginHead):
    """UniFace's unified cross-entropy.

    ``p = s(cos θ_y − m) − b`` and ``n_j = s·cos θ_j − b`` with a learnable bias ``b``; the loss is
    ``log(1 + e^{−clamp(p, ±s)}) + l·Σ_{j≠y} log(1 + e^{clamp(n_j, ±s)})`` summed over the classes
    and averaged over the batch (the clamp passes no gradient outside ``[−s, s]``, as in the
    reference). Defaults: s=64, m=0.4, l=1 (the λ weighting the negatives), r=1; ``b`` starts at
    ``log(C·r·10)``. ``per_class_bias=True`` gives every class its own bias ``b_j`` (the
    normalised binary cross-entropy variant), held in ``head.bias`` ``(C,)``; otherwise the shared
    scalar is ``head.b``. Rows and features are normalised with eps 1e-12 (the reference uses 1e-5).

    Ranges: ``s > 0``; ``0 <= m < 1`` (a cosine margin, as CosFace's); ``l > 0`` (a zero weight
    would drop the negatives, and the loss could be won by a constant logit); ``r > 0`` (the bias
    starts at ``log(C·r·10)``).
    """

    PARAMS = {"s": SCALE, "m": COSINE, "l": Real(0, lo_open=True, doc="the weight of the negative terms"),
              "r": Real(0, lo_open=True, doc="the ratio in the bias initialisation log(C·r·10)"),
              "per_class_bias": Flag(doc="one bias per class instead of a shared one"),
              "bias": Choice(False, doc="the bias is built in; per_class_bias=True for one per class")}

    def __init__(self, embedding_size, num_classes, s=64.0, m=0.4, l=1.0, r=1.0, per_class_bias=False, **kw):
        kw.pop("bias", None)
        spec = MarginSpec("scale", True, AdditiveMargin(1.0, 0.0, float(m)))
        self.per_class_bias = bool(per_class_bias)
        self.s, self.m, self.l, self.r = float(s), float(m), float(l), float(r)
        super().__init__(embedding_size, num_classes, spec, scale=s, bias=self.per_class_bias, **kw)
        self.b = None if self.per_class_bias else nn.Parameter(torch.tensor(self.bias_init()))

    def bias_init(self) -> float:
        return math.log(self.num_classes * self.r * 10.0)

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        super().init_weights(seed)  # the per-class bias restarts at bias_init in the store
        if self.b is not None:
            self.b.fill_(self.bias_init())

    def column_bias(self, bias: Optional[Tensor], n: int, comm) -> Optional[Tensor]:
        if bias is not None:
            return -bias
        return -comm.replicated(self.b).expand(n)

    def pos(self, z):
        return F.softplus(-z.clamp(-self.s, self.s))

    def neg(self, z):
        return self.l * F.softplus(z.clamp(-self.s, self.s))

    def neg_grad(self, z):
        # l·softplus'(z) inside [-s, s]; the clamp passes no gradient outside
        inside = (z >= -self.s) & (z <= self.s)
        return softplus_grad(z.clamp(-self.s, self.s)).mul_(self.l).mul_(inside)
