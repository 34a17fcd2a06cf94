"""The IJB crops aligned from their landmarks, and their embeddings, plain and mirrored, cached per model."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from ...align.transform import norm_crop
from ...data.arrays import images_to_tensor, to_grey
from ...data.images import load_image
from ...io import atomic_open
from ..embed import embed_images
from .meta import IJBMeta, PathLike, check_images

__all__ = ["IJBImages", "model_fingerprint", "embed_ijb"]


def _align_spec(input_size) -> Tuple[str, int]:
    c, h, w = input_size
    if h == w:
        return "arcface", h
    if w == round(96 * h / 112):
        return "sphereface", h
    raise ValueError(f"a model input of {h}x{w} (HxW) has no alignment template; IJB crops are aligned to the "
                     f"arcface (square) or sphereface (96x112) template")


class IJBImages(torch.utils.data.Dataset):
    """The IJB crops, aligned from their 5 landmarks and normalised as in training: ``(C, H, W)``.

    ``input_size`` is the model's ``(C, H, W)``: square inputs use the arcface template (112x112
    for the usual backbones), 96x112-style inputs the sphereface template; one channel means the
    aligned RGB crop is converted to grey (ITU-R 601 weights, as in evaluation elsewhere).
    """

    def __init__(self, meta: IJBMeta, input_size=(3, 112, 112)):
        self.meta = meta
        self.channels = int(input_size[0])
        self.template, self.size = _align_spec(input_size)

    def __len__(self) -> int:
        return len(self.meta.names)

    def __getitem__(self, i: int) -> torch.Tensor:
        path = self.meta.image_dir / self.meta.names[i]
        img = load_image(path)
        crop = norm_crop(img, self.meta.landmarks[i], size=self.size, template=self.template)
        if self.channels == 1:
            crop = to_grey(crop)
        return images_to_tensor(crop[None])[0]


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's weights and input size: the key of its cached embeddings."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    h.update(repr(tuple(getattr(model, "input_size", ()))).encode())
    return h.hexdigest()[:16]


def _fingerprint(model: torch.nn.Module, meta: IJBMeta) -> str:
    h = hashlib.sha256(model_fingerprint(model).encode())
    h.update("\n".join(meta.names.tolist()).encode())
    h.update(np.ascontiguousarray(meta.landmarks).tobytes())
    return h.hexdigest()[:16]


def embed_ijb(model: torch.nn.Module, meta: IJBMeta, cache_dir: Optional[PathLike] = None, batch_size: int = 128,
              workers: int = 0, progress: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Embeddings of every crop and of its mirror image, ``(N, D)`` float32 each, cached.

    With ``cache_dir`` the two arrays are stored as ``<dataset>_<fingerprint>.npy`` and
    ``..._flip.npy``, the fingerprint covering the model weights, its input size and the image
    list with its landmarks; a later call with the same model and list loads them.
    """
    cache = None
    if cache_dir is not None:
        key = f"{meta.dataset.lower()}_{_fingerprint(model, meta)}"
        cache = (Path(cache_dir) / f"{key}.npy", Path(cache_dir) / f"{key}_flip.npy")
        if cache[0].is_file() and cache[1].is_file():
            e, ef = np.load(cache[0], mmap_mode="r"), np.load(cache[1], mmap_mode="r")
            if e.shape[0] == len(meta.names) and e.shape == ef.shape:
                return e, ef
    check_images(meta)
    ds = IJBImages(meta, getattr(model, "input_size", (3, 112, 112)))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    sizes: List[int] = []

    def both():  # each batch with its mirror images appended: one forward pass per batch
        for x in loader:
            sizes.append(len(x))
            yield torch.cat([x, torch.flip(x, dims=[3])])

    class _Batches:
        def __iter__(self):
            return both()

        def __len__(self):
            return len(loader)

    out = embed_images(model, _Batches(), flip=False, progress=progress)
    e = np.empty((len(ds), out.shape[1]), np.float32)
    ef = np.empty_like(e)
    a = b = 0
    for n in sizes:
        e[a:a + n] = out[b:b + n]
        ef[a:a + n] = out[b + n:b + 2 * n]
        a += n
        b += 2 * n
    if cache is not None:
        for path, arr in zip(cache, (e, ef)):
            with atomic_open(path, "wb") as f:
                np.save(f, arr)
    return e, ef
