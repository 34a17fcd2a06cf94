"""The additive margin family: CosFace (AM-Softmax), ArcFace and the combined margin, all of the
form ``s·(cos(m1·θ_y + m2) − m3)`` (:class:`~facemargin.losses.core.AdditiveMargin`)."""
from __future__ import annotations

from .checks import ANGLE, ANGLE_FACTOR, COSINE, SCALE, Flag
from .core import AdditiveMargin, MarginSpec
from .head import MarginHead
from .registry import LOSSES


class _Additive(MarginHead):
    PARAMS = {"s": SCALE, "m1": ANGLE_FACTOR, "m2": ANGLE, "m3": COSINE,
              "easy_margin": Flag(doc="no margin where cos θ_y <= 0")}

    def __init__(self, embedding_size, num_classes, s, m1, m2, m3, easy_margin=False, **kw):
        spec = MarginSpec("scale", True, AdditiveMargin(float(m1), float(m2), float(m3), bool(easy_margin)))
        super().__init__(embedding_size, num_classes, spec, scale=s, **kw)


@LOSSES.register("cosface", "amsoftmax")
class CosFace(_Additive):
    """CosFace / AM-Softmax (Wang et al. 2018): target ``s(cos θ_y − m)``; defaults s=64, m=0.35."""

    PARAMS = {"m": COSINE}

    def __init__(self, embedding_size, num_classes, s=64.0, m=0.35, **kw):
        super().__init__(embedding_size, num_classes, s, 1.0, 0.0, m, **kw)


@LOSSES.register("arcface")
class ArcFace(_Additive):
    """ArcFace (Deng et al. 2019): target ``s cos(θ_y + m)``, ``s(cos θ_y − m sin m)`` past
    ``θ_y + m > π``; ``easy_margin`` keeps ``s cos θ_y`` where ``cos θ_y ≤ 0``."""

    PARAMS = {"m": ANGLE}

    def __init__(self, embedding_size, num_classes, s=64.0, m=0.5, easy_margin=False, **kw):
        super().__init__(embedding_size, num_classes, s, 1.0, m, 0.0, easy_margin=easy_margin, **kw)


@LOSSES.register("combined")
class CombinedMargin(_Additive):
    """Combined margin (InsightFace): target ``s(cos(m1 θ_y + m2) − m3)``; with ``m1 = 1`` the
    ArcFace fallback applies past π. ``m1 > 0`` multiplies the angle, ``0 <= m2 < π/2`` is added
    to it (as ArcFace's ``m``) and ``0 <= m3 < 1`` is subtracted from the cosine (as CosFace's)."""

    def __init__(self, embedding_size, num_classes, s=64.0, m1=1.0, m2=0.3, m3=0.2, **kw):
        super().__init__(embedding_size, num_classes, s, m1, m2, m3, **kw)
