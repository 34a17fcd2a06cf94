"""CurricularFace (Huang et al., CVPR 2020): ArcFace's target and a curriculum on hard negatives.

Follows HuangYG123/CurricularFace ``head/metrics.py``. The running mean ``t`` of the target
cosines is updated once per training forward from the whole batch (global on a sharded head).
"""
from __future__ import annotations

import math
from typing import Dict

import torch

from .checks import ANGLE, SCALE, Real
from .core import Float32Statistics, MarginContext, MarginSpec, additive_phi, safe_sin
from .head import MarginHead
from .registry import LOSSES

Tensor = torch.Tensor


class CurricularMargin(Float32Statistics):
    """CurricularFace's ArcFace target and curriculum on hard negatives.

    Target: ``φ = cos(θ_y + m)`` where ``c_y > cos(π − m)``, else ``c_y − m·sin m``. Every
    non-target cosine above ``cos(θ_y + m)`` (the unfolded value, detached) becomes
    ``c_j·(t + c_j)``, with gradient through both factors. ``t`` (a buffer, 0 at first) moves
    ``t ← α·mean(c_y) + (1 − α)·t`` (``α = 0.01``) at every training forward before use.
    """

    changes_others = True
    PARAMS = {"m": ANGLE, "alpha": Real(0, 1, doc="the moving-average rate of t")}

    def __init__(self, m: float = 0.5, alpha: float = 0.01):
        super().__init__()
        self.m, self.alpha = float(m), float(alpha)
        self.register_buffer("t", torch.tensor(0.0))

    @torch.no_grad()
    def update(self, ctx: MarginContext) -> None:
        mean = ctx.cos_target.mean().to(self.t.dtype)
        self.t.copy_(self.alpha * mean + (1.0 - self.alpha) * self.t)

    def prepare(self, ctx: MarginContext) -> None:
        c = ctx.cos_target.detach()
        ctx.values["curricular_cos_m"] = c * math.cos(self.m) - safe_sin(c) * math.sin(self.m)

    def phi(self, c: Tensor, ctx: MarginContext) -> Tensor:
        return additive_phi(c, 1.0, self.m, 0.0)

    def others(self, c: Tensor, ctx: MarginContext) -> Tensor:
        c = torch.clamp(c, -1.0, 1.0)
        threshold = ctx.values["curricular_cos_m"].to(c.dtype).unsqueeze(1)
        t = self.t.to(c.dtype)
        return torch.where(c > threshold, c * (t + c), c)

    def others_and_grad(self, c: Tensor, ctx: MarginContext):
        # With h = [c > threshold] and u = h·(c + t − 1): the value is c + c·u (c(t + c) on the hard
        # negatives, c elsewhere) and its derivative 1 + u + h·c (t + 2c, or 1). Products with 0/1
        # masks are cheaper than torch.where on CPU; c, a temporary of the engine, is updated in
        # place. Values outside [-1, 1] (rounding) take the clamp's path: clamped, derivative 0.
        lo, hi = torch.aminmax(c)
        inside = None
        if float(lo) < -1.0 or float(hi) > 1.0:
            inside = c.abs().le_(1.0)
            c.clamp_(-1.0, 1.0)
        h = (c > ctx.values["curricular_cos_m"].to(c.dtype).unsqueeze(1)).to(c.dtype)
        u = (c + (self.t.to(c.dtype) - 1.0)).mul_(h)
        grad = torch.addcmul(u, h, c).add_(1.0)
        if inside is not None:
            grad.mul_(inside)
        return c.addcmul_(c, u), grad

    def stats(self) -> Dict[str, float]:
        return {"t": float(self.t)}

    def extra_repr(self) -> str:
        return f"m={self.m}, alpha={self.alpha}"


@LOSSES.register("curricularface")
class CurricularFace(MarginHead):
    """CurricularFace (Huang et al., CVPR 2020): ArcFace's target ``s·cos(θ_y + m)`` and hard
    negatives ``c_j > cos(θ_y + m)`` re-weighted to ``s·c_j·(t + c_j)`` with the running mean
    ``t`` of the target cosines (see :class:`CurricularMargin`).

    Follows HuangYG123/CurricularFace ``head/metrics.py``. Defaults ``s=64, m=0.5``; the buffer
    ``t`` starts at 0 and moves with rate 0.01. On a sharded head ``t`` and the thresholds are
    those of the global batch, and every rank transforms its own class columns. ``t`` moves in
    training-mode forwards only (the official head is never run in evaluation).
    """

    PARAMS = {"s": SCALE, "m": ANGLE}

    def __init__(self, embedding_size, num_classes, s=64.0, m=0.5, **kw):
        super().__init__(embedding_size, num_classes, MarginSpec("scale", True, CurricularMargin(m)), scale=s, **kw)
