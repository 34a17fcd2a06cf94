"""Decision boundaries of the margin heads for two classes, computed with each head's own margin."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.colors import ListedColormap

from ... import losses
from ...losses import AdditiveMargin, MultiplicativeMargin
from .common import ArrayLike, PathLike, _to_numpy, new_figure, save_png

__all__ = ["head_margin", "decision_boundary", "plot_decision_boundaries"]


def head_margin(name: str, lambda_: float = 0.0, **hyper):
    """The target transform ``φ(cos θ)`` of a head, as a NumPy function of the cosine.

    The head is built by :func:`facemargin.losses.build` (``embedding_size=2, num_classes=2``)
    and its ``spec.margin`` is used as is, so the diagram shows exactly what the loss computes.
    Multiplicative margins (SphereFace, L-Softmax, ATL) take the blend ``lambda_`` (default 0:
    the pure ``ψ_m``). The feature scale (``s`` or ``‖x‖``) multiplies both sides of the
    two-class comparison and cancels; heads with unnormalised weights (softmax, L-Softmax) are
    drawn for equal weight norms and zero bias.

    Returns ``(phi, spec)`` with ``phi(c: ndarray) -> ndarray``.
    """
    head = losses.build(name, embedding_size=2, num_classes=2, **hyper)
    spec = getattr(head, "spec", None)
    if spec is None:
        raise ValueError(f"{name!r} is not a classification head with a margin; "
                         f"decision boundaries need one of the heads (e.g. softmax, sphereface, cosface, arcface, combined)")
    margin = spec.margin
    lam = float(lambda_) if isinstance(margin, MultiplicativeMargin) else None
    if lam is not None and lam < 0:
        raise ValueError(f"lambda_ must be >= 0, got {lambda_}")

    def phi(c):
        t = torch.as_tensor(np.asarray(c, dtype=np.float64))
        with torch.no_grad():
            return margin(t, lam).numpy()

    return phi, spec


def _boundary_from_phi(phi, theta2: np.ndarray, iters: int = 60) -> np.ndarray:
    # solve φ(cos θ1) = cos θ2 for θ1 in [0, π] by bisection (φ(cos θ) decreasing in θ)
    target = np.cos(theta2)
    lo = np.zeros_like(theta2)
    hi = np.full_like(theta2, np.pi)
    f_lo = phi(np.cos(lo)) - target
    f_hi = phi(np.cos(hi)) - target
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        f_mid = phi(np.cos(mid)) - target
        right = f_mid > 0  # class 1 still wins at mid: boundary lies further out
        lo = np.where(right, mid, lo)
        hi = np.where(right, hi, mid)
    out = 0.5 * (lo + hi)
    out = np.where(f_hi >= 0, np.pi, out)      # class 1 wins everywhere along θ1
    out = np.where(f_lo < 0, np.nan, out)      # class 1 never wins, not even at θ1 = 0
    return out


def decision_boundary(name: str, theta2: ArrayLike, lambda_: float = 0.0, **hyper) -> np.ndarray:
    """Class 1's decision boundary of a head for two classes: the ``θ1`` with ``φ(cos θ1) = cos θ2``.

    A sample of class 1 at angles ``θ1`` to ``ŵ1`` and ``θ2`` to ``ŵ2`` satisfies the margin
    (its margin logit beats the other class's plain logit) exactly when ``θ1`` is below the
    returned value. Examples: softmax ``θ1 = θ2``; ArcFace ``θ1 = θ2 − m``; CosFace
    ``θ1 = arccos(cos θ2 + m)``; SphereFace with ``λ = 0`` ``θ1 = θ2 / m``. Class 2's boundary is
    the mirror image (swap the axes).

    Args:
        name: head name of the registry (softmax, sphereface, cosface, arcface, combined, ...).
        theta2: angles to ``ŵ2`` in radians, within ``[0, π]``.
        lambda_: blend of multiplicative margins (see :func:`head_margin`); hyper: head options
            (e.g. ``m=0.4``).

    Returns:
        ``θ1`` in radians, same shape as ``theta2``; NaN where no ``θ1 ∈ [0, π]`` satisfies the
        margin (the target is too close to ``ŵ2``), ``π`` where every ``θ1`` does.
    """
    t2 = _to_numpy(theta2, "theta2").astype(np.float64)
    if not np.all(np.isfinite(t2)) or np.any(t2 < 0) or np.any(t2 > np.pi + 1e-12):
        raise ValueError("theta2 must hold angles in radians within [0, π]")
    phi, _ = head_margin(name, lambda_, **hyper)
    return _boundary_from_phi(phi, np.clip(t2, 0.0, np.pi))


_HEAD_TITLES = {"softmax": "Softmax", "sphereface": "SphereFace", "cosface": "CosFace", "arcface": "ArcFace",
                "combined": "Combined", "normface": "NormFace", "lsoftmax": "L-Softmax", "atl": "ATL",
                "l2softmax": "L2-Softmax", "asoftmax": "A-Softmax", "amsoftmax": "AM-Softmax"}


def _margin_label(name: str, spec, lambda_: float) -> str:
    m = spec.margin
    base = _HEAD_TITLES.get(name.lower(), name)
    if isinstance(m, MultiplicativeMargin):
        return f"{base} (m={m.m}, λ={lambda_:g})" if m.active else base
    if isinstance(m, AdditiveMargin) and m.active:
        parts = [f"m1={m.m1:g}"] if m.m1 != 1 else []
        parts += [f"m2={m.m2:g}"] if m.m2 else []
        parts += [f"m3={m.m3:g}"] if m.m3 else []
        if name.lower() in ("cosface", "amsoftmax") and m.m1 == 1 and not m.m2:
            parts = [f"m={m.m3:g}"]
        elif name.lower() == "arcface" and m.m1 == 1 and not m.m3:
            parts = [f"m={m.m2:g}"]
        return f"{base} ({', '.join(parts)})"
    return base


def plot_decision_boundaries(path: PathLike,
                             heads: Sequence[str] = ("softmax", "sphereface", "cosface", "arcface", "combined"),
                             angle_deg: float = 90.0, lambda_: float = 0.0, resolution: int = 361) -> Path:
    """Decision boundaries of margin heads for two classes, as in the ArcFace paper.

    Top row: the ``(θ1, θ2)`` plane. A class-1 sample satisfies its margin left of the dashed red
    line ``φ(cos θ1) = cos θ2``, a class-2 sample below the blue one ``φ(cos θ2) = cos θ1``;
    the grey band between them is the decision margin, where neither class satisfies it.
    Bottom row: the same on the unit circle of a 2-D embedding with ``ŵ1``, ``ŵ2`` ``angle_deg``
    apart; the arc coloured red (blue) is where a class-1 (class-2) feature satisfies its margin.
    Boundaries are computed with each head's own margin function (:func:`head_margin`).
    """
    heads = list(heads)
    if not heads:
        raise ValueError("plot_decision_boundaries needs at least one head name")
    if not 0.0 < float(angle_deg) < 180.0:
        raise ValueError(f"angle_deg must lie strictly between 0 and 180, got {angle_deg}")
    margins = [(h,) + head_margin(h, lambda_) for h in heads]
    k = len(heads)
    fig = new_figure(3.2 * k, 6.6)
    t = np.linspace(0.0, np.pi, int(resolution))
    deg = np.degrees(t)
    region_cmap = ListedColormap(["#d9d9d9", "#f4c7c3", "#c6dbef"])  # neither, class 1, class 2
    for i, (name, phi, spec) in enumerate(margins):
        # rows: θ2, columns: θ1; φ depends on one angle only, so evaluate it once per angle
        phi_t, cos_t = phi(np.cos(t)), np.cos(t)
        ok1 = phi_t[None, :] > cos_t[:, None]
        ok2 = phi_t[:, None] > cos_t[None, :]
        region = np.where(ok1, 1, np.where(ok2, 2, 0))
        ax = fig.add_subplot(2, k, i + 1)
        ax.pcolormesh(deg, deg, region, cmap=region_cmap, vmin=0, vmax=2, shading="auto", rasterized=True)
        b = _boundary_from_phi(phi, t)
        ax.plot(np.degrees(b), deg, ls="--", color="tab:red", lw=1.5, label="class 1 boundary")
        ax.plot(deg, np.degrees(b), ls="--", color="tab:blue", lw=1.5, label="class 2 boundary")
        ax.set_xlim(0, 180)
        ax.set_ylim(0, 180)
        ax.set_aspect("equal")
        ax.set_xticks([0, 45, 90, 135, 180])
        ax.set_yticks([0, 45, 90, 135, 180])
        ax.tick_params(labelsize=7)
        ax.set_xlabel("θ1 (deg)", fontsize=8)
        if i == 0:
            ax.set_ylabel("θ2 (deg)", fontsize=8)
            ax.legend(fontsize=6, loc="upper left")
        ax.set_title(_margin_label(name, spec, lambda_), fontsize=9)

        # unit circle, ŵ1 and ŵ2 angle_deg apart, symmetric about the vertical
        half = np.radians(angle_deg) / 2
        a1, a2 = np.pi / 2 + half, np.pi / 2 - half
        alpha = np.linspace(0, 2 * np.pi, 1441)
        c1, c2 = np.clip(np.cos(alpha - a1), -1, 1), np.clip(np.cos(alpha - a2), -1, 1)
        in1 = phi(c1) > c2
        in2 = phi(c2) > c1
        ax = fig.add_subplot(2, k, k + i + 1)
        cx, cy = np.cos(alpha), np.sin(alpha)
        ax.plot(cx, cy, color="0.75", lw=4, solid_capstyle="butt")
        ax.plot(np.where(in1, cx, np.nan), np.where(in1, cy, np.nan), color="tab:red", lw=4, solid_capstyle="butt")
        ax.plot(np.where(in2, cx, np.nan), np.where(in2, cy, np.nan), color="tab:blue", lw=4, solid_capstyle="butt")
        for a, col, lab in ((a1, "tab:red", "ŵ1"), (a2, "tab:blue", "ŵ2")):
            ax.annotate("", xy=(0.8 * np.cos(a), 0.8 * np.sin(a)), xytext=(0, 0),
                        arrowprops=dict(arrowstyle="->", color=col, lw=1.5))
            ax.text(0.93 * np.cos(a), 0.93 * np.sin(a) - 0.02, lab, color=col, ha="center", va="center", fontsize=8)
        ax.set_xlim(-1.25, 1.25)
        ax.set_ylim(-1.25, 1.25)
        ax.set_aspect("equal")
        ax.axis("off")
        if i == 0:
            ax.set_title(f"unit circle, ∠(ŵ1, ŵ2) = {angle_deg:g}°\nred/blue: margin met, grey: neither", fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)
