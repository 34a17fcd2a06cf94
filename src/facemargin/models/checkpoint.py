"""The backbone of a training checkpoint: check that a file is one, and load the trained network.

A checkpoint written by the trainer (:mod:`facemargin.train.checkpoint`) is a dict whose
``format`` is :data:`FORMAT` and which holds at least the run's ``config``, the ``step`` reached
and the backbone's ``model`` state dict. Reading the backbone back needs nothing of training, so
it lives here, beside the networks: commands that only run a trained model (embed, verify,
eval, export) load it through :func:`load_backbone`.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from ..io import load_torch
from .catalogue import build

FORMAT = "facemargin-checkpoint-v1"


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
    """The backbone a run's config describes (``config["model"]``: name, embedding size, options)."""
    spec = config["model"]
    return build(spec["name"], embedding_size=int(spec["embedding_size"]), **dict(spec.get("params", {})))


def load_backbone(path) -> Tuple[torch.nn.Module, Dict]:
    """The trained backbone of a checkpoint, in eval mode, and the run's config.

    The file is loaded with ``weights_only=True``.  A missing file raises ``FileNotFoundError``;
    any other file that is not a facemargin checkpoint raises a one-line ``ValueError``
    ``not a facemargin checkpoint: PATH (reason)``, the reason saying what the file is instead
    (empty, text, truncated, pickled Python objects, a bare state dict, ...).
    """
    try:
        state = load_checkpoint(path)
    except ValueError as e:
        cause = e.__cause__
        try:
            with open(path, "rb") as f:
                head = f.read(512)
        except OSError:
            head = b""
        zipped = head[:4] in (b"PK\x03\x04", b"PK\x05\x06")
        pickled = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
        if not head:
            reason = "empty file"
        elif cause is None:  # loaded, but not in the checkpoint layout
            lacks = str(e).rsplit(" lacks ", 1)
            reason = (f"no {lacks[1]} entry" if len(lacks) == 2 else
                      "a PyTorch file without the facemargin checkpoint layout, e.g. a bare state dict")
        elif not (zipped or pickled):
            try:
                text = head.decode("utf-8", errors="strict" if len(head) < 512 else "ignore")
                is_text = b"\x00" not in head and all(c.isprintable() or c in "\t\n\r\f\v" for c in text)
            except UnicodeDecodeError:
                is_text = False
            reason = "a text file" if is_text else "not a PyTorch file"
        elif "Weights only load failed" in str(cause):
            reason = "it pickles Python objects other than tensors and plain values, which are not loaded for safety"
        elif isinstance(cause, (EOFError, OSError)) or any(
                k in str(cause) for k in ("central directory", "not a ZIP archive", "unexpected EOF", "corrupted")):
            reason = "truncated or damaged file"
        else:
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            reason = f"PyTorch cannot read it: {first[:120]}"
        raise ValueError(f"not a facemargin checkpoint: {path} ({reason})") from None
    try:
        model = build_backbone_from_config(state["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {path}: its config does not describe a backbone ({e})") from None
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        if len(detail) > 300:
            detail = detail[:300] + " ..."
        raise ValueError(f"checkpoint {path}: backbone weights do not match {state['config']['model']}: "
                         f"{detail}") from None
    model.eval()
    return model, state["config"]
