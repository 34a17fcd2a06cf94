"""insightface verification packs (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...), read safely.

A pack is a pickle of ``(bins, issame)``: ``bins`` a list of ``2N`` encoded images (bytes, or in
some packs 1-D uint8 NumPy arrays of those bytes), ``issame`` a list of ``N`` booleans; pair ``k``
is ``bins[2k], bins[2k+1]``.

These files come from strangers, and an ordinary ``pickle.load`` runs whatever code the file
names. :func:`load_bin` uses :class:`RestrictedUnpickler`, which resolves no global except the
few NumPy functions that rebuild plain arrays, and then checks every object it produced: only
bytes, str, list, tuple, bool, int, float and NumPy arrays/scalars of bool/int/uint/float dtypes
are admitted. Anything else raises ``ValueError`` before any of it is called.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from ..io import atomic_open
from .images import decode_image, encode_image, parse_size, resize_image, to_rgb_array

PathLike = Union[str, os.PathLike]

_PLAIN_KINDS = "biuf"


def _numpy_attr(qualname: str):
    """Fetch a NumPy internal from ``numpy._core`` (NumPy 2) or ``numpy.core`` (NumPy 1)."""
    mod, name = qualname.rsplit(".", 1)
    import importlib

    for prefix in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{prefix}.{mod}"), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy {qualname} not available")


def _latin1_encode(obj, encoding="latin1"):
    """Stand-in for ``_codecs.encode`` as used by protocol-2 pickles of bytes: latin-1 only."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refusing _codecs.encode with anything but (str, 'latin1')")
    return obj.encode("latin1")


def _allowed_globals():
    table = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(mod, "_reconstruct")] = _numpy_attr("multiarray._reconstruct")
        table[(mod, "scalar")] = _numpy_attr("multiarray.scalar")
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        table[(mod, "_frombuffer")] = _numpy_attr("numeric._frombuffer")
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    table[("_codecs", "encode")] = _latin1_encode
    return table


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals needed to rebuild plain NumPy arrays.

    ``find_class`` admits ``numpy(._core|.core).multiarray._reconstruct`` / ``scalar``,
    ``numpy(._core|.core).numeric._frombuffer``, ``numpy.ndarray``, ``numpy.dtype`` and a
    latin-1-only stand-in for ``_codecs.encode`` (protocol 2 bytes); everything else raises
    ``ValueError("refusing to unpickle ... (global module.name) in FILE")``. Persistent ids are refused.
    Use :func:`safe_load` to also check the types of the loaded objects.
    """

    def __init__(self, file, source: str = "<pickle>", **kw):
        kw.setdefault("encoding", "bytes")  # Python 2 str -> bytes, as insightface reads them
        super().__init__(file, **kw)
        self.source = source
        self._table = _allowed_globals()

    def find_class(self, module, name):  # noqa: D102
        fn = self._table.get((module, name))
        if fn is None:
            raise ValueError(f"refusing to unpickle a non-data object (global {module}.{name}) in {self.source}: "
                             "verification packs may hold only bytes, str, lists, tuples, bool, int, float "
                             "and plain NumPy arrays")
        return fn

    def persistent_load(self, pid):  # noqa: D102
        raise ValueError(f"refusing to unpickle a persistent id in {self.source}")


def _check_plain(obj, source: str, depth: int = 0) -> None:
    if depth > 50:
        raise ValueError(f"{source}: pickle nesting deeper than 50 levels")
    if isinstance(obj, (bytes, bytearray, str, bool, int, float)):
        return
    if isinstance(obj, (list, tuple)):
        for item in obj:
            _check_plain(item, source, depth + 1)
        return
    if isinstance(obj, (np.ndarray, np.generic)):
        if obj.dtype.kind not in _PLAIN_KINDS:
            raise ValueError(f"refusing NumPy data of dtype {obj.dtype} in {source}: only bool/int/uint/float arrays")
        return
    raise ValueError(f"refusing unpickled object of type {type(obj).__name__} in {source}: only bytes, str, "
                     "lists, tuples, bool, int, float and plain NumPy arrays are admitted")


def safe_load(data_or_file, source: str = "<pickle>"):
    """Unpickle with :class:`RestrictedUnpickler` and check every object is plain data."""
    f = io.BytesIO(data_or_file) if isinstance(data_or_file, (bytes, bytearray)) else data_or_file
    try:
        obj = RestrictedUnpickler(f, source=source).load()
    except ValueError as e:
        if source in str(e):  # the unpickler's own refusals name the file already
            raise
        raise ValueError(f"cannot read pickle {source}: {e}") from e
    except Exception as e:  # truncated or malformed pickle
        raise ValueError(f"cannot read pickle {source}: {type(e).__name__}: {e}") from e
    _check_plain(obj, source)
    return obj


def _as_bytes(item, k: int, source: str) -> bytes:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()
    raise ValueError(f"{source}: image {k} is a {type(item).__name__}"
                     + (f" of dtype {item.dtype} and shape {item.shape}" if isinstance(item, np.ndarray) else "")
                     + ", expected encoded image bytes (or a 1-D uint8 array of them)")


def read_bin_raw(path: PathLike) -> Tuple[list, np.ndarray]:
    """Load a pack's encoded images (list of bytes) and ``issame`` (bool array), validated, not decoded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"verification pack not found: {path}")
    with open(path, "rb") as f:
        obj = safe_load(f, str(path))
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise ValueError(f"{path}: expected a pickled (images, issame) pair, got {type(obj).__name__}"
                         + (f" of length {len(obj)}" if isinstance(obj, (tuple, list)) else ""))
    bins, issame = obj
    if isinstance(bins, np.ndarray) and bins.dtype == np.uint8 and bins.ndim == 2:
        bins = list(bins)
    if not isinstance(bins, (list, tuple)):
        raise ValueError(f"{path}: images must be a list, got {type(bins).__name__}")
    try:
        issame_arr = np.asarray(issame)
    except Exception as e:  # ragged
        raise ValueError(f"{path}: issame must be a flat list of booleans ({e})") from None
    if issame_arr.ndim != 1 or issame_arr.dtype.kind not in "biu" or (issame_arr.dtype.kind != "b" and
                                                                      not np.isin(issame_arr, (0, 1)).all()):
        raise ValueError(f"{path}: issame must be a flat list of booleans, got dtype {issame_arr.dtype} "
                         f"shape {issame_arr.shape}")
    if len(bins) != 2 * len(issame_arr):
        raise ValueError(f"{path}: {len(bins)} images for {len(issame_arr)} pairs (need exactly 2 per pair)")
    return [_as_bytes(b, k, str(path)) for k, b in enumerate(bins)], issame_arr.astype(bool)


def load_bin(path: PathLike, image_size=None, progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Read a verification pack with the restricted unpickler and decode its images.

    Args:
        path: the ``.bin`` file.
        image_size: optional ``(height, width)`` or int; images of another size are resized
            (bilinear). Without it all images must share one size.
        progress: show a tqdm bar while decoding.

    Returns ``(images, issame)``: ``images`` uint8 ``(2N, H, W, 3)`` RGB, ``issame`` bool ``(N,)``;
    pair ``k`` is ``images[2k], images[2k+1]``. Hostile or malformed files raise ``ValueError``.
    """
    bins, issame = read_bin_raw(path)
    hw = parse_size(image_size)
    it = enumerate(bins)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=len(bins), desc=f"decoding {Path(path).name}", unit="img")
    out: Optional[np.ndarray] = None
    for k, data in it:
        img = decode_image(data, f"image {k} of {path}")
        if hw is not None:
            img = resize_image(img, hw)
        if out is None:
            out = np.empty((len(bins),) + img.shape, dtype=np.uint8)
        elif img.shape != out.shape[1:]:
            raise ValueError(f"image {k} of {path} is {img.shape[0]}x{img.shape[1]} but image 0 is "
                             f"{out.shape[1]}x{out.shape[2]}; pass image_size= to resize them to one size")
        out[k] = img
    if out is None:
        out = np.empty((0,) + ((hw or (0, 0)) + (3,)), dtype=np.uint8)
    return out, issame


def write_bin(path: PathLike, images, issame, format: str = "jpeg", quality: int = 95) -> None:
    """Write a verification pack readable by :func:`load_bin` and by insightface.

    ``images``: ``(2N, H, W, 3)`` uint8 array or sequence of arrays / encoded bytes (bytes are
    stored as given); ``issame``: ``N`` booleans. Pickle protocol 4, written atomically.
    """
    issame = [bool(v) for v in np.asarray(issame).ravel()]
    if len(images) != 2 * len(issame):
        raise ValueError(f"write_bin: {len(images)} images for {len(issame)} pairs (need exactly 2 per pair)")
    bins = []
    for k, img in enumerate(images):
        if isinstance(img, (bytes, bytearray)):
            bins.append(bytes(img))
        else:
            bins.append(encode_image(to_rgb_array(img, f"images[{k}]"), format=format, quality=quality))
    with atomic_open(path, "wb") as f:
        pickle.dump((bins, issame), f, protocol=4)
