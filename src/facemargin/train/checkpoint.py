"""Checkpoints: one file with everything a run needs to resume exactly or to deploy its backbone.

Layout (a dict of plain values and tensors, loadable with ``weights_only=True``)::

    format     "facemargin-checkpoint-v1"
    config     the run's configuration (nested dict)
    step       steps done
    model      backbone state_dict
    loss       head / metric-loss state_dict (class weights in full, λ counter included)
    aux        auxiliary loss state_dict or None
    optimizer  optimizer state_dict
    rng        {"torch": CPU RNG state, "cuda": [states] or absent}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from ..io import load_torch, save_torch

FORMAT = "facemargin-checkpoint-v1"


def save_checkpoint(path, *, config: Dict, step: int, model, loss, aux=None, optimizer=None) -> Path:
    """Write a checkpoint atomically (a crash never leaves a half-written file)."""
    state = {
        "format": FORMAT,
        "config": config,
        "step": int(step),
        "model": model.state_dict(),
        "loss": loss.state_dict() if loss is not None else {},
        "aux": aux.state_dict() if aux is not None else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "rng": {"torch": torch.get_rng_state()},
    }
    if torch.cuda.is_available():
        state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    save_torch(state, path)
    return Path(path)


def load_checkpoint(path) -> Dict[str, Any]:
    """Load and check a checkpoint (``weights_only=True``); raise ValueError naming the file if it is not one."""
    state = load_torch(path)
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
