"""The one margin formula behind every classification head.

Every head of the zoo computes logits of the form

    z_j = r(x) · c_j · cos θ_j + b_j                      (every column j)
    z_y = r(x) · c_y · φ(cos θ_y) + b_y                   (the target column, when y is given)

with ``r(x)`` either a fixed/learnable scale ``s`` or the feature norm ``‖x‖``, ``c_j`` either 1
(normalised weights) or ``‖W_j‖``, and the target transform ``φ`` one of

* :class:`AdditiveMargin` ``φ(c) = cos(m1·θ + m2) − m3`` (CosFace, ArcFace, combined, NormFace
  with all margins zero), with ArcFace's fallback ``c − m2·sin m2`` past ``θ + m2 > π`` (m1 = 1)
  and the optional ``easy_margin``;
* :class:`MultiplicativeMargin` ``φ(c) = (λ·c + ψ_m(θ)) / (1 + λ)`` with
  ``ψ_m(θ) = (−1)^k cos(mθ) − 2k`` for ``θ ∈ [kπ/m, (k+1)π/m]`` (SphereFace, L-Softmax, ATL).

:class:`MarginSpec` bundles the choice of ``r``, ``c`` and ``φ``; presets in
:mod:`facemargin.losses.heads` only fill it in. The computation itself lives behind
:func:`margin_cross_entropy`, which dispatches on ``backend`` so that a faster implementation
(the fused path) replaces the arithmetic without any preset changing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

# sin θ is computed as sqrt(max(1 − cos², eps)): exact away from cos = ±1 and finite there.
_SIN_EPS = {torch.float64: 1e-12, torch.float32: 1e-7}
# acos is only evaluated on values kept this far inside [-1, 1] (its derivative is infinite at ±1)
_ACOS_EPS = {torch.float64: 1e-12, torch.float32: 1e-6}


def _eps(table: Dict[torch.dtype, float], dtype: torch.dtype) -> float:
    return table.get(dtype, table[torch.float32])


@dataclass(frozen=True)
class AdditiveMargin:
    """``φ(c) = cos(m1·θ + m2) − m3`` on the target cosine ``c = cos θ``."""

    m1: float = 1.0
    m2: float = 0.0
    m3: float = 0.0
    easy_margin: bool = False

    @property
    def active(self) -> bool:
        return self.m1 != 1.0 or self.m2 != 0.0 or self.m3 != 0.0

    def __call__(self, c: Tensor, lambda_: Optional[float] = None) -> Tensor:
        if not self.active:
            return c
        m1, m2, m3 = self.m1, self.m2, self.m3
        if m1 == 1.0:
            if m2 == 0.0:
                phi = c
            else:
                # cos(θ + m2) = c·cos m2 − sin θ·sin m2, never through acos
                sin = torch.sqrt(torch.clamp(1.0 - c * c, min=_eps(_SIN_EPS, c.dtype)))
                phi = c * math.cos(m2) - sin * math.sin(m2)
                # past θ + m2 > π the cosine turns back up: keep the loss monotonic in θ
                # with the linear fallback of ArcFace (insightface's "th"/"mm" trick)
                if 0.0 < m2 < math.pi:
                    phi = torch.where(c > math.cos(math.pi - m2), phi, c - m2 * math.sin(m2))
        else:
            e = _eps(_ACOS_EPS, c.dtype)
            theta = torch.acos(torch.clamp(c, -1.0 + e, 1.0 - e))
            phi = torch.cos(m1 * theta + m2)
        phi = phi - m3
        if self.easy_margin:
            phi = torch.where(c > 0, phi, c)
        return phi


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


@dataclass(frozen=True)
class MultiplicativeMargin:
    """``φ(c) = (λ·c + ψ_m(θ)) / (1 + λ)``; ``m = 1`` is the plain cosine."""

    m: int = 4

    def __post_init__(self):
        if self.m not in (1, 2, 3, 4):
            raise ValueError(f"multiplicative margin m must be 1, 2, 3 or 4, got {self.m!r}")

    @property
    def active(self) -> bool:
        return self.m != 1

    def __call__(self, c: Tensor, lambda_: Optional[float] = None) -> Tensor:
        if not self.active:
            return c
        if lambda_ is None:
            raise ValueError("a multiplicative margin needs the current lambda")
        return (lambda_ * c + psi(c, self.m)) / (1.0 + lambda_)


Margin = Union[AdditiveMargin, MultiplicativeMargin]


@dataclass(frozen=True)
class MarginSpec:
    """What a head computes: feature scale ``r``, column scale ``c``, target transform ``φ``.

    feature: ``"scale"`` (r = s, a fixed or learnable scalar, features normalised) or ``"norm"``
        (r = ‖x‖, the raw feature).
    weight_norm: ``True`` uses ``ŵ_j`` (c_j = 1); ``False`` uses ``W_j`` (c_j = ‖W_j‖).
    margin: the target transform.
    """

    feature: str = "scale"
    weight_norm: bool = True
    margin: Margin = AdditiveMargin()

    def __post_init__(self):
        if self.feature not in ("scale", "norm"):
            raise ValueError(f"feature must be 'scale' or 'norm', got {self.feature!r}")


class MarginStats(NamedTuple):
    """Per-sample quantities (no gradient) that ATL's semi-hard mask needs.

    target_plain: the target logit without margin; target_margin: with margin;
    other_max: the largest non-target logit (−inf when C = 1).
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


def _scale_value(scale) -> Union[float, Tensor]:
    return scale if isinstance(scale, Tensor) else float(scale)


def margin_logits(
    x: Tensor,
    weight: Tensor,
    y: Optional[Tensor],
    spec: MarginSpec,
    scale=1.0,
    lambda_: Optional[float] = None,
    bias: Optional[Tensor] = None,
):
    """The reference (plain) computation of the ``(B, C)`` logits.

    Returns ``(logits, stats)``; ``stats`` is a :class:`MarginStats` when ``y`` is given, else None.
    """
    dtype = torch.promote_types(x.dtype, weight.dtype)
    x = x.to(dtype)
    weight = weight.to(dtype)
    x_hat = F.normalize(x, dim=1)
    feat = x if spec.feature == "norm" else _scale_value(scale) * x_hat
    w = F.normalize(weight, dim=1) if spec.weight_norm else weight
    logits = F.linear(feat, w, None if bias is None else bias.to(dtype))
    if y is None:
        return logits, None
    rows = torch.arange(x.shape[0], device=x.device)
    with torch.no_grad():
        target_plain = logits[rows, y]
        other_max = logits.index_put((rows, y), torch.tensor(-math.inf, dtype=logits.dtype, device=x.device)).amax(dim=1)
    if not spec.margin.active:
        return logits, MarginStats(target_plain, target_plain, other_max)
    w_y = weight[y]
    w_hat_y = F.normalize(w_y, dim=1)
    cos_t = (x_hat * w_hat_y).sum(dim=1).clamp(-1.0, 1.0)
    # the B target entries are computed in at least float32 (bf16 has 8 bits of mantissa)
    work = torch.promote_types(dtype, torch.float32)
    phi = spec.margin(cos_t.to(work), lambda_).to(dtype)
    r = x.norm(dim=1) if spec.feature == "norm" else _scale_value(scale)
    target = r * phi
    if not spec.weight_norm:
        target = target * w_y.norm(dim=1)
    if bias is not None:
        target = target + bias.to(dtype)[y]
    # under autocast F.linear returns bf16 logits while the target entries are float32
    logits = logits.index_put((rows, y), target.to(logits.dtype))
    return logits, MarginStats(target_plain, target.detach(), other_max)


def _plain_cross_entropy(x, weight, y, spec, scale, lambda_, bias, **_):
    logits, stats = margin_logits(x, weight, y, spec, scale, lambda_, bias)
    # at least float32 (bf16 logits), but float64 stays float64 (gradcheck, exact comparisons)
    loss = F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), y)
    return loss, stats


# Implementations of the loss, by name. The fused path registers itself here.
BACKENDS: Dict[str, Callable] = {"plain": _plain_cross_entropy}


def margin_cross_entropy(
    x: Tensor,
    weight: Tensor,
    y: Tensor,
    spec: MarginSpec,
    scale=1.0,
    lambda_: Optional[float] = None,
    bias: Optional[Tensor] = None,
    backend: str = "plain",
    **options,
):
    """Mean cross-entropy of the margin logits; returns ``(loss, MarginStats)``."""
    try:
        impl = BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(sorted(BACKENDS))}") from None
    return impl(x, weight, y, spec=spec, scale=scale, lambda_=lambda_, bias=bias, **options)
