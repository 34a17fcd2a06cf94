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
    """Inverted residual: 1x1 expand (x t) - depthwise 3x3 (stride) - linear 1x1 project."""

    def __init__(self, cin: int, cout: int, expansion: int, stride: int):
        super().__init__()
        hidden = cin * expansion
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
    """

    INPUT_SIZE = (3, 112, 112)

    def __init__(self, embedding_size: int = 512, dropout: float = 0.0):
        super().__init__(embedding_size)
        self.conv1 = conv_bn(3, 64, 3, stride=2)
        self.dw_conv1 = conv_bn(64, 64, 3, groups=64)
        blocks, cin = [], 64
        for t, c, n, s in BOTTLENECKS:
            for i in range(n):
                blocks.append(Bottleneck(cin, c, t, s if i == 0 else 1))
                cin = c
        self.bottlenecks = nn.Sequential(*blocks)
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
