"""The fused margin cross-entropy: every margin head at nearly the cost of the bare GEMM path.

The plain path of :mod:`.margin` builds the logits the way one writes them in PyTorch: a
normalised copy of ``W``, a normalised copy of ``x``, several ``(B, C)`` intermediates, and the
cross-entropy on top. This module computes the same loss and the same gradients as one
:class:`torch.autograd.Function`, :class:`FusedMarginCrossEntropy`:

* **No copy of W.** The logits are ``P = x_s @ W.T`` with the feature factor folded into the
  small ``(B, D)`` operand (``x_s = (s/‖x‖)·x`` for ``feature="scale"``, ``x`` for ``"norm"``), and
  the weight normalisation applied as a per-column factor ``a_j = 1/‖W_j‖`` in place on the
  ``(B, C)`` buffer: ``z_ij = a_j·P_ij + b_j``.
* **The margin touches only B numbers.** The target logit ``T_i = R_i·K_i·φ(cos θ_i) + b_{y_i}``
  (``R = s`` or ``‖x‖``, ``K = 1`` or ``‖W_y‖``) is computed from ``x`` and the ``B`` target rows of
  ``W`` in at least float32 and written over ``z_{i,y_i}``. ``φ`` is the spec's own margin object
  (any :class:`AdditiveMargin` / :class:`MultiplicativeMargin`); its derivative ``dφ/dc`` is taken
  with autograd on those ``B`` numbers, so no margin formula is duplicated here.
* **One (B, C) buffer.** The buffer is turned into ``exp(z − max)`` in place for a stable
  log-sum-exp, kept for backward, and turned into the softmax gradient ``(p − onehot)/B`` in place
  there. ``grad_x`` and ``grad_W`` are two GEMMs of that buffer, with the chain rule through the
  normalisations applied on ``(B, D)`` and ``(C, D)`` results:

  - ``u = G·diag(a)·W`` is ``∂L/∂x_s``; for ``"scale"`` features
    ``∂L/∂x_i = (s/‖x_i‖)(u_i − (u_i·x̂_i) x̂_i)`` and ``∂L/∂s = Σ_i u_i·x̂_i``; for ``"norm"``
    features ``∂L/∂x = u``.
  - ``q = diag(a)·Gᵀ·x_s``; with normalised weights ``∂L/∂W_j = q_j − (q_j·ŵ_j) ŵ_j``
    (i.e. ``(1/‖W_j‖)(v_j − (v_j·ŵ_j)ŵ_j)`` with ``v = Gᵀ x_s``), otherwise ``q`` itself.
  - the target entries, when a margin is active, contribute only through ``T``:
    ``∂L/∂T_i = (p_{i,y_i} − 1)/B`` reaches ``x_i``, ``W_{y_i}``, ``s`` and ``b_{y_i}`` through
    ``∂c/∂x_i = (ŵ − c x̂)/‖x_i‖``, ``∂c/∂W_y = (x̂ − c ŵ)/‖W_y‖``, ``∂‖x‖/∂x = x̂``,
    ``∂‖W_y‖/∂W_y = ŵ_y``.
* **Chunking** (``chunk_size``): classes are processed in blocks with an online log-sum-exp and
  the block logits are recomputed in backward, so that no ``(B, C)`` buffer is ever held — peak
  memory is ``W``, its gradient and a ``(B, chunk)`` block.

The path is registered as ``BACKENDS["fused"]``: every head takes ``backend="fused"`` and
``backend_options={"chunk_size": ...}`` without any preset changing. Backward is
once-differentiable (no double backward). Running backward twice over the same graph
(``retain_graph=True``) is supported: the second pass recomputes the logits.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch.autograd.function import once_differentiable

from .margin import BACKENDS, MarginSpec, MarginStats

Tensor = torch.Tensor

__all__ = ["FusedMarginCrossEntropy", "fused_margin_cross_entropy"]

# F.normalize's eps: x̂ = x / max(‖x‖, eps)
_NORM_EPS = 1e-12


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least float32: the B target entries and the reductions are computed in this."""
    return torch.promote_types(dtype, torch.float32)


def _phi_and_derivative(margin, c: Tensor, lambda_):
    """``φ(c)`` and ``dφ/dc`` for the B target cosines, via autograd on those B numbers only."""
    with torch.enable_grad():
        cc = c.detach().requires_grad_(True)
        phi = margin(cc, lambda_)
        if phi.requires_grad:
            (dphi,) = torch.autograd.grad(phi, cc, torch.ones_like(phi), allow_unused=True)
        else:
            dphi = None
    if dphi is None:
        dphi = torch.zeros_like(c)
    return phi.detach(), dphi


def _autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The autocast dtype active for ``device_type`` (None when autocast is off)."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return None
    except TypeError:  # torch < 2.4: per-device functions
        if device_type == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        if device_type == "cuda":
            return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
        return None


def _safe_unit(v: Tensor, norm: Tensor) -> Tensor:
    """``v/‖v‖`` rows, zero where ``‖v‖ = 0`` (the gradient torch gives ``‖v‖`` at 0)."""
    return v / torch.where(norm > 0, norm, torch.ones_like(norm)).unsqueeze(1)


class FusedMarginCrossEntropy(torch.autograd.Function):
    """Mean margin cross-entropy for any :class:`MarginSpec`, without copying ``W``.

    ``apply(x, weight, bias, scale, y, spec, lambda_, chunk_size, compute_dtype=None)`` returns
    ``(loss, target_plain, target_margin, other_max)``; only ``loss`` is differentiable (with
    respect to ``x``, ``weight``, ``bias`` and the tensor ``scale``). ``bias`` may be None;
    ``scale`` is a 0-d tensor for ``feature="scale"`` specs and None for ``"norm"``.
    ``compute_dtype`` overrides the dtype of the GEMMs and of the logits buffer (autocast);
    by default it is the promoted dtype of ``x`` and ``weight``. Autocast is switched off inside.
    Prefer :func:`fused_margin_cross_entropy`, which validates the arguments.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, scale, y, spec: MarginSpec, lambda_, chunk_size, compute_dtype=None):
        with torch.autocast(x.device.type, enabled=False):
            return FusedMarginCrossEntropy._forward(ctx, x, weight, bias, scale, y, spec, lambda_, chunk_size,
                                                    compute_dtype)

    @staticmethod
    def _forward(ctx, x, weight, bias, scale, y, spec, lambda_, chunk_size, compute_dtype):
        dtype = compute_dtype or torch.promote_types(x.dtype, weight.dtype)
        wk = _work_dtype(dtype)
        B, C = x.shape[0], weight.shape[0]
        xd = x.to(dtype)
        Wd = weight.to(dtype)
        bd = None if bias is None else bias.to(dtype)
        rows = torch.arange(B, device=x.device)

        # per-row feature factor, folded into the small (B, D) operand
        xw = xd.to(wk)
        n = torch.linalg.vector_norm(xw, dim=1)
        nc = n.clamp_min(_NORM_EPS)
        xh = xw / nc.unsqueeze(1)
        if spec.feature == "scale":
            s = scale.detach().to(device=x.device, dtype=wk)
            x_s = (xh * s).to(dtype)
        else:
            s = None
            x_s = xd
        # per-column weight factor a_j = 1/max(‖W_j‖, eps) (applied in place, never a copy of W)
        if spec.weight_norm:
            wnorm = torch.linalg.vector_norm(Wd, dim=1, dtype=wk)
            colf = (1.0 / wnorm.clamp_min(_NORM_EPS)).to(dtype)
        else:
            wnorm, colf = None, None

        # the B target logits with the margin (at least float32)
        active = spec.margin.active
        tgt = None
        if active:
            Wy = Wd[y].to(wk)
            my = torch.linalg.vector_norm(Wy, dim=1)
            wh = Wy / my.clamp_min(_NORM_EPS).unsqueeze(1)
            c_raw = (xh * wh).sum(dim=1)
            c = c_raw.clamp(-1.0, 1.0)
            phi, dphi = _phi_and_derivative(spec.margin, c, lambda_)
            R = n if spec.feature == "norm" else s
            K = my if not spec.weight_norm else torch.ones_like(my)
            T = R * K * phi
            if bd is not None:
                T = T + bd[y].to(wk)
            T_used = T.to(dtype)
            tgt = dict(Wy=Wy, my=my, wh=wh, c_raw=c_raw, phi=phi, dphi=dphi, R=R, K=K)

        def block(lo, hi):
            z = torch.mm(x_s, Wd[lo:hi].t())
            if colf is not None:
                z.mul_(colf[lo:hi])
            if bd is not None:
                z.add_(bd[lo:hi])
            return z

        neg_inf = torch.tensor(-math.inf, dtype=dtype, device=x.device)
        unchunked = chunk_size is None or chunk_size >= C
        if unchunked:
            z = block(0, C)
            target_plain = z[rows, y]
            z[rows, y] = neg_inf
            other_max = z.amax(dim=1) if C > 1 else torch.full((B,), -math.inf, dtype=dtype, device=x.device)
            if not active:
                T_used = target_plain.clone()
            z[rows, y] = T_used
            m = torch.maximum(other_max, T_used)
            z.sub_(m.unsqueeze(1)).exp_()
            S = z.sum(dim=1, dtype=wk)
            lse = m.to(wk) + torch.log(S)
            buffer = z
        else:
            target_plain = torch.empty(B, dtype=dtype, device=x.device)
            other_max = torch.full((B,), -math.inf, dtype=dtype, device=x.device)
            run_m = torch.full((B,), -math.inf, dtype=wk, device=x.device)
            S = torch.zeros(B, dtype=wk, device=x.device)
            for lo in range(0, C, chunk_size):
                hi = min(C, lo + chunk_size)
                z = block(lo, hi)
                sel = ((y >= lo) & (y < hi)).nonzero().squeeze(1)
                cols = y[sel] - lo
                target_plain[sel] = z[sel, cols]
                z[sel, cols] = neg_inf
                other_max = torch.maximum(other_max, z.amax(dim=1))
                t_here = T_used[sel] if active else target_plain[sel]
                z[sel, cols] = t_here
                # block max: the non-target max, raised by the target where it lies in this block
                bmax = z.amax(dim=1).to(wk)
                new_m = torch.maximum(run_m, bmax)
                S = S * torch.exp(run_m - new_m)
                z.sub_(new_m.to(dtype).unsqueeze(1)).exp_()
                S = S + z.sum(dim=1, dtype=wk) * torch.exp(new_m.to(dtype).to(wk) - new_m)
                run_m = new_m
                del z
            if not active:
                T_used = target_plain.clone()
            lse = run_m + torch.log(S)
            buffer = None

        loss = (lse - T_used.to(wk)).mean()

        ctx.save_for_backward(x, weight, bias, scale)
        ctx.spec, ctx.chunk_size, ctx.dtype, ctx.wk = spec, chunk_size, dtype, wk
        ctx.y, ctx.Wd, ctx.bd, ctx.x_s, ctx.colf = y, Wd, bd, x_s, colf
        ctx.n, ctx.nc, ctx.xh, ctx.s = n, nc, xh, s
        ctx.wnorm = wnorm
        ctx.T_used, ctx.lse, ctx.S, ctx.tgt, ctx.active = T_used, lse, S, tgt, active
        ctx.buffer = buffer
        ctx.block = block
        ctx.device_type = x.device.type
        target_margin = T_used.clone()
        ctx.mark_non_differentiable(target_plain, target_margin, other_max)
        return loss, target_plain, target_margin, other_max

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss, _g1=None, _g2=None, _g3=None):
        with torch.autocast(ctx.device_type, enabled=False):
            return FusedMarginCrossEntropy._backward(ctx, grad_loss)

    @staticmethod
    def _backward(ctx, grad_loss):
        x, weight, bias, scale = ctx.saved_tensors
        spec, dtype, wk = ctx.spec, ctx.dtype, ctx.wk
        y, Wd, x_s, colf = ctx.y, ctx.Wd, ctx.x_s, ctx.colf
        need_x, need_w, need_b, need_s = ctx.needs_input_grad[:4]
        need_b = need_b and bias is not None
        need_s = need_s and scale is not None and spec.feature == "scale"
        need_u = need_x or need_s
        B, C = x.shape[0], Wd.shape[0]
        rows = torch.arange(B, device=x.device)
        coef = grad_loss.detach().to(wk) / B  # ∂(mean)/∂(per-sample loss)
        # softmax probability of the logit actually used at the target, and ∂L/∂T
        p_t = torch.exp(ctx.T_used.to(wk) - ctx.lse)
        g_t = coef * (p_t - 1.0)

        gW = torch.empty_like(Wd) if need_w else None
        gb = torch.zeros(C, dtype=wk, device=x.device) if need_b else None
        u = None

        def consume(G, lo, hi, sel, cols):
            """G holds coef·p for the block: finish it and accumulate the GEMMs."""
            nonlocal u
            # the GEMM logit at the target: replaced by T when a margin is active, else p − 1
            G[sel, cols] = 0 if ctx.active else g_t[sel].to(dtype)
            if need_b:
                gb[lo:hi] = G.sum(dim=0, dtype=wk)
            if colf is not None:
                G.mul_(colf[lo:hi])
            if need_u:
                part = torch.mm(G, Wd[lo:hi])
                u = part if u is None else u.add_(part)
            if need_w:
                q = gW[lo:hi]
                torch.mm(G.t(), x_s, out=q)
                if spec.weight_norm:
                    Wb = Wd[lo:hi]
                    dots = torch.bmm(q.unsqueeze(1), Wb.unsqueeze(2)).view(-1).to(wk)
                    a = colf[lo:hi].to(wk)
                    # F.normalize's clamp: no projection where ‖W_j‖ ≤ eps
                    proj = dots * a * a * (ctx.wnorm[lo:hi] > _NORM_EPS)
                    q.addcmul_(Wb, proj.to(dtype).unsqueeze(1), value=-1.0)

        if ctx.buffer is not None:
            # the (B, C) buffer holds exp(z − m); p = buffer/S. Reused in place.
            G = ctx.buffer
            ctx.buffer = None  # a second backward (retain_graph) recomputes instead
            G.mul_((coef / ctx.S).to(dtype).unsqueeze(1))
            consume(G, 0, C, rows, y)
            del G
        else:
            step = C if ctx.chunk_size is None else ctx.chunk_size
            lse_d = ctx.lse
            for lo in range(0, C, step):
                hi = min(C, lo + step)
                z = ctx.block(lo, hi)
                sel = ((y >= lo) & (y < hi)).nonzero().squeeze(1)
                cols = y[sel] - lo
                z[sel, cols] = ctx.T_used[sel]
                if dtype == wk:
                    z.sub_(lse_d.unsqueeze(1)).exp_().mul_(coef)
                else:
                    z.copy_(torch.exp(z.to(wk) - lse_d.unsqueeze(1)) * coef)
                consume(z, lo, hi, sel, cols)
                del z

        grad_x = grad_w = grad_b = grad_s = None
        xh, nc, n = ctx.xh, ctx.nc, ctx.n
        if need_u:
            uw = u.to(wk)
            if spec.feature == "scale":
                ux = (uw * xh).sum(dim=1)
                if need_s:
                    grad_s = ux.sum()
                if need_x:
                    proj = ux * (n > _NORM_EPS)
                    grad_x = (ctx.s / nc).unsqueeze(1) * (uw - proj.unsqueeze(1) * xh)
            elif need_x:
                grad_x = uw
        if ctx.active:
            t = ctx.tgt
            gc = g_t * t["R"] * t["K"] * t["dphi"] * ((t["c_raw"] >= -1.0) & (t["c_raw"] <= 1.0))
            if need_x:
                dc_dx = (t["wh"] - ((t["c_raw"] * (n > _NORM_EPS)).unsqueeze(1) * xh)) / nc.unsqueeze(1)
                grad_x = grad_x + gc.unsqueeze(1) * dc_dx
                if spec.feature == "norm":
                    grad_x = grad_x + (g_t * t["K"] * t["phi"]).unsqueeze(1) * _safe_unit(x.to(wk), n)
            if need_w:
                my = t["my"]
                dc_dw = (xh - ((t["c_raw"] * (my > _NORM_EPS)).unsqueeze(1) * t["wh"])) / my.clamp_min(_NORM_EPS).unsqueeze(1)
                g_wy = gc.unsqueeze(1) * dc_dw
                if not spec.weight_norm:
                    g_wy = g_wy + (g_t * t["R"] * t["phi"]).unsqueeze(1) * _safe_unit(t["Wy"], my)
                gW.index_add_(0, y, g_wy.to(dtype))
            if need_s:
                grad_s = grad_s + (g_t * t["K"] * t["phi"]).sum()
            if need_b:
                gb.index_add_(0, y, g_t)
        if need_x:
            grad_x = grad_x.to(x.dtype)
        if need_w:
            grad_w = gW.to(weight.dtype)
        if need_b:
            grad_b = gb.to(bias.dtype)
        if need_s:
            grad_s = grad_s.to(scale.dtype).reshape(scale.shape)
        return grad_x, grad_w, grad_b, grad_s, None, None, None, None, None


def fused_margin_cross_entropy(
    x: Tensor,
    weight: Tensor,
    y: Tensor,
    spec: MarginSpec,
    scale=1.0,
    lambda_: Optional[float] = None,
    bias: Optional[Tensor] = None,
    chunk_size: Optional[int] = None,
    **options,
):
    """Mean margin cross-entropy and its :class:`MarginStats`, computed by the fused path.

    Same arguments and results as the plain backend of :func:`margin_cross_entropy` (the loss
    is returned in float32, or float64 for float64 inputs); ``chunk_size`` processes the classes
    in blocks of that many with an online log-sum-exp so that no ``(B, C)`` buffer is held.
    Under ``torch.autocast`` the GEMMs and the logits buffer use the autocast dtype (as
    ``F.linear`` would in the plain path); the margin and the log-sum-exp stay in float32.
    """
    if options:
        raise ValueError(f"fused backend: unknown option(s) {', '.join(sorted(options))}; known: chunk_size")
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"fused backend: embeddings must be a (B, D) tensor, got {getattr(x, 'shape', type(x))}")
    if not isinstance(weight, Tensor) or weight.dim() != 2 or weight.shape[1] != x.shape[1]:
        raise ValueError(
            f"fused backend: weight must have shape (C, {x.shape[1]}), got {tuple(getattr(weight, 'shape', ()))}"
        )
    if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"fused backend: labels must have shape ({x.shape[0]},), got {tuple(getattr(y, 'shape', ()))}")
    if x.shape[0] == 0:
        raise ValueError("fused backend: empty batch (0 embeddings); at least one sample is needed")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"fused backend: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"fused backend: chunk_size must be a positive integer or None, got {chunk_size!r}")
    y = y.to(device=x.device, dtype=torch.long)
    if spec.feature == "scale":
        if isinstance(scale, Tensor):
            scale_t = scale if scale.dim() == 0 else scale.reshape(())
        else:
            scale_t = torch.tensor(float(scale), dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
    else:
        scale_t = None
    compute_dtype = _autocast_dtype(x.device.type)
    loss, target_plain, target_margin, other_max = FusedMarginCrossEntropy.apply(
        x, weight, bias, scale_t, y, spec, lambda_, chunk_size, compute_dtype
    )
    return loss, MarginStats(target_plain, target_margin, other_max)


def _fused_backend(x, weight, y, spec, scale, lambda_, bias, **options):
    return fused_margin_cross_entropy(x, weight, y, spec, scale, lambda_, bias, **options)


BACKENDS["fused"] = _fused_backend
