"""The center loss: class centres moved towards their samples, outside the optimizer."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..checks import SIZE, CheckedParams, Real, check_batch
from ..registry import LOSSES

Tensor = torch.Tensor


class _CenterLossFn(torch.autograd.Function):
    """``½·mean_i ‖x_i − c_{y_i}‖²``; backward returns ``(x − c)/B`` and updates the centres."""

    @staticmethod
    def forward(ctx, x, c_rows, y, centers, alpha, update):
        diff = x - c_rows.to(x.dtype)
        ctx.save_for_backward(diff, y)
        ctx.centers, ctx.alpha, ctx.update = centers, float(alpha), bool(update)
        return 0.5 * (diff * diff).sum() / x.shape[0]

    @staticmethod
    def backward(ctx, grad):
        diff, y = ctx.saved_tensors
        if ctx.update and ctx.alpha != 0.0:
            _center_update_(ctx.centers, diff.detach(), y, ctx.alpha)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = grad * diff / diff.shape[0]
        return grad_x, None, None, None, None, None


@torch.no_grad()
def _center_update_(centers: Tensor, diff: Tensor, y: Tensor, alpha: float) -> None:
    """``c_j −= α·Σ_{i:y_i=j}(c_j − x_i)/(1 + n_j)`` for the classes in the batch.

    ``diff`` holds ``x_i − c_{y_i}`` computed with the centres of the forward pass.
    """
    uniq, inv = torch.unique(y, return_inverse=True)
    num = torch.zeros(uniq.numel(), diff.shape[1], dtype=diff.dtype, device=diff.device)
    num.index_add_(0, inv, -diff)  # Σ (c_j − x_i)
    n = torch.bincount(inv, minlength=uniq.numel()).to(diff.dtype)
    delta = num / (1.0 + n)[:, None]
    centers.index_add_(0, uniq, (-alpha * delta).to(centers.dtype))


@LOSSES.register("center")
class CenterLoss(CheckedParams, nn.Module):
    """Center loss (Wen, Zhang, Li, Qiao, "A Discriminative Feature Learning Approach for Deep
    Face Recognition", ECCV 2016).

    ``L = ½ · mean_i ‖x_i − c_{y_i}‖²``. The centres ``centers`` ``(C, D)`` are a buffer
    (zero-initialised, saved in ``state_dict``), not a parameter: SGD never touches them.
    Instead, when ``L.backward()`` runs for a training-mode call (``module.training`` and grad
    enabled), every class ``j`` present in the batch is moved as in the paper's Algorithm 1 /
    the Caffe layer::

        c_j ← c_j − α · Σ_{i: y_i=j} (c_j − x_i) / (1 + n_j)

    where ``n_j`` is the number of samples of class ``j`` in the batch and ``c_j − x_i`` uses the
    centres the loss was computed with (a snapshot taken at forward time; the step is applied
    additively to the buffer). Eval-mode calls never update. The gradient reaching ``x_i`` is
    exactly ``(x_i − c_{y_i}) / B``. The paper combines it with softmax as
    ``L_softmax + λ·L_center`` (λ is the caller's weight).

    Args:
        embedding_size, num_classes: ``D`` and ``C``.
        alpha: the centre learning rate ``α``, ``0 < α <= 1`` (default 0.5). The paper allows
            ``α ∈ [0, 1]``; ``α = 0`` would freeze the centres at their zero start (the loss would
            only shrink the features), and ``α > 1`` overshoots: one sample of a class alone would
            carry its centre past the sample.
    """

    PARAMS = {"embedding_size": SIZE, "num_classes": SIZE,
              "alpha": Real(0, 1, lo_open=True, doc="the learning rate of the centres")}

    def __init__(self, embedding_size: int, num_classes: int, alpha: float = 0.5):
        super().__init__()
        self.embedding_size, self.num_classes, self.alpha = int(embedding_size), int(num_classes), float(alpha)
        self.register_buffer("centers", torch.zeros(self.num_classes, self.embedding_size))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        check_batch(x, y, self.embedding_size, self.num_classes, "CenterLoss")
        update = self.training and torch.is_grad_enabled()
        work = torch.promote_types(x.dtype, torch.float32)
        c_rows = self.centers[y].to(work)  # indexing copies: the snapshot the update uses
        return _CenterLossFn.apply(x.to(work), c_rows, y, self.centers, self.alpha, update)

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, alpha={self.alpha}"
