"""Random low-quality versions of a glyph image: affine jitter, down-sampling, blur and noise.

:func:`degrade` draws and applies one degradation with Pillow (the fixed test set is made with
it); :func:`draw_degradations` and :func:`apply_degradations` do the same to a whole batch with
torch (training), from torch's random stream.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np

__all__ = ["DEGRADE", "degrade_pil", "degrade", "draw_degradations", "apply_degradations", "degrade_batch"]

#: degradation ranges (training-time and for the fixed test set)
DEGRADE = {
    "min_resolution": 10,     # smallest side after down-sampling, in pixels
    "max_rotation": 8.0,      # degrees
    "scale": [0.88, 1.08],    # isotropic scale range
    "max_shift": 2.0,         # pixels
    "max_blur": 1.2,          # Gaussian radius in pixels (half the images stay sharp)
    "max_noise": 18.0,        # Gaussian noise std on 0..255
}


def degrade_pil(img: np.ndarray, angle: float, scale: float, shift, resolution: int, blur: float) -> np.ndarray:
    """One grey uint8 image degraded by one draw, without noise, with Pillow (float32 result):
    the reference :func:`degrade` builds the fixed test set with."""
    from PIL import Image, ImageFilter

    h, w = img.shape[:2]
    # inverse map (output -> input) of a rotation+scale about the centre followed by a shift
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    a, b, d, e = c, s, -s, c
    ox, oy = cx + float(shift[0]), cy + float(shift[1])
    coeffs = (a, b, cx - a * ox - b * oy, d, e, cy - d * ox - e * oy)
    im = Image.fromarray(img, "L").transform((w, h), Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=0)
    if resolution < min(h, w):
        im = im.resize((resolution, resolution), Image.BILINEAR).resize((w, h), Image.BILINEAR)
    if blur > 0:
        im = im.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(im, dtype=np.float32)


def degrade(img: np.ndarray, rng: np.random.Generator, params: Optional[Dict] = None) -> Tuple[np.ndarray, Dict]:
    """A random low-quality version of a grey glyph image, and the draw that made it.

    In order: a small affine jitter (rotation, scale, shift), down-sampling to ``r``×``r`` pixels
    (``r`` uniform in ``[min_resolution, size]``) and back up (bilinear), a Gaussian blur (half of
    the images, radius up to ``max_blur``), and additive Gaussian noise. Returns the uint8 image
    and ``{"resolution", "blur", "noise"}``."""
    p = dict(DEGRADE, **(params or {}))
    h, w = img.shape[:2]
    size = min(h, w)
    ang = math.radians(rng.uniform(-p["max_rotation"], p["max_rotation"]))
    sc = rng.uniform(*p["scale"])
    tx, ty = rng.uniform(-p["max_shift"], p["max_shift"], size=2)
    res = int(rng.integers(int(p["min_resolution"]), size + 1))
    blur = float(rng.uniform(0.0, p["max_blur"])) if rng.random() < 0.5 else 0.0
    noise = float(rng.uniform(0.0, p["max_noise"]))
    out = degrade_pil(img, ang, sc, (tx, ty), res, blur)
    if noise > 0:
        out = out + rng.normal(0.0, noise, size=out.shape).astype(np.float32)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out, {"resolution": res, "blur": round(blur, 4), "noise": round(noise, 4)}


def draw_degradations(n: int, size: int, params: Optional[Dict] = None, generator=None) -> Dict:
    """``n`` random degradations (the distribution :func:`degrade` draws from), from torch's random
    stream (``generator``, or the global one: a trainer checkpoints it, so a resumed run draws the
    same ones). Returns float64/int64 tensors ``angle`` (radians), ``scale``, ``shift`` ``(n, 2)``,
    ``resolution``, ``blur`` and ``noise``."""
    import torch

    p = dict(DEGRADE, **(params or {}))

    def uniform(lo, hi, shape=(n,)):
        return lo + (hi - lo) * torch.rand(shape, generator=generator, dtype=torch.float64)

    rot = math.radians(float(p["max_rotation"]))
    out = {"angle": uniform(-rot, rot), "scale": uniform(*map(float, p["scale"])),
           "shift": uniform(-float(p["max_shift"]), float(p["max_shift"]), (n, 2)),
           "resolution": torch.randint(int(p["min_resolution"]), int(size) + 1, (n,), generator=generator)}
    sharp = torch.rand(n, generator=generator) >= 0.5
    out["blur"] = uniform(0.0, float(p["max_blur"])).masked_fill_(sharp, 0.0)
    out["noise"] = uniform(0.0, float(p["max_noise"]))
    return out


def apply_degradations(images, draws: Dict, generator=None):
    """Degrade a batch of grey images ``(B, H, W)`` (uint8 or float on 0..255) by ``draws``
    (:func:`draw_degradations`), all at once; returns float ``(B, H, W)`` rounded and clipped to
    0..255.

    The batched counterpart of :func:`degrade`, step for step: the affine jitter about the image
    centre (bilinear, zeros outside), down-sampling to ``resolution`` pixels (antialiased bilinear)
    and back up (bilinear), a separable Gaussian blur of standard deviation ``blur`` (edges
    replicated), and Gaussian noise of standard deviation ``noise`` (drawn from ``generator``)."""
    import torch
    import torch.nn.functional as F

    x = images.to(torch.float32)
    if x.dim() != 3:
        raise ValueError(f"images must be (B, H, W), got {tuple(x.shape)}")
    b, h, w = x.shape
    if b == 0:
        return x
    x = x.unsqueeze(1)
    # affine: the input point of every output pixel (inverse map), in align_corners coordinates
    ang, sc = draws["angle"].to(torch.float32), draws["scale"].to(torch.float32)
    tx, ty = draws["shift"].to(torch.float32).unbind(1)
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    u = xs[None] - cx - tx[:, None, None]
    v = ys[None] - cy - ty[:, None, None]
    xin = cos[:, None, None] * u + sin[:, None, None] * v + cx
    yin = -sin[:, None, None] * u + cos[:, None, None] * v + cy
    grid = torch.stack((xin * (2.0 / max(w - 1, 1)) - 1.0, yin * (2.0 / max(h - 1, 1)) - 1.0), dim=-1)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    # resolution: down to r x r and back up, one call per distinct r
    res = draws["resolution"]
    for r in torch.unique(res[res < min(h, w)]).tolist():
        sel = torch.nonzero(res == r).squeeze(1)
        small = F.interpolate(x[sel], size=(r, r), mode="bilinear", antialias=True, align_corners=False)
        x[sel] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    # blur: a separable Gaussian per image (a delta for the sharp ones), edges replicated
    blur = draws["blur"].to(torch.float32)
    if bool((blur > 0).any()):
        half = max(1, math.ceil(3.0 * float(blur.max())))
        t = torch.arange(-half, half + 1, dtype=torch.float32)
        k = torch.exp(-0.5 * (t[None] / blur.clamp_min(1e-6)[:, None]) ** 2)
        k = k / k.sum(1, keepdim=True)
        xb = F.pad(x.view(1, b, h, w), (half, half, half, half), mode="replicate")
        xb = F.conv2d(xb, k.view(b, 1, 1, -1), groups=b)
        xb = F.conv2d(xb, k.view(b, 1, -1, 1), groups=b)
        x = xb.view(b, 1, h, w)
    x = x.squeeze(1)
    noise = draws["noise"].to(torch.float32)
    x = x + noise[:, None, None] * torch.randn(x.shape, generator=generator)
    return x.round_().clamp_(0.0, 255.0)


def degrade_batch(images, params: Optional[Dict] = None, generator=None):
    """Random low-quality versions of a batch of grey images ``(B, H, W)``: float ``(B, H, W)`` on
    0..255, and the draws that made them (:func:`draw_degradations`, :func:`apply_degradations`)."""
    draws = draw_degradations(images.shape[0], min(images.shape[1:]), params, generator)
    return apply_degradations(images, draws, generator), draws
