"""Image decode/encode helpers shared by the face-data readers (Pillow + NumPy only).

All images handled here are ``(H, W, 3)`` ``uint8`` RGB NumPy arrays. Errors are raised as
``ValueError`` carrying a caller-supplied ``where`` string (file, record index, ...) so that a bad
image in a dataset of millions can be found.
"""
from __future__ import annotations

import io
import os
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ..io import atomic_open

SizeLike = Union[int, Sequence[int], None]


def _pil():
    from PIL import Image

    return Image


def parse_size(size: SizeLike, name: str = "image_size") -> Optional[Tuple[int, int]]:
    """Normalise an image size argument to ``(height, width)``.

    ``None`` stays ``None``; an int ``n`` means ``(n, n)``; a pair is ``(height, width)``.
    """
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        try:
            h, w = (int(v) for v in size)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be an int or a (height, width) pair, got {size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {size!r}")
    return h, w


def to_rgb_array(image, where: str = "image") -> np.ndarray:
    """Return ``image`` (PIL image or array ``(H, W)``, ``(H, W, 1|3|4)``) as ``(H, W, 3)`` uint8 RGB."""
    Image = _pil()
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{where}: expected an (H, W, 3) RGB image, got shape {tuple(arr.shape)}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{where}: image dtype must be numeric, got {arr.dtype}")
        if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"{where}: image values must lie in [0, 255] for conversion to uint8")
        arr = np.rint(arr).astype(np.uint8)
    return np.ascontiguousarray(arr)


def decode_image(data, where: str = "image") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, ... anything Pillow reads) to ``(H, W, 3)`` uint8 RGB.

    ``data`` may be ``bytes``, ``bytearray``, ``memoryview`` or a 1-D uint8 array (as found in some
    insightface ``.bin`` packs). Raises ``ValueError`` naming ``where`` if the bytes do not decode.
    """
    Image = _pil()
    if isinstance(data, np.ndarray):
        data = data.tobytes()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"{where}: expected encoded image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{where}: empty image data")
    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ...)
        raise ValueError(f"{where}: cannot decode image ({type(e).__name__}: {e})") from e


def encode_image(image, format: str = "jpeg", quality: int = 95) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 RGB image to bytes (``format`` ``"jpeg"`` or ``"png"``)."""
    Image = _pil()
    arr = to_rgb_array(image)
    fmt = format.lower()
    if fmt in ("jpg", "jpeg"):
        fmt, kw = "JPEG", {"quality": int(quality)}
    elif fmt == "png":
        fmt, kw = "PNG", {}
    else:
        raise ValueError(f"unsupported image format {format!r}; use 'jpeg' or 'png'")
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format=fmt, **kw)
    return buf.getvalue()


def resize_image(image: np.ndarray, size: SizeLike) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 image to ``size`` (``(height, width)`` or int) bilinearly.

    Returns the input unchanged when it already has that size.
    """
    hw = parse_size(size, "size")
    if hw is None or tuple(image.shape[:2]) == hw:
        return image
    Image = _pil()
    im = Image.fromarray(to_rgb_array(image), "RGB").resize((hw[1], hw[0]), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8).copy()


def load_image(path: Union[str, os.PathLike], size: SizeLike = None) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB, optionally resized to ``size``.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when it
    does not decode.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    img = decode_image(data, where=path)
    return resize_image(img, size) if size is not None else img


def save_image(path: Union[str, os.PathLike], image, quality: int = 95) -> None:
    """Write an image atomically; the format follows the extension (``.png`` lossless, ``.jpg``/``.jpeg``)."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"cannot save {path}: use a .jpg, .jpeg or .png extension")
    data = encode_image(image, "png" if ext == ".png" else "jpeg", quality=quality)
    with atomic_open(path, "wb") as f:
        f.write(data)
