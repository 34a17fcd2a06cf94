"""Every loss of the face-recognition family, exact and tested.

Classification heads (hold class weights ``head.weight`` ``(C, D)``; ``head(x, y)`` -> loss,
``head.logits(x, y)``), one file per family:

* :mod:`.softmax` — softmax, l2softmax, normface;
* :mod:`.sphereface` — sphereface (asoftmax), lsoftmax, atl (``MarginInnerProduct``);
* :mod:`.additive` — cosface (amsoftmax), arcface, combined;
* :mod:`.adaface`, :mod:`.magface`, :mod:`.curricularface`, :mod:`.elasticface`
  (elasticarcface, elasticcosface), :mod:`.spherefacer`, :mod:`.subcenter` (subcenter_arcface),
  :mod:`.coco`;
* :mod:`.uniface`, :mod:`.sphereface2` — one binary loss per class (:mod:`.binary`).

A head (:mod:`.head`) is a weight store (:mod:`.stores`), a margin (:mod:`.core`) and an engine
(:mod:`.engines`). Metric losses (``loss(x, y)`` -> scalar; :mod:`.metric`): center,
contrastive, triplet, range, marginal.

``build(name, **kw)`` builds any of them by name; ``available()`` lists the names;
``check_params(name, params)`` checks hyper-parameters without building anything.

Every loss declares the valid values of its hyper-parameters next to its definition (the class
attribute ``PARAMS``; the shared ranges and their reasons are in :mod:`.checks`). They are
checked whenever a loss is built, and a value of the wrong type or out of range raises e.g.
``ValueError("arcface: m=7.0 is out of range: expected 0 <= m < 1.5708 (an additive angle in
radians)")``. ``param_ranges(name)`` lists them.
"""
import warnings as _warnings

from .registry import LOSSES
from .core import (AdditiveMargin, Margin, MarginContext, MarginSpec, MarginStats, target_cosines,
                   target_logit)
from .engines import ENGINES, SOFTMAX, Engine, OneVsRest, margin_cross_entropy
from .stores import BatchView, DenseStore, LocalComm, WeightStore, seeded_rows
from .head import MarginHead
from .binary import BinaryMarginHead
from .softmax import L2Softmax, NormFace, Softmax
from .sphereface import LambdaSchedule, LSoftmax, MarginInnerProduct, MultiplicativeMargin, SphereFace, psi
from .additive import ArcFace, CombinedMargin, CosFace
from .adaface import AdaFace, AdaFaceMargin
from .magface import MagFace, MagFaceMargin, quality_scores
from .curricularface import CurricularFace, CurricularMargin
from .elasticface import ElasticArcFace, ElasticCosFace, ElasticMargin
from .spherefacer import SphereFaceR, SphereFaceRMargin
from .subcenter import SubCenterArcFace, subcenter_outliers
from .uniface import UniFace
from .sphereface2 import SphereFace2, SphereFace2Margin
from .coco import COCOLoss
from .metric import CenterLoss, ContrastiveLoss, MarginalLoss, RangeLoss, TripletLoss

_DEPRECATED = {"BACKENDS": ("ENGINES", lambda: ENGINES)}


def __getattr__(name):
    if name in _DEPRECATED:
        new, value = _DEPRECATED[name]
        _warnings.warn(f"facemargin.losses.{name} is the former name of facemargin.losses.{new}",
                       DeprecationWarning, stacklevel=2)
        return value()
    raise AttributeError(f"module 'facemargin.losses' has no attribute {name!r}")


def build(name: str, **kw):
    """Build a loss or head by its lower-case name (aliases accepted), e.g.
    ``build("arcface", embedding_size=512, num_classes=10)``.

    Arguments are bind-checked: an unknown or missing one raises ``ValueError`` naming it and
    listing what the loss accepts. Heads use their fastest exact engine unless ``engine`` is given.
    """
    return LOSSES.build(name, **kw)


def check_params(name: str, params: dict) -> dict:
    """Check the hyper-parameters ``params`` of the loss ``name`` without building it (no weights
    are allocated) and return them as the loss will use them (an int given for a real parameter
    becomes a float; an integral float for an integer one, such as ``4.0``, an int).

    ``embedding_size``, ``num_classes`` and the engine options may be left out (the trainer
    supplies them). Raises ``ValueError``: for an unknown name, listing the registered ones; for
    an argument the loss does not take (a typo such as ``mm``), listing those it accepts; for a
    value of the wrong type (text, a boolean for a number, NaN) or out of range, as
    ``"<name>: <param>=<value> ..."`` with the valid range. :func:`build` runs the same checks.
    """
    return LOSSES.check_params(name, params)


def param_ranges(name: str) -> dict:
    """The valid values of every checked argument of the loss ``name``, as text (``{"m":
    "0 <= m < 1.5708 (an additive angle in radians)", ...}``)."""
    return {k: spec.describe(k) for k, spec in LOSSES.param_specs(name).items()}


def build_from_config(table: dict, embedding_size: int, num_classes: int, **extra):
    """Build a loss from a config table ``{"name": ..., "params": {...}}``, filling in
    ``embedding_size``/``num_classes`` (and ``extra``, e.g. a weight ``store``) where the loss
    takes them. Unknown or missing parameters raise ``ValueError`` listing what it accepts."""
    from ..registry import accepted_arguments

    name, params = table["name"], dict(table.get("params", {}))
    accepted = accepted_arguments(LOSSES.get(name)) or ()
    for key, value in (("num_classes", num_classes), ("embedding_size", embedding_size), *extra.items()):
        if key in accepted:
            params.setdefault(key, value)
    return build(name, **params)


def param_groups(loss, weight_decay: float):
    """Optimizer groups of any loss: class rows with ``weight_decay``; biases, scales and
    other parameters without."""
    if isinstance(loss, MarginHead):
        return loss.param_groups(weight_decay)
    params = [p for p in loss.parameters() if p.requires_grad]
    return [{"params": params, "weight_decay": float(weight_decay), "name": "weight"}] if params else []


def step_stats(loss):
    """Scalars of a loss's last training call worth logging (λ, sample shares, margin state)."""
    return loss.step_stats() if isinstance(loss, MarginHead) else {}


def available(aliases: bool = False):
    """The registered names (with ``aliases=True`` also asoftmax, amsoftmax)."""
    return LOSSES.available(aliases)


def is_head(name_or_obj) -> bool:
    """Whether a name or object is a classification head (has class weights)."""
    obj = LOSSES.get(name_or_obj) if isinstance(name_or_obj, str) else type(name_or_obj)
    return isinstance(obj, type) and issubclass(obj, MarginHead)
