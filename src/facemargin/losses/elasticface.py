"""ElasticFace (Boutros et al., CVPRW 2022): a random margin per sample and training forward.

Follows fdbtrs/ElasticFace ``utils/losses.py``. The margins come from the head's own generator,
whose state lives in ``state_dict``, and are drawn over the whole batch (global on a sharded
head), so every rank and every resumed run draws the same margins.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .checks import ANGLE, COSINE, SCALE, Choice, Depends, Flag, Integer, Real
from .core import Margin, MarginContext, MarginSpec, safe_sin
from .head import MarginHead
from .registry import LOSSES

Tensor = torch.Tensor


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
