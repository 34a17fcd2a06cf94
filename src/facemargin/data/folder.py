"""A ``<root>/<class>/<image>`` folder of images as a torch ``Dataset``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .arrays import normalize_uint8, to_grey

__all__ = ["ImageFolder", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def _size_hw(size) -> Optional[Tuple[int, int]]:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        hw = (int(size), int(size))
    else:
        try:
            h, w = size
            hw = (int(h), int(w))
        except (TypeError, ValueError):
            raise ValueError(f"size must be an int or (height, width), got {size!r}") from None
    if min(hw) < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return hw


class ImageFolder(Dataset):
    """Images in ``root/<class>/<image>`` (jpg/jpeg/png/bmp, any case) loaded as RGB.

    Class names are the sub-folder names, sorted; label ``i`` is ``classes[i]``.  Files inside a
    class are sorted by name; hidden files and other extensions are ignored.  Attributes:
    ``classes``, ``class_to_idx``, ``samples`` (list of ``(path, label)``), ``paths``, ``labels``
    (int64 array).

    Items are ``(float tensor (C, H, W) normalised as (x/255 - 0.5)/0.5, int label)``, with
    ``C = channels``: 3 for RGB, 1 for the BT.601 grey image a one-channel backbone takes; ``size``
    (int or ``(height, width)``) resizes with bilinear filtering, and ``transform`` is applied to
    the normalised tensor last.  :meth:`image` gives the raw ``H x W x 3`` uint8 array.

    Raises ``FileNotFoundError`` for a missing root, ``ValueError`` for a root without class
    folders, a class folder without images, or an image that cannot be decoded (naming the file).
    """

    def __init__(
        self,
        root: Union[str, os.PathLike],
        size=None,
        transform: Optional[Callable] = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        channels: int = 3,
    ):
        self.root = Path(root).expanduser()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
        self.channels = channels
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        self.size = _size_hw(size)
        self.transform = transform
        exts = tuple(e.lower() for e in extensions)
        class_dirs = sorted(
            p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        if not class_dirs:
            raise ValueError(
                f"{self.root} has no class sub-folders; expected the layout root/<class>/<image>"
            )
        self.classes: List[str] = [p.name for p in class_dirs]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples: List[Tuple[Path, int]] = []
        for label, d in enumerate(class_dirs):
            files = sorted(
                p for p in d.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts
            )
            if not files:
                raise ValueError(
                    f"class folder {d} contains no images with extensions {', '.join(exts)}"
                )
            self.samples += [(p, label) for p in files]
        self.paths = [p for p, _ in self.samples]
        self.labels = np.array([lab for _, lab in self.samples], dtype=np.int64)

    @property
    def num_classes(self) -> int:
        """Number of class folders."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, i: int) -> np.ndarray:
        """The decoded (and resized, if ``size``) image ``i`` as an ``H x W x 3`` uint8 array."""
        from PIL import Image, UnidentifiedImageError

        path = self.paths[i]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if self.size is not None and im.size != (self.size[1], self.size[0]):
                    im = im.resize((self.size[1], self.size[0]), Image.BILINEAR)
                return np.asarray(im, dtype=np.uint8).copy()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise ValueError(f"cannot read image {path}: {e}") from e

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for ImageFolder of size {len(self)}")
        arr = self.image(i)
        if self.channels == 1:
            arr = to_grey(arr)[..., None]
        x = normalize_uint8(torch.from_numpy(arr).permute(2, 0, 1)).contiguous()
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])
