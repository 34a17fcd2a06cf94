"""Margin heads of 2019–2022: AdaFace, MagFace, CurricularFace, ElasticFace, SphereFaceR.

Each head is a :class:`~facemargin.losses.heads.MarginHead` with one of the margins below, so it
runs on every engine (``plain``, ``fused``, and sharded over ranks) and its gradient is always
autograd's. Statistics a margin keeps (AdaFace's norm moments, CurricularFace's ``t``) are
updated once per training forward from the whole batch — on a sharded head the global batch, so
every rank holds the same values — and live in ``state_dict``, as does ElasticFace's random
generator.

Notation: ``c_j = cos θ_j`` the cosine between the normalised embedding and class row ``j``,
``y`` the label, ``‖x‖`` the raw feature norm, ``s`` the scale. "Detached" means that no gradient
flows through a value.

* ``adaface`` — :class:`AdaFace`, mk-minchul/AdaFace ``head.py``.
* ``magface`` — :class:`MagFace`, IrvingMeng/MagFace ``models/magface.py``.
* ``curricularface`` — :class:`CurricularFace`, HuangYG123/CurricularFace ``head/metrics.py``.
* ``elasticarcface``, ``elasticcosface`` — :class:`ElasticArcFace`, :class:`ElasticCosFace`,
  fdbtrs/ElasticFace ``utils/losses.py``.
* ``spherefacer`` — :class:`SphereFaceR`, ydwen/opensphere (branch ``OpenSphere_v0``)
  ``model/head/spherefacer.py``, class ``SphereFaceR_H`` with ``magn_type='v0'``.

:func:`quality_scores` gives MagFace's quality score (the feature norm) of embeddings.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Union

import numpy as np
import torch

from .checks import ANGLE, COSINE, SCALE, Choice, Depends, Flag, Integer, Real
from .heads import MarginHead, normalize_rows_
from .margin import Margin, MarginContext, MarginSpec, additive_phi, safe_sin, work_dtype
from .registry import LOSSES

Tensor = torch.Tensor

__all__ = ["AdaFaceMargin", "MagFaceMargin", "CurricularMargin", "ElasticMargin", "SphereFaceRMargin",
           "AdaFace", "MagFace", "CurricularFace", "ElasticArcFace", "ElasticCosFace", "SphereFaceR",
           "quality_scores"]


class _Float32Statistics(Margin):
    """A margin whose running statistics stay in at least float32 when the head is cast to
    float16/bfloat16 (an EMA with rate 0.01 stalls in bf16's 8-bit mantissa)."""

    def _apply(self, fn, recurse=True):
        before = {k: b for k, b in self._buffers.items() if b is not None and b.is_floating_point()}
        super()._apply(fn, recurse)
        for k, old in before.items():
            new = self._buffers[k]
            if new is not None and new.dtype in (torch.float16, torch.bfloat16):
                self._buffers[k] = old.to(device=new.device, dtype=torch.float32)
        return self


# ------------------------------------------------------------------------------------------------
# AdaFace
# ------------------------------------------------------------------------------------------------


class AdaFaceMargin(_Float32Statistics):
    """AdaFace's norm-adaptive margin.

    With ``n = clip(‖x‖, 0.001, 100)`` (detached) and the running moments ``μ`` (``batch_mean``) and
    ``σ`` (``batch_std``), the scaler is ``ĝ = clip(h·(n − μ)/(σ + eps), −1, 1)`` and, on the target
    cosine clamped to ``[−1 + eps, 1 − eps]``,
    ``φ = cos(clip(θ − m·ĝ, eps, π − eps)) − m·(1 + ĝ)`` (``eps = 1e-3``). High-norm (good quality)
    samples get a larger angular and a smaller additive margin.

    Every training forward first moves ``μ ← α·mean(n) + (1 − α)·μ`` and ``σ ← α·std(n) + (1 − α)·σ``
    (unbiased std, ``α = t_alpha``) over the batch it sees; a batch of one sample has no std and
    moves ``μ`` only.
    """

    eps = 1e-3

    #: ``m``: the angular part moves θ by up to ``m`` and the additive part takes up to ``2m``
    #: off a cosine in [−1, 1], so ``0 <= m < 1``. ``h``: scales the normalised norm mapped
    #: into [−1, 1] before clipping (h = 1/3 keeps ±3σ unclipped; a larger h clips more, 0 turns the
    #: adaptivity off), so ``h >= 0``. ``t_alpha``: an EMA rate in [0, 1].
    PARAMS = {
        "m": Real(0, 1, hi_open=True, doc="an angular and additive margin; the additive part reaches 2m"),
        "h": Real(0, doc="the factor on the normalised feature norm before clipping to [-1, 1]"),
        "t_alpha": Real(0, 1, doc="the moving-average rate of the norm statistics"),
    }

    def __init__(self, m: float = 0.4, h: float = 0.333, t_alpha: float = 0.01):
        super().__init__()
        self.m, self.h, self.t_alpha = float(m), float(h), float(t_alpha)
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))

    def _norms(self, ctx: MarginContext) -> Tensor:
        n = ctx.norm_detached
        return torch.clamp(n.to(work_dtype(n.dtype)), 0.001, 100.0)

    @torch.no_grad()
    def update(self, ctx: MarginContext) -> None:
        n = self._norms(ctx)
        a = self.t_alpha
        self.batch_mean.copy_(a * n.mean().to(self.batch_mean.dtype) + (1.0 - a) * self.batch_mean)
        if n.numel() > 1:
            self.batch_std.copy_(a * n.std().to(self.batch_std.dtype) + (1.0 - a) * self.batch_std)

    def prepare(self, ctx: MarginContext) -> None:
        n = self._norms(ctx)
        mu, sd = self.batch_mean.to(n.dtype), self.batch_std.to(n.dtype)
        ctx.values["adaface_g"] = torch.clamp(self.h * (n - mu) / (sd + self.eps), -1.0, 1.0)

    def phi(self, c: Tensor, ctx: MarginContext) -> Tensor:
        g = ctx.values["adaface_g"].to(c.dtype)
        theta = torch.acos(torch.clamp(c, -1.0 + self.eps, 1.0 - self.eps))
        theta_m = torch.clamp(theta - self.m * g, self.eps, math.pi - self.eps)
        return torch.cos(theta_m) - self.m * (1.0 + g)

    def stats(self) -> Dict[str, float]:
        return {"batch_mean": float(self.batch_mean), "batch_std": float(self.batch_std)}

    def extra_repr(self) -> str:
        return f"m={self.m}, h={self.h}, t_alpha={self.t_alpha}"


@LOSSES.register("adaface")
class AdaFace(MarginHead):
    """AdaFace (Kim et al., CVPR 2022): target ``s·(cos θ') − s·m·(1 + ĝ)`` with
    ``θ' = clip(θ_y − m·ĝ, 1e-3, π − 1e-3)``, other columns ``s·c_j`` (see :class:`AdaFaceMargin`).

    Follows mk-minchul/AdaFace ``head.py``. Defaults are those of the official MS1MV2 training
    scripts (``m=0.4, h=0.333, s=64, t_alpha=0.01``; the class in ``head.py`` itself defaults to
    ``t_alpha=1``). The buffers ``batch_mean`` (20) and ``batch_std`` (100) start where the official
    ones do.

    Deliberate differences: on a sharded head the norm moments are taken over the global batch
    (the official code uses each GPU's own batch, so its ranks drift apart); the official clamp of
    the non-target cosines to ``[−1 + 1e-3, 1 − 1e-3]`` is left out (it only touches non-target
    cosines beyond ±0.999, where it would zero their gradient); the statistics are updated in
    training-mode forwards only (the official head is never run in evaluation).
    """

    PARAMS = {"s": SCALE, **AdaFaceMargin.PARAMS}

    def __init__(self, embedding_size, num_classes, m=0.4, h=0.333, s=64.0, t_alpha=0.01, **kw):
        spec = MarginSpec("scale", True, AdaFaceMargin(m, h, t_alpha))
        super().__init__(embedding_size, num_classes, spec, scale=s, **kw)


# ------------------------------------------------------------------------------------------------
# MagFace
# ------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------
# CurricularFace
# ------------------------------------------------------------------------------------------------


class CurricularMargin(_Float32Statistics):
    """CurricularFace's ArcFace target and curriculum on hard negatives.

    Target: ``φ = cos(θ_y + m)`` where ``c_y > cos(π − m)``, else ``c_y − m·sin m``. Every
    non-target cosine above ``cos(θ_y + m)`` (the unfolded value, detached) becomes
    ``c_j·(t + c_j)``, with gradient through both factors. ``t`` (a buffer, 0 at first) moves
    ``t ← α·mean(c_y) + (1 − α)·t`` (``α = 0.01``) at every training forward before use.
    """

    changes_others = True
    PARAMS = {"m": ANGLE, "alpha": Real(0, 1, doc="the moving-average rate of t")}

    def __init__(self, m: float = 0.5, alpha: float = 0.01):
        super().__init__()
        self.m, self.alpha = float(m), float(alpha)
        self.register_buffer("t", torch.tensor(0.0))

    @torch.no_grad()
    def update(self, ctx: MarginContext) -> None:
        mean = ctx.cos_target.mean().to(self.t.dtype)
        self.t.copy_(self.alpha * mean + (1.0 - self.alpha) * self.t)

    def prepare(self, ctx: MarginContext) -> None:
        c = ctx.cos_target.detach()
        ctx.values["curricular_cos_m"] = c * math.cos(self.m) - safe_sin(c) * math.sin(self.m)

    def phi(self, c: Tensor, ctx: MarginContext) -> Tensor:
        return additive_phi(c, 1.0, self.m, 0.0)

    def others(self, c: Tensor, ctx: MarginContext) -> Tensor:
        c = torch.clamp(c, -1.0, 1.0)
        threshold = ctx.values["curricular_cos_m"].to(c.dtype).unsqueeze(1)
        t = self.t.to(c.dtype)
        return torch.where(c > threshold, c * (t + c), c)

    def stats(self) -> Dict[str, float]:
        return {"t": float(self.t)}

    def extra_repr(self) -> str:
        return f"m={self.m}, alpha={self.alpha}"


@LOSSES.register("curricularface")
class CurricularFace(MarginHead):
    """CurricularFace (Huang et al., CVPR 2020): ArcFace's target ``s·cos(θ_y + m)`` and hard
    negatives ``c_j > cos(θ_y + m)`` re-weighted to ``s·c_j·(t + c_j)`` with the running mean
    ``t`` of the target cosines (see :class:`CurricularMargin`).

    Follows HuangYG123/CurricularFace ``head/metrics.py``. Defaults ``s=64, m=0.5``; the buffer
    ``t`` starts at 0 and moves with rate 0.01. On a sharded head ``t`` and the thresholds are
    those of the global batch, and every rank transforms its own class columns. ``t`` moves in
    training-mode forwards only (the official head is never run in evaluation).
    """

    PARAMS = {"s": SCALE, "m": ANGLE}

    def __init__(self, embedding_size, num_classes, s=64.0, m=0.5, **kw):
        super().__init__(embedding_size, num_classes, MarginSpec("scale", True, CurricularMargin(m)), scale=s, **kw)


# ------------------------------------------------------------------------------------------------
# ElasticFace
# ------------------------------------------------------------------------------------------------


class ElasticMargin(Margin):
    """ElasticFace's random margin ``m_i ~ N(m, std)``, one per sample and training forward.

    ``kind="arc"``: ``φ = cos(θ + m_i)`` (no fallback past π, as in the official code);
    ``kind="cos"``: ``φ = c − m_i``. With ``plus``, the draws are sorted and matched by rank to
    the samples sorted by descending target cosine, so the sample with the lowest ``c_y`` (the
    hardest) gets the largest margin. Outside training-mode forwards the margin is ``m``.

    The draw comes from the margin's own ``torch.Generator`` (on the CPU, float64), whose state
    is the uint8 buffer ``rng_state``: it is saved and loaded with ``state_dict``, so a resumed
    run draws exactly what the uninterrupted one would. It is made over the whole batch the
    head sees (the global batch on a sharded head), so every rank draws the same margins.
    """

    #: the mean margin is an angle (``kind="arc"``, ``< π/2``) or a cosine margin (``"cos"``, ``< 1``)
    PARAMS = {
        "kind": Choice("arc", "cos", doc="an angular or a cosine margin"),
        "m": Real(0, Depends("kind", {"arc": math.pi / 2, "cos": 1.0}), hi_open=True, doc="the mean margin"),
        "std": Real(0, doc="the standard deviation of the margins"),
        "plus": Flag(doc="the largest margins go to the hardest samples"),
        "rng_seed": Integer(optional=True, doc="the seed of the margin generator"),
    }

    def __init__(self, kind: str = "arc", m: float = 0.5, std: float = 0.05, plus: bool = False,
                 rng_seed: Optional[int] = None):
        super().__init__()
        self.kind, self.m, self.std, self.plus, self.rng_seed = kind, float(m), float(std), bool(plus), rng_seed
        self.register_buffer("rng_state", torch.Generator().manual_seed(0 if rng_seed is None else rng_seed).get_state())

    def reseed(self, seed: int) -> None:
        """Restart the generator from ``seed``."""
        self.rng_state.copy_(torch.Generator().manual_seed(int(seed)).get_state())

    def draw(self, n: int) -> Tensor:
        """``n`` margins ``N(m, std)`` (float64, CPU) from the saved generator state, which advances."""
        gen = torch.Generator()
        gen.set_state(self.rng_state.detach().cpu())
        out = torch.normal(self.m, self.std, (int(n),), generator=gen, dtype=torch.float64)
        self.rng_state.copy_(gen.get_state())
        return out

    @staticmethod
    def rank_match(margins: Tensor, cos_target: Tensor) -> Tensor:
        """Margins re-assigned so that the k-th largest target cosine gets the k-th smallest margin."""
        order = torch.argsort(cos_target, descending=True, stable=True)
        out = torch.empty_like(margins)
        out[order] = torch.sort(margins).values
        return out

    def prepare(self, ctx: MarginContext) -> None:
        B = ctx.batch_size
        if ctx.training:
            with torch.no_grad():
                m = self.draw(B)
                if self.plus:
                    m = self.rank_match(m, ctx.cos_target.detach().cpu().to(torch.float64))
            m = m.to(ctx.norm.device)
        else:
            m = torch.full((B,), self.m, dtype=torch.float64, device=ctx.norm.device)
        ctx.values["elastic_m"] = m

    def phi(self, c: Tensor, ctx: MarginContext) -> Tensor:
        m = ctx.values["elastic_m"].to(c.dtype)
        if self.kind == "cos":
            return c - m
        # cos(θ + m_i) expanded (the same value, no acos); past θ + m_i > π it turns back up,
        # as the official head does
        return c * torch.cos(m) - safe_sin(c) * torch.sin(m)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, m={self.m}, std={self.std}, plus={self.plus}, rng_seed={self.rng_seed}"


class _Elastic(MarginHead):
    KIND = "arc"
    STD = (0.05, 0.0175)  # (std, std with plus): the subclasses' defaults
    PARAMS = {"s": SCALE, "m": ANGLE,
              "std": Real(0, optional=True, doc="the standard deviation of the margins; None: the head's default"),
              "plus": ElasticMargin.PARAMS["plus"], "rng_seed": ElasticMargin.PARAMS["rng_seed"]}

    def __init__(self, embedding_size, num_classes, s=64.0, m=0.5, std=None, plus=False, rng_seed=None, **kw):
        if std is None:
            std = self.STD[1] if plus else self.STD[0]
        margin = ElasticMargin(self.KIND, m, std, plus, rng_seed)
        super().__init__(embedding_size, num_classes, MarginSpec("scale", True, margin), scale=s, **kw)

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        """Seeded class rows (see :meth:`MarginHead.init_weights`); without ``rng_seed`` the margin
        generator restarts from ``seed`` too, so one seed fixes the whole run."""
        super().init_weights(seed)
        if self.margin.rng_seed is None:
            self.margin.reseed(seed)


@LOSSES.register("elasticarcface")
class ElasticArcFace(_Elastic):
    """ElasticFace-Arc (Boutros et al., CVPRW 2022): target ``s·cos(θ_y + m_i)``,
    ``m_i ~ N(m, std)`` drawn per sample at every training forward (see :class:`ElasticMargin`).

    Follows fdbtrs/ElasticFace ``utils/losses.py`` (``ElasticArcFace``). Defaults ``s=64, m=0.5``
    and ``std=0.05``, or ``std=0.0175`` with ``plus=True`` (the repository's ``config/config.py``
    for ElasticArcFace and ElasticArcFacePlus). ``rng_seed`` fixes the margin generator; by
    default it follows the ``seed`` argument of :meth:`init_weights`.

    Deliberate difference: with ``plus`` the official code assigns ``sorted_margins[order[i]]``
    to sample ``i`` (``order`` the descending sort of the target cosines), which is not the rank
    matching its paper describes; here the sample of rank ``k`` gets the ``k``-th smallest margin,
    so the hardest sample gets the largest. Outside training-mode forwards the margin is ``m``.
    """

    KIND, STD = "arc", (0.05, 0.0175)

    def __init__(self, embedding_size, num_classes, s=64.0, m=0.5, std=None, plus=False, rng_seed=None, **kw):
        super().__init__(embedding_size, num_classes, s=s, m=m, std=std, plus=plus, rng_seed=rng_seed, **kw)


@LOSSES.register("elasticcosface")
class ElasticCosFace(_Elastic):
    """ElasticFace-Cos (Boutros et al., CVPRW 2022): target ``s·(c_y − m_i)``,
    ``m_i ~ N(m, std)`` drawn per sample at every training forward (see :class:`ElasticMargin`).

    Follows fdbtrs/ElasticFace ``utils/losses.py`` (``ElasticCosFace``). Defaults ``s=64, m=0.35``
    and ``std=0.05``, or ``std=0.02`` with ``plus=True`` (the repository's ``config/config.py``).
    Same deliberate difference for ``plus`` as :class:`ElasticArcFace`.
    """

    KIND, STD = "cos", (0.05, 0.02)
    PARAMS = {"m": COSINE}

    def __init__(self, embedding_size, num_classes, s=64.0, m=0.35, std=None, plus=False, rng_seed=None, **kw):
        super().__init__(embedding_size, num_classes, s=s, m=m, std=std, plus=plus, rng_seed=rng_seed, **kw)


# ------------------------------------------------------------------------------------------------
# SphereFaceR
# ------------------------------------------------------------------------------------------------


class SphereFaceRMargin(Margin):
    """SphereFace-R's multiplicative margin with a straight-through gradient (``magn_type`` v0).

    With ``θ = acos(clamp(c, −1 + 1e-5, 1 − 1e-5))`` and ``k = ⌊m·θ/π⌋`` the forward value is
    ``φ = (−1)^k·cos(m·θ) − 2k`` (``m`` need not be an integer); the offset ``φ − c`` is detached,
    so the target logit ``s·(c + (φ − c))`` has the gradient of ``s·c``.
    """

    #: ``m`` multiplies the angle: ``m = 1`` is no margin and ``m < 1`` would make the target
    #: easier than the plain cosine, so ``m >= 1`` (it need not be an integer)
    PARAMS = {"m": Real(1, doc="the angle multiplier")}

    def __init__(self, m: float = 1.5):
        super().__init__()
        self.m = float(m)

    def target_value(self, c: Tensor) -> Tensor:
        """``φ(c)`` without gradient."""
        with torch.no_grad():
            mt = self.m * torch.acos(torch.clamp(c, -1.0 + 1e-5, 1.0 - 1e-5))
            k = torch.floor(mt / math.pi)
            sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
            return sign * torch.cos(mt) - 2.0 * k

    def phi(self, c: Tensor, ctx: MarginContext) -> Tensor:
        return c + (self.target_value(c) - c.detach())

    def extra_repr(self) -> str:
        return f"m={self.m}"


@LOSSES.register("spherefacer")
class SphereFaceR(MarginHead):
    """SphereFace-R (Liu et al., TPAMI 2022), hard feature normalisation, ``magn_type`` v0:
    logits ``s·(c + d)`` where ``d`` is the detached offset to ``(−1)^k cos(m θ_y) − 2k`` on the
    target and 0 elsewhere; loss ``lw·CE/s`` (see :class:`SphereFaceRMargin`).

    Follows ydwen/opensphere, branch ``OpenSphere_v0``, ``model/head/spherefacer.py``,
    ``SphereFaceR_H`` with ``magn_type='v0'``. Defaults ``s=30, m=1.5, lw=50``. ``lw/s`` uses the
    constructor's ``s``.

    Class rows are renormalised in place at the start of every forward, as in the official head.

    Deliberate differences: the official head differentiates the renormalised rows as if they were
    free parameters; here the logits normalise the rows again and are differentiated through that
    normalisation (the same logits; the gradient of each row lacks the official one's radial
    part, which only changes the row's norm and is undone by the next renormalisation). The
    official non-target logits are ``s·clamp(c_j, −1 + 1e-5, 1 − 1e-5)`` in value; here ``s·c_j``.
    """

    PARAMS = {"s": SCALE, **SphereFaceRMargin.PARAMS, "lw": Real(0, lo_open=True, doc="the loss weight")}

    def __init__(self, embedding_size, num_classes, s=30.0, m=1.5, lw=50.0, **kw):
        super().__init__(embedding_size, num_classes, MarginSpec("scale", True, SphereFaceRMargin(m)), scale=s, **kw)
        self.s, self.lw = s, lw

    @torch.no_grad()
    def _before_forward(self, training: bool) -> None:
        normalize_rows_(self.weight)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return super().forward(x, y) * (self.lw / self.s)
