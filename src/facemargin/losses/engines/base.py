"""What every engine shares: the registry, the base class and the two objectives.

An engine receives

* ``f`` ``(B, D)``: the GEMM operand (``s·x̂`` or ``x``), differentiable;
* ``weight`` ``(n, D)``: raw class rows (all classes, or one rank's shard; ``n·K`` rows with
  ``K`` sub-centers per class);
* ``bias`` ``(n,)`` or None;
* ``T`` ``(B,)``: the target logits, computed by :func:`~facemargin.losses.core.target_logit`
  with autograd (so the margin's gradient never has to be written by hand);
* ``cols`` ``(B,)``: the local column of each row's target, ``-1`` where another rank owns it;

and returns ``(loss, MarginStats)`` for the logits ``z_ij = k_j·(f_i·W_j) + b_j`` with column
``cols_i`` replaced by ``T_i`` (``k_j = 1/‖W_j‖`` for normalised weights). Optional: ``others``
transforms the non-target logits of a block elementwise (differentiated by autograd, block by
block), and ``comm`` (the communication hooks of a weight store's batch view) turns the reductions
into distributed ones.

The **objective** says which loss is taken of those logits:

* :data:`SOFTMAX` — the mean cross-entropy (every softmax head);
* :class:`OneVsRest` — ``norm · (Σ_i pos(z_{i,y_i}) + Σ_i Σ_{j≠y_i} neg(z_ij)) / B`` with
  elementwise ``pos`` and ``neg`` (the sigmoid heads). The engine evaluates ``Σ neg`` block by
  block and sums it across ranks.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ...registry import Registry
from ..core import MarginStats, elementwise_value_and_grad

Tensor = torch.Tensor

#: engines by name: ``engine(f, weight, bias, T, cols, *, weight_norm, objective=SOFTMAX, link=None,
#: others=None, comm=None, rows_per_class=1, **options) -> (loss, MarginStats)``
ENGINES = Registry("engine")


class Softmax:
    """The softmax cross-entropy objective: the target logit is only needed when a margin moves it."""

    name = "softmax"
    needs_target = False

    def __repr__(self):
        return "SOFTMAX"


#: the softmax cross-entropy, the objective of every softmax head
SOFTMAX = Softmax()


class Elementwise:
    """An elementwise function and, for engines that build gradient blocks themselves, its
    derivative: ``value_and_grad(z)`` gives both, from the closed form ``grad`` when there is one,
    else by autograd."""

    def __init__(self, fn: Callable[[Tensor], Tensor], grad: Optional[Callable[[Tensor], Tensor]] = None):
        self.fn, self.grad = fn, grad

    def __call__(self, z: Tensor) -> Tensor:
        return self.fn(z)

    def value_and_grad(self, z: Tensor):
        if self.grad is not None:
            with torch.no_grad():
                return self.fn(z), self.grad(z)
        return elementwise_value_and_grad(self.fn, z)


class OneVsRest:
    """One binary loss per class column: ``pos`` on the target, ``neg`` on every other column,
    summed, multiplied by ``norm`` and averaged over the batch. Always needs the target logit.
    ``neg_grad``, the derivative of ``neg`` in closed form, spares the engines an autograd pass."""

    name = "one_vs_rest"
    needs_target = True

    def __init__(self, pos: Callable[[Tensor], Tensor], neg: Callable[[Tensor], Tensor], norm: float = 1.0,
                 neg_grad: Optional[Callable[[Tensor], Tensor]] = None):
        self.pos, self.norm = pos, float(norm)
        self.neg = Elementwise(neg, neg_grad)

    def __repr__(self):
        return f"OneVsRest(norm={self.norm})"


def world_of(comm) -> int:
    """1 without communication hooks (one process, even inside a distributed run), else the world size."""
    return 1 if comm is None else int(comm.world_size)


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The autocast dtype active for ``device_type`` (None when autocast is off)."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def class_rows(weight: Tensor, K: int) -> Tensor:
    """``weight`` as ``(n, K, D)`` for ``K`` rows per class (unchanged for one)."""
    return weight if K == 1 else weight.view(weight.shape[0] // K, K, weight.shape[1])


class Engine:
    """What every engine provides. ``distributed``: runs over a class shard with communication hooks."""

    name = "engine"
    distributed = False

    def check(self, head_name: str, *, sharded: bool) -> None:
        """Raise a clear ValueError when this engine cannot run the described head."""
        if sharded and not self.distributed:
            able = ", ".join(n for n in ENGINES.available() if ENGINES.get(n).distributed)
            raise ValueError(f"{head_name}: the {self.name!r} engine runs in one process only; "
                             f"a sharded head needs one of: {able}")

    def target_rows(self, weight: Tensor, idx: Tensor, rows_per_class: int = 1):
        """The target rows of classes ``idx`` (differentiable; ``(n, K, D)`` for ``K`` rows per
        class, else ``(n, D)``) and a link object for :meth:`__call__`."""
        return class_rows(weight, rows_per_class)[idx], None

    def __call__(self, f, weight, bias, T, cols, *, weight_norm, objective=SOFTMAX, link=None, others=None,
                 comm=None, rows_per_class: int = 1, **options):
        """``(loss, MarginStats)`` of ``objective`` over the logits (see the module docstring)."""
        if isinstance(objective, OneVsRest):
            return self._one_vs_rest(f, weight, bias, T, cols, objective, weight_norm=weight_norm, link=link,
                                     others=others, comm=comm, rows_per_class=rows_per_class, **options)
        return self.softmax(f, weight, bias, T, cols, weight_norm=weight_norm, link=link, others=others, comm=comm,
                            rows_per_class=rows_per_class, **options)

    def _one_vs_rest(self, f, weight, bias, T, cols, objective, *, comm, **kw):
        if T is None:
            raise ValueError("a one-vs-rest objective needs the target logits")
        total, target_plain, other_max = self.binary(f, weight, bias, cols, objective.neg, comm=comm, **kw)
        if comm is not None:  # every rank summed its own columns: the sum over ranks, gradient to each
            total = comm.share(total.reshape(1)).reshape(())
        loss = (objective.pos(T).sum() + total) * (objective.norm / f.shape[0])
        return loss, MarginStats(target_plain, T.detach(), other_max)

    def softmax(self, f, weight, bias, T, cols, **kw):
        """The mean softmax cross-entropy and its :class:`MarginStats`."""
        raise NotImplementedError

    def binary(self, f, weight, bias, cols, neg, **kw):
        """``(Σ_{i, j≠y_i} neg(z_ij), target_plain, other_max)`` for a one-vs-rest objective."""
        raise NotImplementedError
