"""Face alignment from five landmarks (any detector): similarity transforms and aligned crops.

``estimate_transform(landmarks5, template="arcface", size=112)`` gives the ``(2, 3)`` matrix,
``norm_crop(image, landmarks5, size=112, template="arcface")`` the aligned crop. Templates:
``arcface`` (112x112), ``sphereface`` (96x112) and the ATL write-up's ``ec_mc``; see :func:`templates`.
"""
from .._lazy import lazy_package


def _public():
    """The public names, imported on first use (``facemargin --help`` needs no torch)."""
    from .templates import ARCFACE_112, SPHEREFACE_96x112, output_shape, reference_points, templates
    from .transform import (EC_MC_Y, EC_Y, ec_mc_transform, estimate_transform, norm_crop, transform_points,
                            umeyama, warp_affine)
    return locals()


__getattr__ = lazy_package(__name__, _public)

__all__ = [
    "ARCFACE_112", "SPHEREFACE_96x112", "EC_MC_Y", "EC_Y", "templates", "reference_points", "output_shape",
    "estimate_transform", "ec_mc_transform", "umeyama", "norm_crop", "warp_affine", "transform_points",
]
