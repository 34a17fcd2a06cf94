"""The training loop: any backbone with any loss of the registry, resumable to the bit.

``Trainer(cfg, train_set).fit()`` trains for ``cfg["train"]["steps"]`` steps. The batch of step
``k`` and the learning rate at step ``k`` are functions of ``k`` alone, and checkpoints hold the
model, loss (class weights, λ counter, centers), optimizer and RNG states, so a run resumed from
a checkpoint produces the same losses as a run that was never interrupted.

A step whose input, embeddings, loss or gradients hold NaN/Inf (on any rank) is skipped: nothing
moves, the skip is logged with its likely cause and counted; ``train.max_consecutive_skips`` in a
row stop the run. Checkpoints are never written with non-finite values.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn

from .. import losses
from .checkpoint import build_backbone_from_config
from .data import check_backbone_fits, choose_backbone, sample_shape
from .guard import StepGuard
from .runlog import MetricsLog
from .schedule import lr_factor, make_batch_order
from .state import RunState, state_mismatch  # noqa: F401  (also importable from here)
from .validation import BEST_KEY, Validator, summary


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available on this machine")
    return torch.device(name)


def build_loss(spec: Dict, embedding_size: int, num_classes: int) -> nn.Module:
    """Build a head (given ``embedding_size``/``num_classes``) or a metric loss from its config
    table; an unknown or missing parameter raises ``ValueError`` listing what the loss accepts."""
    return losses.build_from_config(spec, embedding_size, num_classes)


class Trainer(RunState, StepGuard, MetricsLog):
    """Train ``cfg["model"]`` with ``cfg["loss"]`` (+ ``cfg["aux"]``) on ``train_set``.

    ``train_set`` has ``num_classes``, ``__len__`` and either ``get_batch(indices) -> (x, y)``
    (in-memory sets) or ``__getitem__`` (read through a DataLoader with workers); with
    ``data.sampler = "pk"`` also ``labels``, one class per sample, from which the batches are drawn.
    ``evaluate(model) -> dict`` is called every ``train.eval_every`` steps and at the end, as are
    the verification packs of ``data.val`` (:mod:`facemargin.train.validation`); the checkpoint
    with the best mean accuracy over those packs is kept as ``best.pt``.

    ``model.name = "auto"`` is resolved here from the size of the training images (and written
    back into ``cfg``); a backbone that cannot take them raises a ``ValueError`` naming one that can.
    """

    def __init__(self, cfg: Dict, train_set, evaluate: Optional[Callable] = None, log: Callable = print,
                 distributed=None):
        self.cfg, self.train_set, self.evaluate, self.log = cfg, train_set, evaluate, log
        t = cfg["train"]
        self.device = resolve_device(t["device"])
        self.out = Path(t["out"])
        self.steps = int(t["steps"])
        if self.steps <= 0:
            raise ValueError(f"train.steps must be positive, got {self.steps}")
        self.dist = distributed
        rank, world = (self.dist.rank, self.dist.world) if self.dist else (0, 1)
        self.is_main = rank == 0
        shape = sample_shape(train_set)
        cfg["model"]["name"], cfg["model"]["params"] = choose_backbone(cfg["model"]["name"], shape,
                                                                       cfg["model"].get("params"))
        torch.manual_seed(int(t["seed"]))
        self.model = build_backbone_from_config(cfg).to(self.device)
        check_backbone_fits(self.model, cfg["model"]["name"], shape)
        val = cfg["data"].get("val") or []
        self.validator = Validator(val, self.model.input_size, distributed) if val else None
        self.best: Optional[Dict] = None  # {"score", "step"} of best.pt
        self.start_step = 0
        emb = int(cfg["model"]["embedding_size"])
        self.num_classes = int(train_set.num_classes)
        self.loss = (self.dist.build_head(cfg["loss"], emb, self.num_classes) if self.dist is not None
                     else build_loss(cfg["loss"], emb, self.num_classes))
        if isinstance(self.loss, losses.MarginHead):
            # the one seeded init: the class rows (and a head's other state) depend on the seed
            # only, not on how many ranks hold them
            self.loss.init_weights(int(t["seed"]))
        self.loss = self.loss.to(self.device)
        self.model_ddp = self.dist.wrap_model(self.model) if self.dist is not None else self.model
        a = cfg["aux"]
        self.aux = build_loss(a, emb, self.num_classes).to(self.device) if a.get("name") else None
        self.aux_weight = float(a.get("weight", 0.0))
        self.head_optimizer = None  # Partial FC: the sharded rows get their own optimizer
        if self.dist is not None:
            o = cfg["optim"]
            wd = float(o["weight_decay"]) if float(o["head_weight_decay"]) < 0 else float(o["head_weight_decay"])
            self.head_optimizer = self.dist.head_optimizer(self.loss, float(o["lr"]) * float(o["head_lr_mult"]),
                                                           float(o["momentum"]), wd)
            if self.head_optimizer is not None:
                for g in self.head_optimizer.param_groups:
                    g["lr_mult"] = float(o["head_lr_mult"])
        self.optimizer = self._make_optimizer()
        # uniform batches, or P identities x K images (data.sampler); a function of (seed, step) either way
        self.order = make_batch_order(cfg["data"], train_set, int(t["batch_size"]), int(t["seed"]), rank, world)
        self.step = 0
        self._loader_iter, self._loader_start = None, 0
        self.history = []
        self.skipped = self.skipped_in_a_row = 0  # steps dropped for non-finite values (all, consecutive)
        self.max_skips = int(t.get("max_consecutive_skips", 10))
        self._tb = self._tb_probe = self._tb_purge = None  # TensorBoard mirror of metrics.jsonl (train.tensorboard)
        if t.get("tensorboard") and self.is_main:
            from .tensorboard import NormProbe, require_tensorboard

            require_tensorboard()
            self._tb_probe = NormProbe(self.model)
        if self.max_skips <= 0:
            raise ValueError(f"train.max_consecutive_skips must be positive, got {self.max_skips}")

    # -- set-up ---------------------------------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg["optim"]
        wd = float(o["weight_decay"])
        head_wd = wd if float(o["head_weight_decay"]) < 0 else float(o["head_weight_decay"])
        groups = [{"params": [p for p in self.model.parameters() if p.requires_grad], "weight_decay": wd,
                   "lr_mult": 1.0, "name": "backbone"}]
        for mod, tag in ((self.loss, "loss"), (self.aux, "aux")):
            if mod is None or (mod is self.loss and self.head_optimizer is not None):
                continue
            for g in losses.param_groups(mod, head_wd):  # class rows decayed; bias, scale not
                groups.append({**g, "lr_mult": float(o["head_lr_mult"]), "name": f"{tag}.{g['name']}"})
        for g in groups:
            g["lr"] = float(o["lr"]) * g["lr_mult"]
        return torch.optim.SGD(groups, lr=float(o["lr"]), momentum=float(o["momentum"]))

    @property
    def optimizers(self):
        return [o for o in (self.optimizer, self.head_optimizer) if o is not None]

    def _set_lr(self) -> float:
        f = lr_factor(self.cfg["optim"], self.step, self.steps)
        base = float(self.cfg["optim"]["lr"])
        for opt in self.optimizers:
            for g in opt.param_groups:
                g["lr"] = base * g["lr_mult"] * f
        return base * f

    # -- data -----------------------------------------------------------------------------------
    def _batch(self):
        if hasattr(self.train_set, "get_batch"):
            x, y = self.train_set.get_batch(self.order(self.step))
        else:
            if self._loader_iter is None or self._loader_start != self.step:
                self._open_loader()
            x, y = next(self._loader_iter)
            self._loader_start += 1
            if self.cfg["data"].get("flip"):  # in-memory sets flip in get_batch
                mask = torch.rand(x.shape[0]) < 0.5
                x = torch.where(mask[:, None, None, None], x.flip(-1), x)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _open_loader(self) -> None:
        """File-backed sets (RecordIO, folders): a DataLoader whose batches follow the batch order
        from the current step, decoded by ``data.workers`` processes."""
        order, start, steps = self.order, self.step, self.steps

        class _Steps(torch.utils.data.Sampler):
            def __len__(self):
                return steps - start

            def __iter__(self):
                return (order(k).tolist() for k in range(start, steps))

        loader = torch.utils.data.DataLoader(
            self.train_set, batch_sampler=_Steps(), num_workers=int(self.cfg["data"].get("workers", 0)),
            pin_memory=self.device.type == "cuda")
        self._loader_iter, self._loader_start = iter(loader), start

    # -- the loop -------------------------------------------------------------------------------
    def train_step(self) -> Dict:
        """One optimisation step; returns its metrics (loss, train accuracy, sample shares)."""
        t = self.cfg["train"]
        self.model_ddp.train()
        self.loss.train()
        if self.aux is not None:
            self.aux.train()
        lr = self._set_lr()
        x, y = self._batch()
        # Every rank runs the whole step, so that its collectives match the other ranks'; a step with
        # a non-finite value on any rank is then dropped everywhere (as GradScaler does for fp16).
        buffers = [b.detach().clone() for b in self._step_buffers()]
        bad = {"input": x.is_floating_point() and not bool(torch.isfinite(x).all())}
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if t["bf16"]
                    else contextlib.nullcontext())
        with autocast:
            emb = self.model_ddp(x)
        emb = emb.float()  # margins are computed in float32 (the heads are safe in bf16 too)
        bad["embeddings"] = not bool(torch.isfinite(emb.detach()).all())
        if bad["embeddings"]:  # the heads refuse NaN: feed zeros, the step is dropped anyway
            emb = torch.nan_to_num(emb, nan=0.0, posinf=0.0, neginf=0.0)
        loss = self.loss(emb, y)
        total = loss
        aux_value = None
        if self.aux is not None:
            aux_value = self.aux(emb, y)
            total = total + self.aux_weight * aux_value
        bad["loss"] = not bool(torch.isfinite(total.detach()))
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        total.backward()
        bad["gradients"] = not self._grads_finite()
        if self.dist is not None:
            bad = dict(zip(bad, self.dist.any_rank(list(bad.values()))))
        if any(bad.values()):
            return self._skip_step(bad, buffers, lr)
        self.skipped_in_a_row = 0
        clip = float(self.cfg["optim"]["clip_grad_norm"])
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        for opt in self.optimizers:
            opt.step()
        row = {"step": self.step + 1, "loss": float(total.detach()), "lr": lr}
        if aux_value is not None:
            row["main_loss"], row["aux_loss"] = float(loss.detach()), float(aux_value.detach())
        row.update(losses.step_stats(self.loss))  # λ, sample shares, regulariser, margin state
        self.step += 1
        return row

    def fit(self) -> Dict:
        """Train to ``train.steps``; returns the last evaluation (or last metrics)."""
        t = self.cfg["train"]
        log_every, ckpt_every, eval_every = int(t["log_every"]), int(t["checkpoint_every"]), int(t["eval_every"])
        if log_every <= 0 or ckpt_every < 0 or eval_every < 0:
            raise ValueError(f"train.log_every must be positive and checkpoint_every/eval_every non-negative, "
                             f"got {log_every}, {ckpt_every}, {eval_every}")
        from tqdm.auto import tqdm

        if eval_every and self.evaluate is None and self.validator is None and self.is_main:
            self.log(f"[train] note: train.eval_every={eval_every} but there is nothing to evaluate on this data; "
                     "set data.val to verification packs (.bin) to score them while training")
        self.start_step = self.step
        bar = tqdm(total=self.steps, initial=self.step, desc=f"{self.cfg['loss']['name']}",
                   # None: shown on a terminal, silent in logs and CI
                   disable=None if (t["progress"] and self.is_main) else True, leave=False, dynamic_ncols=True)
        start, seen = time.perf_counter(), 0
        last_eval: Dict = {}
        acc_sum, acc_n, loss_sum, skipped_n = 0.0, 0, 0.0, 0
        shares = {"easy": 0.0, "semihard": 0.0, "hard": 0.0}
        post: Dict[str, str] = {}
        val_post: Dict[str, str] = {}  # the last validation figure stays on the progress line
        while self.step < self.steps:
            row = self._guarded_step()
            seen += self.order.batch_size
            if row.get("skipped"):  # no loss to average: counted instead
                skipped_n += 1
            else:
                loss_sum += row["loss"]
                if "train_acc" in row:
                    acc_sum += row["train_acc"]
                    for k in shares:
                        shares[k] += row[k]
                acc_n += 1
            speed = seen / max(time.perf_counter() - start, 1e-9)
            if self.step % log_every == 0 or self.step == self.steps:
                out = {"step": self.step}
                if acc_n:
                    out["loss"] = loss_sum / acc_n
                out.update(lr=row["lr"], img_per_s=speed)
                if "train_acc" in row:
                    out["train_acc"] = acc_sum / acc_n
                    out.update({k: v / acc_n for k, v in shares.items()})
                for k in row:  # the last value of λ, the loss parts, regulariser and margin state
                    if k in ("lambda", "main_loss", "aux_loss", "regularizer") or k.startswith("margin."):
                        out[k] = row[k]
                if skipped_n:
                    out["skipped"] = skipped_n  # steps of this window dropped for non-finite values
                self._write_metrics(out)
                post = {"loss": f"{out['loss']:.3f}" if "loss" in out else "skipped", "img/s": f"{speed:.0f}"}
                if "train_acc" in out:
                    post["acc"] = f"{out['train_acc']:.3f}"
                bar.set_postfix({**post, **val_post})
                acc_sum, acc_n, loss_sum, skipped_n = 0.0, 0, 0.0, 0
                shares = {k: 0.0 for k in shares}
            bar.update(1)
            # evaluation first: a checkpoint of this step then records the best model so far
            if self._evaluates and eval_every and self.step % eval_every == 0 and self.step < self.steps:
                last_eval = self._eval()
                if BEST_KEY in last_eval:
                    val_post = {"val": f"{last_eval[BEST_KEY]:.4f}"}
                    bar.set_postfix({**post, **val_post})
            if ckpt_every and self.step % ckpt_every == 0 and self.step < self.steps:
                self.save()
        bar.close()
        self.train_seconds = time.perf_counter() - start
        if self._evaluates:
            last_eval = self._eval()
        self.save()
        return last_eval

    @property
    def _evaluates(self) -> bool:
        return self.evaluate is not None or self.validator is not None

    def close(self) -> None:
        """Drop what holds the process group or worker processes: the DDP wrapper and the loader.

        Call it before the process group is destroyed (``facemargin train`` does so on every exit
        path): DDP's reducer owns a reference to the group, and a group that outlives
        ``destroy_process_group`` inside a DDP module is finalised at interpreter exit, which can
        abort the process after its work is done. The trainer stays usable in one process
        (``model_ddp`` becomes the plain backbone).
        """
        self.model_ddp = self.model
        self._loader_iter = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def _eval(self) -> Dict:
        """Run the evaluator and the verification packs; keep ``best.pt`` by the packs' mean accuracy."""
        self.model.eval()
        result: Dict = {}
        if self.evaluate is not None:
            result.update(self.evaluate(self.model))
        if self.validator is not None:
            result.update(self.validator(self.model))
        self._write_metrics({"event": "eval", "step": self.step, **{k: v for k, v in result.items()
                                                                  if isinstance(v, (int, float))}})
        self.model.train()
        if BEST_KEY in result:
            score = float(result[BEST_KEY])
            if self.best is None or score > self.best["score"]:
                self.best = {"score": score, "step": self.step}
                self.save(self.out / "best.pt")  # every rank: the save gathers sharded class rows
            if self.is_main:
                self.log(f"[train] step {self.step}: val {summary(result, self.best)}")
        return result
