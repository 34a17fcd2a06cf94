"""The multiplicative margin family: SphereFace (A-Softmax), L-Softmax and the Angular Triplet Loss
layer, with SphereFace's annealed blend ``(λ·cos θ + ψ_m(θ))/(1 + λ)`` (:class:`LambdaSchedule`)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .checks import LAMBDA_SCHEDULE, MULTIPLICATIVE, NO_PROXIES
from .core import Margin, MarginContext, MarginSpec
from .head import MarginHead
from .registry import LOSSES

Tensor = torch.Tensor


def chebyshev_cos(c: Tensor, m: int) -> Tensor:
    """``cos(m·θ)`` as the Chebyshev polynomial ``T_m(cos θ)`` for m = 1..4 (no acos)."""
    if m == 1:
        return c
    if m == 2:
        return 2 * c * c - 1
    if m == 3:
        return (4 * c * c - 3) * c
    if m == 4:
        c2 = c * c
        return 8 * c2 * c2 - 8 * c2 + 1
    raise ValueError(f"multiplicative margin m must be 1, 2, 3 or 4, got {m}")


def psi(c: Tensor, m: int) -> Tensor:
    """SphereFace's monotonic ``ψ_m(θ) = (−1)^k cos(mθ) − 2k``, ``θ ∈ [kπ/m, (k+1)π/m]``."""
    if m == 1:
        return c
    with torch.no_grad():
        # k is piecewise constant in θ: it carries no gradient
        theta = torch.acos(torch.clamp(c, -1.0, 1.0))
        k = torch.clamp(torch.floor(theta * (m / math.pi)), 0, m - 1)
        sign = 1.0 - 2.0 * torch.remainder(k, 2)
    return sign * chebyshev_cos(c, m) - 2.0 * k


class MultiplicativeMargin(Margin):
    """``φ(c) = (λ·c + ψ_m(θ)) / (1 + λ)``; ``m = 1`` is the plain cosine. λ comes from the context."""

    needs_lambda = True
    PARAMS = {"m": MULTIPLICATIVE}

    def __init__(self, m: int = 4):
        super().__init__()
        self.m = int(m)

    @property
    def active(self) -> bool:
        return self.m != 1

    def phi(self, c: Tensor, ctx: MarginContext) -> Tensor:
        lam = ctx.lambda_
        if lam is None:
            raise ValueError("a multiplicative margin needs the current lambda")
        return (lam * c + psi(c, self.m)) / (1.0 + lam)

    def extra_repr(self) -> str:
        return f"m={self.m}"


class LambdaSchedule(nn.Module):
    """SphereFace's annealed blend ``λ = max(lambda_min, base·(1 + gamma·iteration)^(−power))``.

    ``iteration`` is incremented at the start of every training-mode forward of the owning head.
    Both ``iteration`` and ``lambda_`` are buffers, so they live in ``state_dict``.
    """

    def __init__(self, base=1000.0, gamma=0.12, power=1.0, lambda_min=5.0, iteration=0):
        super().__init__()
        self.base, self.gamma, self.power, self.lambda_min = float(base), float(gamma), float(power), float(lambda_min)
        self.register_buffer("iteration", torch.tensor(int(iteration), dtype=torch.long))
        self.register_buffer("lambda_", torch.tensor(self.value(int(iteration)), dtype=torch.float64))

    def value(self, iteration: int) -> float:
        return max(self.lambda_min, self.base * (1.0 + self.gamma * iteration) ** (-self.power))

    @property
    def current(self) -> float:
        """λ from the counter (exact even when a cast such as ``.to(bfloat16)`` rounds the buffer)."""
        return self.value(int(self.iteration))

    def step(self) -> None:
        self.iteration += 1
        self.lambda_.fill_(self.value(int(self.iteration)))

    def extra_repr(self):
        return (f"base={self.base}, gamma={self.gamma}, power={self.power}, "
                f"lambda_min={self.lambda_min}, iteration={int(self.iteration)}")


class _Multiplicative(MarginHead):
    weight_norm = True
    PARAMS = {"m": MULTIPLICATIVE, **LAMBDA_SCHEDULE}

    def __init__(self, embedding_size, num_classes, m=4, base=1000.0, gamma=0.12, power=1.0,
                 lambda_min=5.0, iteration=0, **kw):
        spec = MarginSpec("norm", self.weight_norm, MultiplicativeMargin(m))
        schedule = LambdaSchedule(base, gamma, power, lambda_min, iteration)
        super().__init__(embedding_size, num_classes, spec, schedule=schedule, **kw)
        self.m = int(m)


@LOSSES.register("sphereface", "asoftmax")
class SphereFace(_Multiplicative):
    """SphereFace / A-Softmax (Liu et al. 2017). Target ``‖x‖(λ cos θ_y + ψ_m(θ_y))/(1+λ)``,
    others ``‖x‖ cos θ_j``; λ annealed by :class:`LambdaSchedule` (defaults of the Caffe code)."""


@LOSSES.register("lsoftmax")
class LSoftmax(_Multiplicative):
    """Large-margin softmax (Liu et al. 2016): SphereFace with ``‖W_j‖‖x‖`` (weights unnormalised)."""

    weight_norm = False
    PARAMS = NO_PROXIES


@LOSSES.register("atl")
class MarginInnerProduct(_Multiplicative):
    """The Angular Triplet Loss layer: a Caffe ``MarginInnerProduct`` layer with two switches.

    ``m`` = 1..4 is the layer's SINGLE..QUADRUPLE margin type (``m=1``: logits ``x·ŵ_j``, no blend).
    ``triplet`` and ``semihard`` are the layer's two switches (see the module docstring);
    ``replace_prob`` is the 5/10 chance with which a sample becomes its class's proxy.
    For small training sets the layer's recipe recommends ``m=2, lambda_min=3``.
    """

    def __init__(self, embedding_size, num_classes, m=4, base=1000.0, gamma=0.12, power=1.0,
                 lambda_min=5.0, iteration=0, triplet=False, semihard=False, replace_prob=0.5, **kw):
        super().__init__(embedding_size, num_classes, m=m, base=base, gamma=gamma, power=power,
                         lambda_min=lambda_min, iteration=iteration, triplet=triplet,
                         semihard=semihard, replace_prob=replace_prob, **kw)
