"""Weight stores: the class rows of a head, and which of them one call uses.

A head is class weights (a store) plus a margin plus an engine. The store is an ``nn.Module``
that owns all of its state: the rows ``weight`` ``(n·K, D)`` (``K`` rows per class), the optional
per-class ``bias`` ``(n,)``, which classes live in this process, and, for a sharded store, the
sampling state and counters of Partial FC. For one call it returns a :class:`BatchView`; the head
and the engine read the view and never write the store. The contract is one-way:

* ``store.allocate(num_classes, embedding_size, rows_per_class, bias, bias_init)`` — once, by the head's
  constructor: the store makes its rows (and draws their initial values, see below);
* ``store.view(x, y, training=..., ...)`` — per call: the batch (gathered from every rank on a
  sharded store), the labels, the local column of every target (``-1`` where another rank owns
  it), the rows and bias in play and the communication hooks (:class:`LocalComm` here);
* ``store.init_weights(seed)`` — the one seeded initialisation (world-size independent rows,
  :func:`seeded_rows`), reached through ``head.init_weights(seed)``;
* ``store.take_touched_rows()`` — the rows training calls used since the last call, for an
  optimizer that moves only those.

* :class:`DenseStore` — all ``C`` rows in this process (the default).
* ``ShardedStore`` (:mod:`facemargin.distributed.sharded`) — rank ``r`` holds rows
  ``[start, start + n)``; Partial FC samples the rows of a training call.

A head's ``state_dict`` is flat: the store's entries (``weight``, ``bias`` and Partial FC's
``pfc_seed``/``pfc_step``) carry no ``store.`` prefix, so every checkpoint keeps one layout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn

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


@torch.no_grad()
def normalize_rows_(weight: Tensor, eps: float = 1e-12) -> None:
    """Scale every row of ``weight`` to unit norm in place (no ``(C, D)`` temporary)."""
    norms = torch.linalg.vector_norm(weight, dim=1, keepdim=True)
    weight.div_(norms.clamp_min_(eps))


@torch.no_grad()
def replace_rows_(weight: Tensor, x: Tensor, y: Tensor, chosen: Tensor) -> None:
    """``weight[y_i] = x_i`` for the chosen samples, in batch order (the last one of a class wins).

    A sample with a non-finite value never becomes a class row (a step that will be skipped must
    not poison the weights)."""
    idx = (chosen.bool() & torch.isfinite(x).all(dim=1)).nonzero().flatten()
    if idx.numel() == 0:
        return
    labels = y[idx]
    # last chosen occurrence of every class: scan the batch backwards and keep first hits
    rev = torch.flip(idx, [0])
    uniq, inverse = torch.unique(labels.flip(0), return_inverse=True)
    first = torch.full((uniq.numel(),), rev.numel(), dtype=torch.long, device=y.device)
    first.scatter_reduce_(0, inverse, torch.arange(rev.numel(), device=y.device), reduce="amin")
    src = rev[first]
    weight[uniq] = x[src].to(weight.dtype)


class _ProxyReplace(torch.autograd.Function):
    """Identity on the batch; in backward, the store's class rows are overwritten by samples."""

    @staticmethod
    def forward(ctx, x, weight, rows, local, chosen):
        ctx.weight = weight
        ctx.save_for_backward(x.detach(), rows, local, chosen)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        x, rows, local, chosen = ctx.saved_tensors
        if rows.numel():
            replace_rows_(ctx.weight, x[rows], local, chosen)
        return grad, None, None, None, None


class LocalComm:
    """The communication hooks of one process: every one is the identity."""

    world_size = 1
    rank = 0
    group = None

    def gather(self, x: Tensor, y: Tensor, extra: Optional[Tensor] = None):
        """``(x_all, y_all, extra_all)``: the batch of every rank (here: this one)."""
        return x, y, extra

    def share(self, t: Tensor) -> Tensor:
        """Sum over ranks of per-row values that exactly one rank filled in (gradient: identity)."""
        return t

    def all_sum(self, t: Tensor) -> Tensor:
        """Sum over ranks, no gradient."""
        return t

    def all_reduce(self, t: Tensor, op: str, what: str) -> Tensor:
        """In-place MAX (``op="max"``) or SUM reduction over ranks, no gradient."""
        return t

    def replicated(self, p: Tensor) -> Tensor:
        """A parameter used identically on every rank: its gradient is summed over ranks."""
        return p

    def replicated_term(self, t: Tensor) -> Tensor:
        """A loss term every rank computes from the whole (gathered) batch: same value, and a
        gradient that counts it once over all ranks."""
        return t


@dataclass
class BatchView:
    """What one call of a head may read (see the module docstring); nothing in it is the store's
    to be written. ``x``/``y``: the batch (global on a sharded store); ``cols``: the local column
    of each target, ``-1`` elsewhere; ``weight``/``bias``: the rows in play (a Partial FC sample,
    detached when the rows are frozen); ``comm``: the communication hooks."""

    x: Tensor
    y: Tensor
    cols: Tensor
    weight: Tensor
    bias: Optional[Tensor]
    comm: LocalComm
    rows_per_class: int = 1

    @property
    def num_columns(self) -> int:
        return int(self.weight.shape[0]) // self.rows_per_class


class WeightStore(nn.Module):
    """All ``C`` class rows in this process; a sharded store overrides :meth:`shard`,
    :meth:`reset_parameters`, :meth:`_select` and :attr:`comm`."""

    sharded = False

    def __init__(self):
        super().__init__()
        self.num_classes = self.embedding_size = None
        self.rows_per_class, self.start, self.num_local = 1, 0, 0
        self.comm = LocalComm()
        self.sampled_index: Optional[Tensor] = None  # the rows of the last training call (Partial FC)

    @property
    def allocated(self) -> bool:
        return self.num_classes is not None

    def shard(self, num_classes: int) -> Tuple[int, int]:
        """``(start, n)``: the classes whose rows live in this process."""
        return 0, num_classes

    def allocate(self, num_classes: int, embedding_size: int, rows_per_class: int = 1, bias: bool = False,
                 bias_init: float = 0.0) -> None:
        """Make the rows (once): ``weight`` ``(n·K, D)`` and, when asked for, ``bias`` ``(n,)``
        filled with ``bias_init``."""
        if self.allocated:
            raise ValueError(f"{type(self).__name__} already holds the rows of a head; give every head its own store")
        self.num_classes, self.embedding_size = int(num_classes), int(embedding_size)
        self.rows_per_class = int(rows_per_class)
        self.start, self.num_local = self.shard(self.num_classes)
        self.weight = nn.Parameter(torch.empty(self.num_local * self.rows_per_class, self.embedding_size))
        self.bias_init = float(bias_init)
        self.bias = nn.Parameter(torch.full((self.num_local,), self.bias_init)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initial rows of a fresh store: xavier-uniform from torch's global generator."""
        nn.init.xavier_uniform_(self.weight)

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        """Seeded xavier-uniform class rows that depend on ``seed`` only (not on the world size:
        a shard draws exactly its rows of the full matrix); the bias back to its initial value."""
        K = self.rows_per_class
        self.weight.copy_(seeded_rows(self.num_classes * K, self.embedding_size, seed, self.start * K,
                                      self.num_local * K).to(self.weight.dtype))
        if self.bias is not None:
            self.bias.fill_(self.bias_init)

    def local_index(self, y: Tensor) -> Tensor:
        """Row of each label's class in this store, ``-1`` where another rank holds it."""
        local = y - self.start
        return torch.where((local >= 0) & (local < self.num_local), local, torch.full_like(local, -1))

    def view(self, x: Tensor, y: Tensor, *, training: bool, proxies: Optional[Tensor] = None,
             frozen: bool = False, renormalize: bool = False) -> BatchView:
        """The :class:`BatchView` of one call.

        ``proxies``: per-sample draws (this process's batch); in backward, the chosen samples
        overwrite their class rows. ``frozen``: the rows get no gradient. ``renormalize``: the
        rows are scaled to unit norm in place first."""
        x, y, proxies = self.comm.gather(x, y, proxies)
        local = self.local_index(y)
        if proxies is not None:
            owned = (local >= 0).nonzero().flatten()
            x = _ProxyReplace.apply(x, self.weight, owned, local[owned], proxies[owned].bool())
        if renormalize:
            normalize_rows_(self.weight)
        weight = self.weight.detach() if frozen else self.weight
        weight, bias, cols = self._select(weight, self.bias, local, training)
        return BatchView(x, y, cols, weight, bias, self.comm, self.rows_per_class)

    def _select(self, weight: Tensor, bias: Optional[Tensor], local: Tensor, training: bool):
        """``(weight, bias, cols)`` a call uses: every row here."""
        return weight, bias, local

    def take_touched_rows(self) -> Optional[Tensor]:
        """Rows used by training calls since the last call, then forgotten (None: every row)."""
        return None

    def extra_repr(self) -> str:
        if not self.allocated:
            return "unallocated"
        return f"rows=[{self.start}, {self.start + self.num_local}), rows_per_class={self.rows_per_class}"


class DenseStore(WeightStore):
    """All ``C`` class rows in this process."""
