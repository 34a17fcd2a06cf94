"""Engines: the GEMM and a stable log-sum-exp over class blocks, nothing else.

A head hands an engine

* ``f`` ``(B, D)``: the GEMM operand (``s·x̂`` or ``x``), differentiable;
* ``weight`` ``(n, D)``: raw class rows (all classes, or one rank's shard);
* ``bias`` ``(n,)`` or None;
* ``T`` ``(B,)``: the target logits, computed by :func:`~facemargin.losses.margin.target_logit`
  with autograd (so the margin's gradient never has to be written by hand);
* ``cols`` ``(B,)``: the local column of each row's target, ``-1`` where another rank owns it;

and gets back the mean cross-entropy of the logits ``z_ij = k_j·(f_i·W_j) + b_j`` with column
``cols_i`` replaced by ``T_i`` (``k_j = 1/‖W_j‖`` for normalised weights), plus
:class:`~facemargin.losses.margin.MarginStats`. Optional: ``others`` transforms the non-target
logits of a block elementwise (differentiated by autograd, block by block), and ``reducer`` (a sharded weight store's
all-reduce) turns the log-sum-exp into a distributed one (all-reduce MAX of the row maxima, SUM of the exponential
sums): the sharded engine is the fused engine over a class shard.

* ``plain``: the reference, written as one would in PyTorch (full ``(B, C)`` logits, autograd).
  Single process only.
* ``fused``: one :class:`torch.autograd.Function`. No normalised copy of ``W`` (the weight norm
  is a per-column factor applied in place on the ``(B, n)`` block), one ``(B, C)`` buffer turned
  into ``exp(z − max)`` in place and reused for the softmax gradient in backward, ``grad_f`` and
  ``grad_W`` as two GEMMs of it. ``chunk_size`` processes classes in blocks with an online
  log-sum-exp and recomputes the blocks in backward, so no ``(B, C)`` buffer is ever held. The
  target rows' gradient is added in place into the ``grad_W`` this engine produced (no second
  ``(C, D)`` gradient). Default engine of every head.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .margin import ENGINES, NORM_EPS, MarginStats, work_dtype

Tensor = torch.Tensor

__all__ = ["Engine", "PlainEngine", "FusedEngine", "BlockSoftmaxCE"]


def _autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The autocast dtype active for ``device_type`` (None when autocast is off)."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def _world(reducer) -> int:
    """1 without a reducer (one process, even inside a distributed run), else the world size."""
    return 1 if reducer is None else int(reducer.world_size)


class Engine:
    """What every engine provides. ``supports_group``: runs over a class shard with a process
    group. ``supports_others``: margins that change non-target logits."""

    name = "engine"
    supports_group = False
    supports_others = True

    def check(self, head_name: str, *, sharded: bool) -> None:
        """Raise a clear ValueError when this engine cannot run the described head."""
        if sharded and not self.supports_group:
            raise ValueError(f"{head_name}: the {self.name!r} engine runs in one process only; "
                             f"a sharded head needs one of: {', '.join(n for n in ENGINES.available() if ENGINES.get(n).supports_group)}")

    def target_rows(self, weight: Tensor, idx: Tensor):
        """The target rows ``weight[idx]`` (differentiable) and a link object for :meth:`__call__`."""
        return weight[idx], None

    def __call__(self, f, weight, bias, T, cols, *, weight_norm, link=None, others=None, reducer=None, **options):
        raise NotImplementedError


class PlainEngine(Engine):
    """The reference: the full ``(B, C)`` logits with autograd."""

    name = "plain"

    @staticmethod
    def logits(f, weight, bias, T, cols, *, weight_norm, others=None):
        """The ``(B, C)`` logits, target column ``cols`` replaced by ``T`` (kept when ``T`` is
        None), and their :class:`MarginStats` (None without ``cols``)."""
        dtype = torch.promote_types(f.dtype, weight.dtype)
        w = F.normalize(weight.to(dtype), dim=1) if weight_norm else weight.to(dtype)
        z = F.linear(f.to(dtype), w, None if bias is None else bias.to(dtype))
        if cols is None:
            return z, None
        rows = torch.arange(f.shape[0], device=f.device)
        target_plain = z.detach()[rows, cols]
        if others is not None:
            z = others(z)
        with torch.no_grad():
            other_max = z.index_put((rows, cols), torch.tensor(-math.inf, dtype=z.dtype, device=z.device)).amax(dim=1)
        if T is None:  # no margin: the target keeps its GEMM logit
            return z, MarginStats(target_plain, target_plain, other_max)
        # under autocast F.linear gives bf16 logits while the target entries are float32
        z = z.index_put((rows, cols), T.to(z.dtype))
        return z, MarginStats(target_plain, T.detach().to(z.dtype), other_max)

    def __call__(self, f, weight, bias, T, cols, *, weight_norm, link=None, others=None, reducer=None, **options):
        if options:
            raise ValueError(f"plain engine: unknown option(s) {', '.join(sorted(options))}; it takes none")
        if _world(reducer) > 1:
            raise ValueError("the plain engine runs in one process; a sharded head uses the fused engine")
        z, stats = self.logits(f, weight, bias, T, cols, weight_norm=weight_norm, others=others)
        # at least float32 (bf16 logits), but float64 stays float64 (gradcheck, exact comparisons)
        return F.cross_entropy(z.to(work_dtype(z.dtype)), cols), stats


class _TargetRows(torch.autograd.Function):
    """``weight[idx]``; backward adds the rows' gradient into the ``grad_W`` the fused engine made.

    The fused engine's backward runs first (the target logits depend on these rows), stores its
    ``grad_W`` in ``link``, and autograd has not yet accumulated it: the rows are added in place,
    so the head never allocates a second ``(C, D)`` gradient. Without that (the engine did not
    need ``grad_W``), a dense gradient is returned as usual.
    """

    @staticmethod
    def forward(ctx, weight, idx, link):
        ctx.link, ctx.shape = link, weight.shape
        ctx.save_for_backward(idx)
        return weight.detach()[idx]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (idx,) = ctx.saved_tensors
        gW = ctx.link.pop("grad_weight", None)
        if gW is not None and gW.shape == ctx.shape:
            gW.index_add_(0, idx, grad.to(gW.dtype))
            return None, None, None
        out = grad.new_zeros(ctx.shape)
        out.index_add_(0, idx, grad)
        return out, None, None


class BlockSoftmaxCE(torch.autograd.Function):
    """Mean cross-entropy over class blocks (see the module docstring).

    ``apply(f, weight, bias, T, cols, weight_norm, chunk_size, reducer, others, link, compute_dtype)``
    returns ``(loss, target_plain, target_margin, other_max)``; only ``loss`` is differentiable
    (in ``f``, ``weight``, ``bias`` and ``T``). ``compute_dtype`` is the dtype of the GEMMs and of
    the logits buffer (autocast); the log-sum-exp runs in at least float32.
    """

    @staticmethod
    def forward(ctx, f, weight, bias, T, cols, weight_norm, chunk_size, reducer, others, link, compute_dtype):
        with torch.autocast(f.device.type, enabled=False):
            return BlockSoftmaxCE._forward(ctx, f, weight, bias, T, cols, weight_norm, chunk_size, reducer, others,
                                           link, compute_dtype)

    @staticmethod
    def _forward(ctx, f, weight, bias, T, cols, weight_norm, chunk_size, reducer, others, link, compute_dtype):
        dtype = compute_dtype or torch.promote_types(f.dtype, weight.dtype)
        wk = work_dtype(dtype)
        B, n = f.shape[0], weight.shape[0]
        dev = f.device
        fd = f.detach().to(dtype)
        Wd = weight.detach().to(dtype)
        bd = None if bias is None else bias.detach().to(dtype)
        colf = None
        if weight_norm:
            colf = (1.0 / torch.linalg.vector_norm(Wd, dim=1, dtype=wk).clamp_min(NORM_EPS)).to(dtype)
        Tw = None if T is None else T.detach().to(wk)
        rows_o = (cols >= 0).nonzero().flatten()
        cols_o = cols[rows_o]

        def block(lo, hi):
            z = torch.mm(fd, Wd[lo:hi].t())
            if colf is not None:
                z.mul_(colf[lo:hi])
            if bd is not None:
                z.add_(bd[lo:hi])
            return z

        step = n if (chunk_size is None or chunk_size >= n) else int(chunk_size)
        keep_buffer = step >= n and others is None
        target_plain = torch.zeros(B, dtype=wk, device=dev)
        other_max = torch.full((B,), -math.inf, dtype=wk, device=dev)
        run_m = torch.full((B,), -math.inf, dtype=wk, device=dev)
        S = torch.zeros(B, dtype=wk, device=dev)
        buffer = None
        neg_inf = torch.tensor(-math.inf, dtype=dtype, device=dev)
        for lo in range(0, n, max(step, 1)):
            hi = min(n, lo + step)
            z = block(lo, hi)
            inb = (cols_o >= lo) & (cols_o < hi)
            r, c = rows_o[inb], cols_o[inb] - lo
            target_plain[r] = z[r, c].to(wk)
            if others is not None:
                z = others(z)
            t_here = z[r, c] if Tw is None else Tw[r].to(dtype)
            z[r, c] = neg_inf
            if hi > lo:
                other_max = torch.maximum(other_max, z.amax(dim=1).to(wk))
            z[r, c] = t_here
            new_m = torch.maximum(run_m, z.amax(dim=1).to(wk))
            S = S * torch.exp(run_m - new_m)
            m_d = new_m.to(dtype)
            z.sub_(m_d.unsqueeze(1)).exp_()
            S = S + z.sum(dim=1, dtype=wk) * torch.exp(m_d.to(wk) - new_m)
            run_m = new_m
            if keep_buffer:
                buffer = z
            del z
        local_m = run_m
        included = (cols >= 0).to(wk)  # whether T_i entered the log-sum-exp (on some rank)
        if _world(reducer) > 1:
            maxes = reducer.all_reduce(torch.cat([other_max, run_m]), "max", "all_reduce(MAX of logits)")
            other_max, M = maxes[:B], maxes[B:]
            scaled = torch.where(torch.isfinite(run_m), S * torch.exp(run_m - M), torch.zeros_like(S))
            sums = reducer.all_reduce(torch.cat([scaled, target_plain, included]), "sum",
                                     "all_reduce(SUM of exponentials and targets)")
            S, target_plain, included = sums[:B], sums[B:2 * B], sums[2 * B:]
        else:
            M = run_m
        lse = M + torch.log(S)
        if Tw is None:  # no margin: the target keeps its GEMM logit
            Tw = target_plain
        loss = (lse - Tw).mean()

        ctx.save_for_backward(f, weight, bias, T)
        ctx.has_T = T is not None
        ctx.meta = dict(dtype=dtype, wk=wk, fd=fd, Wd=Wd, colf=colf, rows_o=rows_o, cols_o=cols_o, Tw=Tw,
                        lse=lse, included=included, local_m=local_m, buffer=buffer, single=keep_buffer, step=max(step, 1), block=block, others=others,
                        link=link, weight_norm=weight_norm, device_type=dev.type)
        target_margin = Tw.clone()
        ctx.mark_non_differentiable(target_plain, target_margin, other_max)
        return loss, target_plain, target_margin, other_max

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss, _g1=None, _g2=None, _g3=None):
        with torch.autocast(ctx.meta["device_type"], enabled=False):
            return BlockSoftmaxCE._backward(ctx, grad_loss)

    @staticmethod
    def _backward(ctx, grad_loss):
        f, weight, bias, T = ctx.saved_tensors
        m = ctx.meta
        dtype, wk, fd, Wd, colf = m["dtype"], m["wk"], m["fd"], m["Wd"], m["colf"]
        rows_o, cols_o, lse, others = m["rows_o"], m["cols_o"], m["lse"], m["others"]
        need_f, need_w, need_b, need_T = ctx.needs_input_grad[:4]
        need_T = need_T and ctx.has_T
        need_b = need_b and bias is not None
        B, n = fd.shape[0], Wd.shape[0]
        coef = grad_loss.detach().to(wk) / B  # ∂(mean)/∂(per-sample loss)
        gT = coef * (m["included"] * torch.exp(m["Tw"] - lse) - 1.0) if ctx.has_T else None

        gW = torch.empty_like(Wd) if need_w else None
        gb = torch.zeros(n, dtype=wk, device=fd.device) if need_b else None
        gf = None
        buffer = m["buffer"]
        m["buffer"] = None  # a second backward (retain_graph) recomputes instead
        for lo in range(0, n, m["step"]):
            hi = min(n, lo + m["step"])
            inb = (cols_o >= lo) & (cols_o < hi)
            r, c = rows_o[inb], cols_o[inb] - lo
            if m["single"]:
                if buffer is None:  # a second backward: rebuild exactly what forward kept
                    buffer = m["block"](lo, hi)
                    buffer[r, c] = m["Tw"][r].to(dtype)
                    buffer.sub_(m["local_m"].to(dtype).unsqueeze(1)).exp_()
                G = buffer  # exp(z − local max), in place: p = G·exp(local max − lse)
                G.mul_((coef * torch.exp(m["local_m"] - lse)).to(dtype).unsqueeze(1))
                buffer = None
            else:
                z = m["block"](lo, hi)
                z_pre = z if others is None else None
                if others is not None:
                    z_pre = z.clone()
                    z = others(z)
                z[r, c] = m["Tw"][r].to(dtype)
                if dtype == wk:
                    G = z.sub_(lse.unsqueeze(1)).exp_().mul_(coef)
                else:
                    G = z.copy_(torch.exp(z.to(wk) - lse.unsqueeze(1)) * coef)
            if ctx.has_T:
                G[r, c] = 0  # the target entries reach the inputs through T
            else:
                G[r, c] -= coef.to(dtype)  # p − 1 at the target
            if others is not None:
                with torch.enable_grad():
                    zp = z_pre.detach().requires_grad_(True)
                    (G,) = torch.autograd.grad(others(zp), zp, G)
            if need_b:
                gb[lo:hi] = G.sum(dim=0, dtype=wk)
            if colf is not None:
                G.mul_(colf[lo:hi])
            if need_f:
                part = torch.mm(G, Wd[lo:hi])
                gf = part if gf is None else gf.add_(part)
            if need_w:
                q = gW[lo:hi]
                torch.mm(G.t(), fd, out=q)
                if m["weight_norm"]:
                    Wb = Wd[lo:hi]
                    dots = torch.bmm(q.unsqueeze(1), Wb.unsqueeze(2)).view(-1).to(wk)
                    a = colf[lo:hi].to(wk)
                    wn = 1.0 / a
                    # d(W/‖W‖): remove the radial part (F.normalize's clamp: none where ‖W_j‖ ≤ eps)
                    proj = dots * a * a * (wn > NORM_EPS)
                    q.addcmul_(Wb, proj.to(dtype).unsqueeze(1), value=-1.0)
            del G
        grad_f = grad_w = grad_b = grad_T = None
        if need_f:
            grad_f = (gf if gf is not None else torch.zeros_like(fd)).to(f.dtype)
        if need_w:
            grad_w = gW.to(weight.dtype)
            if m["link"] is not None:
                m["link"]["grad_weight"] = grad_w
        if need_b:
            grad_b = gb.to(bias.dtype)
        if need_T:
            grad_T = gT.to(T.dtype)
        return grad_f, grad_w, grad_b, grad_T, None, None, None, None, None, None, None


class FusedEngine(Engine):
    """The memory-lean engine (:class:`BlockSoftmaxCE`); options: ``chunk_size``."""

    name = "fused"
    supports_group = True

    def target_rows(self, weight: Tensor, idx: Tensor):
        if not weight.requires_grad:
            return weight[idx], None
        link = {}
        return _TargetRows.apply(weight, idx, link), link

    def __call__(self, f, weight, bias, T, cols, *, weight_norm, link=None, others=None, reducer=None,
                 chunk_size: Optional[int] = None, **options):
        if options:
            raise ValueError(f"fused engine: unknown option(s) {', '.join(sorted(options))}; known: chunk_size")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"fused engine: chunk_size must be a positive integer or None, got {chunk_size!r}")
        if f.shape[0] == 0:
            raise ValueError("fused engine: empty batch (0 embeddings); at least one sample is needed")
        loss, target_plain, target_margin, other_max = BlockSoftmaxCE.apply(
            f, weight, bias, T, cols.to(torch.long), bool(weight_norm), chunk_size, reducer, others, link,
            _autocast_dtype(f.device.type))
        return loss, MarginStats(target_plain, target_margin, other_max)


ENGINES.register("plain")(PlainEngine())
ENGINES.register("fused")(FusedEngine())
