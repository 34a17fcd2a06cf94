"""Partial FC: sample the class rows used each step, and an optimizer that leaves the others alone.

Sampling (An et al. 2021, "Partial FC: Training 10 Million Identities on a Single Machine"): on
every rank, the classes of its shard that occur in the *global* batch (the positives) are always
kept; the remaining places, up to ``round(sample_rate · n)`` rows of the ``n`` local rows, are
filled with negatives drawn uniformly without replacement. The draw is a pure function of
``(seed, step, rank)`` (:func:`sample_rows`), so a run is reproducible and resumes exactly.
The softmax is then taken over the sampled classes of all ranks only.

Optimizer state (our choice, documented): the sampled rows are used through ``index_select``, so
only they receive a non-zero gradient; but a dense optimizer would still decay every row
(``weight_decay · W``) and keep moving every row with its momentum. :class:`PartialFCOptimizer`
is SGD (momentum, dampening, Nesterov, weight decay: the formulas of :class:`torch.optim.SGD`)
that, for the head's row-indexed parameters (``weight``, ``bias``), reads the rows the head used
since the previous ``step()`` (``head.store.take_touched_rows()``) and updates only those rows of the
parameter *and* of its momentum buffer, sparse-style; unsampled rows and their momentum are left
bit-for-bit untouched. With ``sample_rate=1`` every row is touched and the step equals
``torch.optim.SGD`` exactly. Other parameters of the head (a learnable scale) get the dense step.
Difference to a dense SGD beyond the untouched rows: a row's momentum buffer starts at zero, so
with ``dampening > 0`` its very first update is ``(1 − dampening)·d`` instead of ``d``.
"""
from __future__ import annotations


import torch
from torch.optim import Optimizer

Tensor = torch.Tensor

_MASK64 = (1 << 63) - 1


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed mixing ``(seed, step, rank)`` (SplitMix64-style), for the per-step draw."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(step) * 0xBF58476D1CE4E5B9 + int(rank) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (z ^ (z >> 31)) & _MASK64


def num_sampled(sample_rate: float, n: int, num_positive: int = 0) -> int:
    """How many of ``n`` local rows a step uses: ``round(sample_rate·n)``, at least the positives and 1."""
    return min(n, max(int(round(float(sample_rate) * n)), int(num_positive), 1))


def sample_rows(positive: Tensor, n: int, sample_rate: float, seed: int, step: int, rank: int) -> Tensor:
    """Sorted local row indices to use this step: every ``positive`` row plus random negatives.

    ``positive`` holds local row indices (duplicates allowed). Returns ``arange(n)`` when the
    sample covers the whole shard.
    """
    device = positive.device
    positive = torch.unique(positive)
    k = num_sampled(sample_rate, n, positive.numel())
    if k >= n:
        return torch.arange(n, device=device)
    gen = torch.Generator(device=device)
    gen.manual_seed(step_seed(seed, step, rank))
    score = torch.rand(n, generator=gen, device=device)
    score[positive] = 2.0  # above every uniform draw: positives always win the top-k
    return torch.topk(score, k, sorted=False).indices.sort().values


class PartialFCOptimizer(Optimizer):
    """SGD for a head on a sharded store (:func:`~facemargin.distributed.sharded_head`) that moves
    only the rows it used.

    ``PartialFCOptimizer(head, lr, momentum=0, weight_decay=0, dampening=0, nesterov=False)``.
    Put only the head's parameters here (the backbone gets its own optimizer). ``lr`` and the
    other settings live in ``param_groups`` as for any optimizer, so LR schedulers work, and the
    momentum buffers are in ``state_dict``. See the module docstring for the update rule.
    """

    def __init__(self, head, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 dampening: float = 0.0, nesterov: bool = False):
        if not hasattr(head, "store") or not hasattr(head, "take_touched_rows"):
            raise ValueError(f"PartialFCOptimizer needs a head on a weight store (sharded_head), got {type(head).__name__}")
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum requires momentum > 0 and dampening = 0")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, dampening=dampening,
                        nesterov=nesterov)
        # rows, bias, then the head's own parameters: the order of the optimizer's saved state
        super().__init__(head.ordered_parameters(), defaults)
        self.head = head

    def _row_indexed(self, p) -> bool:
        return p is self.head.weight or (self.head.bias is not None and p is self.head.bias)

    @torch.no_grad()
    def step(self, closure=None):
        """One SGD step; row-indexed parameters only on the rows the head used since the last step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        rows = self.head.store.take_touched_rows()
        for group in self.param_groups:
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            damp, nesterov = group["dampening"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("PartialFCOptimizer does not take sparse gradients")
                state = self.state[p]
                if rows is not None and self._row_indexed(p):
                    if rows.numel() == 0:
                        continue
                    r = rows
                    K = int(getattr(self.head, "rows_per_class", 1))
                    if K > 1 and p is self.head.weight:  # the K sub-center rows of every class used
                        r = (rows.unsqueeze(1) * K + torch.arange(K, device=rows.device)).flatten()
                    w = p.index_select(0, r)
                    d = p.grad.index_select(0, r)
                    if wd != 0:
                        d = d.add(w, alpha=wd)
                    if mom != 0:
                        buf = state.get("momentum_buffer")
                        if buf is None:
                            buf = state["momentum_buffer"] = torch.zeros_like(p)
                        b = buf.index_select(0, r).mul_(mom).add_(d, alpha=1 - damp)
                        buf.index_copy_(0, r, b)
                        d = d.add(b, alpha=mom) if nesterov else b
                    p.index_copy_(0, r, w.add_(d, alpha=-lr))
                elif mom != 0 and not nesterov:
                    # the same update as below, without an n×D temporary for grad + wd·p
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = p.grad.detach().clone()
                        if wd != 0:
                            buf.add_(p, alpha=wd)
                    else:
                        buf.mul_(mom).add_(p.grad, alpha=1 - damp)
                        if wd != 0:
                            buf.add_(p, alpha=wd * (1 - damp))
                    p.add_(buf, alpha=-lr)
                else:
                    d = p.grad
                    if wd != 0:
                        d = d.add(p, alpha=wd)
                    if mom != 0:
                        buf = state.get("momentum_buffer")
                        if buf is None:
                            buf = state["momentum_buffer"] = d.detach().clone()
                        else:
                            buf.mul_(mom).add_(d, alpha=1 - damp)
                        d = d.add(buf, alpha=mom) if nesterov else buf
                    p.add_(d, alpha=-lr)
        return loss
