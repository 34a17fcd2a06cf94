"""Similarity transforms from five facial landmarks to a template, and the aligned crop.

Coordinates follow the OpenCV convention (pixel centres at integer ``(x, y)``); a ``(2, 3)``
matrix ``M`` maps an image point ``p`` to the crop point ``M[:, :2] @ p + M[:, 2]``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .templates import _check_name, _check_size, output_shape, reference_points

EC_MC_Y = 40.0
"""Eye-centre to mouth-centre distance of the ``ec_mc`` alignment, in pixels of a 112-pixel crop."""
EC_Y = 48.0
"""Default row of the eye centre in the ``ec_mc`` alignment, in pixels of a 112-pixel crop."""


def _landmarks(landmarks5, name: str = "landmarks5") -> np.ndarray:
    pts = np.asarray(landmarks5, dtype=np.float64)
    if pts.shape == (10,):
        pts = pts.reshape(5, 2)  # x1, y1, x2, y2, ...
    if pts.shape != (5, 2):
        raise ValueError(f"{name} must be five (x, y) points (shape (5, 2) or 10 values x1,y1,...,x5,y5), "
                         f"got shape {np.shape(landmarks5)}")
    if not np.all(np.isfinite(pts)):
        raise ValueError(f"{name} contains non-finite values: {pts.tolist()}")
    return pts


def umeyama(src: np.ndarray, dst: np.ndarray, estimate_scale: bool = True) -> np.ndarray:
    """Least-squares similarity transform ``dst ≈ c R src + t`` (Umeyama 1991), as a ``(d, d+1)`` matrix.

    ``R`` is a proper rotation (det +1): when the best orthogonal fit would be a reflection the
    smallest singular direction is flipped (Umeyama's ``S`` matrix), so a mirrored set of
    landmarks is never "aligned" by mirroring the face.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2:
        raise ValueError(f"umeyama: src and dst must be matching (n, d) arrays, got {src.shape} and {dst.shape}")
    n, d = src.shape
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = (xs ** 2).sum() / n
    if var_s <= 1e-12 * max(1.0, float(np.abs(src).max()) ** 2):
        raise ValueError("umeyama: the source points coincide; cannot estimate a transform")
    cov = xd.T @ xs / n
    u, sig, vt = np.linalg.svd(cov)
    s = np.ones(d)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[-1] = -1.0
    r = u @ np.diag(s) @ vt
    c = float((sig * s).sum() / var_s) if estimate_scale else 1.0
    t = mu_d - c * r @ mu_s
    return np.hstack([c * r, t[:, None]])


def ec_mc_transform(landmarks5, size: int = 112, ec_mc_y: float = EC_MC_Y, ec_y: float = EC_Y,
                    ec_x: Optional[float] = None) -> np.ndarray:
    """the ATL write-up's eye-centre/mouth-centre alignment as a ``(2, 3)`` similarity matrix.

    With ``ec`` the midpoint of the eyes and ``mc`` the midpoint of the mouth corners: the image is
    rotated so that the eye line is horizontal, scaled so that ``mc`` lies ``ec_mc_y`` pixels below
    ``ec`` (the distance measured perpendicular to the eye line, i.e. along the crop's rows; equal
    to the Euclidean ``|mc - ec|`` for a frontal face), and shifted so that ``ec`` lands at row
    ``ec_y`` and column ``ec_x``. ``ec_mc_y`` and ``ec_y`` are pixels of a 112-pixel crop and scale
    by ``size/112``; ``ec_x`` defaults to the horizontal centre ``(size - 1)/2`` (so a mirrored
    crop keeps the eye centre in place). Defaults: ``ec_mc_y=40`` (the ATL write-up), ``ec_y=48``, which
    puts eyes and mouth within about 4 pixels of the ArcFace template's rows (51.6 and 92.3).
    """
    pts = _landmarks(landmarks5)
    size = _check_size(size)
    r = size / 112.0
    ec = (pts[0] + pts[1]) / 2
    mc = (pts[3] + pts[4]) / 2
    eye = pts[1] - pts[0]
    if np.hypot(*eye) <= 0:
        raise ValueError("ec_mc alignment: the two eye landmarks coincide")
    theta = np.arctan2(eye[1], eye[0])
    cos, sin = np.cos(theta), np.sin(theta)
    rot = np.array([[cos, sin], [-sin, cos]])  # rotation by -theta: eye line -> +x axis
    d = (rot @ (mc - ec))[1]
    if d <= 0:
        raise ValueError("ec_mc alignment: the mouth centre is not below the eye centre "
                         f"(eyes {pts[0].tolist()}, {pts[1].tolist()}; mouth {pts[3].tolist()}, {pts[4].tolist()})")
    if ec_mc_y <= 0:
        raise ValueError(f"ec_mc_y must be positive, got {ec_mc_y}")
    scale = ec_mc_y * r / d
    a = scale * rot
    target = np.array([(size - 1) / 2.0 if ec_x is None else float(ec_x) * r, float(ec_y) * r])
    t = target - a @ ec
    return np.hstack([a, t[:, None]])


def estimate_transform(landmarks5, template: str = "arcface", size: int = 112, **kw) -> np.ndarray:
    """``(2, 3)`` float64 similarity matrix mapping the five image landmarks onto ``template``.

    Args:
        landmarks5: ``(5, 2)`` image points: left eye, right eye, nose, left mouth, right mouth.
        template: ``"arcface"``, ``"sphereface"`` (least-squares fit of the five points, Umeyama)
            or ``"ec_mc"`` (closed form from the eye and mouth centres; ``kw``: ``ec_mc_y``,
            ``ec_y``, ``ec_x``, see :func:`ec_mc_transform`).
        size: crop height in pixels; templates scale by ``size/112``.
    """
    name = _check_name(template)
    if name == "ec_mc":
        return ec_mc_transform(landmarks5, size=size, **kw)
    if kw:
        raise ValueError(f"unexpected options {sorted(kw)} for template {name!r}")
    return umeyama(_landmarks(landmarks5), reference_points(name, size))


def transform_points(matrix, points) -> np.ndarray:
    """Apply a ``(2, 3)`` affine matrix to ``(n, 2)`` points."""
    m = np.asarray(matrix, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def warp_affine(image: np.ndarray, matrix, out_shape: Tuple[int, int], border_value: float = 0.0) -> np.ndarray:
    """Bilinear affine warp: output pixel ``q`` takes the input at ``M^-1 q`` (OpenCV convention).

    ``image`` ``(H, W)`` or ``(H, W, C)``; ``out_shape`` ``(height, width)``. Samples outside the
    image blend with ``border_value`` (a constant border). uint8 input gives rounded uint8
    output, other dtypes float32.
    """
    img = np.asarray(image)
    if img.ndim not in (2, 3) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {img.shape}")
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (2, 3) or not np.all(np.isfinite(m)):
        raise ValueError(f"matrix must be a finite (2, 3) array, got {m.tolist() if m.size <= 9 else m.shape}")
    a = m[:, :2]
    if abs(np.linalg.det(a)) < 1e-12:
        raise ValueError("matrix is singular; cannot warp")
    ainv = np.linalg.inv(a)
    tinv = -ainv @ m[:, 2]
    oh, ow = int(out_shape[0]), int(out_shape[1])
    squeeze = img.ndim == 2
    src = img[:, :, None] if squeeze else img
    h, w, ch = src.shape
    pad = np.full((h + 2, w + 2, ch), border_value, dtype=np.float64)
    pad[1:-1, 1:-1] = src
    v, u = np.mgrid[0:oh, 0:ow].astype(np.float64)
    xs = ainv[0, 0] * u + ainv[0, 1] * v + tinv[0] + 1.0  # +1: padded coordinates
    ys = ainv[1, 0] * u + ainv[1, 1] * v + tinv[1] + 1.0
    inside = (xs >= 0) & (xs <= w + 1) & (ys >= 0) & (ys <= h + 1)
    x0 = np.clip(np.floor(xs), 0, w).astype(np.intp)
    y0 = np.clip(np.floor(ys), 0, h).astype(np.intp)
    fx = np.clip(xs - x0, 0.0, 1.0)[..., None]
    fy = np.clip(ys - y0, 0.0, 1.0)[..., None]
    out = ((pad[y0, x0] * (1 - fx) + pad[y0, x0 + 1] * fx) * (1 - fy)
           + (pad[y0 + 1, x0] * (1 - fx) + pad[y0 + 1, x0 + 1] * fx) * fy)
    out[~inside] = border_value
    if squeeze:
        out = out[:, :, 0]
    if img.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(np.float32)


def norm_crop(image, landmarks5, size: int = 112, template: str = "arcface", border_value: float = 0.0,
              **kw) -> np.ndarray:
    """Align a face: warp ``image`` with :func:`estimate_transform` into the template's crop.

    ``image``: ``(H, W, 3)`` (or ``(H, W)``) array, uint8 for a uint8 result, or a PIL image.
    Returns the crop of shape ``output_shape(template, size)`` (+ channels): ``size x size`` for
    ``arcface`` and ``ec_mc``, ``size x round(96 size/112)`` for ``sphereface``.
    """
    try:
        from PIL import Image

        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
    except ImportError:  # pragma: no cover
        pass
    m = estimate_transform(landmarks5, template=template, size=size, **kw)
    return warp_affine(image, m, output_shape(template, size), border_value=border_value)
