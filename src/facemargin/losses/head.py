"""The classification head: class weights (a store) plus a margin plus an engine.

Every head is built as ``Head(embedding_size=D, num_classes=C, **hyper)`` and holds its class
weights in a store (``head.store``; ``head.weight`` ``(C, D)`` reads them). ``head(x, y)``
returns the loss of the margin logits, ``head.logits(x, y)`` the logits themselves (no margin
when ``y`` is None). Heads of a family are thin registered classes that translate a paper's
hyper-parameters into a :class:`~facemargin.losses.core.MarginSpec` (one file per family).

One call: the store gives a :class:`~facemargin.losses.stores.BatchView` (the batch, the target
columns, the rows in play and the communication hooks); the head builds the margin context, the
target logits (:func:`~facemargin.losses.core.target_logit`) and hands everything to its engine
with its objective (the softmax cross-entropy, or one binary loss per column for
:class:`BinaryMarginHead`). The head never writes the store.

Two switches of the Angular Triplet Loss (see :class:`~facemargin.losses.sphereface.MarginInnerProduct`
and ``docs/atl.md``) exist on every head built on normalised weights:

* ``semihard=True``: the gradient reaching a sample's embedding is zeroed when the sample is
  *easy* (label = arg-max of the margin logits) or, when the head has a margin, *hard* (label
  ≠ arg-max of the plain logits). The class weights' gradient is not masked.
* ``triplet=True`` ("easy triplet"): the class weights get no gradient; instead, when the gradient
  of a training-mode call flows back, row ``y_i`` is overwritten with ``x_i`` with probability
  ``replace_prob``, in batch order (later samples of a class win; the store does the writing).
"""
from __future__ import annotations

import inspect
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from .checks import SCALE, SIZE, Check, CheckedParams, Flag, Integer, Real, check_batch, check_embeddings
from .core import MarginContext, MarginSpec, MarginStats, ScaledOthers, features, target_cosines, target_logit
from .engines import ENGINES, SOFTMAX, engine_argument
from .stores import DenseStore, LocalComm, WeightStore

Tensor = torch.Tensor

#: the engine a head uses when none is named: the fastest exact one
DEFAULT_ENGINE = "fused"
#: the store entries a head's state_dict holds without the ``store.`` prefix
_FLAT = "store."


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


def _engine_name(name):
    ENGINES.resolve(name)  # raises "unknown engine ...; available: ..."
    return str(name)


_ENGINE = Check(_engine_name, "a registered engine name", doc="the engine", optional=True)


class MarginHead(CheckedParams, nn.Module):
    """A classification head: class weights in a store, a :class:`MarginSpec`, an engine.

    Args:
        embedding_size, num_classes: ``D`` and ``C``.
        spec: what to compute (see :mod:`facemargin.losses.core`); ``spec.margin`` becomes the
            submodule ``head.margin`` (its buffers live in ``state_dict``).
        scale: ``s`` for ``feature="scale"`` heads; ``learn_scale`` makes it a parameter.
        schedule: a :class:`~facemargin.losses.sphereface.LambdaSchedule` for margins that read λ.
        rows_per_class: ``K`` weight rows per class (sub-centers; the class cosine is the best of
            them). ``weight`` is then ``(C·K, D)`` with class ``j`` in rows ``j·K … j·K+K−1``.

    Keyword-only options, passed through by every head of the zoo:
        learn_scale, bias: learn the scale; add a learnable bias per class.
        triplet, semihard, replace_prob: the ATL switches (module docstring).
        engine: ``"fused"`` (default: memory-lean and fastest) or ``"plain"`` (the reference
            written with autograd); engine_options: passed to it (``chunk_size`` of ``fused``).
        store: where the rows live (:class:`~facemargin.losses.stores.DenseStore` by default; a
            sharded store splits them across ranks).
        backend, backend_options: the former names of ``engine`` and ``engine_options``
            (deprecated: they warn).

    The trainer talks to a head through :meth:`init_weights`, :meth:`param_groups` and
    :meth:`step_stats` only. Hyper-parameters: every head declares the valid values of its
    arguments in ``PARAMS`` (see :mod:`facemargin.losses.checks`).
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
        "engine": _ENGINE,
        "backend": _ENGINE,
        "rows_per_class": Integer(1, doc="weight rows (sub-centers) per class"),
    }

    #: the loss taken of the logits (an engine argument); :class:`BinaryMarginHead` has its own
    objective = SOFTMAX
    #: scale the class rows to unit norm in place at the start of every call
    renormalize_rows = False

    def __init__(self, embedding_size: int, num_classes: int, spec: MarginSpec, scale: float = 1.0,
                 schedule: Optional[nn.Module] = None, rows_per_class: int = 1, *,
                 learn_scale: bool = False, bias: bool = False, triplet: bool = False, semihard: bool = False,
                 replace_prob: float = 0.5, engine: Optional[str] = None, engine_options: Optional[dict] = None,
                 store: Optional[WeightStore] = None, backend: Optional[str] = None,
                 backend_options: Optional[dict] = None):
        super().__init__()
        who = type(self).__name__
        engine = engine_argument(who, engine, backend)
        engine_options = engine_argument(who, engine_options, backend_options, "backend_options", "engine_options")
        if (triplet or semihard) and not spec.weight_norm:
            raise ValueError("triplet/semihard need normalised class weights (rows are renormalised proxies)")
        if spec.margin.needs_lambda and schedule is None and spec.margin.active:
            raise ValueError(f"{type(spec.margin).__name__} reads λ: the head needs a LambdaSchedule")
        self.embedding_size, self.num_classes = int(embedding_size), int(num_classes)
        self.rows_per_class = int(rows_per_class)
        self.spec = spec
        self.store = store if store is not None else DenseStore()
        self.store.allocate(self.num_classes, self.embedding_size, self.rows_per_class, bias=bool(bias),
                           bias_init=self.bias_init() if bias else 0.0)
        self.margin = spec.margin
        if learn_scale:
            self.scale = nn.Parameter(torch.tensor(float(scale)))
        else:
            self.register_buffer("scale", torch.tensor(float(scale)), persistent=False)
        self.schedule = schedule
        self.triplet, self.semihard, self.replace_prob = bool(triplet), bool(semihard), float(replace_prob)
        self.engine = ENGINES.get(DEFAULT_ENGINE if engine is None else str(engine))
        self.engine.check(who, sharded=self.store.sharded)
        self.engine_options = dict(engine_options or {})
        self.last_stats: Optional[MarginStats] = None
        self.last_regularizer: Optional[float] = None
        self._register_state_dict_hook(_flatten_store_keys)
        self.register_load_state_dict_pre_hook(_nest_store_keys)

    @classmethod
    def pass_through(cls) -> List[str]:
        """The options every head passes on to :class:`MarginHead`: its keyword-only arguments."""
        params = inspect.signature(MarginHead.__init__).parameters.values()
        return [p.name for p in params if p.kind is p.KEYWORD_ONLY]

    @classmethod
    def accepted_arguments(cls) -> List[str]:
        """What ``cls(...)`` accepts: its own named parameters, then the pass-through options."""
        own = [p.name for p in inspect.signature(cls.__init__).parameters.values()
               if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        if cls is MarginHead:
            return own
        return own + [o for o in cls.pass_through() if o not in own]

    # -- the store's rows, read-only ---------------------------------------------------------------
    @property
    def weight(self) -> Tensor:
        """The class rows held here (``head.store.weight``)."""
        return self.store.weight

    @property
    def bias(self) -> Optional[Tensor]:
        """The per-class bias held here (``head.store.bias``), or None."""
        return self.store.bias

    def __setattr__(self, name, value):
        # ``head.weight``/``head.bias`` name the store's entries: an assignment goes to the store
        # (``head.weight -= ...`` and ``torch.func.functional_call(head, {"weight": W})`` work as on
        # a module holding the rows itself). The head's own code never assigns them.
        store = self.__dict__.get("_modules", {}).get("store")
        if name in ("weight", "bias") and store is not None:
            if value is getattr(store, name):  # an in-place update: nothing to assign
                return
            if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter) and name in store._parameters:
                store._parameters[name] = value  # a substitution (functional_call), undone the same way
                return
            setattr(store, name, value)
            return
        super().__setattr__(name, value)

    @property
    def start(self) -> int:
        return self.store.start

    @property
    def num_local(self) -> int:
        return self.store.num_local

    @property
    def sampled_index(self) -> Optional[Tensor]:
        return self.store.sampled_index

    @property
    def backend(self) -> str:
        """The engine's name (the former name of ``head.engine.name``)."""
        return self.engine.name

    def reset_parameters(self) -> None:
        self.store.reset_parameters()

    def bias_init(self) -> float:
        """The initial value of the per-class bias (0 here)."""
        return 0.0

    # -- the trainer's protocol -----------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        """Seeded xavier-uniform class rows that depend on ``seed`` only (not on the world size:
        a sharded head draws exactly its rows of the full matrix); bias to :meth:`bias_init`. Heads with more
        state (a shared bias, a margin generator) reset it here too."""
        self.store.init_weights(seed)

    def param_groups(self, weight_decay: float) -> List[Dict]:
        """Optimizer groups: the class rows (with ``weight_decay``), everything else (without)."""
        rows = [self.weight] if self.weight.requires_grad else []
        groups = []
        if rows:
            groups.append({"params": rows, "weight_decay": float(weight_decay), "name": "weight"})
        others = [p for p in self.ordered_parameters() if p is not self.weight]
        if others:
            groups.append({"params": others, "weight_decay": 0.0, "name": "other"})
        return groups

    def ordered_parameters(self) -> List[Tensor]:
        """The trainable parameters in checkpoint order: rows, bias, then the head's own."""
        store = [p for p in (self.weight, self.bias) if p is not None]
        rest = [p for n, p in self.named_parameters() if not n.startswith(_FLAT)]
        return [p for p in store + rest if p.requires_grad]

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
        return self.store.take_touched_rows()

    # -- λ schedule ------------------------------------------------------------------------
    @property
    def iteration(self) -> Optional[Tensor]:
        return None if self.schedule is None else self.schedule.iteration

    @property
    def lambda_(self) -> Optional[float]:
        return None if self.schedule is None else self.schedule.current

    def _scale_arg(self, comm):
        # a tensor whenever it needs a gradient (also under torch.func.functional_call, where the
        # learnable scale is substituted by a plain tensor)
        return comm.replicated(self.scale) if self.scale.requires_grad else float(self.scale)

    def column_bias(self, bias: Optional[Tensor], n: int, comm) -> Optional[Tensor]:
        """The bias added to the ``n`` columns in play, from the store's ``bias`` rows (heads with
        a shared scalar bias expand it, sign conventions apply here)."""
        return bias

    # -- the computation --------------------------------------------------------------------------
    def _context(self, x: Tensor, y: Tensor, weight: Tensor, cols: Tensor, training: bool, comm):
        """The margin context of the (gathered) batch, the owned rows and their target rows."""
        rows = (cols >= 0).nonzero().flatten()
        w_rows, link = self.engine.target_rows(weight, cols[rows], self.rows_per_class)
        c_loc, _, _ = target_cosines(x.detach()[rows], w_rows.detach())
        cos_t = comm.all_sum(torch.zeros(x.shape[0], dtype=c_loc.dtype, device=x.device).index_put((rows,), c_loc))
        ctx = MarginContext(labels=y, norm=torch.linalg.vector_norm(x, dim=1), cos_target=cos_t, training=training,
                            lambda_=self.lambda_, step=0 if self.schedule is None else int(self.schedule.iteration))
        return ctx, rows, w_rows, link

    def target_logits(self, x, ctx, rows, w_rows, bias, cols, scale, comm) -> Optional[Tensor]:
        """The target logits of the whole batch, or None when neither the margin nor the objective
        needs them (the engines then keep the GEMM's own target logit)."""
        if not (self.margin.active or self.objective.needs_target):
            return None
        T_loc = target_logit(x[rows], w_rows, self.spec, ctx.select(rows), scale,
                             None if bias is None else bias[cols[rows]])
        T = torch.zeros(x.shape[0], dtype=T_loc.dtype, device=x.device).index_put((rows,), T_loc)
        return comm.share(T)

    def _others(self, ctx, scale):
        if not self.margin.changes_others:
            return None
        return ScaledOthers(self.margin, ctx, scale)

    def logits(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """The ``(B, C)`` logits whose loss ``forward`` returns (no margin if y is None).

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
        plain, comm = ENGINES.get("plain"), LocalComm()
        weight, bias = self.weight, self.column_bias(self.bias, self.num_local, comm)
        s = self._scale_arg(comm)
        f = features(x, self.spec, s)
        K = self.rows_per_class
        if y is None:
            z, _ = plain.logits(f, weight, bias, None, None, weight_norm=self.spec.weight_norm, rows_per_class=K)
            return z
        y = y.to(torch.long)
        ctx, rows, w_rows, _ = self._context(x, y, weight, y, False, comm)
        self.margin.prepare(ctx)
        T = self.target_logits(x, ctx, rows, w_rows, bias, y, s, comm) if self.margin.active else None
        z, _ = plain.logits(f, weight, bias, T, y, weight_norm=self.spec.weight_norm, others=self._others(ctx, s),
                            rows_per_class=K)
        return z

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        check_batch(x, y, self.embedding_size, self.num_classes, type(self).__name__)
        training = self.training and torch.is_grad_enabled()
        if self.training and self.schedule is not None:
            self.schedule.step()
        y = y.to(torch.long)
        replacing = self.triplet and training and self.replace_prob > 0
        chosen = (torch.rand(x.shape[0], device=x.device) < self.replace_prob).long() if replacing else None
        view = self.store.view(x, y, training=training, proxies=chosen, frozen=self.triplet,
                               renormalize=self.renormalize_rows)
        x, y, cols, weight, comm = view.x, view.y, view.cols, view.weight, view.comm
        holder = {}
        if self.semihard and training:
            x = _GradMask.apply(x, holder)
        bias = self.column_bias(view.bias, view.num_columns, comm)
        ctx, rows, w_rows, link = self._context(x, y, weight, cols, training, comm)
        if training:
            with torch.no_grad():
                self.margin.update(ctx)
        self.margin.prepare(ctx)
        s = self._scale_arg(comm)
        T = self.target_logits(x, ctx, rows, w_rows, bias, cols, s, comm)
        f = features(x, self.spec, s)
        # the engine hands its weight gradient to the target rows only when they are in the graph
        loss, stats = self.engine(f, weight, bias, T, cols, objective=self.objective, weight_norm=self.spec.weight_norm,
                                  link=link if T is not None else None, others=self._others(ctx, s), comm=comm,
                                  rows_per_class=self.rows_per_class, **self.engine_options)
        reg = self.margin.regularizer(ctx)
        if reg is not None:
            self.last_regularizer = float(reg.detach())
            loss = loss + comm.replicated_term(reg.to(loss.dtype))
        self.last_stats = stats
        if self.semihard and training:
            holder["mask"] = stats.semihard_mask(self.margin.active)
        return loss

    def extra_repr(self):
        s = f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, feature={self.spec.feature!r}, " \
            f"weight_norm={self.spec.weight_norm}"
        if self.triplet or self.semihard:
            s += f", triplet={self.triplet}, semihard={self.semihard}, replace_prob={self.replace_prob}"
        s += f", engine={self.engine.name!r}"
        return s


def _flatten_store_keys(module, state_dict, prefix, local_metadata):
    """State-dict hook: the store's entries first and without the ``store.`` prefix (one checkpoint
    layout, whichever module holds the rows)."""
    inner = prefix + _FLAT
    mine = [(k, state_dict.pop(k)) for k in [k for k in state_dict if k.startswith(prefix)]]
    for key, value in [kv for kv in mine if kv[0].startswith(inner)]:
        state_dict[prefix + key[len(inner):]] = value
    for key, value in [kv for kv in mine if not kv[0].startswith(inner)]:
        state_dict[key] = value
    return state_dict


def _nest_store_keys(module, state_dict, prefix, *args):
    """Load pre-hook: the flat store entries back under ``store.`` before loading."""
    own = set(module.store.state_dict(keep_vars=True))
    for key in own:
        if prefix + key in state_dict and prefix + _FLAT + key not in state_dict:
            state_dict[prefix + _FLAT + key] = state_dict.pop(prefix + key)
