"""Metric losses: center, contrastive, triplet, range and marginal (one file each).

Every loss is called as ``loss(x, y)`` with embeddings ``x`` ``(B, D)`` and int64 labels ``y``
``(B,)`` and returns a scalar. Inputs are validated by :func:`..checks.check_batch`; losses that
hold no class weights accept optional ``embedding_size`` / ``num_classes`` so that a wrong width
or an out-of-range label is still caught when the caller states them.

Batches without any pair (or triplet) that a loss needs give ``0`` with a gradient path
(``x.sum() * 0``), never NaN.

Distances between embeddings are computed from the Gram matrix
(``‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b``, clamped at 0) in at least float32, and the Euclidean
distance is taken with a square root whose gradient is defined as 0 where the distance is 0
(identical points), so no loss here produces NaN gradients (:mod:`.common`).

The congenerous cosine loss holds class centroids and is a classification head
(:mod:`facemargin.losses.coco`); it is re-exported here under its former home.
"""
from ..coco import COCOLoss
from .center import CenterLoss
from .contrastive import ContrastiveLoss
from .marginal import MarginalLoss
from .range import RangeLoss
from .triplet import TripletLoss

__all__ = ["CenterLoss", "ContrastiveLoss", "TripletLoss", "COCOLoss", "RangeLoss", "MarginalLoss"]
