"""Checkpoints of a training run: writing them, resuming a run exactly, starting one from another's weights.

:class:`RunState` is the part of :class:`~facemargin.train.loop.Trainer` that moves its state to
and from disk. A checkpoint holds the full class weights and optimizer momentum even when the
head is sharded over ranks (rank 0 writes it), so a run resumes on any number of ranks. A
state that does not fit the run (another model, loss or class count) is refused with one line
naming what differs, not the whole key list.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn as nn

from ..io import load_torch
from ..models.pretrained import load_state_into
from .checkpoint import check_checkpoint, is_checkpoint, load_checkpoint, save_checkpoint


def describe(cfg: Dict) -> str:
    """``model lenetpp (64-D), loss softmax`` for error messages."""
    try:
        return f"model {cfg['model']['name']} ({cfg['model']['embedding_size']}-D), loss {cfg['loss']['name']}"
    except (KeyError, TypeError):
        return "unknown config"


def state_mismatch(module: nn.Module, state: Dict) -> str:
    """A one-line account of how ``state`` differs from ``module.state_dict()``: missing and
    unexpected keys and the first shapes that differ (not the whole key list)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and torch.is_tensor(state[k]) and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys, e.g. {', '.join(missing[:2])}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys, e.g. {', '.join(unexpected[:2])}")
    if shapes:
        parts.append(f"{len(shapes)} of another shape (checkpoint vs run): {', '.join(shapes[:2])}")
    return "; ".join(parts) or "the states differ"


class RunState:
    """Saving, resuming and initialising the trainer's model, loss, optimizers, RNG and step."""

    def save(self, path=None) -> Optional[Path]:
        """Write ``checkpoint.pt`` (full class weights and momentum even when sharded; rank 0 writes)."""
        path = Path(path) if path else self.out / "checkpoint.pt"
        d = self.dist
        bad = self._nonfinite_state()  # each rank checks what it holds (its shard of the class rows)
        if (d.any_rank([bool(bad)])[0] if d is not None else bool(bad)):
            raise FloatingPointError(
                f"step {self.step}: checkpoint {path} not written: non-finite values in "
                f"{', '.join(bad[:6]) if bad else 'the state of another rank'}; the previous checkpoint is kept")
        if d is not None:  # collectives: every rank gathers, rank 0 writes
            loss_state = d.full_state_dict(self.loss)
            opt_state = d.full_optimizer_state_dict(self.optimizer, self.loss)
            head_opt_state = d.full_optimizer_state_dict(self.head_optimizer, self.loss)
        else:
            loss_state = self.loss.state_dict()
            opt_state, head_opt_state = self.optimizer.state_dict(), None
        if not self.is_main:
            return None
        return save_checkpoint(path, config=self.cfg, step=self.step, model=self.model, loss_state=loss_state,
                               aux=self.aux, optimizer_state=opt_state,
                               extra={"head_optimizer": head_opt_state, "num_classes": self.num_classes,
                                      "best": dict(self.best) if self.best else None})

    def resume(self, path) -> None:
        """Continue a run exactly: weights, optimizer, λ counters, centers, RNG and step.

        Checkpoints hold full class weights, so a run written on ``W`` ranks resumes on any number
        of ranks or in one process (Partial-FC sampling state is dropped outside Partial FC)."""
        state = load_checkpoint(path)
        d = self.dist
        trained = state.get("num_classes")
        if trained is not None and int(trained) != self.num_classes:
            raise ValueError(f"checkpoint {path} was trained on {int(trained)} classes but this data "
                             f"(data.root={self.cfg['data'].get('root') or '(default)'}) has {self.num_classes}; "
                             f"a resumed run keeps its classes")
        loss_state = dict(state["loss"])
        if not any(k.startswith("pfc_") for k in self.loss.state_dict()):
            loss_state = {k: v for k, v in loss_state.items() if not k.startswith("pfc_")}
        parts = [("model", self.model, state["model"]), ("loss", self.loss, loss_state)]
        if self.aux is not None and state.get("aux") is not None:
            parts.append(("aux", self.aux, state["aux"]))
        for what, module, sd in parts:
            try:
                if what == "loss" and d is not None:
                    d.load_full_state_dict(module, sd)
                else:
                    module.load_state_dict(sd)
            except RuntimeError:  # shapes or keys of another model/loss: one line, not the key list
                raise ValueError(f"checkpoint {path} does not match this run's {what} "
                                 f"({describe(self.cfg)}; checkpoint: {describe(state['config'])}): "
                                 f"{state_mismatch(module, sd) if what != 'loss' or d is None else 'its class rows differ'}"
                                 ) from None
        for opt, key in ((self.optimizer, "optimizer"), (self.head_optimizer, "head_optimizer")):
            if opt is None or state.get(key) is None:
                continue
            try:
                if d is not None:
                    d.load_full_optimizer_state_dict(opt, self.loss, state[key])
                else:
                    opt.load_state_dict(state[key])
            except (ValueError, RuntimeError, KeyError) as e:
                raise ValueError(f"checkpoint {path}: its {key} state does not fit this run: {e}") from e
        self.step = self.start_step = int(state["step"])
        self.best = dict(state["best"]) if state.get("best") else None
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self._truncate_metrics(self.step)

    def init_from(self, path, load_loss: bool = True) -> None:
        """Start a new run from a checkpoint's weights (step 0, fresh optimizer): the ATL *step* recipe.

        ``path`` may also hold a backbone alone (an insightface ``arcface_torch`` ``backbone.pth``
        or a saved state dict; see :func:`facemargin.models.load_pretrained`): then only the
        backbone starts from it."""
        raw = load_torch(path)
        if not is_checkpoint(raw):
            load_state_into(self.model, raw, path)
            return
        state = check_checkpoint(raw, path)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise ValueError(f"checkpoint {path}: its backbone does not match this run's model config "
                             f"({describe(self.cfg)}; checkpoint: {describe(state['config'])}): {e}") from e
        if load_loss and state.get("loss"):
            try:
                missing = self.loss.load_state_dict(state["loss"], strict=False)
            except RuntimeError as e:  # e.g. class weights of another number of classes
                raise ValueError(f"checkpoint {path}: its loss state does not fit this run's {self.cfg['loss']['name']} "
                                 f"with {self.num_classes} classes: {e}") from e
            # a λ schedule absent from the checkpoint (softmax -> sphereface) starts at iteration 0
            lacking = [k for k in missing.missing_keys if not k.startswith("schedule.")]
            if lacking:
                raise ValueError(f"{path}: the loss state lacks {lacking} for {self.cfg['loss']['name']}")
