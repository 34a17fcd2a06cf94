"""Learning-rate schedules and the resumable batch orders.

All are pure functions of the step, so a run resumed at step ``k`` continues exactly where an
uninterrupted run would be: no scheduler or sampler state needs saving.
"""
from __future__ import annotations

import hashlib
import math
from typing import Dict, List

import numpy as np
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


def _generator(*key) -> torch.Generator:
    """A generator seeded from ``key`` (the same seed in every process and Python run)."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


class PKBatchOrder:
    """Deterministic identity-balanced batches: P = ``batch_size // k`` identities, ``k`` images each.

    Metric losses (triplet, contrastive, ...) learn from pairs of the same identity, which uniform
    batches over many identities hardly hold; this order guarantees ``k - 1`` positives per anchor.
    Like :class:`BatchOrder` the indices of step ``s`` depend only on (seed, s), so a resumed run
    draws the same batches.

    * Identities: epoch ``e`` visits a permutation of the identities drawn from (seed, e), P per
      step; the identities left over when their count is not a multiple of P wait for a later epoch
      (each epoch leaves out others).
    * Images: each visit draws the ``k`` images of an identity from (seed, step), without
      replacement when it has at least ``k`` images; an identity with fewer takes all of its images
      once and repeats them (with replacement) to fill its ``k``. An identity with a single image is
      allowed: its ``k`` copies are one image (different only by augmentation), so it gives no real
      positive pair.
    * Ranks: the global batch lies identity by identity (``k`` consecutive indices each) and is cut
      into ``world`` equal parts like :class:`BatchOrder`'s, so every rank takes whole identities
      when P is a multiple of ``world``.

    ``labels`` holds the class of each sample (any 1-D sequence of integers); the errors name the
    settings ``train.batch_size`` and ``data.pk_images`` they come from.
    """

    def __init__(self, labels, batch_size: int, k: int = 4, seed: int = 0, rank: int = 0, world: int = 1):
        labels = torch.as_tensor(np.asarray(labels)).long().reshape(-1)
        if labels.numel() == 0:
            raise ValueError("the training set is empty")
        if k < 2:
            raise ValueError(f"data.pk_images={k} must be at least 2: a batch needs two images of an identity "
                             "to hold a positive pair")
        if batch_size <= 0 or batch_size % k:
            raise ValueError(f"train.batch_size={batch_size} must be a positive multiple of data.pk_images={k} "
                             f"(a batch is P identities x {k} images)")
        if batch_size % world:
            raise ValueError(f"train.batch_size={batch_size} must be positive and divisible by the world size {world}")
        self.batch_size, self.k, self.seed, self.rank, self.world = batch_size, k, seed, rank, world
        self.p = batch_size // k
        sorted_labels, self._by_class = torch.sort(labels, stable=True)  # sample indices grouped by identity
        _, counts = torch.unique_consecutive(sorted_labels, return_counts=True)
        self.n = int(labels.numel())
        self.identities = int(counts.numel())
        if self.identities < self.p:
            raise ValueError(f"the training set has {self.identities} identities, fewer than the P = "
                             f"train.batch_size / data.pk_images = {batch_size} / {k} = {self.p} a batch takes; "
                             "lower train.batch_size or raise data.pk_images")
        self._counts = counts
        self._starts = torch.cumsum(counts, 0) - counts  # where each identity begins in _by_class
        self.per_epoch = self.identities // self.p
        self._cache = (None, None)

    def _perm(self, epoch: int) -> torch.Tensor:
        if self._cache[0] != epoch:
            self._cache = (epoch, torch.randperm(self.identities, generator=_generator("pk-identities", self.seed, epoch)))
        return self._cache[1]

    def global_batch(self, step: int) -> torch.Tensor:
        epoch, j = divmod(step, self.per_epoch)
        ids = self._perm(epoch)[j * self.p:(j + 1) * self.p]
        counts, starts = self._counts[ids], self._starts[ids]
        # a random permutation of each identity's images (random keys, the padding sorted last),
        # read cyclically: k distinct images when there are k, every image before any repeat otherwise
        keys = torch.rand(self.p, int(counts.max()), generator=_generator("pk-images", self.seed, step))
        keys[torch.arange(keys.shape[1])[None, :] >= counts[:, None]] = 2.0
        perm = keys.argsort(dim=1)
        local = perm.gather(1, torch.arange(self.k)[None, :] % counts[:, None])
        return self._by_class[(starts[:, None] + local).reshape(-1)]

    def __call__(self, step: int) -> torch.Tensor:
        per = self.batch_size // self.world
        return self.global_batch(step)[self.rank * per:(self.rank + 1) * per]


def make_batch_order(data: Dict, train_set, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1):
    """The batch order that the ``data`` settings name: ``data.sampler = "random"`` (uniform
    batches, :class:`BatchOrder`) or ``"pk"`` (:class:`PKBatchOrder` with K = ``data.pk_images``,
    built from ``train_set.labels``)."""
    from .config import SAMPLERS

    sampler = data.get("sampler", "random")
    if sampler == "random":
        return BatchOrder(len(train_set), batch_size, seed, rank, world)
    if sampler == "pk":
        labels = getattr(train_set, "labels", None)
        if labels is None:
            raise ValueError(f"data.sampler=pk needs the training labels, but the training set "
                             f"({type(train_set).__name__}) has no labels attribute; use data.sampler=random")
        if len(labels) != len(train_set):
            raise ValueError(f"data.sampler=pk: the training set has {len(train_set)} samples but {len(labels)} labels")
        return PKBatchOrder(labels, batch_size, int(data.get("pk_images", 4)), seed, rank, world)
    raise ValueError(f"unknown data.sampler {sampler!r}; choose {' or '.join(SAMPLERS)}")
