"""Face backbones: images ``(B, C, H, W)`` normalised as ``(x/255 - 0.5)/0.5`` -> ``(B, embedding_size)``.

=============  ===========  ==========================================================
name           input C,H,W  network
=============  ===========  ==========================================================
lenetpp        1, 28, 28    LeNet++ of the center-loss paper (Fashion-MNIST, figures)
sphere20       3, 112, 96   SphereFace-20 (Liu et al. 2017)
resface28      3, 112, 112  the ATL write-up's ResFace-28 deploy net (Angular Triplet Loss)
iresnet18..100 3, 112, 112  insightface arcface_torch IResNets (iresnet50: 43.6M params)
mobilefacenet  3, 112, 112  MobileFaceNet (Chen et al. 2018), GDC head, ~1.0-1.2M params
smallcnn       3, 32, 32    small batch-norm CNN for the glyph identity set (lr 0.1)
=============  ===========  ==========================================================

``build(name, embedding_size=512, **kw)`` builds one; ``available()`` lists the names;
``input_size(name)`` gives the expected ``(C, H, W)``. ``export_onnx`` (in ``.export``) writes a
checked ONNX file. ``load_pretrained(name, path)`` loads insightface ``arcface_torch`` backbones
(``iresnet*`` key for key, ``mobilefacenet``/``mbf`` through a key map; see ``.pretrained``).
"""
from __future__ import annotations

from typing import List, Tuple

from torch import nn

from .base import NORMALISATION, Backbone
from .registry import BACKBONES
from . import lenet, sphere, resface, iresnet, mobilefacenet  # noqa: F401  (register the models)
from . import smallcnn  # noqa: F401  (register the models)
from .lenet import LeNetPP
from .sphere import Sphere20
from .resface import ResFace28
from .iresnet import IResNet, IBasicBlock
from .mobilefacenet import MobileFaceNet
from .pretrained import load_pretrained

__all__ = ["build", "available", "input_size", "num_parameters", "Backbone", "BACKBONES",
           "NORMALISATION", "LeNetPP", "Sphere20", "ResFace28", "IResNet", "IBasicBlock",
           "MobileFaceNet", "export_onnx", "load_pretrained"]


def build(name: str, embedding_size: int = 512, **kw) -> nn.Module:
    """Build the backbone ``name`` (see :func:`available`) with output width ``embedding_size``.

    Extra keyword arguments go to the model (e.g. ``dropout``; ``width`` for ``lenetpp``). An
    unknown name or keyword raises ``ValueError`` listing what is accepted.
    """
    key = BACKBONES.resolve(name)
    model = BACKBONES.build(key, embedding_size=embedding_size, **kw)
    model.arch = key
    return model


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
