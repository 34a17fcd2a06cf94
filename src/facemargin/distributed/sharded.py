"""Class sharding as a weight store: any head of the zoo with its rows split across ranks.

On rank ``r`` of ``W`` a head built with a :class:`ShardedStore` holds class rows
``[start, start + n)`` (:func:`shard_range`). One call ``head(x, y)`` with this rank's batch:

1. all-gathers the embeddings and labels of every rank (rank order: the *global batch* is rank 0's
   samples, then rank 1's, ...), with a backward that sums the embedding gradient over ranks
   (all-reduce; gloo has no reduce-scatter) and hands each rank the rows of its own samples;
2. builds the margin context of the global batch (target cosines are summed from the ranks that
   own each target), so margin statistics (EMA buffers, batch norms of the features) are those of
   the global batch and identical on every rank;
3. computes each target logit on the rank that owns the target row, with the head's one
   target-logit function, and shares them (SUM all-reduce);
4. runs the head's engine over the local rows with a distributed log-sum-exp: all-reduce MAX of
   the row maxima, SUM of the local sums of exponentials. No ``B×C`` tensor is ever gathered;
5. returns the mean over the global batch: the same scalar on every rank.

Gradients are exact (those of the single-process head on the concatenated batch). Embedding
gradient scaling: DDP *averages* backbone gradients over the ``W`` ranks, while every rank's
backward only covers its own samples. The all-gather backward therefore multiplies the
embedding gradient by ``W`` (``ddp_grad_scale=True``, default): DDP's mean over ranks then gives
exactly ``∂L/∂θ`` of the global mean loss. Replicated parameters (a learnable scale) receive the
all-reduced gradient; loss terms computed from the whole gathered batch (regularisers) count once.

ATL switches: ``semihard`` masks the gathered embeddings' gradient with statistics taken over all
classes; ``triplet`` overwrites each class row on the rank owning it, from the gathered batch in
global order (later samples of a class win), with the per-sample draws made by the sample's own
rank and gathered with the labels.

``sample_rate < 1`` turns on Partial FC (see :mod:`.partial_fc`): in training-mode calls only the
sampled rows enter the softmax (all positives plus random negatives); evaluation-mode calls use
every class. The sampled local rows of the last call are ``head.sampled_index``. Use
:class:`~facemargin.distributed.PartialFCOptimizer` for the head so that unsampled rows are neither
decayed nor moved by momentum.

Wrap only the backbone in DDP: the head's rows are different on every rank and must not be
averaged.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.distributed as dist

from ..losses import build as build_loss, is_head
from ..losses.stores import WeightStore, seeded_rows  # noqa: F401  (seeded_rows: public here too)
from .partial_fc import sample_rows
from .utils import (all_gather_rows, all_gather_sizes, all_reduce, collective, get_rank,
                    get_world_size)

Tensor = torch.Tensor



def shard_range(num_classes: int, rank: int, world: int, allow_empty: bool = False) -> Tuple[int, int]:
    """``(start, n)``: rank ``rank`` of ``world`` holds rows ``[start, start + n)`` of ``num_classes``.

    ``n = C//W + (r < C%W)``, ``start = (C//W)·r + min(r, C%W)`` (the first ``C%W`` ranks get one
    extra row). Raises ``ValueError`` when a rank would hold no row, unless ``allow_empty``.
    """
    num_classes, rank, world = int(num_classes), int(rank), int(world)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} must lie in [0, world={world}) with world >= 1")
    if num_classes < 0 or (num_classes < world and not allow_empty):
        raise ValueError(f"cannot shard {num_classes} classes over {world} ranks: every rank needs at least one class")
    q, rem = divmod(num_classes, world)
    return q * rank + min(rank, rem), q + (1 if rank < rem else 0)


def all_shard_ranges(num_classes: int, world: int) -> List[Tuple[int, int]]:
    """:func:`shard_range` for every rank, in rank order."""
    return [shard_range(num_classes, r, world, allow_empty=True) for r in range(world)]


# ------------------------------------------------------------------------------------------------
# autograd pieces
# ------------------------------------------------------------------------------------------------


class _GatherRows(torch.autograd.Function):
    """All-gather rows (rank order); backward: sum the gradient over ranks, keep own rows, × scale."""

    @staticmethod
    def forward(ctx, x, sizes, rank, group, grad_scale):
        ctx.sizes, ctx.rank, ctx.group, ctx.grad_scale = sizes, rank, group, grad_scale
        return all_gather_rows(x.detach(), sizes, group, "all_gather(embeddings)")

    @staticmethod
    def backward(ctx, grad):
        sizes, rank = ctx.sizes, ctx.rank
        g = grad.contiguous().clone()
        all_reduce(g, group=ctx.group, what="all_reduce(embedding gradient)")
        start = sum(sizes[:rank])
        g = g[start:start + sizes[rank]]
        if ctx.grad_scale != 1:
            g = g * ctx.grad_scale
        return g, None, None, None, None


class _SumOverRanks(torch.autograd.Function):
    """Sum over ranks of values each filled in by one rank; every rank back-props its own part."""

    @staticmethod
    def forward(ctx, t, group):
        out = t.detach().clone().contiguous()
        return all_reduce(out, group=group, what="all_reduce(target logits)")

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _ReplicatedGrad(torch.autograd.Function):
    """Identity on a value used identically on every rank; backward scales or sums its gradient."""

    @staticmethod
    def forward(ctx, t, group, mode, world):
        ctx.group, ctx.mode, ctx.world = group, mode, world
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad):
        if ctx.mode == "sum":
            g = grad.contiguous().clone()
            return all_reduce(g, group=ctx.group, what="all_reduce(replicated gradient)"), None, None, None
        return grad / ctx.world, None, None, None


class _Reducer:
    """The all-reduce the engines use for a distributed log-sum-exp."""

    def __init__(self, group, world_size: int):
        self.group, self.world_size = group, int(world_size)

    def all_reduce(self, t: Tensor, op: str, what: str) -> Tensor:
        return all_reduce(t, dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, self.group, what)


# ------------------------------------------------------------------------------------------------
# the store
# ------------------------------------------------------------------------------------------------


class ShardedStore(WeightStore):
    """Class rows split across the ranks of ``group`` (see the module docstring).

    Args:
        group: the process group (None: the default group; no group at all: a world of one).
        sample_rate: Partial FC's share of sampled rows in training calls (1: every row).
        seed: seeds the initial rows and the Partial-FC draws; ``None`` draws one on rank 0 and
            broadcasts it. The initial full weight depends on the seed only, not on the world size.
        ddp_grad_scale: multiply the embedding gradient by ``W`` so that DDP's average gives the
            full-batch gradient (default True).
    """

    sharded = True

    def __init__(self, group=None, sample_rate: float = 1.0, seed: Optional[int] = None, ddp_grad_scale: bool = True):
        if not 0.0 < float(sample_rate) <= 1.0:
            raise ValueError(f"sample_rate must lie in (0, 1], got {sample_rate}")
        self.group, self.sample_rate, self.seed = group, float(sample_rate), seed
        self.ddp_grad_scale = bool(ddp_grad_scale)
        self.reducer = None

    def bind(self, head):
        group = self.group
        head.group = group
        head.rank, head.world_size = get_rank(group), get_world_size(group)
        if head.rank < 0:
            raise ValueError(f"{type(head).__name__}: this process is not a member of the given process group")
        start, n = shard_range(head.num_classes, head.rank, head.world_size)
        head.sample_rate, head.ddp_grad_scale = self.sample_rate, self.ddp_grad_scale
        head.sampled_index = None
        head.register_buffer("_touched", torch.zeros(n, dtype=torch.bool), persistent=False)
        head.seed = self._agree_on_seed(head, self.seed)
        if self.sample_rate < 1.0:
            head.register_buffer("pfc_seed", torch.tensor(head.seed, dtype=torch.long))
            head.register_buffer("pfc_step", torch.tensor(0, dtype=torch.long))
        if head.world_size > 1:
            self.reducer = _Reducer(group if group is not None else dist.group.WORLD, head.world_size)
        return start, n

    def initialize(self, head) -> None:
        head.init_weights(head.seed)

    @staticmethod
    def _agree_on_seed(head, seed: Optional[int]) -> int:
        if seed is not None:
            return int(seed) & ((1 << 62) - 1)
        t = torch.randint(0, 1 << 62, (), dtype=torch.long)
        if head.world_size > 1:
            src = dist.get_global_rank(head.group, 0) if head.group is not None else 0
            backend = dist.get_backend(head.group)
            dev = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
            t = t.to(dev)
            collective("broadcast(seed)", lambda: dist.broadcast(t, src=src, group=head.group), head.group)
        return int(t)

    # -- communication ----------------------------------------------------------------------------
    def gather(self, head, x, y, extra=None):
        if head.world_size == 1:
            return x, y, extra
        group = head.group
        sizes = all_gather_sizes(x.shape[0], x.device, group)
        scale = float(head.world_size) if self.ddp_grad_scale else 1.0
        x_all = _GatherRows.apply(x, sizes, head.rank, group, scale)
        meta = y.unsqueeze(1) if extra is None else torch.stack([y, extra.to(y.dtype)], dim=1)
        meta = all_gather_rows(meta, sizes, group, "all_gather(labels)")
        return x_all, meta[:, 0], None if extra is None else meta[:, 1]

    def share_targets(self, t):
        return t if self.reducer is None else _SumOverRanks.apply(t, self.reducer.group)

    def all_sum(self, t):
        if self.reducer is None:
            return t
        return all_reduce(t.detach().clone(), group=self.reducer.group, what="all_reduce(target cosines)")

    def replicated(self, p):
        return p if self.reducer is None else _ReplicatedGrad.apply(p, self.reducer.group, "sum", self.reducer.world_size)

    def replicated_term(self, t):
        return t if self.reducer is None else _ReplicatedGrad.apply(t, self.reducer.group, "mean", self.reducer.world_size)

    # -- rows --------------------------------------------------------------------------------------
    def select(self, head, weight, bias, local, training):
        if self.sample_rate < 1.0 and training:
            owned = local >= 0
            idx = sample_rows(local[owned], head.num_local, self.sample_rate, int(head.pfc_seed),
                              int(head.pfc_step), head.rank)
            head.pfc_step += 1
            head._touched[idx] = True
            head.sampled_index = idx
            if idx.numel() < head.num_local:
                K = head.rows_per_class
                rows = idx if K == 1 else (idx.unsqueeze(1) * K + torch.arange(K, device=idx.device)).flatten()
                weight = weight.index_select(0, rows)
                bias = None if bias is None else bias.index_select(0, idx)
                pos = torch.searchsorted(idx, local.clamp(0, head.num_local - 1))
                local = torch.where(owned, pos, torch.full_like(local, -1))
        elif training:
            head._touched.fill_(True)
            head.sampled_index = None
        return weight, bias, local

    def take_touched_rows(self, head):
        if self.sample_rate >= 1.0:
            return None
        rows = head._touched.nonzero().flatten()
        head._touched.zero_()
        return rows


# ------------------------------------------------------------------------------------------------
# the constructor of the contract
# ------------------------------------------------------------------------------------------------


class _ShardedKind(type):
    """``isinstance(head, ShardedHead)`` is true for every head built on a sharded store."""

    def __instancecheck__(cls, obj) -> bool:
        return bool(getattr(getattr(obj, "store", None), "sharded", False))


class ShardedHead(metaclass=_ShardedKind):
    """``ShardedHead(name, embedding_size, num_classes, sample_rate=1.0, group=None, **hyper)``:
    the head ``facemargin.losses.build(name, ...)`` over all ``C`` classes, on a
    :class:`ShardedStore` holding this rank's rows.

    The preset is composed, not copied: hyper-parameters that depend on ``C`` (COCO's α) see the
    global class count, and the engine (``backend``), its options and any margin state are kept.
    Extra keyword arguments: ``seed`` and ``ddp_grad_scale`` (see :class:`ShardedStore`).
    Without a process group (or with a world of one) it is an ordinary single-process head.
    State (``state_dict`` keys) matches the preset's: ``weight`` and ``bias`` are this rank's rows,
    the rest is replicated; ``pfc_seed``/``pfc_step`` exist when ``sample_rate < 1``.
    :func:`~facemargin.distributed.full_state_dict` / ``load_full_state_dict`` convert to and from
    the world-size-independent full state.
    """

    def __new__(cls, name: str, embedding_size: int, num_classes: int, sample_rate: float = 1.0,
                group=None, seed: Optional[int] = None, ddp_grad_scale: bool = True, **hyper):
        if not is_head(str(name)):
            raise ValueError(f"ShardedHead needs a classification head (with class weights), got {name!r}")
        if int(embedding_size) <= 0 or int(num_classes) <= 0:
            raise ValueError(f"embedding_size and num_classes must be positive, got {embedding_size} and {num_classes}")
        store = ShardedStore(group, sample_rate, seed, ddp_grad_scale)
        head = build_loss(str(name), embedding_size=int(embedding_size), num_classes=int(num_classes),
                          store=store, **hyper)
        head.name = str(name).lower()
        return head
