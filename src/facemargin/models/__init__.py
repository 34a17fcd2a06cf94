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

``build(name, embedding_size=512, **kw)`` builds one; ``check_params(name, params)`` checks its
options without building it; ``available()`` lists the names;
``input_size(name)`` gives the expected ``(C, H, W)``. ``export_onnx`` (in ``.export``) writes a
checked ONNX file. ``load_pretrained(name, path)`` loads insightface ``arcface_torch`` backbones
(``iresnet*`` key for key, ``mobilefacenet``/``mbf`` through a key map; see ``.pretrained``).
"""
from .._lazy import lazy_package


def _public():
    """The public names, imported on first use (``facemargin --help`` needs no torch)."""
    from .base import NORMALISATION, Backbone
    from .catalogue import available, build, check_params, export_onnx, input_size, num_parameters
    from .iresnet import IBasicBlock, IResNet
    from .lenet import LeNetPP
    from .mobilefacenet import MobileFaceNet
    from .pretrained import load_pretrained
    from .registry import BACKBONES
    from .resface import ResFace28
    from .sphere import Sphere20
    return locals()


__getattr__ = lazy_package(__name__, _public)

__all__ = ["build", "check_params", "available", "input_size", "num_parameters", "Backbone", "BACKBONES",
           "NORMALISATION", "LeNetPP", "Sphere20", "ResFace28", "IResNet", "IBasicBlock",
           "MobileFaceNet", "export_onnx", "load_pretrained"]
