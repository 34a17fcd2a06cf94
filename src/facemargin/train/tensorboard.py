"""Optional TensorBoard curves of a training run (``train.tensorboard = true``, extra ``facemargin[tb]``).

``metrics.jsonl`` stays the record of a run; this writer mirrors each of its rows as TensorBoard
events in ``<out>/tensorboard``: every number of a training row under ``train/<name>`` (loss, lr,
λ, train accuracy, easy/semi-hard/hard shares, ``margin.*`` statistics, images per second), every
number of an evaluation row under ``eval/<name>``, and a histogram of the embedding norms of the
last training batch (``train/embedding_norm``) with each training row.

A resumed run reopens the same folder with ``purge_step`` at its step, so TensorBoard drops the
events that the interrupted run wrote past that step, as ``metrics.jsonl`` is truncated there.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional

import torch

INSTALL_HINT = "pip install 'facemargin[tb]'"


def require_tensorboard() -> None:
    """Raise ``ValueError`` with the install command unless the ``tensorboard`` package is installed."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise ValueError(f"train.tensorboard = true needs the tensorboard package, which is not installed; "
                         f"install it with: {INSTALL_HINT}")


class TensorBoardLog:
    """A ``SummaryWriter`` fed with ``metrics.jsonl`` rows.

    Args:
        logdir: folder of the event files.
        purge_step: on resuming, the step from which earlier events of this folder are discarded.

    Raises ``ValueError`` with the install command when the ``tensorboard`` package is missing.
    """

    def __init__(self, logdir, purge_step: Optional[int] = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ValueError(f"train.tensorboard = true needs the tensorboard package ({e}); install it with: "
                             f"{INSTALL_HINT}") from None
        self.logdir = Path(logdir)
        self.writer = SummaryWriter(str(self.logdir), purge_step=purge_step or None)

    def write_row(self, row: Dict, embedding_norms: Optional[torch.Tensor] = None) -> None:
        """Write one metrics row (its numbers as scalars) and, for training rows, the norm histogram."""
        step = int(row.get("step", 0))
        prefix = "eval" if row.get("event") == "eval" else "train"
        for key, value in row.items():
            if key in ("step", "event") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", float(value), step)
        if prefix == "train" and embedding_norms is not None and embedding_norms.numel():
            self.writer.add_histogram("train/embedding_norm", embedding_norms.detach().float().cpu(), step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


class NormProbe:
    """Keeps the embedding norms of the backbone's last training-mode forward (a forward hook)."""

    def __init__(self, model: torch.nn.Module):
        self.norms: Optional[torch.Tensor] = None
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        if module.training and isinstance(output, torch.Tensor) and output.dim() == 2:
            self.norms = output.detach().float().norm(dim=1).cpu()

    def remove(self) -> None:
        """Detach the hook from the backbone."""
        self.handle.remove()
