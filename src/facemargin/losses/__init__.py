"""Every loss of the face-recognition family, exact and tested.

Classification heads (hold class weights ``head.weight`` ``(C, D)``; ``head(x, y)`` -> loss,
``head.logits(x, y)``): softmax, l2softmax, normface, sphereface (asoftmax), lsoftmax,
cosface (amsoftmax), arcface, combined, atl (``MarginInnerProduct``).
Metric losses (``loss(x, y)`` -> scalar): center, contrastive, triplet, coco, range, marginal.

``build(name, **kw)`` builds any of them by name; ``available()`` lists the names.
"""
from .registry import LOSSES
from .margin import (AdditiveMargin, MarginSpec, MarginStats, MultiplicativeMargin, BACKENDS,
                     margin_cross_entropy, margin_logits, psi)
from .heads import (ArcFace, CombinedMargin, CosFace, L2Softmax, LambdaSchedule, LSoftmax,
                    MarginHead, MarginInnerProduct, NormFace, Softmax, SphereFace)
from . import metric  # noqa: F401  (registers the metric losses)
from . import fused  # noqa: F401  (registers BACKENDS["fused"])
from .metric import *  # noqa: F401,F403


def build(name: str, **kw):
    """Build a loss or head by its lower-case name (aliases accepted), e.g. ``build("arcface", embedding_size=512, num_classes=10)``."""
    return LOSSES.build(name, **kw)


def available(aliases: bool = False):
    """The registered names (with ``aliases=True`` also asoftmax, amsoftmax)."""
    return LOSSES.available(aliases)


def is_head(name_or_obj) -> bool:
    """Whether a name or object is a classification head (has class weights)."""
    obj = LOSSES.get(name_or_obj) if isinstance(name_or_obj, str) else type(name_or_obj)
    return isinstance(obj, type) and issubclass(obj, MarginHead)
