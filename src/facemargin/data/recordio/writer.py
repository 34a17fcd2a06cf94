"""The writer: a RecordIO set (``train.rec``, ``train.idx``, ``property``) from images or encoded bytes,
in insightface's layout (header and identity records) or im2rec's."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional, Tuple

import numpy as np

from ...io import atomic_open
from ..images import decode_image, encode_image, to_rgb_array
from .format import pack_payload, write_frame
from .index import PathLike, _write_index

__all__ = ["write_record", "write_encoded_record"]


def write_record(root: PathLike, images, labels, with_header: bool = True, quality: int = 95,
                 num_classes: Optional[int] = None, progress: bool = False) -> np.ndarray:
    """Write ``root/train.rec``, ``root/train.idx`` and ``root/property`` (each atomically).

    Args:
        root: output folder (created).
        images: sequence of ``(H, W, 3)`` uint8 RGB arrays (or an ``(N, H, W, 3)`` array), or of
            already-encoded image bytes; all images must have the same size.
        labels: class of each image, integers in ``[0, num_classes)``.
        with_header: write insightface's layout (header record 0, images grouped by class in
            keys ``1..N``, identity records ``N+1..N+C``); otherwise the im2rec layout (keys
            ``0..N-1`` in input order, no header or identity records).
        quality: JPEG quality for array images.
        num_classes: defaults to ``max(labels) + 1``.

    Returns ``order``: record ``i`` of the written set (``RecordIO(root).image(i)``) holds
    ``images[order[i]]``. With ``with_header`` the images are grouped by label (stable sort),
    otherwise ``order`` is ``arange(N)``.
    """
    root = Path(root)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    n = len(labels)
    if len(images) != n:
        raise ValueError(f"got {len(images)} images but {n} labels")
    if n == 0:
        raise ValueError("cannot write an empty RecordIO set")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(labels == np.round(labels)):
            raise ValueError("labels must be integers")
    labels = labels.astype(np.int64)
    if labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got {labels.min()}")
    c = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if labels.max() >= c:
        raise ValueError(f"label {labels.max()} >= num_classes {c}")
    order = np.argsort(labels, kind="stable") if with_header else np.arange(n)

    def encoded(j: int) -> Tuple[bytes, Tuple[int, int], str]:
        item = images[j]
        if isinstance(item, (bytes, bytearray, memoryview)):
            data = bytes(item)
            shape = decode_image(data, f"images[{j}]").shape[:2]
        else:
            arr = to_rgb_array(item, f"images[{j}]")
            data, shape = encode_image(arr, "jpeg", quality), arr.shape[:2]
        return data, tuple(shape), f"images[{j}]"

    write_encoded_record(root, (encoded(int(j)) for j in order), labels[order], with_header=with_header,
                         num_classes=c, progress=progress)
    return order


def write_encoded_record(root: PathLike, items: Iterable[Tuple[bytes, Tuple[int, int], str]], labels,
                         with_header: bool = True, num_classes: Optional[int] = None,
                         progress: bool = False) -> int:
    """Write ``root/train.rec``, ``train.idx`` and ``property`` from already-encoded images, streaming.

    ``items`` yields ``(encoded image bytes, (height, width), where)`` in record order, ``where``
    naming the source in error messages; ``labels`` holds the class of each item, in the same
    order and, for insightface's layout (``with_header``), grouped: non-decreasing. Nothing is
    decoded here, so the caller checks that the bytes decode to ``(height, width)``. Returns the
    number of images written. Every file is written atomically.
    """
    root = Path(root)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if n == 0:
        raise ValueError("cannot write an empty RecordIO set")
    if labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got {labels.min()}")
    if with_header and np.any(np.diff(labels) < 0):
        raise ValueError("insightface's layout needs the images grouped by class: labels must be non-decreasing")
    c = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if labels.max() >= c:
        raise ValueError(f"label {labels.max()} >= num_classes {c}")
    rec_path, idx_path = root / "train.rec", root / "train.idx"
    keys: List[int] = []
    offsets: List[int] = []
    size: Optional[Tuple[int, int]] = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"writing {rec_path}", unit="img")
    count = 0
    try:
        with atomic_open(rec_path, "wb") as f:
            pos = 0

            def put(key: int, payload: bytes) -> None:
                nonlocal pos
                keys.append(key)
                offsets.append(pos)
                pos += write_frame(f, payload)

            if with_header:
                put(0, pack_payload([n + 1, n + 1 + c], b"", id=0))
            first_key = 1 if with_header else 0
            for r, (data, shape, where) in enumerate(items):
                if r >= n:
                    raise ValueError(f"more images than the {n} labels given (at {where})")
                shape = tuple(int(v) for v in shape)
                if size is None:
                    size = shape
                elif shape != size:
                    raise ValueError(f"{where} is {shape[0]}x{shape[1]} (HxW) but the expected size is "
                                     f"{size[0]}x{size[1]} (all images of a RecordIO set share one size)")
                key = first_key + r
                put(key, pack_payload(float(labels[r]), data, id=key))
                count += 1
                if bar is not None:
                    bar.update(1)
            if count != n:
                raise ValueError(f"got {count} images for {n} labels")
            if with_header:
                starts = np.searchsorted(labels, np.arange(c), side="left") + 1
                ends = np.searchsorted(labels, np.arange(c), side="right") + 1
                for cls in range(c):
                    key = n + 1 + cls
                    put(key, pack_payload([int(starts[cls]), int(ends[cls])], b"", id=key))
    finally:
        if bar is not None:
            bar.close()
    _write_index(idx_path, keys, offsets)
    with atomic_open(root / "property", "w", encoding="utf-8") as f:
        f.write(f"{c},{size[0]},{size[1]}\n")
    return count
