"""Metric losses: center, contrastive, triplet, COCO, range and marginal.

Every loss is called as ``loss(x, y)`` with embeddings ``x`` ``(B, D)`` and int64 labels ``y``
``(B,)`` and returns a scalar. Inputs are validated by :func:`.checks.check_batch`; losses that
hold no class weights accept optional ``embedding_size`` / ``num_classes`` so that a wrong width
or an out-of-range label is still caught when the caller states them.

Batches without any pair (or triplet) that a loss needs give ``0`` with a gradient path
(``x.sum() * 0``), never NaN.

Distances between embeddings are computed from the Gram matrix
(``‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b``, clamped at 0) in at least float32, and the Euclidean
distance is taken with a square root whose gradient is defined as 0 where the distance is 0
(identical points), so no loss here produces NaN gradients.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import SIZE, CheckedParams, Choice, Flag, Integer, Real, check_batch
from .heads import MarginHead
from .margin import AdditiveMargin, MarginSpec
from .registry import LOSSES

Tensor = torch.Tensor

__all__ = ["CenterLoss", "ContrastiveLoss", "TripletLoss", "COCOLoss", "RangeLoss", "MarginalLoss"]


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _work(x: Tensor) -> Tensor:
    """``x`` in at least float32 (bf16/fp16 Gram matrices lose too many digits)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _pairwise_sq_dist(x: Tensor) -> Tensor:
    """``(B, B)`` squared Euclidean distances ``‖x_i − x_j‖²`` (exactly 0 on the diagonal)."""
    sq = (x * x).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.t())
    d2 = d2.clamp_min(0.0)
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return d2.masked_fill(eye, 0.0)


def _safe_sqrt(d2: Tensor) -> Tensor:
    """``sqrt(d2)`` with value 0 and gradient 0 (not inf/NaN) where ``d2 == 0``."""
    pos = d2 > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, d2, torch.ones_like(d2))), torch.zeros_like(d2))


def _zero(x: Tensor) -> Tensor:
    """A scalar 0 connected to ``x`` (so ``backward()`` works and gives zero gradients)."""
    return x.sum() * 0.0


#: ``embedding_size`` / ``num_classes`` of a loss without class weights: optional
OPTIONAL_SIZE = Integer(1, optional=True, doc="checked against the inputs when given")
#: L2-normalise the embeddings first
NORMALIZE = Flag(doc="L2-normalise the embeddings first")


class _MetricLoss(CheckedParams, nn.Module):
    """Base of the weight-free metric losses: optional width/class-count checks."""

    PARAMS = {"embedding_size": OPTIONAL_SIZE, "num_classes": OPTIONAL_SIZE}

    def __init__(self, embedding_size: Optional[int] = None, num_classes: Optional[int] = None):
        super().__init__()
        self.embedding_size = None if embedding_size is None else int(embedding_size)
        self.num_classes = None if num_classes is None else int(num_classes)

    def _check(self, x: Tensor, y: Tensor) -> None:
        check_batch(x, y, self.embedding_size, self.num_classes, type(self).__name__)


# ------------------------------------------------------------------------------------------------
# center loss
# ------------------------------------------------------------------------------------------------


class _CenterLossFn(torch.autograd.Function):
    """``½·mean_i ‖x_i − c_{y_i}‖²``; backward returns ``(x − c)/B`` and updates the centres."""

    @staticmethod
    def forward(ctx, x, c_rows, y, centers, alpha, update):
        diff = x - c_rows.to(x.dtype)
        ctx.save_for_backward(diff, y)
        ctx.centers, ctx.alpha, ctx.update = centers, float(alpha), bool(update)
        return 0.5 * (diff * diff).sum() / x.shape[0]

    @staticmethod
    def backward(ctx, grad):
        diff, y = ctx.saved_tensors
        if ctx.update and ctx.alpha != 0.0:
            _center_update_(ctx.centers, diff.detach(), y, ctx.alpha)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = grad * diff / diff.shape[0]
        return grad_x, None, None, None, None, None


@torch.no_grad()
def _center_update_(centers: Tensor, diff: Tensor, y: Tensor, alpha: float) -> None:
    """``c_j −= α·Σ_{i:y_i=j}(c_j − x_i)/(1 + n_j)`` for the classes in the batch.

    ``diff`` holds ``x_i − c_{y_i}`` computed with the centres of the forward pass.
    """
    uniq, inv = torch.unique(y, return_inverse=True)
    num = torch.zeros(uniq.numel(), diff.shape[1], dtype=diff.dtype, device=diff.device)
    num.index_add_(0, inv, -diff)  # Σ (c_j − x_i)
    n = torch.bincount(inv, minlength=uniq.numel()).to(diff.dtype)
    delta = num / (1.0 + n)[:, None]
    centers.index_add_(0, uniq, (-alpha * delta).to(centers.dtype))


@LOSSES.register("center")
class CenterLoss(CheckedParams, nn.Module):
    """Center loss (Wen, Zhang, Li, Qiao, "A Discriminative Feature Learning Approach for Deep
    Face Recognition", ECCV 2016).

    ``L = ½ · mean_i ‖x_i − c_{y_i}‖²``. The centres ``centers`` ``(C, D)`` are a buffer
    (zero-initialised, saved in ``state_dict``), not a parameter: SGD never touches them.
    Instead, when ``L.backward()`` runs for a training-mode call (``module.training`` and grad
    enabled), every class ``j`` present in the batch is moved as in the paper's Algorithm 1 /
    the Caffe layer::

        c_j ← c_j − α · Σ_{i: y_i=j} (c_j − x_i) / (1 + n_j)

    where ``n_j`` is the number of samples of class ``j`` in the batch and ``c_j − x_i`` uses the
    centres the loss was computed with (a snapshot taken at forward time; the step is applied
    additively to the buffer). Eval-mode calls never update. The gradient reaching ``x_i`` is
    exactly ``(x_i − c_{y_i}) / B``. The paper combines it with softmax as
    ``L_softmax + λ·L_center`` (λ is the caller's weight).

    Args:
        embedding_size, num_classes: ``D`` and ``C``.
        alpha: the centre learning rate ``α``, ``0 < α <= 1`` (default 0.5). The paper allows
            ``α ∈ [0, 1]``; ``α = 0`` would freeze the centres at their zero start (the loss would
            only shrink the features), and ``α > 1`` overshoots: one sample of a class alone would
            carry its centre past the sample.
    """

    PARAMS = {"embedding_size": SIZE, "num_classes": SIZE,
              "alpha": Real(0, 1, lo_open=True, doc="the learning rate of the centres")}

    def __init__(self, embedding_size: int, num_classes: int, alpha: float = 0.5):
        super().__init__()
        self.embedding_size, self.num_classes, self.alpha = int(embedding_size), int(num_classes), float(alpha)
        self.register_buffer("centers", torch.zeros(self.num_classes, self.embedding_size))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        check_batch(x, y, self.embedding_size, self.num_classes, "CenterLoss")
        update = self.training and torch.is_grad_enabled()
        work = torch.promote_types(x.dtype, torch.float32)
        c_rows = self.centers[y].to(work)  # indexing copies: the snapshot the update uses
        return _CenterLossFn.apply(x.to(work), c_rows, y, self.centers, self.alpha, update)

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, alpha={self.alpha}"


# ------------------------------------------------------------------------------------------------
# contrastive loss
# ------------------------------------------------------------------------------------------------


@LOSSES.register("contrastive")
class ContrastiveLoss(_MetricLoss):
    """Contrastive loss (Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an
    Invariant Mapping", CVPR 2006; used for faces by DeepID2, Sun et al. 2014).

    Over all pairs ``i < j`` of the batch, with ``d`` the Euclidean distance (of ``x̂ = x/‖x‖``
    when ``normalize``) and ``s_ij = 1`` for the same label, else 0::

        L = mean_{i<j} ½ [ s_ij d² + (1 − s_ij) max(0, margin − d)² ]

    A batch of one sample has no pair and gives 0. At ``d = 0`` (identical points) the gradient
    of ``d`` is taken as 0, so the loss never yields NaN gradients.

    Args:
        margin: the negative-pair margin, a distance: ``>= 0`` (default 1.0).
        normalize: L2-normalise the embeddings first (default True).
        embedding_size, num_classes: optional, checked against the inputs when given.
    """

    PARAMS = {"margin": Real(0, doc="a distance negative pairs are pushed beyond"), "normalize": NORMALIZE}

    def __init__(self, margin: float = 1.0, normalize: bool = True,
                 embedding_size: Optional[int] = None, num_classes: Optional[int] = None):
        super().__init__(embedding_size, num_classes)
        self.margin, self.normalize = float(margin), bool(normalize)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        self._check(x, y)
        B = x.shape[0]
        if B < 2:
            return _zero(x)
        z = _work(x)
        if self.normalize:
            z = F.normalize(z, dim=1)
        d2 = _pairwise_sq_dist(z)
        iu = torch.triu_indices(B, B, offset=1, device=x.device)
        d2 = d2[iu[0], iu[1]]
        same = (y[iu[0]] == y[iu[1]]).to(d2.dtype)
        d = _safe_sqrt(d2)
        per_pair = 0.5 * (same * d2 + (1.0 - same) * F.relu(self.margin - d).pow(2))
        return per_pair.mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}, normalize={self.normalize}"


# ------------------------------------------------------------------------------------------------
# triplet loss
# ------------------------------------------------------------------------------------------------


@LOSSES.register("triplet")
class TripletLoss(_MetricLoss):
    """Triplet loss with in-batch mining (Schroff, Kalenichenko, Philbin, "FaceNet: A Unified
    Embedding for Face Recognition and Clustering", CVPR 2015).

    ``d`` is the squared Euclidean distance (of ``x̂`` when ``normalize``). Every ordered
    positive pair ``(a, p)``, ``a ≠ p``, ``y_a = y_p`` whose anchor has at least one negative
    gets negatives by ``mining``:

    * ``"semihard"`` (FaceNet): ``n = argmin {d_an : y_n ≠ y_a, d_an > d_ap}``; when no such
      negative exists, ``n = argmax {d_an : y_n ≠ y_a}`` (the easiest one);
    * ``"hard"``: ``n = argmin_{y_n ≠ y_a} d_an``;
    * ``"all"``: every negative ``n``, each its own triplet.

    ``L = mean over triplets of max(0, d_ap − d_an + margin)``; 0 (with a gradient path) when
    the batch has no triplet. Mining is done without gradient; ties go to the lowest index.
    Everything is vectorised (no Python loop over anchors). :meth:`triplets` lists the chosen
    ``(a, p, n)``.

    Args:
        margin: ``α`` of FaceNet, a squared-distance gap ``>= 0`` (default 0.2, the paper's value).
        mining: ``"semihard"`` (default), ``"hard"`` or ``"all"``.
        normalize: L2-normalise the embeddings first (default True; FaceNet's embeddings live on
            the unit hypersphere).
        embedding_size, num_classes: optional, checked against the inputs when given.
    """

    MINING = ("semihard", "hard", "all")
    PARAMS = {"margin": Real(0, doc="the gap between positive and negative squared distances"),
              "mining": Choice(*MINING, doc="how negatives are chosen"), "normalize": NORMALIZE}

    def __init__(self, margin: float = 0.2, mining: str = "semihard", normalize: bool = True,
                 embedding_size: Optional[int] = None, num_classes: Optional[int] = None):
        super().__init__(embedding_size, num_classes)
        self.margin, self.mining, self.normalize = float(margin), mining, bool(normalize)

    def _distances(self, x: Tensor) -> Tensor:
        z = _work(x)
        if self.normalize:
            z = F.normalize(z, dim=1)
        return _pairwise_sq_dist(z)

    @torch.no_grad()
    def _mine(self, d: Tensor, y: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        B = y.shape[0]
        same = y[:, None] == y[None, :]
        neg = ~same
        eye = torch.eye(B, dtype=torch.bool, device=y.device)
        pos = same & ~eye & neg.any(dim=1, keepdim=True)  # anchors without negatives form no triplet
        a, p = pos.nonzero(as_tuple=True)
        if self.mining == "all":
            pair, n = neg[a].nonzero(as_tuple=True)  # (P, B) mask: every negative of each pair
            return a[pair], p[pair], n
        rows = d[a]  # (P, B) distances from each pair's anchor
        negs = neg[a]
        inf = torch.tensor(math.inf, dtype=d.dtype, device=d.device)
        closest = torch.where(negs, rows, inf).argmin(dim=1)
        if self.mining == "hard":
            return a, p, closest
        semi = negs & (rows > d[a, p][:, None])
        semi_n = torch.where(semi, rows, inf).argmin(dim=1)
        easiest = torch.where(negs, rows, -inf).argmax(dim=1)
        n = torch.where(semi.any(dim=1), semi_n, easiest)
        return a, p, n

    def triplets(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """The mined triplets as three int64 index tensors ``(a, p, n)`` into the batch."""
        self._check(x, y)
        return self._mine(self._distances(x.detach()), y)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        self._check(x, y)
        d = self._distances(x)
        a, p, n = self._mine(d.detach(), y)
        if a.numel() == 0:
            return _zero(x)
        return F.relu(d[a, p] - d[a, n] + self.margin).mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}, normalize={self.normalize}"


# ------------------------------------------------------------------------------------------------
# COCO loss
# ------------------------------------------------------------------------------------------------


@LOSSES.register("coco")
class COCOLoss(MarginHead):
    """Congenerous cosine (COCO) loss (Liu, Li, Wang, "Rethinking Feature Discrimination and
    Polymerization for Large-scale Recognition", NIPS workshop 2017, arXiv:1710.00870; v1:
    "Learning Deep Features via Congenerous Cosine Loss for Person Recognition", 2017).

    Learnable centroids ``weight`` ``(C, D)``; features are normalised and scaled to ``α·x̂``,
    centroids normalised to ``ĉ_k``; the loss is the mean cross-entropy of the softmax over the
    logits ``α·x̂·ĉ_k``::

        L = −mean_i log( exp(α x̂_i·ĉ_{y_i}) / Σ_k exp(α x̂_i·ĉ_k) )

    (the paper keeps ``k = y_i`` in the denominator, as here). It is a classification head
    without margin, so it shares :class:`MarginHead`'s ``weight``, ``logits(x, y=None)`` and
    ``forward``; ``y`` does not change the logits.

    Scale ``α``: given directly, or (``alpha=None``, default) from the lower bound of the
    paper's "optimal scale factor" analysis (v2, the reason for its rewrite): for a feature lying
    on its own centroid, every other centroid has cosine ≥ −1, so its posterior is at most
    ``e^α / (e^α + (K−1) e^{−α})``; reaching a posterior ``ε`` therefore needs::

        α ≥ ½ · log( (K − 1) · ε / (1 − ε) )   ( = ½ · log(−(K−1)·ε/(ε−1)) )

    with ``K = num_classes``; ``eps`` (default 0.99) is that target probability.
    See :meth:`alpha_bound`.

    Args:
        embedding_size, num_classes: ``D`` and ``K``.
        alpha: the feature scale, ``> 0``; ``None`` takes the bound above.
        eps: target posterior ``ε ∈ (0, 1)`` of the bound (only used when ``alpha`` is None).
        **kw: :class:`MarginHead` options (``learn_scale``, ``backend``...).
    """

    PARAMS = {"alpha": Real(0, lo_open=True, optional=True, doc="the feature scale; None: the bound from eps"),
              "eps": Real(0, 1, lo_open=True, hi_open=True, doc="the target posterior of the scale bound")}

    def __init__(self, embedding_size: int, num_classes: int, alpha: Optional[float] = None,
                 eps: float = 0.99, **kw):
        if alpha is None:
            alpha = self.alpha_bound(num_classes, eps)
        super().__init__(embedding_size, num_classes, MarginSpec("scale", True, AdditiveMargin()),
                         scale=float(alpha), **kw)
        self.eps = float(eps)

    @staticmethod
    def alpha_bound(num_classes: int, eps: float = 0.99) -> float:
        """``½·log((K−1)·ε/(1−ε))``: the smallest ``α`` at which a feature on its centroid can
        reach posterior ``ε`` among ``K`` classes (see the class docstring)."""
        K = int(num_classes)
        if K < 2:
            raise ValueError(f"COCOLoss: the alpha bound needs num_classes >= 2, got {num_classes}; pass alpha=")
        if not 0.0 < float(eps) < 1.0:
            raise ValueError(f"COCOLoss: eps must lie in (0, 1), got {eps!r}")
        eps = float(eps)
        return 0.5 * math.log((K - 1) * eps / (1.0 - eps))

    @property
    def alpha(self):
        """The feature scale ``α`` (a tensor; a parameter when ``learn_scale=True``)."""
        return self.scale


# ------------------------------------------------------------------------------------------------
# range loss
# ------------------------------------------------------------------------------------------------


@LOSSES.register("range")
class RangeLoss(_MetricLoss):
    """Range loss (Zhang, Fang, Wen, Li, Qiao, "Range Loss for Deep Face Recognition with
    Long-Tailed Training Data", ICCV 2017; arXiv:1611.08976).

    ``L = α·L_intra + β·L_inter`` over one batch:

    * ``L_intra = Σ_{classes i in the batch} k / Σ_{j=1..k} 1/D_j`` — for each class the harmonic
      mean of its ``k`` largest intra-class pairwise distances ``D_1 ≥ D_2 ≥ …`` (the class's
      "ranges"). A class with a single sample has no range and contributes 0; a class with fewer
      than ``k`` pairs uses all of its pairs (``k`` replaced by their number).
    * ``L_inter = max(margin − D_center, 0)`` with ``D_center`` the smallest distance between the
      centres (batch means) of two classes of the batch; 0 when the batch holds one class.

    Distances are squared Euclidean (``‖a − b‖²₂``, as in the paper's ``D_center``); set
    ``squared=False`` for plain Euclidean. The features are not normalised (the large default
    margin is meant for raw deep features). Defaults: ``k = 2`` (the paper's choice),
    ``margin = 2·10⁴``, ``alpha = 1e-4`` and ``beta = 1e-3`` — the values of the public Caffe
    range-loss layer (``choose_k: 2``, ``margin: 2e4``, ``intra_weight: 10e-5``,
    ``inter_weight: 10e-4``). The paper trains with ``L_softmax + λ·L_range``; λ is the caller's
    weight. A zero distance in the harmonic mean is clamped to ``1e-12`` (the class's term is
    then ~0, with finite gradients).

    Args:
        k: number of largest ranges per class.
        margin: inter-class margin ``m``.
        alpha, beta: weights of the intra- and inter-class terms.
        squared: use squared Euclidean distances (default True).
        embedding_size, num_classes: optional, checked against the inputs when given.
    """

    PARAMS = {"k": Integer(1, doc="the number of largest ranges per class"),
              "margin": Real(0, doc="the inter-class margin, a distance"),
              "alpha": Real(0, doc="the weight of the intra-class term"),
              "beta": Real(0, doc="the weight of the inter-class term"),
              "squared": Flag(doc="squared Euclidean distances")}

    def __init__(self, k: int = 2, margin: float = 2e4, alpha: float = 1e-4, beta: float = 1e-3,
                 squared: bool = True, embedding_size: Optional[int] = None,
                 num_classes: Optional[int] = None):
        super().__init__(embedding_size, num_classes)
        self.k, self.margin, self.alpha, self.beta = int(k), float(margin), float(alpha), float(beta)
        self.squared = bool(squared)

    def _dist(self, d2: Tensor) -> Tensor:
        return d2 if self.squared else _safe_sqrt(d2)

    def intra(self, x: Tensor, y: Tensor) -> Tensor:
        """``L_intra``: Σ over classes of the harmonic mean of their ``k`` largest ranges."""
        z = _work(x)
        B = z.shape[0]
        iu = torch.triu_indices(B, B, offset=1, device=x.device)
        same = y[iu[0]] == y[iu[1]]
        i, j = iu[0][same], iu[1][same]
        if i.numel() == 0:
            return _zero(z)
        dist = self._dist(_pairwise_sq_dist(z)[i, j])
        cls = y[i]
        # rank every pair within its class by decreasing distance: sort by distance, then
        # stably by class, so each class's pairs are contiguous and in decreasing order
        with torch.no_grad():
            order = torch.argsort(dist.detach(), descending=True, stable=True)
            order = order[torch.argsort(cls[order], stable=True)]
            c_sorted = cls[order]
            _, counts = torch.unique_consecutive(c_sorted, return_counts=True)
            starts = torch.cumsum(counts, 0) - counts
            group = torch.repeat_interleave(torch.arange(counts.numel(), device=x.device), counts)
            rank = torch.arange(order.numel(), device=x.device) - starts[group]
            keep = rank < self.k
        top = dist[order][keep].clamp_min(1e-12)
        g = group[keep]
        inv_sum = torch.zeros(counts.numel(), dtype=top.dtype, device=x.device).index_add(0, g, 1.0 / top)
        k_used = torch.clamp(counts, max=self.k).to(top.dtype)
        return (k_used / inv_sum).sum()

    def inter(self, x: Tensor, y: Tensor) -> Tensor:
        """``L_inter = max(margin − D_center, 0)`` over the class centres of the batch."""
        z = _work(x)
        uniq, inv = torch.unique(y, return_inverse=True)
        if uniq.numel() < 2:
            return _zero(z)
        sums = torch.zeros(uniq.numel(), z.shape[1], dtype=z.dtype, device=z.device).index_add(0, inv, z)
        centres = sums / torch.bincount(inv, minlength=uniq.numel()).to(z.dtype)[:, None]
        U = uniq.numel()
        iu = torch.triu_indices(U, U, offset=1, device=z.device)
        d_center = self._dist(_pairwise_sq_dist(centres)[iu[0], iu[1]]).min()
        return F.relu(self.margin - d_center)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        self._check(x, y)
        return self.alpha * self.intra(x, y) + self.beta * self.inter(x, y)

    def extra_repr(self) -> str:
        return (f"k={self.k}, margin={self.margin}, alpha={self.alpha}, beta={self.beta}, "
                f"squared={self.squared}")


# ------------------------------------------------------------------------------------------------
# marginal loss
# ------------------------------------------------------------------------------------------------


@LOSSES.register("marginal")
class MarginalLoss(_MetricLoss):
    """Marginal loss (Deng, Zhou, Zafeiriou, "Marginal Loss for Deep Face Recognition",
    CVPR Workshops 2017).

    With ``x̂`` the normalised embeddings, ``m`` the batch size and ``y_ij = +1`` for the same
    identity, ``−1`` otherwise::

        L = 1/(m² − m) · Σ_{i≠j} max(0, ξ − y_ij (θ − ‖x̂_i − x̂_j‖²₂))

    ``θ`` is the distance threshold separating positive from negative pairs and ``ξ`` the error
    margin around it. Paper defaults: ``θ = 1.2``, ``ξ = 0.3`` (the paper trains with
    ``L_softmax + λ·L_marginal``, λ the caller's weight). A batch of one sample gives 0.

    Args:
        theta: ``θ`` (default 1.2), ``0 <= θ <= 4``: a squared distance between unit vectors
            lies in [0, 4].
        xi: ``ξ`` (default 0.3), ``>= 0``.
        embedding_size, num_classes: optional, checked against the inputs when given.
    """

    PARAMS = {"theta": Real(0, 4, doc="a squared distance between unit vectors"),
              "xi": Real(0, doc="the error margin around theta")}

    def __init__(self, theta: float = 1.2, xi: float = 0.3,
                 embedding_size: Optional[int] = None, num_classes: Optional[int] = None):
        super().__init__(embedding_size, num_classes)
        self.theta, self.xi = float(theta), float(xi)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        self._check(x, y)
        m = x.shape[0]
        if m < 2:
            return _zero(x)
        z = F.normalize(_work(x), dim=1)
        d2 = _pairwise_sq_dist(z)
        sign = (y[:, None] == y[None, :]).to(d2.dtype) * 2.0 - 1.0
        off = ~torch.eye(m, dtype=torch.bool, device=x.device)
        terms = F.relu(self.xi - sign * (self.theta - d2))[off]
        return terms.sum() / (m * m - m)

    def extra_repr(self) -> str:
        return f"theta={self.theta}, xi={self.xi}"
