"""The one-vs-rest head: one binary (sigmoid) loss per class column instead of a softmax.

UniFace (:mod:`.uniface`) and SphereFace2 (:mod:`.sphereface2`) are written on it.
"""
from __future__ import annotations

import torch

from .engines import OneVsRest
from .head import MarginHead

Tensor = torch.Tensor


def softplus_grad(z: Tensor) -> Tensor:
    """``d softplus(z)/dz`` exactly as autograd gives it for ``F.softplus`` (``σ(z)``, and 1 past
    its linear threshold 20)."""
    return torch.ops.aten.softplus_backward(torch.ones((), dtype=z.dtype, device=z.device).expand_as(z), z, 1.0, 20.0)


class BinaryMarginHead(MarginHead):
    """A head whose loss is a sum of per-column binary terms (the one-vs-rest objective):

        L = norm · ( Σ_i pos(z_{i,y_i}) + Σ_i Σ_{j≠y_i} neg(z_ij) ) / B

    with elementwise ``pos`` and ``neg``. The logits are those of every head (the target through
    the one target-logit function, the others blockwise in the engine); the engines evaluate
    ``Σ neg`` block by block (no ``(B, C)`` tensor is kept by the fused engine) and sum it
    across ranks on a sharded store.

    Subclasses define :meth:`pos`, :meth:`neg` (elementwise, differentiable; its derivative in
    closed form as ``neg_grad`` where it is cheap) and :meth:`norm`,
    and may hold a shared scalar bias ``b`` (a parameter replicated on every rank, see
    :meth:`column_bias`).
    """

    def pos(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def neg(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    #: optional: a method ``neg_grad(z)``, the derivative of :meth:`neg` in closed form (else the
    #: fused engine differentiates :meth:`neg` with autograd, slice by slice)
    neg_grad = None

    def norm(self) -> float:
        """Factor of the summed terms before the mean over the batch."""
        return 1.0

    @property
    def objective(self) -> OneVsRest:
        return OneVsRest(self.pos, self.neg, self.norm(), self.neg_grad)
