"""The ``plain`` engine: the reference, written as one would in PyTorch (the full ``(B, C)``
logits, autograd for every gradient). Single process only."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core import MarginStats, work_dtype
from .base import Engine, world_of

class PlainEngine(Engine):
    """The reference: the full ``(B, C)`` logits with autograd."""

    name = "plain"

    @staticmethod
    def logits(f, weight, bias, T, cols, *, weight_norm, others=None, rows_per_class: int = 1):
        """The ``(B, C)`` logits, target column ``cols`` replaced by ``T`` (kept when ``T`` is
        None), and their :class:`MarginStats` (None without ``cols``)."""
        dtype = torch.promote_types(f.dtype, weight.dtype)
        w = F.normalize(weight.to(dtype), dim=1) if weight_norm else weight.to(dtype)
        z = F.linear(f.to(dtype), w)
        if rows_per_class > 1:  # sub-centers: the best of the K rows of every class
            z = z.view(z.shape[0], -1, rows_per_class).amax(dim=2)
        b = None if bias is None else bias.to(dtype)
        if cols is None:
            return (z if b is None else z + b), None
        rows = torch.arange(f.shape[0], device=f.device)
        with torch.no_grad():  # the statistics read the plain logits (before any non-target transform)
            zb = (z if b is None else z + b).detach()
            target_plain = zb[rows, cols]
            other_max = zb.index_put((rows, cols), torch.tensor(-math.inf, dtype=z.dtype, device=z.device)).amax(dim=1)
        if others is not None:
            z = others(z)
        if b is not None:
            z = z + b
        if T is None:  # no margin: the target keeps its GEMM logit
            return z, MarginStats(target_plain, target_plain, other_max)
        # under autocast F.linear gives bf16 logits while the target entries are float32
        z = z.index_put((rows, cols), T.to(z.dtype))
        return z, MarginStats(target_plain, T.detach().to(z.dtype), other_max)

    def softmax(self, f, weight, bias, T, cols, *, weight_norm, link=None, others=None, comm=None,
                rows_per_class: int = 1, **options):
        """The mean cross-entropy of :meth:`logits`."""
        self._check(comm, options)
        z, stats = self.logits(f, weight, bias, T, cols, weight_norm=weight_norm, others=others,
                               rows_per_class=rows_per_class)
        # at least float32 (bf16 logits), but float64 stays float64 (gradcheck, exact comparisons)
        return F.cross_entropy(z.to(work_dtype(z.dtype)), cols), stats

    def binary(self, f, weight, bias, cols, neg, *, weight_norm, link=None, others=None, comm=None,
               rows_per_class: int = 1, **options):
        """``(Σ_{i, j≠y_i} neg(z_ij), target_plain, other_max)`` for sigmoid heads."""
        self._check(comm, options)
        z, stats = self.logits(f, weight, bias, None, cols, weight_norm=weight_norm, others=others,
                               rows_per_class=rows_per_class)
        vals = neg(z.to(work_dtype(z.dtype)))
        rows = torch.arange(f.shape[0], device=f.device)
        vals = vals.index_put((rows, cols), torch.zeros((), dtype=vals.dtype, device=vals.device))
        return vals.sum(), stats.target_plain, stats.other_max

    def _check(self, comm, options):
        if options:
            raise ValueError(f"plain engine: unknown option(s) {', '.join(sorted(options))}; it takes none")
        if world_of(comm) > 1:
            raise ValueError("the plain engine runs in one process; a sharded head uses the fused engine")

