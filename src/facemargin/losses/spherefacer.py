"""SphereFace-R (Liu et al., TPAMI 2022), hard feature normalisation, ``magn_type`` v0.

Follows ydwen/opensphere, branch ``OpenSphere_v0``, ``model/head/spherefacer.py``.
"""
from __future__ import annotations

import math

import torch

from .checks import SCALE, Real
from .core import Margin, MarginContext, MarginSpec
from .head import MarginHead
from .registry import LOSSES

Tensor = torch.Tensor


class SphereFaceRMargin(Margin):
    """SphereFace-R's multiplicative margin with a straight-through gradient (``magn_type`` v0).

    With ``θ = acos(clamp(c, −1 + 1e-5, 1 − 1e-5))`` and ``k = ⌊m·θ/π⌋`` the forward value is
    ``φ = (−1)^k·cos(m·θ) − 2k`` (``m`` need not be an integer); the offset ``φ − c`` is detached,
    so the target logit ``s·(c + (φ − c))`` has the gradient of ``s·c``.
    """

    #: ``m`` multiplies the angle: ``m = 1`` is no margin and ``m < 1`` would make the target
    #: easier than the plain cosine, so ``m >= 1`` (it need not be an integer)
    PARAMS = {"m": Real(1, doc="the angle multiplier")}

    def __init__(self, m: float = 1.5):
        super().__init__()
        self.m = float(m)

    def target_value(self, c: Tensor) -> Tensor:
        """``φ(c)`` without gradient."""
        with torch.no_grad():
            mt = self.m * torch.acos(torch.clamp(c, -1.0 + 1e-5, 1.0 - 1e-5))
            k = torch.floor(mt / math.pi)
            sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
            return sign * torch.cos(mt) - 2.0 * k

    def phi(self, c: Tensor, ctx: MarginContext) -> Tensor:
        return c + (self.target_value(c) - c.detach())

    def extra_repr(self) -> str:
        return f"m={self.m}"


@LOSSES.register("spherefacer")
class SphereFaceR(MarginHead):
    """SphereFace-R (Liu et al., TPAMI 2022), hard feature normalisation, ``magn_type`` v0:
    logits ``s·(c + d)`` where ``d`` is the detached offset to ``(−1)^k cos(m θ_y) − 2k`` on the
    target and 0 elsewhere; loss ``lw·CE/s`` (see :class:`SphereFaceRMargin`).

    Follows ydwen/opensphere, branch ``OpenSphere_v0``, ``model/head/spherefacer.py``,
    ``SphereFaceR_H`` with ``magn_type='v0'``. Defaults ``s=30, m=1.5, lw=50``. ``lw/s`` uses the
    constructor's ``s``.

    Class rows are renormalised in place at the start of every forward, as in the official head.

    Deliberate differences: the official head differentiates the renormalised rows as if they were
    free parameters; here the logits normalise the rows again and are differentiated through that
    normalisation (the same logits; the gradient of each row lacks the official one's radial
    part, which only changes the row's norm and is undone by the next renormalisation). The
    official non-target logits are ``s·clamp(c_j, −1 + 1e-5, 1 − 1e-5)`` in value; here ``s·c_j``.
    """

    renormalize_rows = True  # the store scales the rows to unit norm at every call
    PARAMS = {"s": SCALE, **SphereFaceRMargin.PARAMS, "lw": Real(0, lo_open=True, doc="the loss weight")}

    def __init__(self, embedding_size, num_classes, s=30.0, m=1.5, lw=50.0, **kw):
        super().__init__(embedding_size, num_classes, MarginSpec("scale", True, SphereFaceRMargin(m)), scale=s, **kw)
        self.s, self.lw = s, lw

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return super().forward(x, y) * (self.lw / self.s)
