"""The block computation behind the ``fused`` engine: logits of class blocks, their chain rule, and
the two autograd functions (softmax cross-entropy and one-vs-rest sums) built on them.

No normalised copy of ``W`` is made (the weight norm is a per-column factor applied in place on
the ``(B, n)`` block); unchunked, one ``(B, C)`` buffer is turned into ``exp(z − max)`` (or
``d neg/dz``) in place and reused in backward, ``grad_f`` and ``grad_W`` are two GEMMs of it: the
three GEMMs of a plain linear layer, whatever the head. A margin's non-target transform is applied
column slice by column slice, its derivative taken on the same slice and multiplied into the
buffer, so it never needs the plain logits again; sub-center heads (``K`` rows per class) compute
each slice as ``K`` GEMMs against strided views of the weight and pool them while in cache.
``chunk_size`` processes classes in blocks with an online log-sum-exp and recomputes the blocks in
backward, so no ``(B, C)`` buffer is ever held. With communication hooks (a sharded store) the
row maxima are all-reduced with MAX and the sums of exponentials with SUM.
"""
from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from ..core import NORM_EPS, work_dtype
from .base import world_of

#: elements of one column slice of a block: elementwise work (a margin's transform of the
#: non-target logits and its gradient, a sigmoid head's per-column loss) runs slice by slice, so
#: its temporaries stay small next to the block itself
_SLICE_ELEMS = 1 << 18


def _slices(rows: int, cols: int):
    width = max(1, _SLICE_ELEMS // max(rows, 1))
    for a in range(0, cols, width):
        yield a, min(cols, a + width)


class _Blocks:
    """The logits of class blocks ``[lo, hi)`` and the chain rule back through them.

    ``z = pool_K(k_j·(f·W_j)) → others → + b_j``: the GEMM against the raw rows, the per-row
    factor ``k = 1/‖W_row‖`` applied in place, max-pooling over the ``K`` rows of each class
    (sub-center heads; the arg-max is kept for backward), the margin's non-target transform and
    the bias. The transform runs slice by slice (:meth:`transform_`), and where a gradient block is
    being built its elementwise derivative is taken on the same slice, while the plain logits are
    at hand, and multiplied in: the transform never costs a second GEMM.
    """

    def __init__(self, f, weight, bias, weight_norm, K, others, dtype):
        self.dtype, self.wk = dtype, work_dtype(dtype)
        self.fd = f.detach().to(dtype)
        self.Wd = weight.detach().to(dtype)
        self.bd = None if bias is None else bias.detach().to(dtype)
        self.K, self.others, self.weight_norm = int(K), others, bool(weight_norm)
        self.rowf = None
        if weight_norm:
            self.rowf = (1.0 / torch.linalg.vector_norm(self.Wd, dim=1, dtype=self.wk).clamp_min(NORM_EPS)).to(dtype)
        self.n = self.Wd.shape[0] // self.K
        if self.K > 1:  # sub-center k of every class: a strided (n, D) view, and its row factors
            self.Wk = self.Wd.view(self.n, self.K, -1)
            self.rowfk = None if self.rowf is None else self.rowf.view(self.n, self.K).t().contiguous()

    def plain(self, lo, hi):
        """``(z_pre, arg)``: pooled ``k_j·(f·W_j)`` before the transform and bias (arg: the
        arg-max sub-center of every class, uint8; None for one row per class)."""
        K = self.K
        if K > 1:
            return self._pooled(lo, hi)
        z = torch.mm(self.fd, self.Wd[lo:hi].t())
        if self.rowf is not None:
            z.mul_(self.rowf[lo:hi])
        return z, None

    def _pooled(self, lo, hi):
        """Sub-centers: column slice by column slice, the ``K`` rows of the slice's classes as
        ``K`` GEMMs against strided views of the weight (each product contiguous, so the pooling
        is elementwise maxima while the slice is in cache); the arg-max is the first best row."""
        K, B = self.K, self.fd.shape[0]
        z = torch.empty(B, hi - lo, dtype=self.dtype, device=self.fd.device)
        arg = torch.empty(B, hi - lo, dtype=torch.uint8 if K < 256 else torch.int16, device=z.device)
        for a, b in _slices(B * K, hi - lo):
            best = idx = None
            for k in range(K):
                zk = torch.mm(self.fd, self.Wk[lo + a:lo + b, k].t())
                if self.rowfk is not None:
                    zk.mul_(self.rowfk[k, lo + a:lo + b])
                if best is None:
                    best, idx = zk, torch.zeros(B, b - a, dtype=arg.dtype, device=z.device)
                else:  # the last strictly larger row wins: k·[z_k > best so far], its maximum
                    idx = torch.maximum(idx, (zk > best).to(arg.dtype) * k)
                    torch.maximum(best, zk, out=best)
            z[:, a:b] = best
            arg[:, a:b] = idx
        return z, arg

    def targets(self, z_pre, lo, hi, rows_o, cols_o, target_plain):
        """The rows ``r`` and block columns ``c`` of the targets in block ``[lo, hi)``; their plain
        logits (before any transform, bias included) go into ``target_plain``."""
        inb = (cols_o >= lo) & (cols_o < hi)
        r, c = rows_o[inb], cols_o[inb] - lo
        target_plain[r] = z_pre[r, c].to(self.wk)
        if self.bd is not None:
            target_plain[r] += self.bd[lo:hi][c].to(self.wk)
        return r, c

    def transform_(self, zs, col, grad: bool = False):
        """The final logits of a column slice ``zs`` (absolute first column ``col``), in place:
        the transform, then the bias. With ``grad``, returns the transform's elementwise derivative
        (None where it is 1 everywhere, or without a transform)."""
        d = None
        if self.others is not None:
            d = self.others.apply_(zs, grad)
        if self.bd is not None:
            zs.add_(self.bd[col:col + zs.shape[1]])
        return d

    def plain_other_max(self, zs, col, rr, cc):
        """Row maxima of the plain non-target logits of slice ``zs`` (before the transform, bias
        included; targets at ``(rr, cc)`` left out), ``zs`` unchanged."""
        per_column = self.bd is not None and self.bd.stride(0) != 0  # else none, or one shared scalar
        if per_column:
            work = zs + self.bd[col:col + zs.shape[1]]
        else:
            work, keep = zs, zs[rr, cc].clone()
        work[rr, cc] = -math.inf
        if work.shape[1]:
            m = work.amax(dim=1).to(self.wk)
        else:
            m = torch.full((zs.shape[0],), -math.inf, dtype=self.wk, device=zs.device)
        if not per_column:
            zs[rr, cc] = keep
            if self.bd is not None and self.bd.numel():
                m = m + self.bd[0].to(self.wk)
        return m

    def finish(self, z_pre, lo):
        """The final logits of a block starting at column ``lo``, computed in place from ``z_pre``."""
        if self.others is None:
            if self.bd is not None:
                z_pre.add_(self.bd[lo:lo + z_pre.shape[1]])
            return z_pre
        for a, b in _slices(z_pre.shape[0], z_pre.shape[1]):
            self.transform_(z_pre[:, a:b], lo + a)
        return z_pre

    def backprop(self, G, arg, lo, hi, grads, bias_done: bool = False):
        """Accumulate the gradients of ``sum(G ∘ z_pre)`` for a block into ``grads`` (f, W, and b
        unless ``bias_done``); ``G`` is the gradient at the pooled plain logits (the transform's
        derivative already in it) and is consumed."""
        if grads.get("b") is not None and not bias_done:
            grads["b"][lo:hi] = G.sum(dim=0, dtype=self.wk)
        if self.K > 1:
            self._backprop_pooled(G, arg, lo, hi, grads)
            return
        if self.rowf is not None:
            G = G.mul_(self.rowf[lo:hi])
        if grads.get("need_f"):
            part = torch.mm(G, self.Wd[lo:hi])
            grads["f"] = part if grads.get("f") is None else grads["f"].add_(part)
        if grads.get("W") is not None:
            torch.mm(G.t(), self.fd, out=grads["W"][lo:hi])
            self._radial_(grads["W"], lo, hi)

    def _backprop_pooled(self, G, arg, lo, hi, grads):
        """Sub-centers: the gradient of each class goes to its arg-max row; slice by slice, ``K``
        GEMMs each for the features and for the rows (strided views, as in :meth:`_pooled`)."""
        K, B = self.K, G.shape[0]
        gW = None if grads.get("W") is None else grads["W"].view(self.n, K, -1)
        for a, b in _slices(B * K, hi - lo):
            Gs, As = G[:, a:b], arg[:, a:b]
            for k in range(K):
                Gk = Gs * (As == k)
                if self.rowfk is not None:
                    Gk.mul_(self.rowfk[k, lo + a:lo + b])
                if grads.get("need_f"):
                    if grads.get("f") is None:
                        grads["f"] = torch.mm(Gk, self.Wk[lo + a:lo + b, k])
                    else:
                        grads["f"].addmm_(Gk, self.Wk[lo + a:lo + b, k])
                if gW is not None:
                    torch.mm(Gk.t(), self.fd, out=gW[lo + a:lo + b, k])
            if gW is not None:
                self._radial_(grads["W"], (lo + a) * K, (lo + b) * K)

    def _radial_(self, gW, r0, r1):
        """Rows ``[r0, r1)`` of the weight gradient through ``W/‖W‖``: remove the radial part
        (as F.normalize's clamp: none where ``‖W_j‖ ≤ eps``)."""
        if not self.weight_norm:
            return
        q, Wb = gW[r0:r1], self.Wd[r0:r1]
        dots = torch.bmm(q.unsqueeze(1), Wb.unsqueeze(2)).view(-1).to(self.wk)
        a = self.rowf[r0:r1].to(self.wk)
        proj = dots * a * a * ((1.0 / a) > NORM_EPS)
        q.addcmul_(Wb, proj.to(self.dtype).unsqueeze(1), value=-1.0)

    def neg_and_grad_(self, z, lo, neg, r, c, bias_grad=None):
        """Turn the plain logits ``z`` of the block at column ``lo`` into ``d neg/dz_pre`` in place
        (0 at the targets ``(r, c)``), slice by slice; returns ``(Σ neg over the non-targets, row
        maxima of the non-target logits)``. ``bias_grad`` (``(n,)``, optional) receives
        ``d Σneg/db`` of the block's columns."""
        B = z.shape[0]
        total = torch.zeros((), dtype=self.wk, device=z.device)
        row_max = torch.full((B,), -math.inf, dtype=self.wk, device=z.device)
        for a, b in _slices(B, z.shape[1]):
            zs = z[:, a:b]
            sel = (c >= a) & (c < b)
            rr, cc = r[sel], c[sel] - a
            # the statistics read the plain logits
            row_max = torch.maximum(row_max, self.plain_other_max(zs, lo + a, rr, cc))
            d = self.transform_(zs, lo + a, grad=True)
            vals, g = neg.value_and_grad(zs.to(self.wk))
            vals[rr, cc] = 0
            total = total + vals.sum()
            g[rr, cc] = 0
            if bias_grad is not None:
                bias_grad[lo + a:lo + b] = g.sum(dim=0)
            if d is not None:
                g.mul_(d.to(g.dtype))
            z[:, a:b] = g.to(z.dtype)
        return total, row_max


def _grad_buffers(ctx, blocks, bias, need_f, need_w, need_b):
    return {"need_f": need_f, "f": None,
            "W": torch.empty_like(blocks.Wd) if need_w else None,
            "b": torch.zeros(blocks.n, dtype=blocks.wk, device=blocks.Wd.device) if (need_b and bias is not None) else None}


def _finish_grads(grads, f, weight, bias, link):
    grad_f = grad_w = grad_b = None
    if grads["need_f"]:
        grad_f = (grads["f"] if grads["f"] is not None else torch.zeros_like(f)).to(f.dtype)
    if grads["W"] is not None:
        grad_w = grads["W"].to(weight.dtype)
        if link is not None:
            link["grad_weight"] = grad_w
    if grads["b"] is not None:
        grad_b = grads["b"].to(bias.dtype)
    return grad_f, grad_w, grad_b


class BlockSoftmaxCE(torch.autograd.Function):
    """Mean cross-entropy over class blocks (see the module docstring).

    ``apply(f, weight, bias, T, cols, weight_norm, chunk_size, comm, others, link, compute_dtype, K)``
    returns ``(loss, target_plain, target_margin, other_max)``; only ``loss`` is differentiable
    (in ``f``, ``weight``, ``bias`` and ``T``). ``compute_dtype`` is the dtype of the GEMMs and of
    the logits buffer (autocast); the log-sum-exp runs in at least float32. ``K`` rows per class
    are max-pooled (sub-center heads).
    """

    @staticmethod
    def forward(ctx, f, weight, bias, T, cols, weight_norm, chunk_size, comm, others, link, compute_dtype, K=1):
        with torch.autocast(f.device.type, enabled=False):
            return BlockSoftmaxCE._forward(ctx, f, weight, bias, T, cols, weight_norm, chunk_size, comm, others,
                                           link, compute_dtype, K)

    @staticmethod
    def _forward(ctx, f, weight, bias, T, cols, weight_norm, chunk_size, comm, others, link, compute_dtype, K):
        dtype = compute_dtype or torch.promote_types(f.dtype, weight.dtype)
        blocks = _Blocks(f, weight, bias, weight_norm, K, others, dtype)
        wk, n, B, dev = blocks.wk, blocks.n, f.shape[0], f.device
        Tw = None if T is None else T.detach().to(wk)
        rows_o = (cols >= 0).nonzero().flatten()
        cols_o = cols[rows_o]
        step = n if (chunk_size is None or chunk_size >= n) else int(chunk_size)
        # unchunked, the exponentials stay for backward; with a transform its derivative is folded
        # into them, which needs the target logits given and no bias gradient (that needs the
        # exponentials before the fold): otherwise backward recomputes the block
        keep_buffer = step >= n and (others is None or (T is not None and not (bias is not None
                                                                                and ctx.needs_input_grad[2])))
        state = _LogSumExp(B, wk, dev, dtype)
        buffer = None
        for lo in range(0, n, max(step, 1)):
            hi = min(n, lo + step)
            block = _exp_block(blocks, lo, hi, rows_o, cols_o, Tw, state, keep_buffer)
            if keep_buffer:
                buffer = block
            del block
        run_m, S, other_max, target_plain = state.run_m, state.S, state.other_max, state.target_plain
        local_m = run_m
        included = (cols >= 0).to(wk)  # whether T_i entered the log-sum-exp (on some rank)
        if world_of(comm) > 1:
            maxes = comm.all_reduce(torch.cat([other_max, run_m]), "max", "all_reduce(MAX of logits)")
            other_max, M = maxes[:B], maxes[B:]
            scaled = torch.where(torch.isfinite(run_m), S * torch.exp(run_m - M), torch.zeros_like(S))
            sums = comm.all_reduce(torch.cat([scaled, target_plain, included]), "sum",
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
        ctx.meta = dict(blocks=blocks, rows_o=rows_o, cols_o=cols_o, Tw=Tw, lse=lse, included=included,
                        local_m=local_m, buffer=buffer, single=keep_buffer, step=max(step, 1), link=link,
                        device_type=dev.type)
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
        blocks, rows_o, cols_o, lse = m["blocks"], m["rows_o"], m["cols_o"], m["lse"]
        dtype, wk, n = blocks.dtype, blocks.wk, blocks.n
        need_f, need_w, need_b, need_T = ctx.needs_input_grad[:4]
        need_T = need_T and ctx.has_T
        B = f.shape[0]
        coef = grad_loss.detach().to(wk) / B  # ∂(mean)/∂(per-sample loss)
        gT = coef * (m["included"] * torch.exp(m["Tw"] - lse) - 1.0) if ctx.has_T else None
        grads = _grad_buffers(ctx, blocks, bias, need_f, need_w, need_b)
        buffer = m["buffer"]
        m["buffer"] = None  # a second backward (retain_graph) recomputes instead
        Tw = m["Tw"]
        for lo in range(0, n, m["step"]):
            hi = min(n, lo + m["step"])
            inb = (cols_o >= lo) & (cols_o < hi)
            r, c = rows_o[inb], cols_o[inb] - lo
            bias_done = False
            if m["single"]:
                if buffer is None:  # a second backward: rebuild exactly what forward kept
                    state = _LogSumExp(B, wk, f.device, dtype)
                    buffer = _exp_block(blocks, lo, hi, rows_o, cols_o, m["Tw"] if ctx.has_T else None, state, True)
                G, arg, slice_m = buffer
                buffer = None
                # the buffer holds exp(z − m) (times the transform's derivative) for a running
                # maximum m: p = exp(z − m)·exp(m − lse)
                if slice_m is None:
                    G.mul_((coef * torch.exp(m["local_m"] - lse)).to(dtype).unsqueeze(1))
                else:
                    for (a, b), ms in zip(_slices(B, hi - lo), slice_m):
                        G[:, a:b].mul_((coef * torch.exp(ms - lse)).to(dtype).unsqueeze(1))
                _target_grad_(G, r, c, ctx.has_T, coef, dtype)
            else:
                G, arg = blocks.plain(lo, hi)
                if blocks.others is None:
                    _probabilities_(blocks.finish(G, lo), r, c, Tw, lse, coef, dtype, wk)
                    _target_grad_(G, r, c, ctx.has_T, coef, dtype)
                else:  # slice by slice, the transform's derivative taken on the plain logits
                    bias_done = True
                    for a, b in _slices(B, hi - lo):
                        Gs = G[:, a:b]
                        d = blocks.transform_(Gs, lo + a, grad=True)
                        sel = (c >= a) & (c < b)
                        rr, cc = r[sel], c[sel] - a
                        _probabilities_(Gs, rr, cc, Tw, lse, coef, dtype, wk)
                        _target_grad_(Gs, rr, cc, ctx.has_T, coef, dtype)
                        if grads["b"] is not None:
                            grads["b"][lo + a:lo + b] = Gs.sum(dim=0, dtype=wk)
                        if d is not None:
                            Gs.mul_(d)
            blocks.backprop(G, arg, lo, hi, grads, bias_done)
            del G
        grad_f, grad_w, grad_b = _finish_grads(grads, f, weight, bias, m["link"])
        grad_T = gT.to(T.dtype) if need_T else None
        return grad_f, grad_w, grad_b, grad_T, None, None, None, None, None, None, None, None


def _exp_block(blocks, lo, hi, rows_o, cols_o, Tw, state, fold):
    """Block ``[lo, hi)`` into the running log-sum-exp ``state``; returns ``(E, arg, slice_m)``
    with ``E = exp(z − m)`` (in place of the logits), ``m`` the running maxima after the block, or
    per column slice (``slice_m``) where a transform runs slice by slice, its derivative then
    multiplied into ``E`` with ``fold``."""
    z, arg = blocks.plain(lo, hi)
    r, c = blocks.targets(z, lo, hi, rows_o, cols_o, state.target_plain)
    if blocks.others is None:
        state.add(blocks.finish(z, lo), r, c, Tw)
        return z, arg, None
    slice_m = []
    for a, b in _slices(z.shape[0], hi - lo):
        zs = z[:, a:b]
        sel = (c >= a) & (c < b)
        rr, cc = r[sel], c[sel] - a
        plain_max = blocks.plain_other_max(zs, lo + a, rr, cc)
        d = blocks.transform_(zs, lo + a, grad=fold)
        slice_m.append(state.add(zs, rr, cc, Tw, plain_max))
        if d is not None:
            zs.mul_(d)
    return z, arg, slice_m


class _LogSumExp:
    """The running log-sum-exp of the rows of consecutive logit blocks, with the target logits
    (plain and replaced) and the row maxima of the non-targets."""

    def __init__(self, B, wk, dev, dtype):
        self.wk, self.dtype = wk, dtype
        self.target_plain = torch.zeros(B, dtype=wk, device=dev)
        self.other_max = torch.full((B,), -math.inf, dtype=wk, device=dev)
        self.run_m = torch.full((B,), -math.inf, dtype=wk, device=dev)
        self.S = torch.zeros(B, dtype=wk, device=dev)
        self.neg_inf = torch.tensor(-math.inf, dtype=dtype, device=dev)

    def add(self, z, r, c, Tw, plain_max=None):
        """Add block ``z`` (final logits; targets at ``(r, c)``, replaced by ``Tw`` where given);
        ``z`` becomes ``exp(z − m)`` in place for the new running maximum ``m``, returned.
        ``plain_max``: the row maxima of the block's plain non-target logits, where a transform
        made them differ from the final ones (the statistics read the plain logits)."""
        wk = self.wk
        t_here = z[r, c] if Tw is None else Tw[r].to(self.dtype)
        z[r, c] = self.neg_inf
        new_m = self.run_m
        if z.shape[1]:
            block_max = z.amax(dim=1).to(wk)  # of the non-targets; with the targets' logits below
            self.other_max = torch.maximum(self.other_max, block_max if plain_max is None else plain_max)
            new_m = torch.maximum(new_m, block_max)
        z[r, c] = t_here
        new_m = new_m.index_put((r,), torch.maximum(new_m[r], t_here.to(wk)))
        self.S = self.S * torch.exp(self.run_m - new_m)
        m_d = new_m.to(self.dtype)
        z.sub_(m_d.unsqueeze(1)).exp_()
        self.S = self.S + z.sum(dim=1, dtype=wk) * torch.exp(m_d.to(wk) - new_m)
        self.run_m = new_m
        return new_m


def _probabilities_(z, r, c, Tw, lse, coef, dtype, wk):
    """Final logits ``z`` → ``coef·softmax`` in place, the targets ``(r, c)`` taken as ``Tw``."""
    z[r, c] = Tw[r].to(dtype)
    if dtype == wk:
        z.sub_(lse.unsqueeze(1)).exp_().mul_(coef)
    else:
        z.copy_(torch.exp(z.to(wk) - lse.unsqueeze(1)) * coef)


def _target_grad_(G, r, c, has_T, coef, dtype):
    """The targets' entries of a softmax gradient block: 0 where the target logits were given
    (their gradient reaches the inputs through them), else ``p − 1``."""
    if has_T:
        G[r, c] = 0
    else:
        G[r, c] -= coef.to(dtype)


class BlockBinary(torch.autograd.Function):
    """Sum of ``neg(z_ij)`` over the non-target logits of class blocks (sigmoid heads).

    ``apply(f, weight, bias, cols, weight_norm, chunk_size, others, neg, link, compute_dtype, K)``
    returns ``(total, target_plain, other_max)`` for this process's classes; ``neg`` is an
    elementwise function, differentiated with autograd slice by slice (the transform's derivative
    and the bias gradient are taken on the same slices). Unchunked, the forward turns its one
    ``(B, C)`` block into ``d neg/dz`` in place and keeps it for backward (three GEMMs in all, as
    a plain linear layer); chunked, backward recomputes the blocks.
    """

    @staticmethod
    def forward(ctx, f, weight, bias, cols, weight_norm, chunk_size, others, neg, link, compute_dtype, K=1):
        with torch.autocast(f.device.type, enabled=False):
            dtype = compute_dtype or torch.promote_types(f.dtype, weight.dtype)
            blocks = _Blocks(f, weight, bias, weight_norm, K, others, dtype)
            wk, n, B, dev = blocks.wk, blocks.n, f.shape[0], f.device
            rows_o = (cols >= 0).nonzero().flatten()
            cols_o = cols[rows_o]
            step = max(1, n if (chunk_size is None or chunk_size >= n) else int(chunk_size))
            keep = step >= n
            target_plain = torch.zeros(B, dtype=wk, device=dev)
            other_max = torch.full((B,), -math.inf, dtype=wk, device=dev)
            total = torch.zeros((), dtype=wk, device=dev)
            # d Σneg/db does not depend on anything backward brings but a factor: taken here
            bias_grad = torch.zeros(n, dtype=wk, device=dev) if (bias is not None and ctx.needs_input_grad[2]) else None
            buffer = None
            for lo in range(0, n, step):
                hi = min(n, lo + step)
                z, arg = blocks.plain(lo, hi)
                r, c = blocks.targets(z, lo, hi, rows_o, cols_o, target_plain)
                part, row_max = blocks.neg_and_grad_(z, lo, neg, r, c, bias_grad)
                total = total + part
                other_max = torch.maximum(other_max, row_max)
                if keep:
                    buffer = (z, arg)
                del z
            ctx.save_for_backward(f, weight, bias)
            ctx.meta = dict(blocks=blocks, rows_o=rows_o, cols_o=cols_o, step=step, neg=neg, link=link,
                            buffer=buffer, bias_grad=bias_grad, device_type=dev.type)
            ctx.mark_non_differentiable(target_plain, other_max)
            return total, target_plain, other_max

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_total, _g1=None, _g2=None):
        with torch.autocast(ctx.meta["device_type"], enabled=False):
            f, weight, bias = ctx.saved_tensors
            m = ctx.meta
            blocks = m["blocks"]
            need_f, need_w, need_b = ctx.needs_input_grad[:3]
            grads = _grad_buffers(ctx, blocks, bias, need_f, need_w, need_b)
            if grads["b"] is not None:
                grads["b"] = m["bias_grad"] * grad_total.detach().to(blocks.wk)
            buffer = m["buffer"]
            m["buffer"] = None  # a second backward (retain_graph) recomputes instead
            scale = grad_total.detach().to(blocks.dtype)
            for lo in range(0, blocks.n, m["step"]):
                hi = min(blocks.n, lo + m["step"])
                if buffer is not None:
                    G, arg = buffer
                    buffer = None
                else:
                    inb = (m["cols_o"] >= lo) & (m["cols_o"] < hi)
                    r, c = m["rows_o"][inb], m["cols_o"][inb] - lo
                    G, arg = blocks.plain(lo, hi)
                    blocks.neg_and_grad_(G, lo, m["neg"], r, c)
                G.mul_(scale)
                blocks.backprop(G, arg, lo, hi, grads, bias_done=True)
                del G
            grad_f, grad_w, grad_b = _finish_grads(grads, f, weight, bias, m["link"])
            return grad_f, grad_w, grad_b, None, None, None, None, None, None, None, None
