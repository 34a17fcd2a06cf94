"""The three MTCNN networks (Zhang, Zhang, Li, Qiao, "Joint Face Detection and Alignment Using
Multitask Cascaded Convolutional Networks", IEEE SPL 2016) in PyTorch.

Inputs are RGB images ``(B, 3, H, W)`` normalised as ``(x - 127.5) / 128``, in their natural
orientation (rows are image rows).

==========  ========  ====================================================================
network     input     layers (conv kernels unpadded, PReLU after each conv/dense)
==========  ========  ====================================================================
P-Net       any size  conv3 10 - pool2/2 - conv3 16 - conv3 32 - {1x1 conv 2 (softmax), 1x1 conv 4}
R-Net       24x24     conv3 28 - pool3/2 - conv3 48 - pool3/2 - conv2 64 - dense 128 - {2, 4}
O-Net       48x48     conv3 32 - pool3/2 - conv3 64 - pool3/2 - conv3 64 - pool2/2 - conv2 128
                      - dense 256 - {2 (softmax), 4 (box offsets), 10 (landmarks x1..x5, y1..y5)}
==========  ========  ====================================================================

The released weights come from Keras, so two Keras conventions are kept exactly: max pooling
with ``"same"`` padding (the map is padded at the bottom/right first, by ``-inf``), and the dense
layers read the last feature map flattened in (width, height, channel) order.
:func:`from_keras` copies a list of Keras arrays (see :mod:`.weights`) into a network.
"""
from __future__ import annotations

import math
from typing import List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class SamePool(nn.Module):
    """Max pooling with Keras/TensorFlow ``"same"`` padding (output size ``ceil(n / stride)``)."""

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        """Pool ``x`` after padding it by ``-inf`` as TensorFlow does (the odd pixel goes after)."""
        pads = []
        for n in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
            total = max((math.ceil(n / self.stride) - 1) * self.stride + self.kernel - n, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads, value=float("-inf"))
        return F.max_pool2d(x, self.kernel, self.stride)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, padding=same"


def _flatten_whc(x):
    """``(B, C, H, W)`` -> ``(B, W*H*C)`` in the (width, height, channel) order of the dense weights."""
    return x.permute(0, 3, 2, 1).flatten(1)


class PNet(nn.Module):
    """Proposal network: a fully convolutional 12x12 face/non-face classifier with box offsets."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = SamePool(2, 2)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.box = nn.Conv2d(32, 4, 1)
        self.cls = nn.Conv2d(32, 2, 1)

    def forward(self, x):
        """Images ``(B, 3, H, W)`` -> ``(offsets (B, 4, h, w), face probability (B, h, w))``, stride 2."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.box(x), torch.softmax(self.cls(x), dim=1)[:, 1]


class RNet(nn.Module):
    """Refinement network on 24x24 crops."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = SamePool(3, 2)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.fc4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.box = nn.Linear(128, 4)
        self.cls = nn.Linear(128, 2)

    def forward(self, x):
        """Crops ``(B, 3, 24, 24)`` -> ``(box offsets (B, 4), face probability (B,))``."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu4(self.fc4(_flatten_whc(self.prelu3(self.conv3(x)))))
        return self.box(x), torch.softmax(self.cls(x), dim=1)[:, 1]


class ONet(nn.Module):
    """Output network on 48x48 crops: final score, box offsets and the five landmarks."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = SamePool(3, 2)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = SamePool(2, 2)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.fc5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.box = nn.Linear(256, 4)
        self.landmarks = nn.Linear(256, 10)
        self.cls = nn.Linear(256, 2)

    def forward(self, x):
        """Crops ``(B, 3, 48, 48)`` -> ``(box offsets (B, 4), landmarks (B, 10), face probability (B,))``.

        Landmarks are fractions of the crop: ``x1..x5`` then ``y1..y5``.
        """
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.fc5(_flatten_whc(self.prelu4(self.conv4(x)))))
        return self.box(x), self.landmarks(x), torch.softmax(self.cls(x), dim=1)[:, 1]


def _keras_order(net: nn.Module) -> List[nn.Parameter]:
    """The network's parameters in the order Keras lists its weights (layer by layer, kernel then bias)."""
    return [p for _, p in net.named_parameters()]


def from_keras(net: nn.Module, arrays: Sequence[np.ndarray], where: str = "weights") -> nn.Module:
    """Copy Keras arrays into ``net`` (convolution ``(kh, kw, in, out)``, dense ``(in, out)``, PReLU slopes).

    The order is the networks' layer order; every shape is checked and a mismatch raises
    ``ValueError`` naming ``where`` and the parameter.
    """
    names = [n for n, _ in net.named_parameters()]
    params = _keras_order(net)
    if len(arrays) != len(params):
        raise ValueError(f"{where}: {len(arrays)} arrays for {type(net).__name__}'s {len(params)} parameters")
    with torch.no_grad():
        for name, p, a in zip(names, params, arrays):
            a = np.asarray(a, dtype=np.float32)
            if p.dim() == 4:
                a = a.transpose(3, 2, 0, 1)      # (kh, kw, in, out) -> (out, in, kh, kw)
            elif p.dim() == 2:
                a = a.T                          # (in, out) -> (out, in)
            else:
                a = a.reshape(-1)                # biases; PReLU slopes (1, 1, C) -> (C,)
            if tuple(a.shape) != tuple(p.shape):
                raise ValueError(f"{where}: array for {type(net).__name__}.{name} has shape {tuple(a.shape)}, "
                                 f"expected {tuple(p.shape)}")
            p.copy_(torch.from_numpy(np.ascontiguousarray(a)))
    return net.eval()
