"""Classification heads: presets of the one margin formula of :mod:`.margin`.

Every head is built as ``Head(embedding_size=D, num_classes=C, **hyper)`` and holds its class
weights in ``head.weight`` ``(C, D)``. ``head(x, y)`` returns the mean cross-entropy of the
margin logits, ``head.logits(x, y)`` the logits themselves (no margin when ``y`` is None).

Two switches of the Angular Triplet Loss (see :class:`MarginInnerProduct` and ``docs/atl.md``)
exist on every head built on normalised weights:

* ``semihard=True``: the gradient reaching a sample's embedding is zeroed when the sample is
  *easy* (label = arg-max of the margin logits) or, when the head has a margin, *hard* (label
  ≠ arg-max of the plain logits). The class weights' gradient is not masked.
* ``triplet=True`` ("easy triplet"): the class weights get no gradient; instead, when the gradient
  of a training-mode call flows back, row ``y_i`` is overwritten with ``x_i`` with probability
  ``replace_prob``, in batch order (later samples of a class win).

On SphereFace/ATL these are the original Caffe layer's semantics; on CosFace, ArcFace and the
combined margin they are facemargin's extension.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

from .checks import check_batch, check_embeddings
from .margin import (
    AdditiveMargin,
    MarginSpec,
    MarginStats,
    MultiplicativeMargin,
    margin_cross_entropy,
    margin_logits,
)
from .registry import LOSSES

Tensor = torch.Tensor


class _GradMask(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by a per-row mask filled in later."""

    @staticmethod
    def forward(ctx, x, holder):
        ctx.holder = holder
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        mask = ctx.holder.get("mask")
        if mask is None:
            return grad, None
        return grad * mask.to(grad.dtype).unsqueeze(1), None


class _ProxyReplace(torch.autograd.Function):
    """Identity forward; in backward, overwrite class rows with the batch's samples."""

    @staticmethod
    def forward(ctx, x, weight, y, chosen):
        ctx.weight = weight
        ctx.save_for_backward(x.detach(), y, chosen)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        x, y, chosen = ctx.saved_tensors
        replace_rows_(ctx.weight, x, y, chosen)
        return grad, None, None, None


@torch.no_grad()
def replace_rows_(weight: Tensor, x: Tensor, y: Tensor, chosen: Tensor) -> None:
    """``weight[y_i] = x_i`` for the chosen samples, in batch order (the last one of a class wins)."""
    idx = chosen.nonzero().flatten()
    if idx.numel() == 0:
        return
    labels = y[idx]
    # last chosen occurrence of every class: scan the batch backwards and keep first hits
    rev = torch.flip(idx, [0])
    uniq, inverse = torch.unique(labels.flip(0), return_inverse=True)
    first = torch.full((uniq.numel(),), rev.numel(), dtype=torch.long, device=y.device)
    first.scatter_reduce_(0, inverse, torch.arange(rev.numel(), device=y.device), reduce="amin")
    src = rev[first]
    weight[uniq] = x[src].to(weight.dtype)


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


class MarginHead(nn.Module):
    """A classification head computing ``margin_cross_entropy`` for a :class:`MarginSpec`.

    Subclasses are presets: they only translate their paper's hyper-parameters into a spec.

    Args:
        embedding_size, num_classes: ``D`` and ``C``.
        spec: what to compute (see :mod:`facemargin.losses.margin`).
        scale: ``s`` for ``feature="scale"`` heads; ``learn_scale`` makes it a parameter.
        bias: add a learnable bias ``(C,)``.
        schedule: a :class:`LambdaSchedule` for multiplicative margins.
        triplet, semihard, replace_prob: the ATL switches (module docstring).
        backend: ``"plain"`` (reference) or another registered implementation, e.g. ``"fused"``.
        backend_options: passed to the backend (e.g. ``chunk_size`` of the fused path).
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        spec: MarginSpec,
        scale: float = 1.0,
        learn_scale: bool = False,
        bias: bool = False,
        schedule: Optional[LambdaSchedule] = None,
        triplet: bool = False,
        semihard: bool = False,
        replace_prob: float = 0.5,
        backend: str = "plain",
        backend_options: Optional[dict] = None,
    ):
        super().__init__()
        if int(embedding_size) <= 0 or int(num_classes) <= 0:
            raise ValueError(
                f"embedding_size and num_classes must be positive, got {embedding_size} and {num_classes}"
            )
        if not 0.0 <= float(replace_prob) <= 1.0:
            raise ValueError(f"replace_prob must lie in [0, 1], got {replace_prob}")
        if (triplet or semihard) and not spec.weight_norm:
            raise ValueError("triplet/semihard need normalised class weights (rows are renormalised proxies)")
        self.embedding_size, self.num_classes = int(embedding_size), int(num_classes)
        self.spec = spec
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.embedding_size))
        self.bias = nn.Parameter(torch.zeros(self.num_classes)) if bias else None
        if learn_scale:
            self.scale = nn.Parameter(torch.tensor(float(scale)))
        else:
            self.register_buffer("scale", torch.tensor(float(scale)), persistent=False)
        self.schedule = schedule
        self.triplet, self.semihard, self.replace_prob = bool(triplet), bool(semihard), float(replace_prob)
        self.backend = backend
        self.backend_options = dict(backend_options or {})
        self.last_stats: Optional[MarginStats] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight)

    # -- λ schedule ------------------------------------------------------------------------
    @property
    def iteration(self) -> Optional[Tensor]:
        return None if self.schedule is None else self.schedule.iteration

    @property
    def lambda_(self) -> Optional[float]:
        return None if self.schedule is None else self.schedule.current

    def _scale_arg(self):
        # a tensor whenever it needs a gradient (also under torch.func.functional_call, where the
        # learnable scale is substituted by a plain tensor)
        return self.scale if self.scale.requires_grad else float(self.scale)

    # -- the two calls of the contract -----------------------------------------------------------
    def logits(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """The ``(B, C)`` logits whose cross-entropy ``forward`` returns (no margin if y is None)."""
        if y is None:
            check_embeddings(x, self.embedding_size, type(self).__name__)
        else:
            check_batch(x, y, self.embedding_size, self.num_classes, type(self).__name__)
        out, _ = margin_logits(x, self.weight, y, self.spec, self._scale_arg(), self.lambda_, self.bias)
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        check_batch(x, y, self.embedding_size, self.num_classes, type(self).__name__)
        training = self.training and torch.is_grad_enabled()
        if self.training and self.schedule is not None:
            self.schedule.step()
        weight = self.weight
        holder = {}
        if self.triplet:
            weight = self.weight.detach()
            if training and self.replace_prob > 0:
                chosen = torch.rand(x.shape[0], device=x.device) < self.replace_prob
                x = _ProxyReplace.apply(x, self.weight, y, chosen)
        if self.semihard and training:
            x = _GradMask.apply(x, holder)
        loss, stats = margin_cross_entropy(
            x, weight, y, self.spec, self._scale_arg(), self.lambda_, self.bias,
            backend=self.backend, **self.backend_options,
        )
        self.last_stats = stats
        if self.semihard and training:
            holder["mask"] = stats.semihard_mask(self.spec.margin.active)
        return loss

    def extra_repr(self):
        s = f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, spec={self.spec}"
        if self.triplet or self.semihard:
            s += f", triplet={self.triplet}, semihard={self.semihard}, replace_prob={self.replace_prob}"
        if self.backend != "plain":
            s += f", backend={self.backend!r}"
        return s


# ------------------------------------------------------------------------------------------------
# presets
# ------------------------------------------------------------------------------------------------


@LOSSES.register("softmax")
class Softmax(MarginHead):
    """Plain softmax cross-entropy: logits ``W_j·x + b_j``."""

    def __init__(self, embedding_size, num_classes, bias=True, **kw):
        super().__init__(embedding_size, num_classes, MarginSpec("norm", False, AdditiveMargin()), bias=bias, **kw)


@LOSSES.register("l2softmax")
class L2Softmax(MarginHead):
    """L2-constrained softmax (Ranjan et al. 2017): logits ``W_j·(α x̂) + b_j``."""

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

    def __init__(self, embedding_size, num_classes, s=16.0, learn_scale=False, **kw):
        super().__init__(embedding_size, num_classes, MarginSpec("scale", True, AdditiveMargin()),
                         scale=s, learn_scale=learn_scale, **kw)


class _Multiplicative(MarginHead):
    weight_norm = True

    def __init__(self, embedding_size, num_classes, m=4, base=1000.0, gamma=0.12, power=1.0,
                 lambda_min=5.0, iteration=0, **kw):
        spec = MarginSpec("norm", self.weight_norm, MultiplicativeMargin(int(m)))
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


@LOSSES.register("atl")
class MarginInnerProduct(_Multiplicative):
    """The Angular Triplet Loss layer: the Caffe ``MarginInnerProduct`` of the seed.

    ``m`` = 1..4 is the layer's SINGLE..QUADRUPLE margin type (``m=1``: logits ``x·ŵ_j``, no blend).
    ``triplet`` and ``semihard`` are the layer's two switches (see the module docstring);
    ``replace_prob`` is the 5/10 chance with which a sample becomes its class's proxy.
    For small training sets the seed recommends ``m=2, lambda_min=3``.
    """

    def __init__(self, embedding_size, num_classes, m=4, base=1000.0, gamma=0.12, power=1.0,
                 lambda_min=5.0, iteration=0, triplet=False, semihard=False, replace_prob=0.5, **kw):
        super().__init__(embedding_size, num_classes, m=m, base=base, gamma=gamma, power=power,
                         lambda_min=lambda_min, iteration=iteration, triplet=triplet,
                         semihard=semihard, replace_prob=replace_prob, **kw)


class _Additive(MarginHead):
    def __init__(self, embedding_size, num_classes, s, m1, m2, m3, easy_margin=False, **kw):
        spec = MarginSpec("scale", True, AdditiveMargin(float(m1), float(m2), float(m3), bool(easy_margin)))
        super().__init__(embedding_size, num_classes, spec, scale=s, **kw)


@LOSSES.register("cosface", "amsoftmax")
class CosFace(_Additive):
    """CosFace / AM-Softmax (Wang et al. 2018): target ``s(cos θ_y − m)``; defaults s=64, m=0.35."""

    def __init__(self, embedding_size, num_classes, s=64.0, m=0.35, **kw):
        super().__init__(embedding_size, num_classes, s, 1.0, 0.0, m, **kw)


@LOSSES.register("arcface")
class ArcFace(_Additive):
    """ArcFace (Deng et al. 2019): target ``s cos(θ_y + m)``, ``s(cos θ_y − m sin m)`` past
    ``θ_y + m > π``; ``easy_margin`` keeps ``s cos θ_y`` where ``cos θ_y ≤ 0``."""

    def __init__(self, embedding_size, num_classes, s=64.0, m=0.5, easy_margin=False, **kw):
        super().__init__(embedding_size, num_classes, s, 1.0, m, 0.0, easy_margin=easy_margin, **kw)


@LOSSES.register("combined")
class CombinedMargin(_Additive):
    """Combined margin (InsightFace): target ``s(cos(m1 θ_y + m2) − m3)``; with ``m1 = 1`` the
    ArcFace fallback applies past π."""

    def __init__(self, embedding_size, num_classes, s=64.0, m1=1.0, m2=0.3, m3=0.2, **kw):
        super().__init__(embedding_size, num_classes, s, m1, m2, m3, **kw)
