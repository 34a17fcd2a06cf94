"""The class-sharded margin head (model parallelism for the classifier), SPEC §9.

On rank ``r`` of ``W`` the head holds class rows ``[start, start + n)``
(:func:`shard_range`). One call ``head(x, y)`` with this rank's batch:

1. all-gathers the embeddings and labels of every rank (rank order: the *global batch* is rank 0's
   samples, then rank 1's, ...), with a backward that sums the embedding gradient over ranks
   (all-reduce; gloo has no reduce-scatter) and hands each rank the rows of its own samples;
2. computes the margin logits of the global batch against the local rows only: the weight
   normalisation is a per-column factor on the GEMM (no normalised copy of W), and the margin
   ``φ`` is applied to the target entries, which live on exactly one rank;
3. takes a distributed softmax cross-entropy: all-reduce MAX of the row maxima, all-reduce SUM of
   the local sums of exponentials and of the target logits (0 on ranks not owning the target).
   No ``B×C`` tensor is ever gathered; the backward needs no further communication for the
   weights (the softmax is known locally from the reduced max and sum);
4. returns the mean over the global batch: the same scalar on every rank.

Gradients are exact (those of the single-process head on the concatenated batch). Embedding
gradient scaling: DDP *averages* backbone gradients over the ``W`` ranks, while every rank's
backward only covers its own samples. The all-gather backward therefore multiplies the
embedding gradient by ``W`` (``ddp_grad_scale=True``, default): rank r's backbone gradient is
``W · ∂L/∂θ|_{samples of r}`` and DDP's mean over ranks gives exactly ``∂L/∂θ`` of the global
mean loss. Pass ``ddp_grad_scale=False`` to get the plain per-rank gradient ``∂L/∂x_r`` (e.g.
when the backbone gradients are *summed*, not averaged).

ATL switches on a sharded head:

* ``semihard``: the easy/hard mask needs, per sample, the largest non-target logit over *all*
  classes: the local maxima are all-reduced (MAX) together with the softmax row maxima, and the
  target logits (plain and with margin) come from the owning rank by the SUM all-reduce. The mask
  is applied to the gathered embeddings' gradient, so it reaches each sample's owner unchanged.
* ``triplet`` ("easy triplet"): class rows get no gradient. In the backward pass each class row is
  overwritten by the *owning rank* (the rank holding that row), from the gathered batch, in global
  batch order (rank 0's samples first), so later samples of a class win exactly as in the
  single-process layer. Whether a sample is chosen (probability ``replace_prob``) is drawn by the
  rank the sample comes from and gathered with the labels, so all owners agree.

``sample_rate < 1`` turns on Partial FC (see :mod:`.partial_fc`): in training-mode calls only the
sampled rows enter the softmax (all positives plus random negatives), and the semi-hard
statistics (largest non-target logit) are taken over them too; evaluation-mode calls use every
class. The sampled local rows of the last call are ``head.sampled_index``. Use :class:`~facemargin.distributed.PartialFCOptimizer` for the head so that
unsampled rows are neither decayed nor moved by momentum.

Wrap only the backbone in DDP: the head's rows are different on every rank and must not be
averaged. Its replicated parameters (a learnable scale) receive the all-reduced, exact gradient.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn

from ..losses import build as build_loss, is_head
from ..losses.checks import check_batch
from ..losses.heads import _GradMask, replace_rows_
from ..losses.margin import MarginSpec, MarginStats
from .partial_fc import sample_rows
from .utils import (all_gather_rows, all_gather_sizes, all_reduce, collective, get_rank,
                    get_world_size)

Tensor = torch.Tensor

_NORM_EPS = 1e-12
_INIT_BLOCK = 4096  # rows per independently seeded block of the world-size-independent init


@torch.no_grad()
def seeded_rows(num_classes: int, dim: int, seed: int, start: int = 0, n: Optional[int] = None) -> Tensor:
    """Rows ``[start, start + n)`` of a seeded xavier-uniform ``(num_classes, dim)`` matrix.

    Blocks of 4096 rows come from their own generators, so any shard of the matrix is computed
    without the rest and equals the same rows of the full matrix: the initial class weights of a
    run depend on its seed only, never on its world size (the single-process trainer uses it too).
    """
    n = num_classes - start if n is None else n
    bound = math.sqrt(6.0 / (num_classes + dim))
    out = torch.empty(n, dim)
    lo, hi = start, start + n
    for block in range(lo // _INIT_BLOCK, (hi - 1) // _INIT_BLOCK + 1):
        b0 = block * _INIT_BLOCK
        b1 = min(b0 + _INIT_BLOCK, num_classes)
        gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + block) & ((1 << 63) - 1))
        vals = torch.empty(b1 - b0, dim).uniform_(-bound, bound, generator=gen)
        s0, s1 = max(lo, b0), min(hi, b1)
        out[s0 - lo:s1 - lo] = vals[s0 - b0:s1 - b0]
    return out


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


class _ReplaceOwnedRows(torch.autograd.Function):
    """Identity on the gathered batch; in backward the owning rank overwrites its class rows."""

    @staticmethod
    def forward(ctx, x, weight, rows, local_labels, chosen):
        ctx.weight = weight
        ctx.save_for_backward(x.detach(), rows, local_labels, chosen)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        x, rows, local_labels, chosen = ctx.saved_tensors
        if rows.numel():
            replace_rows_(ctx.weight, x[rows], local_labels, chosen)
        return grad, None, None, None, None


def _target_logit(x: Tensor, w: Tensor, s, b: Optional[Tensor], spec: MarginSpec, lambda_) -> Tensor:
    """The margin logit ``r(x)·c_y·φ(cos θ_y) + b_y`` of given (sample, target row) pairs."""
    xn = x.norm(dim=1)
    wn = w.norm(dim=1)
    cos = ((x / xn.clamp_min(_NORM_EPS).unsqueeze(1)) * (w / wn.clamp_min(_NORM_EPS).unsqueeze(1))).sum(1)
    phi = spec.margin(cos.clamp(-1.0, 1.0), lambda_)
    z = (xn if spec.feature == "norm" else s) * phi
    if not spec.weight_norm:
        z = z * wn
    if b is not None:
        z = z + b
    return z


class _ShardedMarginCE(torch.autograd.Function):
    """Mean margin cross-entropy of the gathered batch over the classes of all ranks.

    Inputs: ``x`` (B, D) gathered embeddings; ``weight`` (n, D) local rows (possibly a Partial-FC
    selection); ``scale`` 0-d tensor; ``bias`` (n,) or None; ``target`` (B,) local column of the
    label, −1 where another rank owns it. ``info`` (dict) receives the :class:`MarginStats`.
    """

    @staticmethod
    def forward(ctx, x, weight, scale, bias, target, spec, lambda_, group, info):
        work = torch.promote_types(torch.promote_types(x.dtype, weight.dtype), torch.float32)
        xf, wf = x.detach().to(work), weight.detach().to(work)
        s = scale.detach().to(work)
        bf = None if bias is None else bias.detach().to(work)
        B, n = xf.shape[0], wf.shape[0]
        xnorm = xf.norm(dim=1).clamp_min(_NORM_EPS)
        xhat = xf / xnorm.unsqueeze(1)
        f = xf if spec.feature == "norm" else s * xhat
        inv = 1.0 / wf.norm(dim=1).clamp_min(_NORM_EPS) if spec.weight_norm else None

        logits = torch.mm(f, wf.t())  # the one B×n buffer (reused for exp, then for the gradient)
        if inv is not None:
            logits.mul_(inv)
        if bf is not None:
            logits.add_(bf)

        rows = (target >= 0).nonzero().flatten()
        cols = target[rows]
        neg_inf = torch.tensor(-math.inf, dtype=work, device=xf.device)
        zero = xf.new_zeros(B)
        target_plain = zero.index_put((rows,), logits[rows, cols])
        margin_active = spec.margin.active
        if margin_active and rows.numel():
            t_margin = _target_logit(xf[rows], wf[cols], s, None if bf is None else bf[cols], spec, lambda_)
        else:
            t_margin = logits[rows, cols]
        # local max of the non-target logits, then of all logits (targets with margin)
        logits[rows, cols] = neg_inf
        other_max = logits.amax(dim=1) if n > 0 else xf.new_full((B,), -math.inf)
        logits[rows, cols] = t_margin
        row_max = torch.maximum(other_max, xf.new_full((B,), -math.inf).index_put((rows,), t_margin))
        maxes = all_reduce(torch.cat([other_max, row_max]), dist.ReduceOp.MAX, group,
                           "all_reduce(MAX of logits)")
        other_max, row_max = maxes[:B], maxes[B:]

        logits.sub_(row_max.unsqueeze(1)).exp_()  # now exp(z − M)
        sums = torch.cat([logits.sum(dim=1), zero.index_put((rows,), t_margin), target_plain])
        all_reduce(sums, group=group, what="all_reduce(SUM of exponentials and targets)")
        sumexp, z_target, target_plain = sums[:B], sums[B:2 * B], sums[2 * B:]
        loss = (sumexp.log() + row_max - z_target).mean()

        info["stats"] = MarginStats(target_plain, z_target, other_max)
        ctx.spec, ctx.lambda_, ctx.group, ctx.margin_active = spec, lambda_, group, margin_active
        ctx.has_bias = bias is not None
        ctx.retain = bool(info.get("retain", False))  # keep the buffer for a second backward (tests)
        ctx.dtypes = (x.dtype, weight.dtype, scale.dtype, None if bias is None else bias.dtype)
        ctx.save_for_backward(xf, wf, s, bf, xnorm, xhat, f, inv if inv is not None else xnorm.new_empty(0),
                              rows, cols, logits, sumexp)
        return loss.to(torch.promote_types(x.dtype, torch.float32))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        xf, wf, s, bf, xnorm, xhat, f, inv, rows, cols, G, sumexp = ctx.saved_tensors
        spec = ctx.spec
        need_x, need_w, need_s, need_b = ctx.needs_input_grad[:4]
        B = xf.shape[0]
        g = grad_loss.to(xf.dtype) / B
        # G = dL/dz = (softmax − onehot)·g/B, in place in the exp buffer (so a second backward
        # through the same graph fails loudly on the version counter unless info["retain"])
        if ctx.retain:
            G = G.clone()
        G.div_(sumexp.unsqueeze(1)).mul_(g)
        if ctx.margin_active:
            g_target = G[rows, cols] - g
            G[rows, cols] = 0.0  # the target entries go through the margin below
        else:
            G[rows, cols] -= g
            g_target = None
        dx = dw = ds = db = None
        if need_b:
            db = G.sum(dim=0)
        if spec.weight_norm:
            G.mul_(inv)  # z_ij = f_i·W_j·inv_j (+ b_j)
        if need_x or need_s:
            df = torch.mm(G, wf)
            if spec.feature == "norm":
                dx = df
            else:
                if need_s:
                    ds = (df * xhat).sum()
                dxhat = s * df
                dx = (dxhat - (dxhat * xhat).sum(1, keepdim=True) * xhat) / xnorm.unsqueeze(1)
        if need_w:
            a = torch.mm(G.t(), f)
            if spec.weight_norm:  # d(W_j/‖W_j‖): remove the radial part, in place (no n×D temporary)
                coef = torch.bmm(a.unsqueeze(1), wf.unsqueeze(2)).view(-1) * inv * inv  # row dots, no temporary
                a.addcmul_(coef.unsqueeze(1), wf, value=-1.0)
            dw = a
        if g_target is not None and rows.numel():
            with torch.enable_grad():
                xr = xf[rows].detach().requires_grad_(need_x)
                wr = wf[cols].detach().requires_grad_(need_w)
                sr = s.detach().requires_grad_(need_s)
                br = None if bf is None else bf[cols].detach().requires_grad_(need_b)
                z = _target_logit(xr, wr, sr, br, spec, ctx.lambda_)
                inputs = [t for t in (xr, wr, sr, br) if t is not None and t.requires_grad]
                grads = list(torch.autograd.grad(z, inputs, g_target, allow_unused=True)) if inputs else []
            for t, acc_name in ((xr, "x"), (wr, "w"), (sr, "s"), (br, "b")):
                if t is None or not t.requires_grad:
                    continue
                gt = grads.pop(0)
                if gt is None:
                    continue
                if acc_name == "x":
                    dx.index_add_(0, rows, gt)
                elif acc_name == "w":
                    dw.index_add_(0, cols, gt)
                elif acc_name == "s":
                    ds = gt if ds is None else ds + gt
                else:
                    db.index_add_(0, cols, gt)
        if need_s:
            ds = xf.new_zeros(()) if ds is None else ds.reshape(())
            all_reduce(ds, group=ctx.group, what="all_reduce(scale gradient)")
        xd, wd, sd, bd = ctx.dtypes
        return (None if dx is None else dx.to(xd), None if dw is None else dw.to(wd),
                None if ds is None else ds.to(sd), None if db is None else db.to(bd),
                None, None, None, None, None)


# ------------------------------------------------------------------------------------------------
# the module
# ------------------------------------------------------------------------------------------------


class ShardedHead(nn.Module):
    """A margin head whose class weights are split across the ranks of ``group`` (SPEC §9).

    ``ShardedHead(name, embedding_size, num_classes, sample_rate=1.0, group=None, **hyper)``
    builds the head preset ``facemargin.losses.build(name, **hyper)`` (any classification head of
    the zoo: arcface, cosface, combined, sphereface, lsoftmax, atl, normface, softmax, l2softmax)
    and keeps its margin spec, scale, bias and λ schedule with this rank's rows
    ``[start, start + n)`` (:func:`shard_range`). ``head(x, y)`` takes this rank's batch
    (batch sizes may differ between ranks) and returns the margin cross-entropy over all ``C``
    classes, averaged over the global batch: the same value on every rank. See the module
    docstring for the algorithm, the DDP gradient factor and the ATL switches.

    Extra keyword arguments:
        seed: seeds the initial weights and the Partial-FC draws; ``None`` draws one from torch's
            global RNG on rank 0 and broadcasts it. The initial full weight depends on the seed
            only, not on the world size: blocks of 4096 rows are drawn from their own generators
            with the xavier-uniform bound of the full ``(C, D)`` matrix.
        ddp_grad_scale: multiply the embedding gradient by ``W`` so that DDP's average gives the
            full-batch gradient (default True).

    Without a process group (or with a world of one) it is an ordinary single-process head.
    State (``state_dict`` keys) matches the preset's: ``weight`` and ``bias`` are this rank's rows,
    ``schedule.*`` and a learnable ``scale`` are replicated; ``pfc_seed``/``pfc_step`` exist when
    ``sample_rate < 1``. :func:`full_state_dict` / :func:`load_full_state_dict` convert to and from
    the world-size-independent full state.
    """

    def __init__(self, name: str, embedding_size: int, num_classes: int, sample_rate: float = 1.0,
                 group=None, seed: Optional[int] = None, ddp_grad_scale: bool = True, **hyper):
        super().__init__()
        if not is_head(str(name)):
            raise ValueError(f"ShardedHead needs a classification head (with class weights), got {name!r}")
        if not 0.0 < float(sample_rate) <= 1.0:
            raise ValueError(f"sample_rate must lie in (0, 1], got {sample_rate}")
        if int(embedding_size) <= 0 or int(num_classes) <= 0:
            raise ValueError(f"embedding_size and num_classes must be positive, got {embedding_size} and {num_classes}")
        self.group = group
        self.rank, self.world_size = get_rank(group), get_world_size(group)
        if self.rank < 0:
            raise ValueError("ShardedHead: this process is not a member of the given process group")
        self.name = str(name).lower()
        self.embedding_size, self.num_classes = int(embedding_size), int(num_classes)
        self.start, self.num_local = shard_range(self.num_classes, self.rank, self.world_size)
        self.sample_rate = float(sample_rate)
        self.ddp_grad_scale = bool(ddp_grad_scale)
        hyper.pop("backend", None)
        hyper.pop("backend_options", None)
        # the preset on the local rows only: it validates the hyper-parameters and gives the spec
        preset = build_loss(self.name, embedding_size=self.embedding_size, num_classes=self.num_local, **hyper)
        self.spec: MarginSpec = preset.spec
        self.weight = preset.weight
        self.bias = preset.bias
        if isinstance(preset.scale, nn.Parameter):
            self.scale = preset.scale
        else:
            self.register_buffer("scale", preset.scale.clone(), persistent=False)
        self.schedule = preset.schedule
        self.triplet, self.semihard, self.replace_prob = preset.triplet, preset.semihard, preset.replace_prob
        self.m = getattr(preset, "m", None)
        self.preset_type = type(preset)
        self.last_stats: Optional[MarginStats] = None
        self.sampled_index: Optional[Tensor] = None
        self.register_buffer("_touched", torch.zeros(self.num_local, dtype=torch.bool), persistent=False)
        seed = self._agree_on_seed(seed)
        self.seed = seed
        if self.sample_rate < 1.0:
            self.register_buffer("pfc_seed", torch.tensor(seed, dtype=torch.long))
            self.register_buffer("pfc_step", torch.tensor(0, dtype=torch.long))
        self.reset_parameters()

    # -- set-up --------------------------------------------------------------------------------
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

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """World-size-independent xavier-uniform init of this rank's rows (bias to zero)."""
        self.weight.copy_(seeded_rows(self.num_classes, self.embedding_size, self.seed, self.start, self.num_local))
        if self.bias is not None:
            self.bias.zero_()

    # -- λ schedule ------------------------------------------------------------------------------
    @property
    def iteration(self) -> Optional[Tensor]:
        """The λ schedule's counter (None for heads without one)."""
        return None if self.schedule is None else self.schedule.iteration

    @property
    def lambda_(self) -> Optional[float]:
        """The current λ (None for heads without a schedule)."""
        return None if self.schedule is None else self.schedule.current

    # -- Partial FC ----------------------------------------------------------------------------------
    def take_touched_rows(self) -> Optional[Tensor]:
        """Local rows used by training calls since the last call of this method (then reset).

        ``None`` means every row (no sampling); used by :class:`PartialFCOptimizer`.
        """
        if self.sample_rate >= 1.0:
            return None
        rows = self._touched.nonzero().flatten()
        self._touched.zero_()
        return rows

    # -- forward ---------------------------------------------------------------------------------------
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Mean margin cross-entropy of the global batch over all classes (same value on every rank)."""
        check_batch(x, y, self.embedding_size, self.num_classes, "ShardedHead")
        training = self.training and torch.is_grad_enabled()
        if self.training and self.schedule is not None:
            self.schedule.step()
        group, world = self.group, self.world_size
        sizes = all_gather_sizes(x.shape[0], x.device, group) if world > 1 else [x.shape[0]]
        scale_factor = float(world) if self.ddp_grad_scale else 1.0
        x_all = _GatherRows.apply(x, sizes, self.rank, group, scale_factor) if world > 1 else x
        y = y.to(torch.long)
        replacing = self.triplet and training and self.replace_prob > 0
        meta = y.unsqueeze(1)
        if replacing:
            chosen = (torch.rand(x.shape[0], device=x.device) < self.replace_prob).long()
            meta = torch.stack([y, chosen], dim=1)
        meta_all = all_gather_rows(meta, sizes, group, "all_gather(labels)") if world > 1 else meta
        y_all = meta_all[:, 0]

        local = y_all - self.start
        owned = (local >= 0) & (local < self.num_local)
        weight = self.weight.detach() if self.triplet else self.weight
        bias = self.bias
        target = torch.where(owned, local, torch.full_like(local, -1))
        if self.sample_rate < 1.0 and training:
            idx = sample_rows(local[owned], self.num_local, self.sample_rate, int(self.pfc_seed),
                              int(self.pfc_step), self.rank)
            self.pfc_step += 1
            self._touched[idx] = True
            self.sampled_index = idx
            if idx.numel() < self.num_local:
                weight = weight.index_select(0, idx)
                bias = None if bias is None else bias.index_select(0, idx)
                pos = torch.searchsorted(idx, local.clamp(0, self.num_local - 1))
                target = torch.where(owned, pos, torch.full_like(local, -1))
        elif training:
            self._touched.fill_(True)
            self.sampled_index = None

        holder = {}
        if replacing:
            rows = owned.nonzero().flatten()
            x_all = _ReplaceOwnedRows.apply(x_all, self.weight, rows, local[rows], meta_all[rows, 1].bool())
        if self.semihard and training:
            x_all = _GradMask.apply(x_all, holder)
        info = {}
        scale = self.scale if isinstance(self.scale, Tensor) else torch.tensor(float(self.scale))
        loss = _ShardedMarginCE.apply(x_all, weight, scale, bias, target, self.spec, self.lambda_, group, info)
        stats = info["stats"]
        self.last_stats = stats
        if self.semihard and training:
            holder["mask"] = stats.semihard_mask(self.spec.margin.active)
        return loss

    def extra_repr(self):
        s = (f"name={self.name!r}, embedding_size={self.embedding_size}, num_classes={self.num_classes}, "
             f"rows=[{self.start}, {self.start + self.num_local}), rank={self.rank}, world_size={self.world_size}, "
             f"spec={self.spec}")
        if self.sample_rate < 1:
            s += f", sample_rate={self.sample_rate}"
        return s
