"""Checks shared by every loss: clear ``ValueError`` s instead of silent garbage.

Two kinds:

* **hyper-parameters**, checked once when a loss is built (and by
  :func:`facemargin.losses.check_params` without building it). Every loss declares the valid
  values of its arguments next to its definition, in the class attribute ``PARAMS``, with the
  rules re-exported here (:class:`Real`, :class:`Integer`, :class:`Flag`, :class:`Choice`,
  :class:`Check`; see :mod:`facemargin.registry`). The ranges the heads share are defined below
  once, with the reason for each bound.
* **inputs** of every call (:func:`check_batch`): embedding shape, dtype and finiteness, labels.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..params import Check, CheckedParams, Choice, Depends, Flag, Integer, Param, Real  # noqa: F401

# ------------------------------------------------------------------------------------------------
# ranges shared by several heads
# ------------------------------------------------------------------------------------------------

#: the feature scale ``s`` multiplying the cosines: a non-positive one turns the softmax upside
#: down (or flat), so it must be positive
SCALE = Real(0, lo_open=True, doc="the scale multiplying the cosines")

#: an additive angular margin ``cos(θ + m)`` (ArcFace and its relatives). ``m ≥ 0`` (a negative
#: one makes the target easier, not harder); ``m < π/2``: class rows of a head with many classes
#: are close to orthogonal (``θ_j ≈ π/2``), so a sample could never win by ``π/2`` or more
ANGLE = Real(0, math.pi / 2, hi_open=True, doc="an additive angle in radians")

#: an additive cosine margin ``cos θ − m`` (CosFace and relatives). ``m ≥ 0``; ``m < 1``: CosFace's
#: bound on ``m`` for ``C`` classes, ``C/(C−1)`` or less, tends to 1 as ``C`` grows, and with
#: ``m ≥ 1`` a target cosine pays more than the whole distance from orthogonal to aligned
COSINE = Real(0, 1, hi_open=True, doc="a margin subtracted from a cosine in [-1, 1]")

#: the angle factor ``m1`` of ``cos(m1·θ + m2) − m3``: positive (0 makes the target constant,
#: a negative one mirrors θ); values slightly below 1 combined with ``m2 > 0`` are used in practice
ANGLE_FACTOR = Real(0, lo_open=True, doc="a factor of the target angle")

#: ``embedding_size`` / ``num_classes`` of a head (the trainer fills them in)
SIZE = Integer(1, doc="a size")

#: λ of SphereFace's annealed blend ``(λ·cos θ + ψ(θ))/(1 + λ)`` and its schedule
#: ``max(lambda_min, base·(1 + gamma·iteration)^(−power))``: λ is a mixing weight, so it
#: must stay ≥ 0, which needs ``base, lambda_min ≥ 0``; ``gamma, power ≥ 0`` keep it annealing
#: downwards (a negative gamma would take ``1 + gamma·iteration`` below zero)
LAMBDA_SCHEDULE = {
    "base": Real(0, doc="λ at iteration 0, before the lambda_min floor"),
    "gamma": Real(0, doc="how fast λ decays per iteration"),
    "power": Real(0, doc="the decay exponent of λ"),
    "lambda_min": Real(0, doc="the floor of λ, a mixing weight"),
    "iteration": Integer(0, doc="the iteration the schedule starts at"),
}

#: the ATL switches on a head whose class weights are not normalised (they treat rows as proxies
#: on the unit sphere): only off
NO_PROXIES = {"triplet": Choice(False, doc="needs normalised class weights"),
              "semihard": Choice(False, doc="needs normalised class weights")}

#: ``cos(m·θ)`` is implemented as a Chebyshev polynomial for m = 1..4 (1 is no margin)
MULTIPLICATIVE = Integer(1, 4, doc="an integer angle multiplier; cos(m·θ) is implemented for m = 1..4")


def check_embeddings(x, embedding_size: Optional[int] = None, who: str = "loss") -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{who}: embeddings must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{who}: embeddings must have shape (B, D), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{who}: empty batch (0 embeddings); at least one sample is needed")
    if embedding_size is not None and x.shape[1] != embedding_size:
        raise ValueError(
            f"{who}: embedding width {x.shape[1]} does not match embedding_size={embedding_size}; "
            f"expected shape (B, {embedding_size}), got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{who}: embeddings must be floating point, got {x.dtype}")
    finite = torch.isfinite(x).all(dim=1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten()[:8].tolist()
        raise ValueError(f"{who}: non-finite embeddings (NaN or inf) in rows {bad}")


def check_labels(y, batch: int, num_classes: Optional[int] = None, who: str = "loss") -> None:
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{who}: labels must be a torch.Tensor, got {type(y).__name__}")
    if y.dim() != 1 or y.shape[0] != batch:
        raise ValueError(f"{who}: labels must have shape ({batch},) to match the batch, got {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise ValueError(f"{who}: labels must be integers (int64), got {y.dtype}")
    if num_classes is not None and y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            bad = y[(y < 0) | (y >= num_classes)][:8].tolist()
            raise ValueError(f"{who}: labels must lie in [0, {num_classes}), got {bad}")


def check_batch(x, y, embedding_size=None, num_classes=None, who="loss") -> None:
    check_embeddings(x, embedding_size, who)
    check_labels(y, x.shape[0], num_classes, who)
