"""ResFace-28, the deploy network of the Angular Triplet Loss write-up (``proto/face_deploy.prototxt``).

Source checked: ``proto/face_deploy.prototxt`` of KaleidoZhouYN/Angular-Triplet-Loss (the file the
ATL write-up's README names; read layer by layer). Confirmed from that file:

* input ``1x3x112x112``;
* ``conv1a`` 3->32, 3x3, stride 1, **no padding** (112 -> 110), PReLU;
  ``conv1b`` 32->64, 3x3, stride 2, no padding (110 -> 54), PReLU;
* 1 residual unit at 64 channels; ``conv2`` 64->128 3x3/2 no padding (54 -> 26), PReLU;
  2 units at 128; ``conv3`` 128->256 3x3/2 (26 -> 12), PReLU; 5 units at 256;
  ``conv4`` 256->512 3x3/2 (12 -> 5), PReLU; 3 units at 512;
* a residual unit is conv3x3(pad 1)-PReLU-conv3x3(pad 1)-PReLU plus the identity (``Eltwise`` SUM,
  no activation after it); its convolutions' biases are filled with 0 and frozen (``lr_mult: 0``),
  so we build them without bias; the transition convolutions have trainable biases;
* PReLU layers have no ``prelu_param``, i.e. Caffe's default: one slope per channel, init 0.25;
* ``fc5`` InnerProduct 512x5x5 -> 512 with bias; nothing after it (the embedding is ``fc5``).
  27 convolutions + ``fc5`` = 28 layers. It is SphereFace-20's unit design with a deeper
  (1, 2, 5, 3) stage plan and an unpadded two-convolution stem.

Not confirmed (not in the deploy file): the training-time input normalisation (SphereFace's
prototxts use ``(x - 127.5) / 128``; we take the package-wide ``(x/255 - 0.5)/0.5``, which differs by
<0.4% in scale), the released weights (none are loaded here), and any training-only layers.
Initialisation follows the prototxt fillers (xavier for transitions and fc5, N(0, 0.01) for
residual convolutions).
"""
from __future__ import annotations

from torch import nn

from .base import Backbone, check_dropout
from .registry import BACKBONES
from .sphere import init_caffe_style, make_stage


@BACKBONES.register("resface28")
class ResFace28(Backbone):
    """ResFace-28 (the ATL write-up's deploy net) on 3x112x112 aligned faces -> ``(B, embedding_size)``.

    Args:
        embedding_size: output width of ``fc5`` (512 in the ATL write-up).
        dropout: dropout before ``fc5`` (0 = the ATL write-up).

    Parameters at embedding 512: 28 847 520 (the tests derive this from the layout).
    See the module docstring for what was checked against the original prototxt.
    """

    INPUT_SIZE = (3, 112, 112)
    UNITS = (1, 2, 5, 3)
    CHANNELS = (64, 128, 256, 512)

    def __init__(self, embedding_size: int = 512, dropout: float = 0.0):
        super().__init__(embedding_size)
        self.conv1a = nn.Conv2d(3, 32, 3, stride=1, padding=0)
        self.relu1a = nn.PReLU(32)
        # conv1b (32 -> 64, stride 2, no padding) opens stage 2, the 64-channel residual stage.
        stages, cin = [], 32
        for cout, units in zip(self.CHANNELS, self.UNITS):
            stages.append(make_stage(cin, cout, units, padding=0))
            cin = cout
        self.stage2, self.stage3, self.stage4, self.stage5 = stages
        self.dropout = nn.Dropout(check_dropout(dropout))
        self.fc5 = nn.Linear(512 * 5 * 5, self.embedding_size)
        init_caffe_style(self)

    def forward(self, x):
        """Images ``(B, 3, 112, 112)`` -> embeddings ``(B, embedding_size)``."""
        self.check_input(x)
        x = self.relu1a(self.conv1a(x))
        x = self.stage5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc5(self.dropout(x.flatten(1)))
