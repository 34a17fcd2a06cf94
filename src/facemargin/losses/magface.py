"""MagFace (Meng et al., CVPR 2021): a margin and a regulariser on the feature magnitude, whose
norm is then a quality score (:func:`quality_scores`).

Follows IrvingMeng/MagFace ``models/magface.py``.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch

from .checks import SCALE, Choice, Depends, Flag, Real
from .core import Margin, MarginContext, MarginSpec, additive_phi, work_dtype
from .head import MarginHead
from .registry import LOSSES

Tensor = torch.Tensor


class MagFaceMargin(Margin):
    """MagFace's magnitude-aware margin and regulariser.

    ``a = clamp(‖x‖, l_a, u_a)`` keeps its gradient. The margin
    ``m(a) = (u_margin − l_margin)/(u_a − l_a)·(a − l_a) + l_margin`` enters
    ``φ = cos(θ + m(a))`` (``additive="arc"``; with ``easy_margin`` ``φ = c`` where ``c ≤ 0``,
    otherwise ArcFace's fallback ``c − m(a)·sin m(a)`` past ``θ + m(a) > π``) or ``φ = c − m(a)``
    (``additive="cos"``, Mag-CosFace; ``easy_margin`` does not apply). The regulariser is
    ``lambda_g·mean(a/u_a² + 1/a)``.
    """

    #: ``0 < l_a < u_a``: the norm band (the regulariser's ``1/a`` needs ``a > 0``); the margin
    #: grows from ``l_margin`` to ``u_margin`` across it, so ``0 <= l_margin <= u_margin``, and
    #: ``u_margin`` is an additive angle (``< π/2``, as ArcFace's ``m``) or, for ``additive="cos"``,
    #: a cosine margin (``< 1``, as CosFace's ``m``).
    PARAMS = {
        "l_a": Real(0, lo_open=True, doc="the lower feature norm of the band"),
        "u_a": Real("l_a", lo_open=True, doc="the upper feature norm of the band"),
        "l_margin": Real(0, "u_margin", doc="the margin at norm l_a"),
        "u_margin": Real("l_margin", Depends("additive", {"arc": math.pi / 2, "cos": 1.0}), hi_open=True,
                         doc="the margin at norm u_a"),
        "lambda_g": Real(0, doc="the weight of the norm regulariser"),
        "easy_margin": Flag(doc="no margin where cos θ_y <= 0"),
        "additive": Choice("arc", "cos", doc="an angular (ArcFace) or cosine (CosFace) margin"),
    }

    def __init__(self, l_a=10.0, u_a=110.0, l_margin=0.45, u_margin=0.8, lambda_g=35.0,
                 easy_margin=True, additive="arc"):
        super().__init__()
        self.l_a, self.u_a, self.l_margin, self.u_margin = float(l_a), float(u_a), float(l_margin), float(u_margin)
        self.lambda_g = float(lambda_g)
        self.easy_margin, self.additive = bool(easy_margin), additive

    def _a(self, norm: Tensor) -> Tensor:
        return torch.clamp(norm.to(work_dtype(norm.dtype)), self.l_a, self.u_a)

    def margin_of(self, a: Tensor) -> Tensor:
        """``m(a)``, the margin of a (clamped) feature norm ``a``."""
        return (self.u_margin - self.l_margin) / (self.u_a - self.l_a) * (a - self.l_a) + self.l_margin

    def phi(self, c: Tensor, ctx: MarginContext) -> Tensor:
        m = self.margin_of(self._a(ctx.norm)).to(c.dtype)
        if self.additive == "cos":
            return c - m
        return additive_phi(c, 1.0, m, 0.0, self.easy_margin)

    def regularizer(self, ctx: MarginContext) -> Optional[Tensor]:
        if self.lambda_g == 0.0:
            return None
        a = self._a(ctx.norm)
        return self.lambda_g * (a / (self.u_a ** 2) + 1.0 / a).mean()

    def extra_repr(self) -> str:
        return (f"l_a={self.l_a}, u_a={self.u_a}, l_margin={self.l_margin}, u_margin={self.u_margin}, "
                f"lambda_g={self.lambda_g}, easy_margin={self.easy_margin}, additive={self.additive!r}")


@LOSSES.register("magface")
class MagFace(MarginHead):
    """MagFace (Meng et al., CVPR 2021): target ``s·cos(θ_y + m(a))`` with a margin growing
    linearly with the clamped feature norm ``a``, plus ``lambda_g·mean(a/u_a² + 1/a)``; both send
    gradient into the norm (see :class:`MagFaceMargin`). ``additive="cos"`` is Mag-CosFace,
    ``s·(c_y − m(a))``.

    Follows IrvingMeng/MagFace ``models/magface.py`` (``MagLinear``, ``MagLoss``,
    ``SoftmaxBuilder._margin``). Defaults: ``l_a=10, u_a=110, l_margin=0.45, u_margin=0.8, s=64``,
    ``lambda_g=35`` as in the repository's ``run/run.sh`` (its trainer's argparse default is 20),
    ``easy_margin=True`` as in ``MagLinear``.

    Quality: the norm of an unnormalised embedding is MagFace's quality score —
    :func:`quality_scores` of ``facemargin.eval.embed_images`` output (or of the ``.npy`` written
    by ``facemargin embed`` without ``--normalize``; with ``--flip`` it is the norm of the sum of
    both views).
    """

    PARAMS = {"s": SCALE, **MagFaceMargin.PARAMS}

    def __init__(self, embedding_size, num_classes, s=64.0, l_a=10.0, u_a=110.0, l_margin=0.45, u_margin=0.8,
                 lambda_g=35.0, easy_margin=True, additive="arc", **kw):
        margin = MagFaceMargin(l_a, u_a, l_margin, u_margin, lambda_g, easy_margin, additive)
        super().__init__(embedding_size, num_classes, MarginSpec("scale", True, margin), scale=s, **kw)


def quality_scores(embeddings: Union[Tensor, np.ndarray]) -> Union[Tensor, np.ndarray]:
    """MagFace's quality score of each embedding: its L2 norm, ``(N, D) -> (N,)``.

    The embeddings must be unnormalised (as :func:`facemargin.eval.embed_images` returns them).
    A NumPy array gives a float32 array, a tensor a tensor of its dtype.
    """
    if isinstance(embeddings, np.ndarray):
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must have shape (N, D), got {embeddings.shape}")
        return np.linalg.norm(embeddings.astype(np.float64), axis=1).astype(np.float32)
    if isinstance(embeddings, Tensor):
        if embeddings.dim() != 2:
            raise ValueError(f"embeddings must have shape (N, D), got {tuple(embeddings.shape)}")
        return torch.linalg.vector_norm(embeddings, dim=1)
    raise ValueError(f"embeddings must be a NumPy array or a torch.Tensor, got {type(embeddings).__name__}")
