"""SphereFace2 (ICLR 2022), type "C": binary classification against every class.

Follows ydwen/opensphere ``sphereface2.py``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .binary import BinaryMarginHead, softplus_grad
from .checks import COSINE, SCALE, Choice, Integer, Real
from .core import Margin, MarginSpec
from .registry import LOSSES

Tensor = torch.Tensor


class SphereFace2Margin(Margin):
    """SphereFace2's type-C transform: ``g(c) = 2((c+1)/2)^t − 1``, target ``g − m``, others
    ``g + m``; the offset from ``c`` is detached (forward value ``g ∓ m``, gradient that of ``c``)."""

    changes_others = True
    #: ``g`` maps [−1, 1] onto itself and increases for ``t > 0`` (``t = 1``: the identity);
    #: ``m`` moves target and others apart by ``2m`` on that [−1, 1] scale
    PARAMS = {"m": COSINE, "t": Real(0, lo_open=True, doc="the exponent of g(c) = 2((c+1)/2)^t − 1")}

    def __init__(self, m: float = 0.4, t: float = 3.0):
        super().__init__()
        self.m, self.t = float(m), float(t)

    def g(self, c: Tensor) -> Tensor:
        return 2.0 * ((c + 1.0) / 2.0) ** self.t - 1.0

    def phi(self, c, ctx):
        return c + (self.g(c) - self.m - c).detach()

    def others(self, c, ctx):
        return c + (self.g(c) + self.m - c).detach()

    def others_and_grad(self, c, ctx):
        # the offset is detached: the gradient is that of c, 1 everywhere; the value g(c) + m,
        # computed in place on the engine's temporary c
        with torch.no_grad():
            return c.add_(1.0).mul_(0.5).pow_(self.t).mul_(2.0).add_(self.m - 1.0), None

    def extra_repr(self):
        return f"m={self.m}, t={self.t}"


@LOSSES.register("sphereface2")
class SphereFace2(BinaryMarginHead):
    """SphereFace2 (type C): binary classification against every class.

    Logits ``r·(c + d) + b`` with ``d = g(c) ∓ m − c`` detached (``−`` on the target), ``b`` a
    learnable scalar; BCE-with-logits against one-hot with weights ``lw·C/r·λ`` on the target and
    ``lw·C/r·(1−λ)`` on the others, averaged over ``B×C``. Class rows are renormalised in place at
    every forward. ``b`` starts at the closed form of the reference: with
    ``z = λ/((1−λ)(C−1))``, ``a_y = r(2·0.5^t − 1 − m)``, ``a_i = r(2·0.5^t − 1 + m)``:
    ``b = log 2z − a_i − log(1 − z + √((1−z)² + 4z·e^{a_y−a_i}))``.
    Defaults: alpha (λ)=0.7, r=40, m=0.4, t=3, lw=50.

    Ranges: ``0 < alpha < 1`` (λ and 1 − λ weight the two binary terms, and the bias formula
    takes ``log`` of both); ``r > 0`` (the scale); ``m`` and ``t`` as :class:`SphereFace2Margin`;
    ``lw > 0`` (the loss weight); at least 2 classes.
    """

    renormalize_rows = True  # the store scales the rows to unit norm at every call
    PARAMS = {"alpha": Real(0, 1, lo_open=True, hi_open=True, doc="λ, the weight of the target term"),
              "r": SCALE, **SphereFace2Margin.PARAMS, "lw": Real(0, lo_open=True, doc="the loss weight"),
              "num_classes": Integer(2, doc="one-vs-rest needs a rest"),
              "bias": Choice(False, doc="the bias is a built-in shared scalar, head.b")}

    def __init__(self, embedding_size, num_classes, alpha=0.7, r=40.0, m=0.4, t=3.0, lw=50.0, **kw):
        kw.pop("bias", None)
        self.alpha, self.r, self.m, self.t, self.lw = float(alpha), float(r), float(m), float(t), float(lw)
        spec = MarginSpec("scale", True, SphereFace2Margin(m, t))
        super().__init__(embedding_size, num_classes, spec, scale=r, **kw)
        self.b = nn.Parameter(torch.tensor(self.bias_init()))

    def bias_init(self) -> float:
        a, r, m, t, C = self.alpha, self.r, self.m, self.t, self.num_classes
        z = a / ((1.0 - a) * (C - 1.0))
        ay = r * (2.0 * 0.5 ** t - 1.0 - m)
        ai = r * (2.0 * 0.5 ** t - 1.0 + m)
        return math.log(2.0 * z) - ai - math.log(1.0 - z + math.sqrt((1.0 - z) ** 2 + 4.0 * z * math.exp(ay - ai)))

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        super().init_weights(seed)
        self.b.fill_(self.bias_init())

    def column_bias(self, bias, n: int, comm):
        return comm.replicated(self.b).expand(n)

    def norm(self) -> float:
        return self.lw / self.r / 1.0  # lw·C/r per term, averaged over B×C: the C cancels

    def pos(self, z):
        return self.alpha * F.softplus(-z)

    def neg(self, z):
        return (1.0 - self.alpha) * F.softplus(z)

    def neg_grad(self, z):
        return softplus_grad(z).mul_(1.0 - self.alpha)
