"""Batched embedding extraction with optional flip-test feature fusion."""
from __future__ import annotations

from typing import Iterable, Optional, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["embed_images"]


def _first(batch):
    """The image tensor of a batch that may be ``(images, labels, ...)``."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError("got an empty batch (empty tuple/list)")
        batch = batch[0]
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(batch)
    if not isinstance(batch, torch.Tensor):
        raise ValueError(f"a batch must be a tensor or array of images, got {type(batch).__name__}")
    return batch


def _check_batch(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got a batch of shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(
            f"images must be float and already normalised ((x/255 - 0.5)/0.5), got dtype "
            f"{x.dtype}; facemargin.data.ArrayDataset or images_to_tensor() converts uint8 images"
        )
    return x


def _batches(images, batch_size: int):
    """Yield image batches and the number of batches (or None) for a progress bar."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        x = torch.as_tensor(images)
        _check_batch(x)
        n = x.shape[0]
        total = (n + batch_size - 1) // batch_size
        return (x[i : i + batch_size] for i in range(0, n, batch_size)), total
    if isinstance(images, Dataset) and hasattr(images, "__getitem__"):
        loader = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=0)
        return (_first(b) for b in loader), len(loader)
    if isinstance(images, Iterable):
        total = len(images) if hasattr(images, "__len__") else None
        return (_first(b) for b in images), total
    raise ValueError(
        f"images must be an (N, C, H, W) tensor/array, a torch Dataset or an iterable of batches, "
        f"got {type(images).__name__}"
    )


def _forward(model, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if isinstance(out, (tuple, list)):  # backbones that also return auxiliary outputs
        out = out[0]
    if out.ndim != 2:
        raise ValueError(f"the model must return (B, D) embeddings, got shape {tuple(out.shape)}")
    return out


def embed_images(
    model: torch.nn.Module,
    images: Union[np.ndarray, torch.Tensor, Dataset, Iterable],
    batch_size: int = 256,
    flip: bool = False,
    device: Optional[Union[str, torch.device]] = None,
    progress: bool = False,
) -> np.ndarray:
    """Embed images with ``model`` in eval mode under ``torch.no_grad()``; float32 ``(N, D)``.

    ``images`` is a float ``(N, C, H, W)`` tensor or array already normalised as the model
    expects, a torch ``Dataset`` whose items are images or ``(image, label, ...)`` tuples, or any
    iterable of batches (e.g. a ``DataLoader``) in the same forms.

    ``flip=True`` is flip-test fusion: the embedding of the horizontally flipped image (width
    axis) is **added** to the original's, before any normalisation, so the fused vector's
    direction is the mean of the two directions weighted by their norms.  The embeddings are
    returned unnormalised; :func:`facemargin.eval.verify` normalises them.

    ``device``: where to run; defaults to the device of the model's parameters (CPU when it has
    none).  When given and different, the model is moved there.  The model's train/eval mode is
    restored afterwards.  ``progress=True`` shows a tqdm bar on stderr when stderr is a terminal
    (none in a log file or a pipe).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    params = list(model.parameters())
    model_device = params[0].device if params else torch.device("cpu")
    dev = torch.device(device) if device is not None else model_device
    if params and dev != model_device:
        model.to(dev)
    batches, total = _batches(images, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=total, desc="embed", unit="batch", disable=None)  # None: off unless a TTY
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for x in batches:
                x = _check_batch(x).to(dev, non_blocking=True)
                if params and x.dtype != params[0].dtype and params[0].is_floating_point():
                    x = x.to(params[0].dtype)
                e = _forward(model, x)
                if flip:
                    e = e + _forward(model, torch.flip(x, dims=[3]))
                out.append(e.float().cpu())
    finally:
        model.train(was_training)
    if not out:
        raise ValueError("no images to embed (empty input)")
    return torch.cat(out).numpy().astype(np.float32, copy=False)
