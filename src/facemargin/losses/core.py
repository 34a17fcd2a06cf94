"""The core of every classification head: the margin context, the margin module, and the one
target-logit function.

Every softmax head of the zoo computes logits of the form

    z_j = r(x) · k_j · g(cos θ_j) + b_j                   (every column j ≠ y)
    z_y = r(x) · k_y · φ(cos θ_y, ctx) + b_y              (the target column, when y is given)

with ``r(x)`` either a fixed/learnable scale ``s`` or the feature norm ``‖x‖``, ``k_j`` either 1
(normalised weights) or ``‖W_j‖``, ``g`` the identity unless the margin changes the non-target
logits, and ``φ`` the head's :class:`Margin`. A margin is a module: it sees a
:class:`MarginContext` (labels, feature norms with and without gradient, the step, λ and any
per-sample tensors it prepared), may hold state updated once per training step, may add a
regulariser to the loss and may declare that it changes non-target logits.

:func:`target_logit` computes ``z_y`` for the B target rows; every engine (plain, fused, sharded)
receives it and lets autograd differentiate it, so no margin derivative is written by hand
anywhere. The engines (:mod:`facemargin.losses.engines`) only do the GEMM and a stable
log-sum-exp over class blocks.

:class:`AdditiveMargin` ``φ(c) = cos(m1·θ + m2) − m3`` lives here because, with every margin
zero, it is the identity every margin-free head uses; the heads built on it are in
:mod:`.additive`, the multiplicative margin of SphereFace in :mod:`.sphereface`. Hyper-parameter
rules are declared beside each class (``PARAMS``, see :mod:`.checks`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, NamedTuple, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import ANGLE_FACTOR, CheckedParams, Flag, Real

Tensor = torch.Tensor

# sin θ is computed as sqrt(max(1 − cos², eps)): exact away from cos = ±1 and finite there.
_SIN_EPS = {torch.float64: 1e-12, torch.float32: 1e-7}
# acos is only evaluated on values kept this far inside [-1, 1] (its derivative is infinite at ±1)
_ACOS_EPS = {torch.float64: 1e-12, torch.float32: 1e-6}
# F.normalize's eps: x̂ = x / max(‖x‖, eps)
NORM_EPS = 1e-12


def _eps(table: Dict[torch.dtype, float], dtype: torch.dtype) -> float:
    return table.get(dtype, table[torch.float32])


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least float32 (bf16 has 8 bits of mantissa); float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


def safe_sin(c: Tensor) -> Tensor:
    """``sin θ`` from ``c = cos θ``, finite (with a finite gradient) at ``c = ±1``."""
    return torch.sqrt(torch.clamp(1.0 - c * c, min=_eps(_SIN_EPS, c.dtype)))


def safe_acos(c: Tensor) -> Tensor:
    """``θ = acos(c)`` with ``c`` kept just inside ``[-1, 1]`` (finite gradient)."""
    e = _eps(_ACOS_EPS, c.dtype)
    return torch.acos(torch.clamp(c, -1.0 + e, 1.0 - e))


# ------------------------------------------------------------------------------------------------
# the context a margin sees
# ------------------------------------------------------------------------------------------------


def elementwise_value_and_grad(fn, z: Tensor):
    """``(fn(z), d fn/dz)`` for an elementwise ``fn``, by autograd on a detached copy of ``z``."""
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        v = fn(zz)
        (g,) = torch.autograd.grad(v.sum(), zz)
    return v.detach(), g


@dataclass
class MarginContext:
    """What a margin may read during one call, for the rows it is asked about.

    labels: ``(B,)`` class of every row. norm: ``(B,)`` raw feature norms ``‖x‖`` *with* gradient
    (``norm_detached`` without). cos_target: ``(B,)`` target cosines without gradient, known for
    the whole (global) batch before any margin is applied. training: a training-mode call (state
    may be updated, random margins drawn). lambda_: the λ of an annealed blend (None without a
    schedule). step: the head's training-step counter. values: per-sample tensors a margin
    prepared for the whole batch (:meth:`Margin.prepare`); :meth:`select` restricts all of them
    to a subset of rows (the rows whose target a shard owns).
    """

    labels: Tensor
    norm: Tensor
    cos_target: Optional[Tensor] = None
    training: bool = False
    lambda_: Optional[float] = None
    step: int = 0
    values: Dict[str, Tensor] = field(default_factory=dict)

    @property
    def norm_detached(self) -> Tensor:
        return self.norm.detach()

    @property
    def batch_size(self) -> int:
        return int(self.labels.shape[0])

    def select(self, rows: Tensor) -> "MarginContext":
        """The same context for ``rows`` only (per-sample tensors indexed, scalars kept)."""
        return MarginContext(
            labels=self.labels[rows], norm=self.norm[rows],
            cos_target=None if self.cos_target is None else self.cos_target[rows],
            training=self.training, lambda_=self.lambda_, step=self.step,
            values={k: v[rows] for k, v in self.values.items()})

    @staticmethod
    def for_cosines(c: Tensor, lambda_: Optional[float] = None) -> "MarginContext":
        """A context for evaluating ``φ`` on bare cosines (figures, tests): unit norms, no labels."""
        n = c.reshape(-1).shape[0]
        return MarginContext(labels=torch.zeros(n, dtype=torch.long, device=c.device),
                             norm=torch.ones(n, dtype=c.dtype, device=c.device),
                             cos_target=c.detach().reshape(-1), training=False, lambda_=lambda_)


# ------------------------------------------------------------------------------------------------
# margins
# ------------------------------------------------------------------------------------------------


class Margin(CheckedParams, nn.Module):
    """The target transform ``φ(cos θ_y, ctx)`` of a head, as a module.

    Override :meth:`phi`. Optional hooks (defaults do nothing):

    * :meth:`update` — state (EMA buffers) updated under no_grad once per training forward, before
      :meth:`prepare`; it sees the whole batch (the global batch on a sharded head), so statistics
      are identical on every rank.
    * :meth:`prepare` — per-sample tensors for the whole batch, stored in ``ctx.values`` (random
      per-sample margins, norm-dependent scalers).
    * :meth:`others` — set ``changes_others = True`` and return the transformed non-target cosines
      of a block ``(B, n)``; the engines apply it blockwise and differentiate it with autograd.
    * :meth:`regularizer` — a scalar added to the loss (mean over the batch).
    * :meth:`stats` — scalars worth logging (EMA values).

    A margin declares the valid values of its constructor's arguments in ``PARAMS`` (checked
    when it is built; see :mod:`facemargin.losses.checks`). A head states its own, often
    narrower, ranges for the hyper-parameters it passes on.

    ``needs_lambda`` tells the head that ``φ`` reads ``ctx.lambda_``. ``needs_scale_features``
    tells the engines that :meth:`others` works on cosines (the head divides the logits by its
    scale first), which needs a ``feature="scale"`` spec with normalised weights.
    """

    changes_others = False
    needs_lambda = False

    @property
    def active(self) -> bool:
        """False when ``φ`` is the identity (the target logit equals the plain one)."""
        return True

    def phi(self, c: Tensor, ctx: MarginContext) -> Tensor:
        raise NotImplementedError

    def update(self, ctx: MarginContext) -> None:
        return None

    def prepare(self, ctx: MarginContext) -> None:
        return None

    def others(self, c: Tensor, ctx: MarginContext) -> Tensor:
        return c

    def others_and_grad(self, c: Tensor, ctx: MarginContext):
        """``(others(c), d others/dc)`` elementwise, the derivative None where it is 1 everywhere
        (``c`` is the engine's own temporary: an override may work on it in place).

        The fused engine folds the derivative into its gradient block while the plain cosines are
        at hand, so the transform never costs a second GEMM. The default differentiates
        :meth:`others` with autograd; a margin with a closed form overrides this.
        """
        return elementwise_value_and_grad(lambda cc: self.others(cc, ctx), c)

    def regularizer(self, ctx: MarginContext) -> Optional[Tensor]:
        return None

    def stats(self) -> Dict[str, float]:
        return {}

    def forward(self, c: Tensor, ctx: Union[MarginContext, float, None] = None) -> Tensor:
        """``φ(c)``; ``ctx`` may be a :class:`MarginContext` or, for bare cosines, just λ."""
        if not isinstance(ctx, MarginContext):
            ctx = MarginContext.for_cosines(c, ctx)
        if not self.active:
            return c
        return self.phi(c, ctx)


class AdditiveMargin(Margin):
    """``φ(c) = cos(m1·θ + m2) − m3`` on the target cosine ``c = cos θ``.

    With ``m1 = 1`` the cosine is expanded (``c·cos m2 − sin θ·sin m2``, no acos) and, past
    ``θ + m2 > π``, replaced by the linear fallback ``c − m2·sin m2`` so that the loss stays
    monotonic in θ. ``easy_margin`` keeps ``φ(c) = c`` where ``c ≤ 0``.

    As a building block it takes any finite ``m2`` and ``m3`` and a positive ``m1``; the heads
    built on it narrow these.
    """

    PARAMS = {"m1": ANGLE_FACTOR, "m2": Real(doc="an angle added to m1·θ, in radians"),
              "m3": Real(doc="subtracted from the cosine"), "easy_margin": Flag(doc="no margin where c <= 0")}

    def __init__(self, m1: float = 1.0, m2: float = 0.0, m3: float = 0.0, easy_margin: bool = False):
        super().__init__()
        self.m1, self.m2, self.m3, self.easy_margin = float(m1), float(m2), float(m3), bool(easy_margin)

    @property
    def active(self) -> bool:
        return self.m1 != 1.0 or self.m2 != 0.0 or self.m3 != 0.0

    def phi(self, c: Tensor, ctx: MarginContext) -> Tensor:
        return additive_phi(c, self.m1, self.m2, self.m3, self.easy_margin)

    def extra_repr(self) -> str:
        return f"m1={self.m1}, m2={self.m2}, m3={self.m3}, easy_margin={self.easy_margin}"


def additive_phi(c: Tensor, m1, m2, m3, easy_margin: bool = False) -> Tensor:
    """``cos(m1·θ + m2) − m3`` with ArcFace's fallback; ``m2``/``m3`` may be per-sample tensors."""
    if m1 == 1.0:
        if isinstance(m2, Tensor) or m2 != 0.0:
            cos_m, sin_m = (torch.cos(m2), torch.sin(m2)) if isinstance(m2, Tensor) else (math.cos(m2), math.sin(m2))
            # cos(θ + m2) = c·cos m2 − sin θ·sin m2, never through acos
            phi = c * cos_m - safe_sin(c) * sin_m
            # past θ + m2 > π the cosine turns back up: keep the loss monotonic in θ with the
            # linear fallback c − m2·sin m2
            th = torch.cos(math.pi - m2) if isinstance(m2, Tensor) else math.cos(math.pi - m2)
            fallback = c - m2 * sin_m
            if isinstance(m2, Tensor):
                phi = torch.where((c > th) | (m2 <= 0) | (m2 >= math.pi), phi, fallback)
            elif 0.0 < m2 < math.pi:
                phi = torch.where(c > th, phi, fallback)
        else:
            phi = c
    else:
        phi = torch.cos(m1 * safe_acos(c) + m2)
    phi = phi - m3
    if easy_margin:
        phi = torch.where(c > 0, phi, c)
    return phi



@dataclass(frozen=True, eq=False)
class MarginSpec:
    """What a head computes: feature scale ``r``, column scale ``k``, target transform ``φ``.

    feature: ``"scale"`` (r = s, a fixed or learnable scalar, features normalised) or ``"norm"``
        (r = ‖x‖, the raw feature).
    weight_norm: ``True`` uses ``ŵ_j`` (k_j = 1); ``False`` uses ``W_j`` (k_j = ‖W_j‖).
    margin: the target transform (a :class:`Margin`).
    """

    feature: str = "scale"
    weight_norm: bool = True
    margin: Margin = field(default_factory=AdditiveMargin)

    def __post_init__(self):
        if self.feature not in ("scale", "norm"):
            raise ValueError(f"feature must be 'scale' or 'norm', got {self.feature!r}")
        if not isinstance(self.margin, Margin):
            raise TypeError(f"margin must be a Margin module, got {type(self.margin).__name__}")
        if self.margin.changes_others and not (self.feature == "scale" and self.weight_norm):
            raise ValueError(f"{type(self.margin).__name__} changes the non-target cosines: it needs "
                             "feature='scale' and normalised weights")


class MarginStats(NamedTuple):
    """Per-sample quantities (no gradient) for ATL's semi-hard mask and the training log.

    target_plain: the target logit without margin; target_margin: with margin;
    other_max: the largest plain non-target logit, before any transform a margin applies to the
    non-target logits (CurricularFace, SphereFace2), bias included (−inf when C = 1): so
    ``train_acc`` is the plain accuracy for every head.
    """

    target_plain: Tensor
    target_margin: Tensor
    other_max: Tensor

    @property
    def easy(self) -> Tensor:
        """The label is the arg-max of the margin logits."""
        return self.target_margin > self.other_max

    @property
    def hard(self) -> Tensor:
        """The label is not the arg-max of the plain logits."""
        return self.target_plain <= self.other_max

    def semihard_mask(self, margin_active: bool) -> Tensor:
        """ATL's mask: True for the samples whose embedding trains (not easy, and not hard when
        there is a margin)."""
        keep = ~self.easy
        if margin_active:
            keep &= ~self.hard
        return keep

    def shares(self) -> Dict[str, float]:
        """Shares of easy, semi-hard and hard samples, and the plain training accuracy."""
        easy = self.easy
        hard = self.hard & ~easy  # wrong even without the margin (no margin: every wrong sample)
        e, h = float(easy.float().mean()), float(hard.float().mean())
        return {"train_acc": float((self.target_plain > self.other_max).float().mean()),
                "easy": e, "hard": h, "semihard": 1.0 - e - h}


# ------------------------------------------------------------------------------------------------
# the one target-logit function
# ------------------------------------------------------------------------------------------------


def target_cosines(x: Tensor, w: Tensor):
    """``(cos, ‖x‖, ‖w‖)`` of row pairs ``(x_i, w_i)`` in at least float32 (cos clamped to [-1, 1]).

    ``w`` may be ``(n, K, D)``: ``K`` sub-center rows per class, of which the one closest to
    ``x_i`` counts (``cos = max_k``; the gradient reaches that row only).
    """
    wk = work_dtype(torch.promote_types(x.dtype, w.dtype))
    x, w = x.to(wk), w.to(wk)
    xn = torch.linalg.vector_norm(x, dim=1)
    xh = x / xn.clamp_min(NORM_EPS).unsqueeze(1)
    wn = torch.linalg.vector_norm(w, dim=-1)
    if w.dim() == 3:
        c = (xh.unsqueeze(1) * (w / wn.clamp_min(NORM_EPS).unsqueeze(2))).sum(2)
        c, k = c.max(dim=1)
        wn = wn.gather(1, k.unsqueeze(1)).squeeze(1)
    else:
        c = (xh * (w / wn.clamp_min(NORM_EPS).unsqueeze(1))).sum(1)
    return c.clamp(-1.0, 1.0), xn, wn


def target_logit(x: Tensor, w: Tensor, spec: MarginSpec, ctx: MarginContext, scale=1.0,
                 bias: Optional[Tensor] = None, apply_margin: bool = True) -> Tensor:
    """The target logit ``r(x)·k_y·φ(cos θ_y, ctx) + b_y`` of row pairs ``(x_i, w_i)``.

    ``x`` ``(n, D)`` are embeddings, ``w`` ``(n, D)`` their target class rows, ``bias`` ``(n,)``
    the target biases, ``ctx`` the context of exactly these rows. Computed in at least float32 and
    differentiable in everything (autograd gives every engine the margin's gradient).
    """
    c, xn, wn = target_cosines(x, w)
    margin = spec.margin
    phi = margin.phi(c, ctx) if (apply_margin and margin.active) else c
    r = xn if spec.feature == "norm" else scale
    z = r * phi
    if not spec.weight_norm:
        z = z * wn
    if bias is not None:
        z = z + bias.to(z.dtype)
    return z


class ScaledOthers:
    """A margin's non-target transform on logits ``z = s·c``: ``s·others(z/s)``, elementwise.

    Called, it gives the transformed logits (what the plain engine uses, differentiated by
    autograd); :meth:`apply_` transforms a slice in place for the fused engine and also gives
    ``d/dz``, which equals ``d others/dc`` at ``c = z/s`` (None where it is 1 everywhere).
    """

    def __init__(self, margin: Margin, ctx: MarginContext, scale):
        self.margin, self.ctx, self.scale = margin, ctx, scale

    def __call__(self, z: Tensor) -> Tensor:
        return self.scale * self.margin.others(z / self.scale, self.ctx)

    def apply_(self, z: Tensor, grad: bool = False) -> Optional[Tensor]:
        """Transform ``z`` in place; with ``grad``, return ``d/dz`` (None where it is 1 everywhere)."""
        s = self.scale.detach() if isinstance(self.scale, Tensor) else self.scale
        c = z / s
        if grad:
            v, g = self.margin.others_and_grad(c, self.ctx)
        else:
            v, g = self.margin.others(c, self.ctx), None
        torch.mul(v, s, out=z)
        return g


def features(x: Tensor, spec: MarginSpec, scale=1.0) -> Tensor:
    """The GEMM operand ``f``: ``s·x̂`` for ``feature="scale"``, ``x`` for ``"norm"``."""
    if spec.feature == "norm":
        return x
    return scale * F.normalize(x, dim=1)


class Float32Statistics(Margin):
    """A margin whose running statistics stay in at least float32 when the head is cast to
    float16/bfloat16 (an EMA with rate 0.01 stalls in bf16's 8-bit mantissa)."""

    def _apply(self, fn, recurse=True):
        before = {k: b for k, b in self._buffers.items() if b is not None and b.is_floating_point()}
        super()._apply(fn, recurse)
        for k, old in before.items():
            new = self._buffers[k]
            if new is not None and new.dtype in (torch.float16, torch.bfloat16):
                self._buffers[k] = old.to(device=new.device, dtype=torch.float32)
        return self
