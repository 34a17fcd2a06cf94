"""The block computation behind the ``fused`` engine: logits of class blocks, their chain rule, and
the two autograd functions (softmax cross-entropy and one-vs-rest sums) built on them.

No normalised copy of ``W`` is made (the weight norm is a per-column factor applied in place on
the ``(B, n)`` block); unchunked, one ``(B, C)`` buffer is turned into ``exp(z − max)`` (or
``d neg/dz``) in place and reused in backward, ``grad_f`` and ``grad_W`` are two GEMMs of it.
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
    (sub-center heads; the arg-max is kept for backward), the margin's non-target transform
    (applied in place, slice by slice, and differentiated with autograd on each slice in
    backward, where its input is recomputed) and the bias.
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

    def plain(self, lo, hi):
        """``(z_pre, arg)``: pooled ``k_j·(f·W_j)`` before the transform and bias (arg: the
        arg-max sub-center of every class, uint8; None for one row per class)."""
        K = self.K
        z = torch.mm(self.fd, self.Wd[lo * K:hi * K].t())
        if self.rowf is not None:
            z.mul_(self.rowf[lo * K:hi * K])
        if K == 1:
            return z, None
        z, arg = z.view(z.shape[0], hi - lo, K).max(dim=2)
        return z, arg.to(torch.uint8 if K < 256 else torch.int16)

    def logits_and_targets(self, lo, hi, rows_o, cols_o, target_plain):
        """The final logits of block ``[lo, hi)`` and the rows ``r``/columns ``c`` of the targets in
        it; their plain logits (before any transform, bias included) go into ``target_plain``."""
        z_pre, arg = self.plain(lo, hi)
        inb = (cols_o >= lo) & (cols_o < hi)
        r, c = rows_o[inb], cols_o[inb] - lo
        target_plain[r] = z_pre[r, c].to(self.wk)
        if self.bd is not None:
            target_plain[r] += self.bd[lo:hi][c].to(self.wk)
        return self.finish(z_pre, lo, hi), arg, r, c

    def finish(self, z_pre, lo, hi):
        """The final logits of a block, computed in place from ``z_pre``."""
        z = z_pre
        if self.others is not None:
            for a, b in _slices(z.shape[0], z.shape[1]):
                z[:, a:b] = self.others(z[:, a:b])
        if self.bd is not None:
            z.add_(self.bd[lo:hi])
        return z

    def backprop(self, G, arg, lo, hi, grads):
        """Accumulate the gradients of ``sum(G ∘ z)`` for a block into ``grads`` (f, W, b); ``G``
        is consumed."""
        K = self.K
        if grads.get("b") is not None:
            grads["b"][lo:hi] = G.sum(dim=0, dtype=self.wk)
        if self.others is not None:  # the transform's gradient, slice by slice on its recomputed input
            for a, b in _slices(G.shape[0], G.shape[1]):
                zp, _ = self.plain(lo + a, lo + b)
                with torch.enable_grad():
                    zp.requires_grad_(True)
                    (g,) = torch.autograd.grad(self.others(zp), zp, G[:, a:b])
                G[:, a:b] = g
        if K > 1:  # back to the arg-max sub-center of every class
            full = G.new_zeros(G.shape[0], hi - lo, K)
            full.scatter_(2, arg.long().unsqueeze(2), G.unsqueeze(2))
            G = full.view(G.shape[0], (hi - lo) * K)
        r0, r1 = lo * K, hi * K
        if self.rowf is not None:
            G = G.mul_(self.rowf[r0:r1])
        if grads.get("need_f"):
            part = torch.mm(G, self.Wd[r0:r1])
            grads["f"] = part if grads.get("f") is None else grads["f"].add_(part)
        if grads.get("W") is not None:
            q = grads["W"][r0:r1]
            torch.mm(G.t(), self.fd, out=q)
            if self.weight_norm:
                Wb = self.Wd[r0:r1]
                dots = torch.bmm(q.unsqueeze(1), Wb.unsqueeze(2)).view(-1).to(self.wk)
                a = self.rowf[r0:r1].to(self.wk)
                # d(W/‖W‖): remove the radial part (F.normalize's clamp: none where ‖W_j‖ ≤ eps)
                proj = dots * a * a * ((1.0 / a) > NORM_EPS)
                q.addcmul_(Wb, proj.to(self.dtype).unsqueeze(1), value=-1.0)

    def neg_and_grad_(self, z, neg, r, c):
        """Turn the final logits ``z`` of a block into ``d neg/dz`` in place (0 at the targets
        ``(r, c)``), slice by slice; returns ``(Σ neg over the non-targets, row maxima of the
        non-target logits)``."""
        B = z.shape[0]
        total = torch.zeros((), dtype=self.wk, device=z.device)
        row_max = torch.full((B,), -math.inf, dtype=self.wk, device=z.device)
        for a, b in _slices(B, z.shape[1]):
            sel = (c >= a) & (c < b)
            rr, cc = r[sel], c[sel] - a
            with torch.enable_grad():
                zz = z[:, a:b].to(self.wk, copy=True).requires_grad_(True)
                vals = neg(zz)
                (g,) = torch.autograd.grad(vals.sum(), zz)
            vals = vals.detach()
            vals[rr, cc] = 0
            total = total + vals.sum()
            zt = zz.detach()
            zt[rr, cc] = -math.inf
            row_max = torch.maximum(row_max, zt.amax(dim=1))
            g[rr, cc] = 0
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
        keep_buffer = step >= n
        target_plain = torch.zeros(B, dtype=wk, device=dev)
        other_max = torch.full((B,), -math.inf, dtype=wk, device=dev)
        run_m = torch.full((B,), -math.inf, dtype=wk, device=dev)
        S = torch.zeros(B, dtype=wk, device=dev)
        buffer = None
        neg_inf = torch.tensor(-math.inf, dtype=dtype, device=dev)
        for lo in range(0, n, max(step, 1)):
            hi = min(n, lo + step)
            z, arg, r, c = blocks.logits_and_targets(lo, hi, rows_o, cols_o, target_plain)
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
                buffer = (z, arg)
            del z
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
        for lo in range(0, n, m["step"]):
            hi = min(n, lo + m["step"])
            inb = (cols_o >= lo) & (cols_o < hi)
            r, c = rows_o[inb], cols_o[inb] - lo
            if m["single"]:
                if buffer is None:  # a second backward: rebuild exactly what forward kept
                    z_pre, arg = blocks.plain(lo, hi)
                    z = blocks.finish(z_pre, lo, hi)
                    z[r, c] = m["Tw"][r].to(dtype)
                    z.sub_(m["local_m"].to(dtype).unsqueeze(1)).exp_()
                    buffer = (z, arg)
                G, arg = buffer
                # exp(z − local max), in place: p = G·exp(local max − lse)
                G.mul_((coef * torch.exp(m["local_m"] - lse)).to(dtype).unsqueeze(1))
                buffer = None
            else:
                z_pre, arg = blocks.plain(lo, hi)
                z = blocks.finish(z_pre, lo, hi)
                z[r, c] = m["Tw"][r].to(dtype)
                if dtype == wk:
                    G = z.sub_(lse.unsqueeze(1)).exp_().mul_(coef)
                else:
                    G = z.copy_(torch.exp(z.to(wk) - lse.unsqueeze(1)) * coef)
            if ctx.has_T:
                G[r, c] = 0  # the target entries reach the inputs through T
            else:
                G[r, c] -= coef.to(dtype)  # p − 1 at the target
            blocks.backprop(G, arg, lo, hi, grads)
            del G
        grad_f, grad_w, grad_b = _finish_grads(grads, f, weight, bias, m["link"])
        grad_T = gT.to(T.dtype) if need_T else None
        return grad_f, grad_w, grad_b, grad_T, None, None, None, None, None, None, None, None


class BlockBinary(torch.autograd.Function):
    """Sum of ``neg(z_ij)`` over the non-target logits of class blocks (sigmoid heads).

    ``apply(f, weight, bias, cols, weight_norm, chunk_size, others, neg, link, compute_dtype, K)``
    returns ``(total, target_plain, other_max)`` for this process's classes; ``neg`` is an
    elementwise function, differentiated with autograd slice by slice. Unchunked, the forward
    turns its one ``(B, C)`` block into ``d neg/dz`` in place and keeps it for backward (three
    GEMMs in all, as a plain linear layer); chunked, backward recomputes the blocks.
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
            buffer = None
            for lo in range(0, n, step):
                hi = min(n, lo + step)
                z, arg, r, c = blocks.logits_and_targets(lo, hi, rows_o, cols_o, target_plain)
                part, row_max = blocks.neg_and_grad_(z, neg, r, c)
                total = total + part
                other_max = torch.maximum(other_max, row_max)
                if keep:
                    buffer = (z, arg)
                del z
            ctx.save_for_backward(f, weight, bias)
            ctx.meta = dict(blocks=blocks, rows_o=rows_o, cols_o=cols_o, step=step, neg=neg, link=link,
                            buffer=buffer, device_type=dev.type)
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
                    z_pre, arg = blocks.plain(lo, hi)
                    G = blocks.finish(z_pre, lo, hi)
                    blocks.neg_and_grad_(G, m["neg"], r, c)
                G.mul_(scale)
                blocks.backprop(G, arg, lo, hi, grads)
                del G
            grad_f, grad_w, grad_b = _finish_grads(grads, f, weight, bias, m["link"])
            return grad_f, grad_w, grad_b, None, None, None, None, None, None, None, None

