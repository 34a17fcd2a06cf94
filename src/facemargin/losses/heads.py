"""Classification heads: class weights (a store) plus a margin plus an engine.

Every head is built as ``Head(embedding_size=D, num_classes=C, **hyper)`` and holds its class
weights in ``head.weight`` ``(C, D)``. ``head(x, y)`` returns the mean cross-entropy of the
margin logits, ``head.logits(x, y)`` the logits themselves (no margin when ``y`` is None).
Presets are thin registered factories that translate a paper's hyper-parameters into a
:class:`~facemargin.losses.margin.MarginSpec`.

Two switches of the Angular Triplet Loss (see :class:`MarginInnerProduct` and ``docs/atl.md``)
exist on every head built on normalised weights:

* ``semihard=True``: the gradient reaching a sample's embedding is zeroed when the sample is
  *easy* (label = arg-max of the margin logits) or, when the head has a margin, *hard* (label
  ≠ arg-max of the plain logits). The class weights' gradient is not masked.
* ``triplet=True`` ("easy triplet"): the class weights get no gradient; instead, when the gradient
  of a training-mode call flows back, row ``y_i`` is overwritten with ``x_i`` with probability
  ``replace_prob``, in batch order (later samples of a class win).

On SphereFace/ATL these are the original Caffe layer's semantics; on CosFace, ArcFace and the
combined margin they are facemargin's extension.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn as nn

from .checks import (ANGLE, ANGLE_FACTOR, COSINE, LAMBDA_SCHEDULE, MULTIPLICATIVE, NO_PROXIES, SCALE, SIZE, Check,
                     CheckedParams, Flag, Integer, Real, check_batch, check_embeddings)
from .margin import (ENGINES, AdditiveMargin, MarginContext, MarginSpec, MarginStats, MultiplicativeMargin,
                     features, target_cosines, target_logit)
from .registry import LOSSES
from .stores import DenseStore, WeightStore, seeded_rows

Tensor = torch.Tensor

#: the engine a head uses when none is named: the fastest exact one
DEFAULT_ENGINE = "fused"


class _GradMask(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by a per-row mask filled in later."""

    @staticmethod
    def forward(ctx, x, holder):
        ctx.holder = holder
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        mask = ctx.holder.get("mask")
        if mask is None:
            return grad, None
        return grad * mask.to(grad.dtype).unsqueeze(1), None


class _ProxyReplace(torch.autograd.Function):
    """Identity on the batch; in backward, the store's class rows are overwritten by samples."""

    @staticmethod
    def forward(ctx, x, weight, rows, local, chosen):
        ctx.weight = weight
        ctx.save_for_backward(x.detach(), rows, local, chosen)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        x, rows, local, chosen = ctx.saved_tensors
        if rows.numel():
            replace_rows_(ctx.weight, x[rows], local, chosen)
        return grad, None, None, None, None


@torch.no_grad()
def normalize_rows_(weight: Tensor, eps: float = 1e-12) -> None:
    """Scale every row of ``weight`` to unit norm in place (no ``(C, D)`` temporary)."""
    norms = torch.linalg.vector_norm(weight, dim=1, keepdim=True)
    weight.div_(norms.clamp_min_(eps))


@torch.no_grad()
def replace_rows_(weight: Tensor, x: Tensor, y: Tensor, chosen: Tensor) -> None:
    """``weight[y_i] = x_i`` for the chosen samples, in batch order (the last one of a class wins).

    A sample with a non-finite value never becomes a class row (a step that will be skipped must
    not poison the weights)."""
    idx = (chosen.bool() & torch.isfinite(x).all(dim=1)).nonzero().flatten()
    if idx.numel() == 0:
        return
    labels = y[idx]
    # last chosen occurrence of every class: scan the batch backwards and keep first hits
    rev = torch.flip(idx, [0])
    uniq, inverse = torch.unique(labels.flip(0), return_inverse=True)
    first = torch.full((uniq.numel(),), rev.numel(), dtype=torch.long, device=y.device)
    first.scatter_reduce_(0, inverse, torch.arange(rev.numel(), device=y.device), reduce="amin")
    src = rev[first]
    weight[uniq] = x[src].to(weight.dtype)


class LambdaSchedule(nn.Module):
    """SphereFace's annealed blend ``λ = max(lambda_min, base·(1 + gamma·iteration)^(−power))``.

    ``iteration`` is incremented at the start of every training-mode forward of the owning head.
    Both ``iteration`` and ``lambda_`` are buffers, so they live in ``state_dict``.
    """

    def __init__(self, base=1000.0, gamma=0.12, power=1.0, lambda_min=5.0, iteration=0):
        super().__init__()
        self.base, self.gamma, self.power, self.lambda_min = float(base), float(gamma), float(power), float(lambda_min)
        self.register_buffer("iteration", torch.tensor(int(iteration), dtype=torch.long))
        self.register_buffer("lambda_", torch.tensor(self.value(int(iteration)), dtype=torch.float64))

    def value(self, iteration: int) -> float:
        return max(self.lambda_min, self.base * (1.0 + self.gamma * iteration) ** (-self.power))

    @property
    def current(self) -> float:
        """λ from the counter (exact even when a cast such as ``.to(bfloat16)`` rounds the buffer)."""
        return self.value(int(self.iteration))

    def step(self) -> None:
        self.iteration += 1
        self.lambda_.fill_(self.value(int(self.iteration)))

    def extra_repr(self):
        return (f"base={self.base}, gamma={self.gamma}, power={self.power}, "
                f"lambda_min={self.lambda_min}, iteration={int(self.iteration)}")


def _engine_name(name):
    ENGINES.resolve(name)  # raises "unknown engine ...; available: ..."
    return str(name)


class MarginHead(CheckedParams, nn.Module):
    """A classification head: class weights in a store, a :class:`MarginSpec`, an engine.

    Args:
        embedding_size, num_classes: ``D`` and ``C``.
        spec: what to compute (see :mod:`facemargin.losses.margin`); ``spec.margin`` becomes the
            submodule ``head.margin`` (its buffers live in ``state_dict``).
        scale: ``s`` for ``feature="scale"`` heads; ``learn_scale`` makes it a parameter.
        bias: add a learnable bias ``(C,)``.
        schedule: a :class:`LambdaSchedule` for margins that read λ.
        triplet, semihard, replace_prob: the ATL switches (module docstring).
        backend: the engine, ``"fused"`` (default: memory-lean and fastest) or ``"plain"``
            (the reference written with autograd).
        backend_options: passed to the engine (``chunk_size`` of the fused engine).
        store: where the rows live (:class:`~facemargin.losses.stores.DenseStore` by default; a
            sharded store splits them across ranks).
        rows_per_class: ``K`` weight rows per class (sub-centers; the class cosine is the best of
            them). ``weight`` is then ``(C·K, D)`` with class ``j`` in rows ``j·K … j·K+K−1``.

    The trainer talks to a head through :meth:`init_weights`, :meth:`param_groups` and
    :meth:`step_stats` only.

    Hyper-parameters: every head declares the valid values of its arguments in ``PARAMS``
    (see :mod:`facemargin.losses.checks`); the options below are inherited by every preset.
    """

    PARAMS = {
        "embedding_size": SIZE,
        "num_classes": SIZE,
        "scale": SCALE,
        "learn_scale": Flag(doc="learn the scale"),
        "bias": Flag(doc="add a learnable bias per class"),
        "triplet": Flag(doc="class rows replaced by samples instead of trained"),
        "semihard": Flag(doc="train the embeddings on semi-hard samples only"),
        "replace_prob": Real(0, 1, doc="the chance that a sample replaces its class row"),
        "backend": Check(_engine_name, "a registered engine name", doc="the engine", optional=True),
        "rows_per_class": Integer(1, doc="weight rows (sub-centers) per class"),
    }

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        spec: MarginSpec,
        scale: float = 1.0,
        learn_scale: bool = False,
        bias: bool = False,
        schedule: Optional["LambdaSchedule"] = None,
        triplet: bool = False,
        semihard: bool = False,
        replace_prob: float = 0.5,
        backend: Optional[str] = None,
        backend_options: Optional[dict] = None,
        store: Optional[WeightStore] = None,
        rows_per_class: int = 1,
    ):
        super().__init__()
        if (triplet or semihard) and not spec.weight_norm:
            raise ValueError("triplet/semihard need normalised class weights (rows are renormalised proxies)")
        if spec.margin.needs_lambda and schedule is None and spec.margin.active:
            raise ValueError(f"{type(spec.margin).__name__} reads λ: the head needs a LambdaSchedule")
        self.embedding_size, self.num_classes = int(embedding_size), int(num_classes)
        self.rows_per_class = int(rows_per_class)
        self.spec = spec
        self.margin = spec.margin
        self.store = store if store is not None else DenseStore()
        self.start, self.num_local = self.store.bind(self)
        self.weight = nn.Parameter(torch.empty(self.num_local * self.rows_per_class, self.embedding_size))
        self.bias = nn.Parameter(torch.zeros(self.num_local)) if bias else None
        if learn_scale:
            self.scale = nn.Parameter(torch.tensor(float(scale)))
        else:
            self.register_buffer("scale", torch.tensor(float(scale)), persistent=False)
        self.schedule = schedule
        self.triplet, self.semihard, self.replace_prob = bool(triplet), bool(semihard), float(replace_prob)
        self.backend = DEFAULT_ENGINE if backend is None else str(backend)
        self.engine = ENGINES.get(self.backend)
        self.engine.check(type(self).__name__, sharded=self.store.sharded)
        self.backend_options = dict(backend_options or {})
        self.last_stats: Optional[MarginStats] = None
        self.last_regularizer: Optional[float] = None
        self.store.initialize(self)

    #: options every preset passes through to the head (besides its own hyper-parameters)
    PASSTHROUGH = ("learn_scale", "bias", "triplet", "semihard", "replace_prob", "backend", "backend_options", "store")

    @classmethod
    def accepted_arguments(cls) -> List[str]:
        """What ``cls(...)`` accepts: its own named parameters, then the pass-through options."""
        import inspect

        own = [p.name for p in inspect.signature(cls.__init__).parameters.values()
               if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        if cls is MarginHead:
            return own
        return own + [o for o in cls.PASSTHROUGH if o not in own]

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight)

    # -- the trainer's protocol -----------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        """Seeded xavier-uniform class rows that depend on ``seed`` only (not on the world size:
        a sharded head draws exactly its rows of the full matrix); bias to zero."""
        k = self.rows_per_class
        self.weight.copy_(seeded_rows(self.num_classes * k, self.embedding_size, seed, self.start * k,
                                      self.num_local * k).to(self.weight.dtype))
        if self.bias is not None:
            self.bias.zero_()

    def param_groups(self, weight_decay: float) -> List[Dict]:
        """Optimizer groups: the class rows (with ``weight_decay``), everything else (without)."""
        rows = [self.weight] if self.weight.requires_grad else []
        others = [p for n, p in self.named_parameters() if n != "weight" and p.requires_grad]
        groups = []
        if rows:
            groups.append({"params": rows, "weight_decay": float(weight_decay), "name": "weight"})
        if others:
            groups.append({"params": others, "weight_decay": 0.0, "name": "other"})
        return groups

    def step_stats(self) -> Dict[str, float]:
        """Scalars of the last training call: λ, sample shares, regulariser, margin state."""
        out: Dict[str, float] = {}
        if self.last_stats is not None:
            out.update(self.last_stats.shares())
        if self.schedule is not None:
            out["lambda"] = float(self.lambda_)
        if self.last_regularizer is not None:
            out["regularizer"] = self.last_regularizer
        out.update({f"margin.{k}": float(v) for k, v in self.margin.stats().items()})
        return out

    def take_touched_rows(self) -> Optional[Tensor]:
        """Local rows used by training calls since the last call (then reset); None means all."""
        return self.store.take_touched_rows(self)

    # -- λ schedule ------------------------------------------------------------------------
    @property
    def iteration(self) -> Optional[Tensor]:
        return None if self.schedule is None else self.schedule.iteration

    @property
    def lambda_(self) -> Optional[float]:
        return None if self.schedule is None else self.schedule.current

    def _scale_arg(self):
        # a tensor whenever it needs a gradient (also under torch.func.functional_call, where the
        # learnable scale is substituted by a plain tensor)
        return self.store.replicated(self.scale) if self.scale.requires_grad else float(self.scale)

    # -- the computation --------------------------------------------------------------------------
    def _context(self, x: Tensor, y: Tensor, weight: Tensor, cols: Tensor, training: bool):
        """The margin context of the (gathered) batch, the owned rows and their target rows."""
        rows = (cols >= 0).nonzero().flatten()
        w_rows, link = self.engine.target_rows(weight, cols[rows], self.rows_per_class)
        c_loc, _, _ = target_cosines(x.detach()[rows], w_rows.detach())
        cos_t = self.store.all_sum(torch.zeros(x.shape[0], dtype=c_loc.dtype, device=x.device).index_put((rows,), c_loc))
        ctx = MarginContext(labels=y, norm=torch.linalg.vector_norm(x, dim=1), cos_target=cos_t, training=training,
                            lambda_=self.lambda_, step=0 if self.schedule is None else int(self.schedule.iteration))
        return ctx, rows, w_rows, link

    def _target(self, x, ctx, rows, w_rows, bias, cols, scale, apply_margin=True):
        """The target logits of the whole batch (None when the margin is the identity: the engines
        then keep the GEMM's own target logit)."""
        if not (apply_margin and self.margin.active):
            return None
        T_loc = target_logit(x[rows], w_rows, self.spec, ctx.select(rows), scale,
                             None if bias is None else bias[cols[rows]], apply_margin)
        T = torch.zeros(x.shape[0], dtype=T_loc.dtype, device=x.device).index_put((rows,), T_loc)
        return self.store.share_targets(T)

    def _others(self, ctx, scale):
        if not self.margin.changes_others:
            return None
        margin = self.margin
        return lambda z: scale * margin.others(z / scale, ctx)

    def logits(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """The ``(B, C)`` logits whose cross-entropy ``forward`` returns (no margin if y is None).

        Evaluated without updating any state (λ counter, EMA buffers); the reference (plain)
        arithmetic. Needs all class rows in this process.
        """
        if self.store.sharded:
            raise ValueError(f"{type(self).__name__}.logits needs every class row in one process; "
                             "a sharded head computes only its loss (gather the rows with full_state_dict)")
        if y is None:
            check_embeddings(x, self.embedding_size, type(self).__name__)
        else:
            check_batch(x, y, self.embedding_size, self.num_classes, type(self).__name__)
        plain = ENGINES.get("plain")
        weight, bias = self.weight, self._column_bias()
        s = self._scale_arg()
        f = features(x, self.spec, s)
        K = self.rows_per_class
        if y is None:
            z, _ = plain.logits(f, weight, bias, None, None, weight_norm=self.spec.weight_norm, rows_per_class=K)
            return z
        y = y.to(torch.long)
        ctx, rows, w_rows, _ = self._context(x, y, weight, y, training=False)
        self.margin.prepare(ctx)
        T = self._target(x, ctx, rows, w_rows, bias, y, s)
        z, _ = plain.logits(f, weight, bias, T, y, weight_norm=self.spec.weight_norm, others=self._others(ctx, s),
                            rows_per_class=K)
        return z

    def _column_bias(self) -> Optional[Tensor]:
        """The per-column bias the logits add (heads with a shared scalar bias expand it)."""
        return self.bias

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        check_batch(x, y, self.embedding_size, self.num_classes, type(self).__name__)
        training = self.training and torch.is_grad_enabled()
        if self.training and self.schedule is not None:
            self.schedule.step()
        y = y.to(torch.long)
        store = self.store
        replacing = self.triplet and training and self.replace_prob > 0
        chosen = (torch.rand(x.shape[0], device=x.device) < self.replace_prob).long() if replacing else None
        x, y, chosen = store.gather(self, x, y, chosen)
        local = store.local_index(self, y)
        if replacing:
            owned = (local >= 0).nonzero().flatten()
            x = _ProxyReplace.apply(x, self.weight, owned, local[owned], chosen[owned].bool())
        holder = {}
        if self.semihard and training:
            x = _GradMask.apply(x, holder)
        self._before_forward(training)
        weight = self.weight.detach() if self.triplet else self.weight
        weight, bias, cols = store.select(self, weight, self._column_bias(), local, training)
        ctx, rows, w_rows, link = self._context(x, y, weight, cols, training)
        if training:
            with torch.no_grad():
                self.margin.update(ctx)
        self.margin.prepare(ctx)
        s = self._scale_arg()
        T = self._target(x, ctx, rows, w_rows, bias, cols, s)
        f = features(x, self.spec, s)
        # the engine hands its weight gradient to the target rows only when they are in the graph
        loss, stats = self._loss(f, weight, bias, T, cols, link if T is not None else None, self._others(ctx, s), x)
        reg = self.margin.regularizer(ctx)
        if reg is not None:
            self.last_regularizer = float(reg.detach())
            loss = loss + store.replicated_term(reg.to(loss.dtype))
        self.last_stats = stats
        if self.semihard and training:
            holder["mask"] = stats.semihard_mask(self.margin.active)
        return loss

    def _before_forward(self, training: bool) -> None:
        """Hook run at the start of every forward (e.g. renormalising rows in place)."""

    def _loss(self, f, weight, bias, T, cols, link, others, x):
        """The engine's softmax cross-entropy; sigmoid heads override this."""
        return self.engine(f, weight, bias, T, cols, weight_norm=self.spec.weight_norm, link=link, others=others,
                           reducer=self.store.reducer, rows_per_class=self.rows_per_class, **self.backend_options)

    def extra_repr(self):
        s = f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, feature={self.spec.feature!r}, " \
            f"weight_norm={self.spec.weight_norm}"
        if self.store.sharded:
            s += f", rows=[{self.start}, {self.start + self.num_local}), rank={self.rank}, world_size={self.world_size}"
        if self.triplet or self.semihard:
            s += f", triplet={self.triplet}, semihard={self.semihard}, replace_prob={self.replace_prob}"
        s += f", backend={self.backend!r}"
        return s


# ------------------------------------------------------------------------------------------------
# presets
# ------------------------------------------------------------------------------------------------


@LOSSES.register("softmax")
class Softmax(MarginHead):
    """Plain softmax cross-entropy: logits ``W_j·x + b_j``."""

    PARAMS = NO_PROXIES

    def __init__(self, embedding_size, num_classes, bias=True, **kw):
        super().__init__(embedding_size, num_classes, MarginSpec("norm", False, AdditiveMargin()), bias=bias, **kw)


@LOSSES.register("l2softmax")
class L2Softmax(MarginHead):
    """L2-constrained softmax (Ranjan et al. 2017): logits ``W_j·(α x̂) + b_j``."""

    PARAMS = {"alpha": Real(0, lo_open=True, doc="the norm the features are scaled to"), **NO_PROXIES}

    def __init__(self, embedding_size, num_classes, alpha=24.0, bias=True, **kw):
        super().__init__(embedding_size, num_classes, MarginSpec("scale", False, AdditiveMargin()),
                         scale=alpha, bias=bias, **kw)

    @property
    def alpha(self):
        return self.scale


@LOSSES.register("normface")
class NormFace(MarginHead):
    """NormFace (Wang et al. 2017): logits ``s·cos θ_j``; ``learn_scale=True`` learns ``s``.

    The von Mises-Fisher mixture loss (Hasnat et al. 2017, "von Mises-Fisher Mixture Model-based
    Deep learning") has exactly this form: a mixture of vMF components with equal concentration
    ``κ = s`` and unit mean directions ``ŵ_j`` gives posteriors ``softmax(κ cos θ_j)``.
    """

    PARAMS = {"s": SCALE}

    def __init__(self, embedding_size, num_classes, s=16.0, learn_scale=False, **kw):
        super().__init__(embedding_size, num_classes, MarginSpec("scale", True, AdditiveMargin()),
                         scale=s, learn_scale=learn_scale, **kw)


class _Multiplicative(MarginHead):
    weight_norm = True
    PARAMS = {"m": MULTIPLICATIVE, **LAMBDA_SCHEDULE}

    def __init__(self, embedding_size, num_classes, m=4, base=1000.0, gamma=0.12, power=1.0,
                 lambda_min=5.0, iteration=0, **kw):
        spec = MarginSpec("norm", self.weight_norm, MultiplicativeMargin(m))
        schedule = LambdaSchedule(base, gamma, power, lambda_min, iteration)
        super().__init__(embedding_size, num_classes, spec, schedule=schedule, **kw)
        self.m = int(m)


@LOSSES.register("sphereface", "asoftmax")
class SphereFace(_Multiplicative):
    """SphereFace / A-Softmax (Liu et al. 2017). Target ``‖x‖(λ cos θ_y + ψ_m(θ_y))/(1+λ)``,
    others ``‖x‖ cos θ_j``; λ annealed by :class:`LambdaSchedule` (defaults of the Caffe code)."""


@LOSSES.register("lsoftmax")
class LSoftmax(_Multiplicative):
    """Large-margin softmax (Liu et al. 2016): SphereFace with ``‖W_j‖‖x‖`` (weights unnormalised)."""

    weight_norm = False
    PARAMS = NO_PROXIES


@LOSSES.register("atl")
class MarginInnerProduct(_Multiplicative):
    """The Angular Triplet Loss layer: a Caffe ``MarginInnerProduct`` layer with two switches.

    ``m`` = 1..4 is the layer's SINGLE..QUADRUPLE margin type (``m=1``: logits ``x·ŵ_j``, no blend).
    ``triplet`` and ``semihard`` are the layer's two switches (see the module docstring);
    ``replace_prob`` is the 5/10 chance with which a sample becomes its class's proxy.
    For small training sets the layer's recipe recommends ``m=2, lambda_min=3``.
    """

    def __init__(self, embedding_size, num_classes, m=4, base=1000.0, gamma=0.12, power=1.0,
                 lambda_min=5.0, iteration=0, triplet=False, semihard=False, replace_prob=0.5, **kw):
        super().__init__(embedding_size, num_classes, m=m, base=base, gamma=gamma, power=power,
                         lambda_min=lambda_min, iteration=iteration, triplet=triplet,
                         semihard=semihard, replace_prob=replace_prob, **kw)


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
