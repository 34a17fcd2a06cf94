"""Sigmoid heads: one binary (one-vs-rest) loss per class column instead of a softmax.

A :class:`BinaryMarginHead` computes the same logits as every head (the target through the one
target-logit function, the others blockwise in the engine) and then the loss

    L = norm · ( Σ_i pos(z_{i,y_i}) + Σ_i Σ_{j≠y_i} neg(z_ij) ) / B

with elementwise ``pos`` and ``neg``. The engines evaluate ``Σ neg`` block by block (no ``(B, C)``
tensor is kept by the fused engine) and sum it across ranks on a sharded store.

* :class:`UniFace` (``uniface``) — the unified cross-entropy of UniFace (ICCV 2023), following
  CVI-SZU/UniFace ``head.py`` (``Unified_Cross_Entropy_Loss``).
* :class:`SphereFace2` (``sphereface2``) — SphereFace2 (ICLR 2022), type "C", following
  ydwen/opensphere ``sphereface2.py``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import COSINE, SCALE, Choice, Flag, Integer, Real
from .heads import MarginHead, normalize_rows_
from .margin import AdditiveMargin, Margin, MarginSpec, MarginStats, target_logit
from .registry import LOSSES

Tensor = torch.Tensor


class BinaryMarginHead(MarginHead):
    """A head whose loss is a sum of per-column binary terms (see the module docstring).

    Subclasses define :meth:`pos`, :meth:`neg` (elementwise, differentiable) and :meth:`norm`,
    and may hold a shared scalar bias ``b`` (a parameter replicated on every rank).
    """

    def pos(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def neg(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def norm(self) -> float:
        """Factor of the summed terms before the mean over the batch."""
        return 1.0

    def _target(self, x, ctx, rows, w_rows, bias, cols, scale, apply_margin=True):
        # a sigmoid head always needs the target logit (even with a zero margin)
        T_loc = target_logit(x[rows], w_rows, self.spec, ctx.select(rows), scale,
                             None if bias is None else bias[cols[rows]], apply_margin)
        T = torch.zeros(x.shape[0], dtype=T_loc.dtype, device=x.device).index_put((rows,), T_loc)
        return self.store.share_targets(T)

    def _loss(self, f, weight, bias, T, cols, link, others, x):
        total, target_plain, other_max = self.engine.binary(
            f, weight, bias, cols, self.neg, weight_norm=self.spec.weight_norm, link=link, others=others,
            reducer=self.store.reducer, rows_per_class=self.rows_per_class, **self.backend_options)
        total = self.store.share_targets(total.reshape(1)).reshape(())
        B = f.shape[0]
        loss = (self.pos(T).sum() + total) * (self.norm() / B)
        return loss, MarginStats(target_plain, T.detach(), other_max)


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
        self._init_bias()

    def bias_init(self) -> float:
        return math.log(self.num_classes * self.r * 10.0)

    @torch.no_grad()
    def _init_bias(self):
        b = getattr(self, "b", None)  # not yet made while the base class initialises the rows
        if self.bias is not None:
            self.bias.fill_(self.bias_init())
        elif b is not None:
            b.fill_(self.bias_init())

    def init_weights(self, seed: int) -> None:
        super().init_weights(seed)
        self._init_bias()

    def _column_bias(self) -> Optional[Tensor]:
        if self.bias is not None:
            return -self.bias
        return -self.store.replicated(self.b).expand(self.num_local)

    def pos(self, z):
        return F.softplus(-z.clamp(-self.s, self.s))

    def neg(self, z):
        return self.l * F.softplus(z.clamp(-self.s, self.s))


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

    def init_weights(self, seed: int) -> None:
        super().init_weights(seed)
        if getattr(self, "b", None) is not None:  # not yet made while the base class initialises
            with torch.no_grad():
                self.b.fill_(self.bias_init())

    @torch.no_grad()
    def _before_forward(self, training: bool) -> None:
        normalize_rows_(self.weight)

    def _column_bias(self):
        return self.store.replicated(self.b).expand(self.num_local)

    def norm(self) -> float:
        return self.lw / self.r / 1.0  # lw·C/r per term, averaged over B×C: the C cancels

    def pos(self, z):
        return self.alpha * F.softplus(-z)

    def neg(self, z):
        return (1.0 - self.alpha) * F.softplus(z)
