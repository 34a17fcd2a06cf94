"""Class sharding as a weight store: any head of the zoo with its rows split across ranks.

On rank ``r`` of ``W`` a head built with a :class:`ShardedStore` (or by :func:`sharded_head`)
holds class rows ``[start, start + n)`` (:func:`~facemargin.distributed.shards.shard_range`).
The store owns those rows, Partial FC's seed, step counter and the rows touched since the last
optimizer step; its batch view carries the communication hooks (:class:`ShardComm`). One call
``head(x, y)`` with this rank's batch:

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
every class. The sampled local rows of the last call are ``head.store.sampled_index``. Use
:class:`~facemargin.distributed.PartialFCOptimizer` for the head so that unsampled rows are neither
decayed nor moved by momentum.

Wrap only the backbone in DDP: the head's rows are different on every rank and must not be
averaged.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
import torch.distributed as dist

from ..losses import build as build_loss, is_head
from ..losses.stores import LocalComm, WeightStore, seeded_rows  # noqa: F401  (seeded_rows: public here too)
from .partial_fc import sample_rows
from .shards import all_shard_ranges, shard_range  # noqa: F401  (public here too)
from .utils import all_gather_rows, all_gather_sizes, all_reduce, collective, get_rank, get_world_size

Tensor = torch.Tensor


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


# ------------------------------------------------------------------------------------------------
# the communication hooks of a sharded batch view
# ------------------------------------------------------------------------------------------------


class ShardComm(LocalComm):
    """The hooks over the ranks of ``group`` (see :class:`~facemargin.losses.stores.LocalComm`)."""

    def __init__(self, group, rank: int, world_size: int, grad_scale: float = 1.0):
        self.group, self.rank, self.world_size, self.grad_scale = group, int(rank), int(world_size), float(grad_scale)

    def gather(self, x, y, extra=None):
        group = self.group
        sizes = all_gather_sizes(x.shape[0], x.device, group)
        x_all = _GatherRows.apply(x, sizes, self.rank, group, self.grad_scale)
        meta = y.unsqueeze(1) if extra is None else torch.stack([y, extra.to(y.dtype)], dim=1)
        meta = all_gather_rows(meta, sizes, group, "all_gather(labels)")
        return x_all, meta[:, 0], None if extra is None else meta[:, 1]

    def share(self, t):
        return _SumOverRanks.apply(t, self.group)

    def all_sum(self, t):
        return all_reduce(t.detach().clone(), group=self.group, what="all_reduce(target cosines)")

    def all_reduce(self, t, op, what):
        return all_reduce(t, dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, self.group, what)

    def replicated(self, p):
        return _ReplicatedGrad.apply(p, self.group, "sum", self.world_size)

    def replicated_term(self, t):
        return _ReplicatedGrad.apply(t, self.group, "mean", self.world_size)


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

    State: ``weight``/``bias`` (this rank's rows), and with ``sample_rate < 1`` the buffers
    ``pfc_seed``/``pfc_step`` (in ``state_dict``) and the rows touched since
    :meth:`take_touched_rows` (not saved). ``sampled_index``: the local rows of the last training call.
    """

    sharded = True

    def __init__(self, group=None, sample_rate: float = 1.0, seed: Optional[int] = None, ddp_grad_scale: bool = True):
        super().__init__()
        if not 0.0 < float(sample_rate) <= 1.0:
            raise ValueError(f"sample_rate must lie in (0, 1], got {sample_rate}")
        self.group, self.sample_rate, self.requested_seed = group, float(sample_rate), seed
        self.ddp_grad_scale = bool(ddp_grad_scale)
        self.rank, self.world_size, self.seed = 0, 1, None

    def shard(self, num_classes: int):
        group = self.group
        self.rank, self.world_size = get_rank(group), get_world_size(group)
        if self.rank < 0:
            raise ValueError("ShardedStore: this process is not a member of the given process group")
        start, n = shard_range(num_classes, self.rank, self.world_size)
        self.register_buffer("touched", torch.zeros(n, dtype=torch.bool), persistent=False)
        self.seed = self._agree_on_seed(self.requested_seed)
        if self.sample_rate < 1.0:
            self.register_buffer("pfc_seed", torch.tensor(self.seed, dtype=torch.long))
            self.register_buffer("pfc_step", torch.tensor(0, dtype=torch.long))
        if self.world_size > 1:
            self.comm = ShardComm(group if group is not None else dist.group.WORLD, self.rank, self.world_size,
                                  float(self.world_size) if self.ddp_grad_scale else 1.0)
        return start, n

    def reset_parameters(self) -> None:
        """The initial rows of a fresh sharded store: the seeded rows of the full matrix."""
        self.init_weights(self.seed)

    def _agree_on_seed(self, seed: Optional[int]) -> int:
        if seed is not None:
            return int(seed) & ((1 << 62) - 1)
        t = torch.randint(0, 1 << 62, (), dtype=torch.long)
        if self.world_size > 1:
            src = dist.get_global_rank(self.group, 0) if self.group is not None else 0
            backend = dist.get_backend(self.group)
            dev = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
            t = t.to(dev)
            collective("broadcast(seed)", lambda: dist.broadcast(t, src=src, group=self.group), self.group)
        return int(t)

    def _select(self, weight, bias, local, training):
        if self.sample_rate < 1.0 and training:
            owned = local >= 0
            idx = sample_rows(local[owned], self.num_local, self.sample_rate, int(self.pfc_seed),
                              int(self.pfc_step), self.rank)
            self.pfc_step += 1
            self.touched[idx] = True
            self.sampled_index = idx
            if idx.numel() < self.num_local:
                K = self.rows_per_class
                rows = idx if K == 1 else (idx.unsqueeze(1) * K + torch.arange(K, device=idx.device)).flatten()
                weight = weight.index_select(0, rows)
                bias = None if bias is None else bias.index_select(0, idx)
                pos = torch.searchsorted(idx, local.clamp(0, self.num_local - 1))
                local = torch.where(owned, pos, torch.full_like(local, -1))
        elif training:
            self.touched.fill_(True)
            self.sampled_index = None
        return weight, bias, local

    def take_touched_rows(self):
        if self.sample_rate >= 1.0:
            return None
        rows = self.touched.nonzero().flatten()
        self.touched.zero_()
        return rows

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, world_size={self.world_size}, sample_rate={self.sample_rate}"


# ------------------------------------------------------------------------------------------------
# building a sharded head
# ------------------------------------------------------------------------------------------------


def is_sharded(head) -> bool:
    """Whether ``head`` holds its class rows in a sharded store."""
    return bool(getattr(getattr(head, "store", None), "sharded", False))


def sharded_head(name: str, embedding_size: int, num_classes: int, sample_rate: float = 1.0, group=None,
                 seed: Optional[int] = None, ddp_grad_scale: bool = True, **hyper):
    """The head ``facemargin.losses.build(name, ...)`` over all ``C`` classes, on a
    :class:`ShardedStore` holding this rank's rows, initialised by ``head.init_weights(seed)``.

    The head is composed, not copied: hyper-parameters that depend on ``C`` (COCO's α) see the
    global class count, and the engine, its options and any margin state are kept. ``seed`` and
    ``ddp_grad_scale``: see :class:`ShardedStore`. Without a process group (or with a world of one)
    it is an ordinary single-process head. State (``state_dict`` keys) matches the single-process
    head's: ``weight`` and ``bias`` are this rank's rows, the rest is replicated;
    ``pfc_seed``/``pfc_step`` exist when ``sample_rate < 1``.
    :func:`~facemargin.distributed.full_state_dict` / ``load_full_state_dict`` convert to and from
    the world-size-independent full state.
    """
    if not is_head(str(name)):
        raise ValueError(f"sharded_head needs a classification head (with class weights), got {name!r}")
    if int(embedding_size) <= 0 or int(num_classes) <= 0:
        raise ValueError(f"embedding_size and num_classes must be positive, got {embedding_size} and {num_classes}")
    store = ShardedStore(group, sample_rate, seed, ddp_grad_scale)
    head = build_loss(str(name), embedding_size=int(embedding_size), num_classes=int(num_classes),
                      store=store, **hyper)
    head.init_weights(store.seed)
    head.name = str(name).lower()
    return head


def ShardedHead(name: str, embedding_size: int, num_classes: int, sample_rate: float = 1.0, group=None,
                seed: Optional[int] = None, ddp_grad_scale: bool = True, **hyper):
    """The former name of :func:`sharded_head` (deprecated: it warns)."""
    warnings.warn("ShardedHead(...) is the former name of sharded_head(...); test a head with is_sharded(head)",
                  DeprecationWarning, stacklevel=2)
    return sharded_head(name, embedding_size, num_classes, sample_rate, group, seed, ddp_grad_scale, **hyper)
