"""Engines: the GEMM and a stable log-sum-exp (or one-vs-rest sum) over class blocks, nothing else.

* ``plain`` (:mod:`.plain`): the reference, the full ``(B, C)`` logits with autograd; one process.
* ``fused`` (:mod:`.fused`, computation in :mod:`.blocks`): one autograd function per objective,
  memory-lean, ``chunk_size`` for class blocks; runs over a class shard too. The default.

The interface, the registry :data:`ENGINES` and the objectives (:data:`SOFTMAX`,
:class:`OneVsRest`) are in :mod:`.base`. :func:`margin_cross_entropy` is the functional entry
point for a margin that needs nothing but the cosine and λ.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch

from ..core import MarginContext, MarginSpec, features, target_cosines, target_logit
from .base import ENGINES, SOFTMAX, Engine, OneVsRest, Softmax, class_rows
from .blocks import BlockBinary, BlockSoftmaxCE
from .fused import FusedEngine
from .plain import PlainEngine

Tensor = torch.Tensor

__all__ = ["ENGINES", "Engine", "PlainEngine", "FusedEngine", "BlockSoftmaxCE", "BlockBinary", "SOFTMAX",
           "Softmax", "OneVsRest", "class_rows", "margin_cross_entropy", "engine_argument"]

ENGINES.register("plain")(PlainEngine())
ENGINES.register("fused")(FusedEngine())


def engine_argument(who: str, engine, backend, old: str = "backend", new: str = "engine"):
    """``engine``, or the value given under its former keyword (with a DeprecationWarning)."""
    if backend is None:
        return engine
    warnings.warn(f"{who}: {old}= is the former name of {new}=; pass {new}={backend!r}", DeprecationWarning,
                  stacklevel=4)
    if engine is not None and engine != backend:
        raise ValueError(f"{who}: {new}={engine!r} and {old}={backend!r} disagree; pass {new}= only")
    return backend


def margin_cross_entropy(x: Tensor, weight: Tensor, y: Tensor, spec: MarginSpec, scale=1.0,
                         lambda_: Optional[float] = None, bias: Optional[Tensor] = None,
                         engine: Optional[str] = None, backend: Optional[str] = None, **options):
    """Mean cross-entropy of the margin logits with ``engine`` (default ``"fused"``); ``(loss, MarginStats)``.

    A functional entry point for margins that need nothing but the cosine and λ; heads
    (:class:`~facemargin.losses.head.MarginHead`) add state, regularisers and sharding.
    ``backend`` is the former name of ``engine``.
    """
    name = engine_argument("margin_cross_entropy", engine, backend)
    eng = ENGINES.get("fused" if name is None else name)
    y = y.to(device=x.device, dtype=torch.long)
    c, _, _ = target_cosines(x.detach(), weight.detach()[y])
    ctx = MarginContext(labels=y, norm=torch.linalg.vector_norm(x, dim=1), cos_target=c, lambda_=lambda_)
    s = scale if isinstance(scale, Tensor) else float(scale)
    T = None
    link = None
    if spec.margin.active:
        rows, link = eng.target_rows(weight, y)
        T = target_logit(x, rows, spec, ctx, s, None if bias is None else bias[y])
    f = features(x, spec, s)
    return eng(f, weight, bias, T, y, weight_norm=spec.weight_norm, link=link, **options)
