"""Learning-rate schedules and the resumable batch order.

Both are pure functions of the step, so a run resumed at step ``k`` continues exactly where an
uninterrupted run would be: no scheduler or sampler state needs saving.
"""
from __future__ import annotations

import math
from typing import Dict, List

import torch


def milestones_in_steps(milestones: List[float], steps: int) -> List[int]:
    """Milestones ≤ 1 are fractions of ``steps``; larger ones are absolute step numbers."""
    out = []
    for m in milestones:
        m = float(m)
        if m <= 0:
            raise ValueError(f"optim.milestones must be positive, got {m}")
        out.append(int(round(m * steps)) if m <= 1 else int(m))
    return sorted(out)


def lr_factor(optim: Dict, step: int, steps: int) -> float:
    """The multiplier of the base learning rate at (0-based) ``step`` of ``steps``.

    ``multistep``: ×gamma at each milestone (the ATL write-up's Caffe solver: base_lr 0.1, gamma 0.1);
    ``cosine``: half-cosine from 1 to 0; ``poly``: ``(1 − t)^power``; ``constant``: 1.
    A linear warm-up over ``warmup_steps`` multiplies any of them.
    """
    name = optim["schedule"]
    warm = int(optim.get("warmup_steps", 0))
    factor = 1.0
    if warm > 0 and step < warm:
        factor = (step + 1) / warm
    t = min(max(step - warm, 0) / max(steps - warm, 1), 1.0)
    if name == "multistep":
        passed = sum(step >= m for m in milestones_in_steps(optim["milestones"], steps))
        return factor * float(optim["gamma"]) ** passed
    if name == "cosine":
        return factor * 0.5 * (1.0 + math.cos(math.pi * t))
    if name == "poly":
        return factor * (1.0 - t) ** float(optim["power"])
    if name == "constant":
        return factor
    raise ValueError(f"unknown optim.schedule {name!r}; choose multistep, cosine, poly or constant")


class BatchOrder:
    """Deterministic batches: the indices of step ``k`` depend only on (seed, k).

    Epoch ``e`` visits a permutation of the ``n`` samples drawn from ``seed + e``; the global batch
    of a step is split into ``world`` equal parts, of which rank ``rank`` takes its own (the
    distributed sampler: every rank reads a disjoint share of the same global batch).
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1):
        if n <= 0:
            raise ValueError("the training set is empty")
        if batch_size <= 0 or batch_size % world:
            raise ValueError(f"train.batch_size={batch_size} must be positive and divisible by the world size {world}")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.per_epoch = max(n // batch_size, 1)
        self._cache = (None, None)

    def _perm(self, epoch: int) -> torch.Tensor:
        if self._cache[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            perm = torch.randperm(self.n, generator=g)
            if self.n < self.batch_size:  # tiny sets: repeat to fill one batch
                perm = perm.repeat(math.ceil(self.batch_size / self.n))
            self._cache = (epoch, perm)
        return self._cache[1]

    def global_batch(self, step: int) -> torch.Tensor:
        epoch, k = divmod(step, self.per_epoch)
        return self._perm(epoch)[k * self.batch_size:(k + 1) * self.batch_size]

    def __call__(self, step: int) -> torch.Tensor:
        per = self.batch_size // self.world
        return self.global_batch(step)[self.rank * per:(self.rank + 1) * per]
