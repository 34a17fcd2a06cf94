"""Reference landmark templates for face alignment.

Coordinates are image ``(x, y)`` in pixels with pixel centres at integer positions (the OpenCV
convention that insightface's templates use): the centre of the top-left pixel is ``(0, 0)``.
Landmark order everywhere: left eye, right eye, nose tip, left mouth corner, right mouth corner
(as seen in the image: the "left eye" is the one with the smaller x in a frontal face).

* ``arcface``: insightface's 112x112 reference points. For another ``size`` the points are
  multiplied by ``size/112`` and the crop is ``size x size`` (insightface itself treats sizes that
  are not multiples of 112 differently, as a 128-pixel frame with an x shift; we scale uniformly).
* ``sphereface``: the 96x112 (width x height) points of SphereFace. ``size`` is the crop height;
  points scale by ``size/112`` and the width is ``round(96 * size/112)``.
* ``ec_mc``: the ATL write-up's eye-centre/mouth-centre alignment (not a point template; see
  :func:`facemargin.align.ec_mc_transform`).
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
"""insightface's ArcFace reference points for a 112x112 crop."""

SPHEREFACE_96x112 = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                              [33.5493, 92.3655], [62.7299, 92.2041]], dtype=np.float64)
"""SphereFace's reference points for a 96x112 (width x height) crop."""

_DESCRIPTIONS: Dict[str, str] = {
    "arcface": "insightface ArcFace 5-point template, size x size crop (112x112 by default)",
    "sphereface": "SphereFace 5-point template, 96x112 (width x height) crop, scaled with size/112",
    "ec_mc": "eye-centre/mouth-centre alignment of the ATL write-up: eyes level, eye-to-mouth-centre distance "
             "ec_mc_y=40 and eye centre at row ec_y=48 of a 112x112 crop, scaled with size/112",
}


def templates() -> Dict[str, str]:
    """Names of the available alignment templates, each with a one-line description."""
    return dict(_DESCRIPTIONS)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name.lower() not in _DESCRIPTIONS:
        raise ValueError(f"unknown alignment template {name!r}; available: {', '.join(_DESCRIPTIONS)}")
    return name.lower()


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise ValueError(f"size must be a positive integer (crop height in pixels), got {size!r}")
    return int(size)


def output_shape(template: str = "arcface", size: int = 112) -> Tuple[int, int]:
    """``(height, width)`` of the crop that ``template`` produces at ``size``."""
    name, size = _check_name(template), _check_size(size)
    if name == "sphereface":
        return size, int(round(96 * size / 112))
    return size, size


def reference_points(template: str = "arcface", size: int = 112) -> np.ndarray:
    """The five ``(x, y)`` reference points of a point template, scaled to ``size`` (``(5, 2)`` float64)."""
    name, size = _check_name(template), _check_size(size)
    if name == "arcface":
        return ARCFACE_112 * (size / 112.0)
    if name == "sphereface":
        return SPHEREFACE_96x112 * (size / 112.0)
    raise ValueError("template 'ec_mc' is defined by the eye and mouth centres, not by five reference points")
