"""Improved ResNets for faces, in insightface's ``arcface_torch`` layout (Deng et al., ArcFace 2019).

Layout (checked against ``recognition/arcface_torch/backbones/iresnet.py`` of deepinsight/insightface;
written independently here):

* stem: conv3x3 3->64 (stride 1, padding 1, no bias) - BN - PReLU, at 112x112;
* four stages of ``IBasicBlock`` s with 64, 128, 256, 512 channels; the first block of every stage
  has stride 2 (112 -> 56 -> 28 -> 14 -> 7) and a conv1x1(stride 2, no bias) + BN shortcut;
* ``IBasicBlock``: BN - conv3x3 - BN - PReLU - conv3x3 (stride here) - BN, plus the shortcut, with
  no activation after the sum;
* blocks per stage: iresnet18 (2, 2, 2, 2), iresnet34 (3, 4, 6, 3), iresnet50 (3, 4, 14, 3),
  iresnet100 (3, 13, 30, 3);
* head: BN2d(512) - flatten - Dropout - Linear(512*7*7 -> embedding) - BN1d(embedding), whose scale
  (``features.weight``) is fixed to 1 and not trained (``requires_grad=False``); its shift is trained.

Module and parameter names equal arcface_torch's (``conv1``, ``bn1``, ``prelu``, ``layer1..4``,
``bn2``, ``fc``, ``features``; blocks ``bn1, conv1, bn2, prelu, conv2, bn3, downsample.0/1``), so a
state dict saved by arcface_torch loads into these models with ``load_state_dict``.

Parameter counts at embedding 512 (all tensors, including the frozen ``features.weight``):
iresnet18 24 025 600, iresnet34 34 139 328, iresnet50 43 590 848 (insightface reports
43.59M), iresnet100 65 156 160.
"""
from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from .base import Backbone, check_dropout
from .registry import BACKBONES

LAYERS = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}


class IBasicBlock(nn.Module):
    """Pre-activation-style basic block: BN-conv3x3-BN-PReLU-conv3x3(stride)-BN + shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample

    def forward(self, x):
        """Residual branch plus shortcut (downsampled when the block has stride 2)."""
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(Backbone):
    """An insightface IResNet on 3x112x112 aligned faces -> ``(B, embedding_size)``.

    Args:
        layers: blocks per stage, e.g. ``(3, 4, 14, 3)``; use the registry names
            ``iresnet18/34/50/100`` for the standard depths.
        embedding_size: output width (512 in insightface).
        dropout: dropout probability between the last BN2d and the fc layer (insightface's
            ``dropout``, 0 by default).
        zero_init_residual: start every block's last BN at scale 0 (each block begins as its
            shortcut), a common trick for deep nets; off by default.
    """

    INPUT_SIZE = (3, 112, 112)

    def __init__(self, layers: Sequence[int] = (3, 4, 14, 3), embedding_size: int = 512,
                 dropout: float = 0.0, zero_init_residual: bool = False):
        super().__init__(embedding_size)
        layers = tuple(layers)
        if len(layers) != 4 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1
                                   for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {layers!r}")
        self.layers_per_stage = layers
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            shortcut = nn.Sequential(nn.Conv2d(inplanes, planes, 1, 2, bias=False),
                                     nn.BatchNorm2d(planes, eps=1e-5))
            stage = [IBasicBlock(inplanes, planes, 2, shortcut)]
            stage += [IBasicBlock(planes, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*stage))
            inplanes = planes
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(check_dropout(dropout))
        self.fc = nn.Linear(512 * 7 * 7, self.embedding_size)
        self.features = nn.BatchNorm1d(self.embedding_size, eps=1e-5)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, IBasicBlock):
                    nn.init.zeros_(m.bn3.weight)
        self.features.weight.requires_grad_(False)

    def forward(self, x):
        """Images ``(B, 3, 112, 112)`` -> embeddings ``(B, embedding_size)``."""
        self.check_input(x)
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn2(x).flatten(1))
        return self.features(self.fc(x))


def _factory(name: str):
    layers = LAYERS[name]

    def build(embedding_size: int = 512, dropout: float = 0.0, zero_init_residual: bool = False):
        return IResNet(layers, embedding_size=embedding_size, dropout=dropout,
                       zero_init_residual=zero_init_residual)

    build.__name__ = name
    build.__qualname__ = name
    build.__doc__ = (f"{name}: :class:`IResNet` with blocks {layers} per stage, 3x112x112 input.")
    build.INPUT_SIZE = IResNet.INPUT_SIZE
    return build


for _name in LAYERS:
    globals()[_name] = BACKBONES.register(_name)(_factory(_name))
