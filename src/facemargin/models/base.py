"""Common base of every backbone: a fixed input size, checked cheaply in ``forward``."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

#: How images are expected to be normalised before they reach any backbone.
NORMALISATION = "(x / 255 - 0.5) / 0.5"


def check_embedding_size(embedding_size) -> int:
    """Return ``embedding_size`` as an int, or raise ``ValueError`` if it is not a positive integer."""
    if isinstance(embedding_size, bool) or not isinstance(embedding_size, int) or embedding_size < 1:
        raise ValueError(f"embedding_size must be a positive integer, got {embedding_size!r}")
    return int(embedding_size)


def check_dropout(p) -> float:
    """Return ``p`` as a float, or raise ``ValueError`` unless ``0 <= p < 1``."""
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"dropout must be a number in [0, 1), got {p!r}") from None
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    return p


def _exporting() -> bool:
    """True while the model is being traced or exported (shape checks must stay out of the graph)."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    is_export = getattr(torch.onnx, "is_in_onnx_export", None)
    if is_export is not None and is_export():
        return True
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(compiling is not None and compiling())


class Backbone(nn.Module):
    """Base class of the face backbones.

    A backbone maps float images ``(B, C, H, W)``, normalised as ``(x/255 - 0.5)/0.5``, to embeddings
    ``(B, embedding_size)``. Subclasses set the class attribute ``INPUT_SIZE`` ``(C, H, W)`` and call
    :meth:`check_input` at the top of ``forward``; a wrong size raises a ``ValueError`` that names the
    expected size (before a convolution or the final linear layer would fail with a cryptic message).

    Attributes: ``embedding_size`` (int), ``input_size`` ``(C, H, W)``, ``arch`` (registry name,
    set by :func:`facemargin.models.build`; the class name otherwise).
    """

    INPUT_SIZE: Tuple[int, int, int] = (3, 112, 112)

    def __init__(self, embedding_size: int, input_size: Tuple[int, int, int] = None):
        super().__init__()
        self.embedding_size = check_embedding_size(embedding_size)
        self.input_size = tuple(int(v) for v in (input_size or self.INPUT_SIZE))
        self.arch = type(self).__name__.lower()

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is a float tensor of shape ``(B, *self.input_size)``."""
        if _exporting():
            return
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{self.arch} expects a torch.Tensor, got {type(x).__name__}")
        c, h, w = self.input_size
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_size:
            raise ValueError(
                f"{self.arch} expects images of shape (B, {c}, {h}, {w}) (C={c}, H={h}, W={w}), "
                f"got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(
                f"{self.arch} expects float images normalised as {NORMALISATION}, got dtype {x.dtype}")
        if x.shape[0] == 0:
            raise ValueError(f"{self.arch} got an empty batch (B=0)")

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, input_size={self.input_size}"
