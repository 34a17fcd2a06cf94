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
from typing import Any, Dict, Optional, Tuple

import torch

from ..io import load_torch, save_torch

FORMAT = "facemargin-checkpoint-v1"


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


def load_checkpoint(path) -> Dict[str, Any]:
    """Load and check a checkpoint (``weights_only=True``); raise ValueError naming the file if it is not one."""
    return check_checkpoint(load_torch(path), path)


def is_checkpoint(state) -> bool:
    """Whether a loaded file is a facemargin checkpoint (rather than, say, a bare backbone state dict)."""
    return isinstance(state, dict) and state.get("format") == FORMAT


def check_checkpoint(state, path) -> Dict[str, Any]:
    """Return ``state`` if it is a complete facemargin checkpoint; raise ValueError naming ``path`` otherwise."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a facemargin checkpoint (expected format {FORMAT!r})")
    for key in ("config", "step", "model"):
        if key not in state:
            raise ValueError(f"checkpoint {path} lacks {key!r}")
    return state


def build_backbone_from_config(config: Dict):
    from .. import models

    spec = config["model"]
    return models.build(spec["name"], embedding_size=int(spec["embedding_size"]), **dict(spec.get("params", {})))


def load_backbone(path) -> Tuple[torch.nn.Module, Dict]:
    """The trained backbone of a checkpoint, in eval mode, and the run's config."""
    state = load_checkpoint(path)
    model = build_backbone_from_config(state["config"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ValueError(f"checkpoint {path}: backbone weights do not match {state['config']['model']}: {e}") from e
    model.eval()
    return model, state["config"]
