"""The ``fused`` engine: the memory-lean default of every head, in one process or over a class shard.

See :mod:`.blocks` for the computation. The target rows' gradient is added in place into the
``grad_W`` this engine produced (no second ``(C, D)`` gradient).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.autograd.function import once_differentiable

from ..core import MarginStats
from .base import Engine, autocast_dtype, class_rows, world_of
from .blocks import BlockBinary, BlockSoftmaxCE

Tensor = torch.Tensor


class _TargetRows(torch.autograd.Function):
    """``weight[idx]``; backward adds the rows' gradient into the ``grad_W`` the fused engine made.

    The fused engine's backward runs first (the target logits depend on these rows), stores its
    ``grad_W`` in ``link``, and autograd has not yet accumulated it: the rows are added in place,
    so the head never allocates a second ``(C, D)`` gradient. Without that (the engine did not
    need ``grad_W``), a dense gradient is returned as usual.
    """

    @staticmethod
    def forward(ctx, weight, idx, link, K):
        ctx.link, ctx.shape, ctx.K = link, weight.shape, K
        ctx.save_for_backward(idx)
        return class_rows(weight.detach(), K)[idx]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (idx,) = ctx.saved_tensors
        gW = ctx.link.pop("grad_weight", None)
        if gW is None or gW.shape != ctx.shape:
            gW = grad.new_zeros(ctx.shape)
            class_rows(gW, ctx.K).index_add_(0, idx, grad)
            return gW, None, None, None
        class_rows(gW, ctx.K).index_add_(0, idx, grad.to(gW.dtype))
        return None, None, None, None


class FusedEngine(Engine):
    """The memory-lean engine (:class:`BlockSoftmaxCE`); options: ``chunk_size``."""

    name = "fused"
    distributed = True

    def target_rows(self, weight: Tensor, idx: Tensor, rows_per_class: int = 1):
        if not weight.requires_grad:
            return class_rows(weight, rows_per_class)[idx], None
        link = {}
        return _TargetRows.apply(weight, idx, link, int(rows_per_class)), link

    def softmax(self, f, weight, bias, T, cols, *, weight_norm, link=None, others=None, comm=None,
                rows_per_class: int = 1, chunk_size: Optional[int] = None, **options):
        self._check(f, chunk_size, options)
        loss, target_plain, target_margin, other_max = BlockSoftmaxCE.apply(
            f, weight, bias, T, cols.to(torch.long), bool(weight_norm), chunk_size, comm, others, link,
            autocast_dtype(f.device.type), int(rows_per_class))
        return loss, MarginStats(target_plain, target_margin, other_max)

    def binary(self, f, weight, bias, cols, neg, *, weight_norm, link=None, others=None, comm=None,
               rows_per_class: int = 1, chunk_size: Optional[int] = None, **options):
        self._check(f, chunk_size, options)
        total, target_plain, other_max = BlockBinary.apply(
            f, weight, bias, cols.to(torch.long), bool(weight_norm), chunk_size, others, neg, link,
            autocast_dtype(f.device.type), int(rows_per_class))
        if world_of(comm) > 1:
            other_max = comm.all_reduce(other_max.clone(), "max", "all_reduce(MAX of logits)")
            target_plain = comm.all_reduce(target_plain.clone(), "sum", "all_reduce(SUM of targets)")
        return total, target_plain, other_max

    @staticmethod
    def _check(f, chunk_size, options):
        if options:
            raise ValueError(f"fused engine: unknown option(s) {', '.join(sorted(options))}; known: chunk_size")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"fused engine: chunk_size must be a positive integer or None, got {chunk_size!r}")
        if f.shape[0] == 0:
            raise ValueError("fused engine: empty batch (0 embeddings); at least one sample is needed")

