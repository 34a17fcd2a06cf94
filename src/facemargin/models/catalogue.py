"""The backbone catalogue: build, check and list the registered backbones (every model module is
imported here, which registers it)."""
from __future__ import annotations

from typing import List, Tuple

from torch import nn

# importing each network's module registers it (each by name: ``from . import lenet`` would ask the
# package for the attribute first, and the package loads its public names, this module among them)
from .iresnet import IResNet  # noqa: F401
from .lenet import LeNetPP  # noqa: F401
from .mobilefacenet import MobileFaceNet  # noqa: F401
from .resface import ResFace28  # noqa: F401
from .smallcnn import SmallCNN  # noqa: F401
from .sphere import Sphere20  # noqa: F401
from .registry import BACKBONES


def build(name: str, embedding_size: int = 512, **kw) -> nn.Module:
    """Build the backbone ``name`` (see :func:`available`) with output width ``embedding_size``.

    Extra keyword arguments go to the model (e.g. ``dropout``; ``width`` for ``lenetpp``). An
    unknown name or keyword raises ``ValueError`` listing what is accepted.
    """
    key = BACKBONES.resolve(name)
    model = BACKBONES.build(key, embedding_size=embedding_size, **kw)
    model.arch = key
    return model


def check_params(name: str, params: dict) -> dict:
    """Check the options ``params`` of the backbone ``name`` without building it; return them as
    the backbone will use them.

    An argument the backbone does not take raises ``ValueError`` listing those it accepts; a
    shared option of the wrong type or out of range (``dropout``, ``width``, ``in_channels``, ...;
    see :data:`.registry.COMMON_PARAMS`) raises ``ValueError("<name>: <param>=<value> ...")``
    naming the valid values. ``embedding_size`` may be left out. :func:`build` runs the same checks.
    """
    return BACKBONES.check_params(name, params)


def available(aliases: bool = False) -> List[str]:
    """The registered backbone names (with ``aliases=True`` also ``lenet++``, ``mbf``, ...)."""
    return BACKBONES.available(aliases)


def input_size(name: str) -> Tuple[int, int, int]:
    """The ``(C, H, W)`` input the backbone ``name`` expects with its default arguments."""
    return tuple(BACKBONES.get(name).INPUT_SIZE)


def num_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter values in ``model`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def export_onnx(*args, **kw):
    """Export a backbone to ONNX and check it with onnxruntime; see :func:`.export.export_onnx`."""
    from .export import export_onnx as _export

    return _export(*args, **kw)
