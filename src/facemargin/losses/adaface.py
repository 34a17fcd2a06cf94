"""AdaFace (Kim et al., CVPR 2022): a margin that adapts to the feature norm, a proxy of image quality.

Follows mk-minchul/AdaFace ``head.py``. Its norm statistics are updated once per training
forward from the whole batch (the global batch on a sharded head, so every rank holds the same
values) and live in ``state_dict``.
"""
from __future__ import annotations

import math
from typing import Dict

import torch

from .checks import SCALE, Real
from .core import Float32Statistics, MarginContext, MarginSpec, work_dtype
from .head import MarginHead
from .registry import LOSSES

Tensor = torch.Tensor


class AdaFaceMargin(Float32Statistics):
    """AdaFace's norm-adaptive margin.

    With ``n = clip(‖x‖, 0.001, 100)`` (detached) and the running moments ``μ`` (``batch_mean``) and
    ``σ`` (``batch_std``), the scaler is ``ĝ = clip(h·(n − μ)/(σ + eps), −1, 1)`` and, on the target
    cosine clamped to ``[−1 + eps, 1 − eps]``,
    ``φ = cos(clip(θ − m·ĝ, eps, π − eps)) − m·(1 + ĝ)`` (``eps = 1e-3``). High-norm (good quality)
    samples get a larger angular and a smaller additive margin.

    Every training forward first moves ``μ ← α·mean(n) + (1 − α)·μ`` and ``σ ← α·std(n) + (1 − α)·σ``
    (unbiased std, ``α = t_alpha``) over the batch it sees; a batch of one sample has no std and
    moves ``μ`` only.
    """

    eps = 1e-3

    #: ``m``: the angular part moves θ by up to ``m`` and the additive part takes up to ``2m``
    #: off a cosine in [−1, 1], so ``0 <= m < 1``. ``h``: scales the normalised norm mapped
    #: into [−1, 1] before clipping (h = 1/3 keeps ±3σ unclipped; a larger h clips more, 0 turns the
    #: adaptivity off), so ``h >= 0``. ``t_alpha``: an EMA rate in [0, 1].
    PARAMS = {
        "m": Real(0, 1, hi_open=True, doc="an angular and additive margin; the additive part reaches 2m"),
        "h": Real(0, doc="the factor on the normalised feature norm before clipping to [-1, 1]"),
        "t_alpha": Real(0, 1, doc="the moving-average rate of the norm statistics"),
    }

    def __init__(self, m: float = 0.4, h: float = 0.333, t_alpha: float = 0.01):
        super().__init__()
        self.m, self.h, self.t_alpha = float(m), float(h), float(t_alpha)
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))

    def _norms(self, ctx: MarginContext) -> Tensor:
        n = ctx.norm_detached
        return torch.clamp(n.to(work_dtype(n.dtype)), 0.001, 100.0)

    @torch.no_grad()
    def update(self, ctx: MarginContext) -> None:
        n = self._norms(ctx)
        a = self.t_alpha
        self.batch_mean.copy_(a * n.mean().to(self.batch_mean.dtype) + (1.0 - a) * self.batch_mean)
        if n.numel() > 1:
            self.batch_std.copy_(a * n.std().to(self.batch_std.dtype) + (1.0 - a) * self.batch_std)

    def prepare(self, ctx: MarginContext) -> None:
        n = self._norms(ctx)
        mu, sd = self.batch_mean.to(n.dtype), self.batch_std.to(n.dtype)
        ctx.values["adaface_g"] = torch.clamp(self.h * (n - mu) / (sd + self.eps), -1.0, 1.0)

    def phi(self, c: Tensor, ctx: MarginContext) -> Tensor:
        g = ctx.values["adaface_g"].to(c.dtype)
        theta = torch.acos(torch.clamp(c, -1.0 + self.eps, 1.0 - self.eps))
        theta_m = torch.clamp(theta - self.m * g, self.eps, math.pi - self.eps)
        return torch.cos(theta_m) - self.m * (1.0 + g)

    def stats(self) -> Dict[str, float]:
        return {"batch_mean": float(self.batch_mean), "batch_std": float(self.batch_std)}

    def extra_repr(self) -> str:
        return f"m={self.m}, h={self.h}, t_alpha={self.t_alpha}"


@LOSSES.register("adaface")
class AdaFace(MarginHead):
    """AdaFace (Kim et al., CVPR 2022): target ``s·(cos θ') − s·m·(1 + ĝ)`` with
    ``θ' = clip(θ_y − m·ĝ, 1e-3, π − 1e-3)``, other columns ``s·c_j`` (see :class:`AdaFaceMargin`).

    Follows mk-minchul/AdaFace ``head.py``. Defaults are those of the official MS1MV2 training
    scripts (``m=0.4, h=0.333, s=64, t_alpha=0.01``; the class in ``head.py`` itself defaults to
    ``t_alpha=1``). The buffers ``batch_mean`` (20) and ``batch_std`` (100) start where the official
    ones do.

    Deliberate differences: on a sharded head the norm moments are taken over the global batch
    (the official code uses each GPU's own batch, so its ranks drift apart); the official clamp of
    the non-target cosines to ``[−1 + 1e-3, 1 − 1e-3]`` is left out (it only touches non-target
    cosines beyond ±0.999, where it would zero their gradient); the statistics are updated in
    training-mode forwards only (the official head is never run in evaluation).
    """

    PARAMS = {"s": SCALE, **AdaFaceMargin.PARAMS}

    def __init__(self, embedding_size, num_classes, m=0.4, h=0.333, s=64.0, t_alpha=0.01, **kw):
        spec = MarginSpec("scale", True, AdaFaceMargin(m, h, t_alpha))
        super().__init__(embedding_size, num_classes, spec, scale=s, **kw)
