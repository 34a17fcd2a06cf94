"""Backbone weights from insightface's ``arcface_torch`` checkpoints (and our own), by name.

``load_pretrained(name, path)`` builds the backbone ``name`` with the sizes the file implies and
loads the file into it:

* ``iresnet18/34/50/100``: arcface_torch's ``IResNet`` and ours share module names, so its
  ``backbone.pth`` loads key for key (the embedding width is read from ``fc.weight``).
* ``mobilefacenet`` (alias ``mbf``): arcface_torch's ``MobileFaceNet`` holds the same tensors under
  other names (``layers.0``, ``layers.1``, ... ``conv_sep``, ``features``); :func:`insightface_mbf_keys`
  maps them onto ours. Its width (``scale``, 2 for ``mbf``) and depth (``blocks``) are read from the
  tensor shapes and key names, so ``mbf`` and ``mbf_large`` checkpoints load too.
* a facemargin training checkpoint (its ``model``), or a state dict saved from one of our backbones.

Files are read with ``torch.load(weights_only=True)``; state dicts wrapped as ``{"state_dict": ...}``
and keys prefixed by ``module.`` (DistributedDataParallel) are unwrapped. Loading is strict: a
missing, unexpected or mis-shaped tensor raises ``ValueError`` naming the file.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Dict, Mapping, Tuple

import torch
from torch import nn

from ..io import load_torch
from .catalogue import build
from .registry import BACKBONES


def _block_keys(prefix: str, ours: str) -> Dict[str, str]:
    """Keys of one inverted residual: insightface ``DepthWise`` at ``prefix``, ours ``Bottleneck`` at ``ours``."""
    out = {}
    for j in range(3):  # expand (conv, bn, prelu), depthwise (conv, bn, prelu), project (conv, bn)
        out.update(_conv_keys(f"{prefix}.layers.{j}.layers", f"{ours}.body.{j}", act=j < 2))
    return out


def _conv_keys(theirs: str, ours: str, act: bool = True) -> Dict[str, str]:
    out = {f"{ours}.0.weight": f"{theirs}.0.weight"}
    for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        out[f"{ours}.1.{p}"] = f"{theirs}.1.{p}"
    if act:
        out[f"{ours}.2.weight"] = f"{theirs}.2.weight"
    return out


def insightface_mbf_keys(blocks=(1, 4, 6, 2)) -> "OrderedDict[str, str]":
    """Our MobileFaceNet key -> arcface_torch MobileFaceNet key, for every tensor of the state dict."""
    b0, b1, b2, b3 = (int(b) for b in blocks)
    m: "OrderedDict[str, str]" = OrderedDict()
    m.update(_conv_keys("layers.0.layers", "conv1"))
    if b0 == 1:
        m.update(_conv_keys("layers.1.layers", "dw_conv1"))
    else:
        for k in range(b0):
            m.update(_block_keys(f"layers.1.layers.{k}", f"dw_conv1.{k}"))
    # our bottleneck rows, in order: layers.2 + layers.3 (b1), layers.4, layers.5 (b2), layers.6, layers.7 (b3)
    theirs = ["layers.2"] + [f"layers.3.layers.{k}" for k in range(b1)] + ["layers.4"] \
        + [f"layers.5.layers.{k}" for k in range(b2)] + ["layers.6"] + [f"layers.7.layers.{k}" for k in range(b3)]
    for i, prefix in enumerate(theirs):
        m.update(_block_keys(prefix, f"bottlenecks.{i}"))
    m.update(_conv_keys("conv_sep.layers", "conv2"))
    m.update(_conv_keys("features.layers.0.layers", "gdconv", act=False))
    m["linear.weight"] = "features.layers.2.weight"
    for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        m[f"bn.{p}"] = f"features.layers.3.{p}"
    return m


def _count(keys, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({rx.match(k).group(1) for k in keys if rx.match(k)})


def _insightface_mbf_shape(sd: Mapping[str, torch.Tensor]) -> Dict:
    """``scale`` and ``blocks`` of an arcface_torch MobileFaceNet state dict, from its shapes and keys."""
    keys = list(sd)
    scale = int(sd["layers.0.layers.0.weight"].shape[0]) // 64
    b0 = 1 if "layers.1.layers.0.weight" in sd else _count(keys, r"layers\.1\.layers\.(\d+)\.layers\.0\.")
    blocks = (b0, _count(keys, r"layers\.3\.layers\.(\d+)\."), _count(keys, r"layers\.5\.layers\.(\d+)\."),
              _count(keys, r"layers\.7\.layers\.(\d+)\."))
    return {"scale": scale, "blocks": blocks}


def _our_mbf_shape(sd: Mapping[str, torch.Tensor]) -> Dict:
    keys = list(sd)
    scale = int(sd["conv1.0.weight"].shape[0]) // 64
    b0 = 1 if "dw_conv1.0.weight" in sd else _count(keys, r"dw_conv1\.(\d+)\.body\.")
    n = _count(keys, r"bottlenecks\.(\d+)\.")
    # rows: 1 + b1, 1, b2, 1, b3; b2 and b3 follow from where the widths change (the 128-wide rows)
    widths = [int(sd[f"bottlenecks.{i}.body.2.0.weight"].shape[0]) for i in range(n)]
    hidden = [int(sd[f"bottlenecks.{i}.body.0.0.weight"].shape[0]) for i in range(n)]
    first_wide = widths.index(128 * scale)
    b1 = first_wide - 1
    down = [i for i in range(first_wide + 1, n) if hidden[i] == 512]
    b2 = down[0] - first_wide - 1 if down else 0
    b3 = n - (down[0] + 1) if down else 0
    return {"scale": scale, "blocks": (b0, b1, b2, b3)}


def _unwrap(obj, path) -> Dict[str, torch.Tensor]:
    if isinstance(obj, dict) and obj.get("format") == "facemargin-checkpoint-v1":
        obj = obj["model"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} holds no backbone state dict (expected a mapping of names to tensors)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def layout_of(name: str, sd: Mapping[str, torch.Tensor]) -> Tuple[str, Dict]:
    """``(layout, build kwargs)`` of a state dict for backbone ``name``: layout ``"facemargin"`` or
    ``"insightface"``; the kwargs give the sizes the tensors imply (embedding width, MobileFaceNet width and depth)."""
    if name == "mobilefacenet":
        if "features.layers.2.weight" in sd and "layers.0.layers.0.weight" in sd:
            return "insightface", {"embedding_size": int(sd["features.layers.2.weight"].shape[0]),
                                   **_insightface_mbf_shape(sd)}
        if "linear.weight" in sd and "conv1.0.weight" in sd:
            return "facemargin", {"embedding_size": int(sd["linear.weight"].shape[0]), **_our_mbf_shape(sd)}
        raise ValueError("not a MobileFaceNet state dict (neither insightface's layers.*/features.* nor our names)")
    if name.startswith("iresnet"):
        if "fc.weight" not in sd:
            raise ValueError("not an IResNet state dict (no fc.weight)")
        return "facemargin", {"embedding_size": int(sd["fc.weight"].shape[0])}
    return "facemargin", {}


def to_facemargin(name: str, sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A state dict of backbone ``name`` in our key names (insightface's ``mbf`` keys renamed)."""
    layout, kw = layout_of(name, sd)
    if layout == "facemargin":
        return dict(sd)
    mapping = insightface_mbf_keys(kw["blocks"])
    theirs = set(sd)
    missing = [t for t in mapping.values() if t not in theirs]
    extra = sorted(theirs - set(mapping.values()))
    if missing or extra:
        raise ValueError(f"insightface MobileFaceNet state dict does not match its layout: missing {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}, unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    return {ours: sd[t] for ours, t in mapping.items()}


def load_state_into(model: nn.Module, obj, path="<state dict>") -> nn.Module:
    """Load a backbone state dict (ours, insightface's, or a facemargin checkpoint) into ``model``, strictly."""
    sd = _unwrap(obj, path)
    name = getattr(model, "arch", type(model).__name__.lower())
    try:
        converted = to_facemargin(name, sd)
        model.load_state_dict(converted, strict=True)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: cannot load into {name}: {e}") from None
    return model


def load_pretrained(name: str, path, **kw) -> nn.Module:
    """Build backbone ``name`` to fit the weights in ``path`` and load them; returns it in eval mode.

    ``kw`` goes to :func:`facemargin.models.build` (e.g. ``dropout``); sizes implied by the file
    (embedding width, MobileFaceNet ``scale``/``blocks``) are taken from it.
    """
    key = BACKBONES.resolve(name)
    sd = _unwrap(load_torch(path), path)
    try:
        _, implied = layout_of(key, sd)
    except (ValueError, KeyError, IndexError) as e:
        raise ValueError(f"{path}: {e}") from None
    model = build(key, **{**implied, **kw})
    return load_state_into(model, sd, path).eval()
