"""LeNet++, the small network of the center-loss paper's MNIST feature figures.

Wen, Zhang, Li, Qiao, "A Discriminative Feature Learning Approach for Deep Face Recognition"
(ECCV 2016), Fig. 2 / Table: three stages of two 5x5 convolutions (32-32, 64-64, 128-128 channels,
stride 1, padding 2), each convolution followed by a per-channel PReLU, each stage followed by a
2x2/2 max-pool; then one fully connected layer to the feature (2-D in the paper's figures).
SphereFace's MNIST figures use the same net.
"""
from __future__ import annotations

from torch import nn

from .base import Backbone, check_dropout
from .registry import BACKBONES


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 5, stride=1, padding=2), nn.PReLU(cout),
        nn.Conv2d(cout, cout, 5, stride=1, padding=2), nn.PReLU(cout),
        # Caffe rounds pooled sizes up: 28 -> 14 -> 7 -> 4.
        nn.MaxPool2d(2, 2, ceil_mode=True),
    )


@BACKBONES.register("lenetpp", "lenet++")
class LeNetPP(Backbone):
    """LeNet++ on 1x28x28 grey images (MNIST / Fashion-MNIST) -> ``(B, embedding_size)``.

    Args:
        embedding_size: feature width; 2 or 3 for the feature-space figures, 64-128 for accuracy.
        width: channel multiplier (1.0 = the paper's 32/64/128). ``width=0.5`` costs about a
            quarter of the compute; channels are ``max(1, round(c * width))``.
        in_channels: image channels (1 for grey; 3 lets the net take 28x28 colour images).
        dropout: dropout probability before the final linear layer (0 = the paper).

    Pooling rounds up as Caffe's does (28 -> 14 -> 7 -> 4), so the linear layer sees
    ``128*width x 4 x 4`` values. The feature layer is linear (no activation), as in the paper, so
    2-D features spread around the origin. At ``width=1`` one 28x28 image costs about 81 M
    multiply-adds; parameters are ``795 296 + 2049 * embedding_size`` (see the tests' formula).
    """

    INPUT_SIZE = (1, 28, 28)

    def __init__(self, embedding_size: int = 512, width: float = 1.0, in_channels: int = 1,
                 dropout: float = 0.0):
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
        super().__init__(embedding_size, (in_channels, 28, 28))
        try:
            width = float(width)
        except (TypeError, ValueError):
            raise ValueError(f"width must be a positive number, got {width!r}") from None
        if not width > 0:
            raise ValueError(f"width must be a positive number, got {width}")
        c1, c2, c3 = (max(1, int(round(c * width))) for c in (32, 64, 128))
        self.width = width
        self.stage1 = _stage(in_channels, c1)
        self.stage2 = _stage(c1, c2)
        self.stage3 = _stage(c2, c3)
        self.dropout = nn.Dropout(check_dropout(dropout))
        self.fc = nn.Linear(c3 * 4 * 4, self.embedding_size)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        """Images ``(B, C, 28, 28)`` -> features ``(B, embedding_size)``."""
        self.check_input(x)
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(self.dropout(x.flatten(1)))
