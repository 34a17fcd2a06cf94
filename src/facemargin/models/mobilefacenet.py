"""MobileFaceNet (Chen, Liu, Gao, Han, "MobileFaceNets: Efficient CNNs for Accurate Real-Time Face
Verification on Mobile Devices", CCBR 2018), Table 1 of the paper, 3x112x112 input.

=========  ============================  ===  =====  ===  ====
input      operator                      t    c      n    s
=========  ============================  ===  =====  ===  ====
112x112x3  conv3x3                       -    64     1    2
56x56x64   depthwise conv3x3             -    64     1    1
56x56x64   bottleneck                    2    64     5    2
28x28x64   bottleneck                    4    128    1    2
14x14x128  bottleneck                    2    128    6    1
14x14x128  bottleneck                    4    128    1    2
7x7x128    bottleneck                    2    128    2    1
7x7x128    conv1x1                       -    512    1    1
7x7x512    linear GDConv7x7 (depthwise)  -    512    1    1
1x1x512    linear conv1x1                -    D      1    1
=========  ============================  ===  =====  ===  ====

Bottlenecks are MobileNetV2's inverted residuals (1x1 expand by ``t`` - depthwise 3x3 - linear 1x1
project), with a shortcut when stride is 1 and widths match; the first of each row has stride
``s``. Every convolution is followed by BatchNorm and, except the linear ones, PReLU. The last
linear 1x1 convolution on the 1x1 map is a bias-free ``Linear(512, D)`` followed by BatchNorm1d.

insightface's ``arcface_torch`` MobileFaceNet (``mbf``) is this network widened: ``scale`` multiplies
the block widths (64 and 128 channels become ``64·scale`` and ``128·scale``) while the expanded widths
stay those of ``scale=1`` (128, 256, 512), the second convolution keeps 64 groups, and ``blocks``
``(b0, b1, b2, b3)`` sets the depth: ``b0`` blocks at the 56x56 stem (1 = the grouped 3x3
convolution), then rows of ``1 + b1``, ``1``, ``b2``, ``1`` and ``b3`` bottlenecks. The paper's network
is ``scale=1, blocks=(1, 4, 6, 2)`` (the default); insightface's ``mbf`` is ``scale=2`` and
``mbf_large`` ``scale=4, blocks=(2, 8, 12, 4)``. :func:`facemargin.models.load_pretrained` reads
their checkpoints (see :mod:`.pretrained`).

Parameter count: 1 003 136 at ``embedding_size=128`` (976 000 of them convolution/linear weights,
the rest BatchNorm scale/shift and PReLU slopes; the paper reports 0.99M for its 128-d model) and
1 200 512 at 512. The tests check both against a formula written from Table 1.
"""
from __future__ import annotations

from torch import nn

from .base import Backbone, check_dropout
from .registry import BACKBONES

#: (expansion t, output channels c, repeats n, stride s) of the bottleneck rows of Table 1.
BOTTLENECKS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


def bottleneck_rows(scale: int = 1, blocks=(1, 4, 6, 2)):
    """``(expanded width, output width, repeats, stride)`` of every bottleneck row (Table 1 at scale 1)."""
    c1, c2 = 64 * scale, 128 * scale
    return ((128, c1, 1 + blocks[1], 2), (256, c2, 1, 2), (256, c2, blocks[2], 1), (512, c2, 1, 2),
            (256, c2, blocks[3], 1))


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
            act: bool = True) -> nn.Sequential:
    """conv (no bias) + BN (+ PReLU when ``act``), padding ``kernel // 2`` except for the GDConv."""
    pad = kernel // 2 if kernel == 3 else 0
    layers = [nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.PReLU(cout))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand (to ``hidden`` channels) - depthwise 3x3 (stride) - linear 1x1 project."""

    def __init__(self, cin: int, cout: int, hidden: int, stride: int):
        super().__init__()
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            conv_bn(cin, hidden, 1),
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            conv_bn(hidden, cout, 1, act=False),
        )

    def forward(self, x):
        """The block's output, plus ``x`` when it has a shortcut."""
        out = self.body(x)
        return x + out if self.residual else out


@BACKBONES.register("mobilefacenet", "mbf")
class MobileFaceNet(Backbone):
    """MobileFaceNet on 3x112x112 aligned faces -> ``(B, embedding_size)`` (GDC head).

    Args:
        embedding_size: output width (128 in the paper; 512 is common with ArcFace training).
        dropout: dropout before the final linear layer (0 = the paper).
        scale: width multiplier of insightface's variants (1 = the paper, 2 = insightface ``mbf``).
        blocks: depth ``(b0, b1, b2, b3)`` as in insightface (default ``(1, 4, 6, 2)``, the paper's).
    """

    INPUT_SIZE = (3, 112, 112)

    def __init__(self, embedding_size: int = 512, dropout: float = 0.0, scale: int = 1, blocks=(1, 4, 6, 2)):
        super().__init__(embedding_size)
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        try:
            blocks = tuple(int(b) for b in blocks)
        except (TypeError, ValueError):
            raise ValueError(f"blocks must be four positive integers, got {blocks!r}") from None
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must be four positive integers, got {blocks!r}")
        self.scale, self.blocks = scale, blocks
        c1 = 64 * scale
        self.conv1 = conv_bn(3, c1, 3, stride=2)
        if blocks[0] == 1:
            self.dw_conv1 = conv_bn(c1, c1, 3, groups=64)
        else:
            self.dw_conv1 = nn.Sequential(*[Bottleneck(c1, c1, 128, 1) for _ in range(blocks[0])])
        layers, cin = [], c1
        for hidden, c, n, s in bottleneck_rows(scale, blocks):
            for i in range(n):
                layers.append(Bottleneck(cin, c, hidden, s if i == 0 else 1))
                cin = c
        self.bottlenecks = nn.Sequential(*layers)
        self.conv2 = conv_bn(cin, 512, 1)
        self.gdconv = conv_bn(512, 512, 7, groups=512, act=False)   # global depthwise, 7x7 -> 1x1
        self.dropout = nn.Dropout(check_dropout(dropout))
        self.linear = nn.Linear(512, self.embedding_size, bias=False)
        self.bn = nn.BatchNorm1d(self.embedding_size)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # fan_in keeps depthwise convolutions (fan_in = k*k) at a sane scale, so even an
                # untrained net in eval mode gives non-vanishing embeddings.
                nn.init.kaiming_normal_(m.weight, a=0.25, mode="fan_in", nonlinearity="leaky_relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, x):
        """Images ``(B, 3, 112, 112)`` -> embeddings ``(B, embedding_size)``."""
        self.check_input(x)
        x = self.bottlenecks(self.dw_conv1(self.conv1(x)))
        x = self.gdconv(self.conv2(x)).flatten(1)
        return self.bn(self.linear(self.dropout(x)))
