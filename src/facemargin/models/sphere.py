"""SphereFace-20 (Liu et al., "SphereFace: Deep Hypersphere Embedding for Face Recognition", CVPR 2017).

Layout checked against the authors' ``train/code/sphereface_model.prototxt`` (wy1iu/sphereface):
input 3x112x96; four stages, each a 3x3 stride-2 convolution (padding 1, with bias, PReLU) followed
by 1, 2, 4 and 1 residual units of 64, 128, 256 and 512 channels. A residual unit is
``x + PReLU(conv3x3(PReLU(conv3x3(x))))`` with no activation after the sum. Feature maps shrink
112x96 -> 56x48 -> 28x24 -> 14x12 -> 7x6, and ``fc5`` maps 512x7x6 to the embedding (512 in the
paper). Counting 4 transition + 16 residual convolutions gives the 20 layers.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from .base import Backbone, check_dropout
from .registry import BACKBONES


class PReLUResidualUnit(nn.Module):
    """``x + PReLU(conv(PReLU(conv(x))))``, 3x3 convolutions, stride 1, padding 1, no bias.

    In the Caffe nets these convolutions carry a bias blob that is filled with 0 and frozen
    (``lr_mult: 0``), i.e. no bias at all; we omit it.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.prelu1 = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.prelu2 = nn.PReLU(channels)

    def forward(self, x):
        """``x + PReLU(conv(PReLU(conv(x))))`` (same shape as ``x``)."""
        return x + self.prelu2(self.conv2(self.prelu1(self.conv1(x))))


def make_stage(cin: int, cout: int, units: int, padding: int) -> nn.Sequential:
    """A stride-2 3x3 convolution (with bias) + PReLU, then ``units`` residual units."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=padding),
        nn.PReLU(cout),
        *[PReLUResidualUnit(cout) for _ in range(units)],
    )


def init_caffe_style(module: nn.Module) -> None:
    """Initialise as the Caffe prototxts do: transition convs and fc xavier, residual convs N(0, 0.01)."""
    for m in module.modules():
        if isinstance(m, PReLUResidualUnit):
            nn.init.normal_(m.conv1.weight, 0.0, 0.01)
            nn.init.normal_(m.conv2.weight, 0.0, 0.01)
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


@BACKBONES.register("sphere20", "sphereface20")
class Sphere20(Backbone):
    """SphereFace-20 on 3x112x96 (H x W) aligned faces -> ``(B, embedding_size)``.

    Args:
        embedding_size: output width (``fc5``; 512 in the paper).
        dropout: dropout before ``fc5`` (0 = the paper).

    Parameters at embedding 512: 22 666 944 (the tests derive this from the layout).
    """

    INPUT_SIZE = (3, 112, 96)
    UNITS: Sequence[int] = (1, 2, 4, 1)
    CHANNELS: Sequence[int] = (64, 128, 256, 512)

    def __init__(self, embedding_size: int = 512, dropout: float = 0.0):
        super().__init__(embedding_size)
        stages, cin = [], self.input_size[0]
        for cout, units in zip(self.CHANNELS, self.UNITS):
            stages.append(make_stage(cin, cout, units, padding=1))
            cin = cout
        self.stage1, self.stage2, self.stage3, self.stage4 = stages
        self.dropout = nn.Dropout(check_dropout(dropout))
        self.fc5 = nn.Linear(512 * 7 * 6, self.embedding_size)
        init_caffe_style(self)

    def forward(self, x):
        """Images ``(B, 3, 112, 96)`` -> embeddings ``(B, embedding_size)``."""
        self.check_input(x)
        x = self.stage4(self.stage3(self.stage2(self.stage1(x))))
        return self.fc5(self.dropout(x.flatten(1)))
