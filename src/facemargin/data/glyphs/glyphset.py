"""A built glyph set read back: its manifest, the training identities and the unseen material.

The clean training renderings are kept beside ``train.rec`` as one uint8 array
(``train_images.npy``, with a stamp of the record file it matches), so training reads them
without decoding.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

from ...io import atomic_open, write_json
from ..binpack import load_bin
from ..recordio import RecordIO
from .trainset import GlyphTrainSet

__all__ = ["TRAIN_IMAGES", "GlyphSet"]

PathLike = Union[str, os.PathLike]

#: the clean training renderings as one uint8 array, beside ``train.rec`` (read by ``GlyphSet.train_set``)
TRAIN_IMAGES = "train_images.npy"


def _train_images_stamp(ds) -> Dict:
    """What ``train_images.npy`` must agree with: the record count and size of ``train.rec``."""
    return {"records": len(ds), "rec_bytes": ds.rec_path.stat().st_size}


def _read_train_images(ds) -> Optional[np.ndarray]:
    """``train_images.npy`` beside ``ds`` when it is readable and matches ``ds``, else ``None``."""
    cache, stamp = ds.rec_path.parent / TRAIN_IMAGES, ds.rec_path.parent / (TRAIN_IMAGES + ".json")
    try:
        if json.loads(stamp.read_text(encoding="utf-8")) != _train_images_stamp(ds):
            return None
        arr = np.load(cache, allow_pickle=False)
    except (OSError, ValueError):  # missing or unreadable
        return None
    return arr if arr.dtype == np.uint8 and arr.ndim == 3 and len(arr) == len(ds) else None


def _write_train_images(ds, arr: np.ndarray) -> None:
    with atomic_open(ds.rec_path.parent / TRAIN_IMAGES, "wb") as f:
        np.save(f, arr, allow_pickle=False)
    write_json(ds.rec_path.parent / (TRAIN_IMAGES + ".json"), _train_images_stamp(ds))


class GlyphSet:
    """A built glyph set: its manifest, the training RecordIO and the unseen evaluation material."""

    def __init__(self, root: PathLike):
        self.root = Path(root)
        mpath = self.root / "manifest.json"
        if not mpath.is_file():
            raise FileNotFoundError(f"{mpath} not found: build the set with 'facemargin glyphs --out {self.root}'")
        self.manifest = json.loads(mpath.read_text(encoding="utf-8"))

    def train_set(self, augment: bool = True, progress: bool = True) -> GlyphTrainSet:
        """The training identities in memory (:class:`GlyphTrainSet`), degraded batch by batch
        when ``augment``."""
        ds = RecordIO(self.root)
        return GlyphTrainSet(self._train_images(ds, progress), ds.labels, ds.num_classes,
                             self.manifest.get("degrade"), augment=augment)

    def train_images(self, progress: bool = True) -> np.ndarray:
        """The clean training renderings as uint8 ``(N, H, W)``, in ``train.rec`` order.

        They are kept in ``train_images.npy`` next to ``train.rec`` (written when the set is built);
        a set without it, or whose ``train.rec`` changed since (record count or file size), is
        decoded once and the file written."""
        return self._train_images(RecordIO(self.root), progress)

    @staticmethod
    def _train_images(ds, progress: bool) -> np.ndarray:
        arr = _read_train_images(ds)
        if arr is not None:
            return arr
        from tqdm.auto import tqdm

        idx = range(len(ds))
        if progress:
            idx = tqdm(idx, desc=f"decoding {ds.rec_path} once into {TRAIN_IMAGES}", unit="img", mininterval=2)
        arr = np.stack([ds.image(i)[:, :, 0] for i in idx]) if len(ds) else np.zeros((0, 0, 0), np.uint8)
        _write_train_images(ds, arr)
        return arr

    def unseen(self) -> Tuple[np.ndarray, np.ndarray, Dict[str, np.ndarray]]:
        """The degraded unseen images ``(N, H, W)`` uint8, their identities, and their degradation."""
        ds = RecordIO(self.root / "unseen")
        imgs = np.stack([ds.image(i)[:, :, 0] for i in range(len(ds))])
        lst = self.root / "unseen.lst"
        rows = [ln.split("\t") for ln in lst.read_text(encoding="utf-8").splitlines() if ln and not ln.startswith("#")]
        if len(rows) != len(ds):
            raise ValueError(f"{lst}: {len(rows)} lines for {len(ds)} images of {ds.rec_path}")
        arr = np.asarray(rows, dtype=np.float64)
        labels = arr[:, 1].astype(np.int64)
        if not np.array_equal(labels, ds.labels):
            raise ValueError(f"{lst}: identities disagree with the labels of {ds.rec_path}")
        return imgs, labels, {"resolution": arr[:, 2], "blur": arr[:, 3], "noise": arr[:, 4]}

    def pairs(self) -> Tuple[np.ndarray, np.ndarray]:
        """The ``unseen.bin`` pack: images ``(2P, H, W)`` uint8 and ``issame`` ``(P,)``."""
        imgs, same = load_bin(self.root / "unseen.bin")
        return imgs[:, :, :, 0], same
