"""Weight stores: where a head's class rows live and which of them a call uses.

A head is class weights plus a margin plus an engine; the store is the first part.

* :class:`DenseStore` — all ``C`` rows in this process (the default).
* ``ShardedStore`` (in :mod:`facemargin.distributed.sharded`) — rank ``r`` of ``W`` holds rows
  ``[start, start + n)``, the batch is gathered from every rank, and the engine's log-sum-exp is
  reduced across ranks; Partial FC samples the rows of a training call.

Sharding is a store choice, not another head class: every head of the zoo runs sharded.

A store also owns the world-size-independent initial weights (:func:`seeded_rows`): the rows a
run starts from depend on its seed only, never on how many ranks hold them.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

Tensor = torch.Tensor

_INIT_BLOCK = 4096  # rows per independently seeded block of the world-size-independent init


@torch.no_grad()
def seeded_rows(num_rows: int, dim: int, seed: int, start: int = 0, n: Optional[int] = None) -> Tensor:
    """Rows ``[start, start + n)`` of a seeded xavier-uniform ``(num_rows, dim)`` matrix.

    Blocks of 4096 rows come from their own generators, so any shard of the matrix is computed
    without the rest and equals the same rows of the full matrix.
    """
    n = num_rows - start if n is None else n
    bound = math.sqrt(6.0 / (num_rows + dim))
    out = torch.empty(n, dim)
    lo, hi = start, start + n
    if n <= 0:
        return out
    for block in range(lo // _INIT_BLOCK, (hi - 1) // _INIT_BLOCK + 1):
        b0 = block * _INIT_BLOCK
        b1 = min(b0 + _INIT_BLOCK, num_rows)
        gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + block) & ((1 << 63) - 1))
        vals = torch.empty(b1 - b0, dim).uniform_(-bound, bound, generator=gen)
        s0, s1 = max(lo, b0), min(hi, b1)
        out[s0 - lo:s1 - lo] = vals[s0 - b0:s1 - b0]
    return out


class WeightStore:
    """The dense store (all classes here); sharded stores override the communication hooks.

    ``reducer``: the all-reduce an engine uses for a distributed log-sum-exp (None here).
    """

    sharded = False
    reducer = None

    def bind(self, head) -> Tuple[int, int]:
        """Called once by the head: returns ``(start, n)``, the classes whose rows live here."""
        head.rank, head.world_size, head.group = 0, 1, None
        return 0, head.num_classes

    def initialize(self, head) -> None:
        """Initial rows of a freshly built head (xavier-uniform here; sharded stores draw the
        seeded rows of the full matrix)."""
        head.reset_parameters()

    # -- communication hooks (identity in one process) ----------------------------------------
    def gather(self, head, x: Tensor, y: Tensor, extra: Optional[Tensor] = None):
        """``(x_all, y_all, extra_all)``: the batch of every rank (here: this one)."""
        return x, y, extra

    def share_targets(self, t: Tensor) -> Tensor:
        """Sum over ranks of per-row values that exactly one rank filled in (gradient: identity)."""
        return t

    def all_sum(self, t: Tensor) -> Tensor:
        """Sum over ranks, no gradient."""
        return t

    def replicated(self, p: Tensor) -> Tensor:
        """A parameter used identically on every rank: its gradient is summed over ranks."""
        return p

    def replicated_term(self, t: Tensor) -> Tensor:
        """A loss term every rank computes from the whole (gathered) batch: same value, and a
        gradient that counts it once over all ranks."""
        return t

    # -- rows ---------------------------------------------------------------------------------
    def local_index(self, head, y: Tensor) -> Tensor:
        """Row of each label's class in this store, ``-1`` where another rank holds it."""
        local = y - head.start
        return torch.where((local >= 0) & (local < head.num_local), local, torch.full_like(local, -1))

    def select(self, head, weight: Tensor, bias: Optional[Tensor], local: Tensor, training: bool):
        """``(weight, bias, cols)`` a call uses: all rows here (Partial FC samples in sharded stores)."""
        return weight, bias, local

    def take_touched_rows(self, head) -> Optional[Tensor]:
        """Rows used by training calls since the last call (None: every row)."""
        return None


class DenseStore(WeightStore):
    """All ``C`` class rows in this process."""
