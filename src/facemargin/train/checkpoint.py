"""Checkpoints: one file with everything a run needs to resume exactly or to deploy its backbone.

Layout (a dict of plain values and tensors, loadable with ``weights_only=True``)::

    format     "facemargin-checkpoint-v1"
    config     the run's configuration (nested dict)
    step       steps done
    model      backbone state_dict
    loss       head / metric-loss state_dict (class weights in full, λ counter included)
    aux        auxiliary loss state_dict or None
    optimizer  optimizer state_dict (momentum of sharded class rows gathered in full)
    head_optimizer  Partial-FC optimizer state of the class rows, or None
    rng        {"torch": CPU RNG state, "cuda": [states] or absent}
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import torch

from ..io import save_torch
# reading a checkpoint back (and its backbone) needs no training code: it lives with the models
from ..models.checkpoint import (FORMAT, build_backbone_from_config, check_checkpoint,  # noqa: F401
                                 is_checkpoint, load_backbone, load_checkpoint)


def save_checkpoint(path, *, config: Dict, step: int, model, loss=None, aux=None, optimizer=None,
                    loss_state: Optional[Dict] = None, optimizer_state: Optional[Dict] = None,
                    extra: Optional[Dict] = None) -> Path:
    """Write a checkpoint atomically (a crash never leaves a half-written file).

    ``loss_state``/``optimizer_state`` replace ``loss.state_dict()``/``optimizer.state_dict()``
    (the distributed trainer passes the full, gathered states of a sharded head)."""
    if loss_state is None:
        loss_state = loss.state_dict() if loss is not None else {}
    if optimizer_state is None and optimizer is not None:
        optimizer_state = optimizer.state_dict()
    state = {
        "format": FORMAT,
        "config": config,
        "step": int(step),
        "model": model.state_dict(),
        "loss": loss_state,
        "aux": aux.state_dict() if aux is not None else None,
        "optimizer": optimizer_state,
        "rng": {"torch": torch.get_rng_state()},
        **(extra or {}),
    }
    if torch.cuda.is_available():
        state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    save_torch(state, path)
    return Path(path)
