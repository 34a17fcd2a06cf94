"""Fashion-MNIST from its IDX files (gzip or not), with an optional download.

IDX layout (all integers big-endian): two zero bytes, a type byte (``0x08`` unsigned byte,
``0x09`` signed byte, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), a
byte with the number of dimensions ``k``, then ``k`` uint32 sizes, then the data in C order.
Fashion-MNIST images are ``0x00000803`` (uint8, 3-D: N x 28 x 28) and labels ``0x00000801``
(uint8, 1-D: N).

Where the files are looked for (first folder holding both files of the split wins):

1. ``root`` when given (the folder itself, then ``root/fashion-mnist``); nothing else is tried;
2. ``$FACEMARGIN_DATA`` (itself, then ``$FACEMARGIN_DATA/fashion-mnist``);
3. ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``);
4. the download cache ``~/.cache/facemargin/fashion-mnist``.

With ``download=True`` and nothing found, the ``.gz`` files are downloaded into ``root`` (when
given) or the cache, atomically, then read.
"""
from __future__ import annotations

import gzip
import os
import struct
import urllib.request
import zlib
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np

from ..io import atomic_open

__all__ = [
    "load_fashion_mnist",
    "read_idx",
    "write_idx",
    "find_fashion_mnist",
    "download_fashion_mnist",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_URL",
    "SYSTEM_DIR",
]

PathLike = Union[str, os.PathLike]

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_PREFIX = {"train": "train", "test": "t10k", "t10k": "t10k"}


def _default_cache() -> Path:
    return Path.home() / ".cache" / "facemargin" / "fashion-mnist"


def _file_names(split: str) -> Tuple[str, str]:
    if split not in _PREFIX:
        raise ValueError(f"split must be 'train' or 'test' (or 't10k'), got {split!r}")
    p = _PREFIX[split]
    return f"{p}-images-idx3-ubyte", f"{p}-labels-idx1-ubyte"


# ----------------------------------------------------------------------------- IDX format
def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"IDX file not found: {path}") from None
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file name says
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({e})") from e
    return raw


def read_idx(path: PathLike, expect_magic: Optional[int] = None) -> np.ndarray:
    """Read an IDX file (plain or gzip-compressed) into a native-endian NumPy array.

    ``expect_magic`` (e.g. ``0x00000803``) checks the 4-byte magic number.  A truncated, padded
    or otherwise malformed file raises ``ValueError`` naming the file and what was expected.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated IDX header: {len(raw)} byte(s), expected at least 4")
    (magic,) = struct.unpack(">I", raw[:4])
    zero, code, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
    if zero != 0 or code not in _IDX_TYPES:
        raise ValueError(
            f"{path}: not an IDX file: magic 0x{magic:08x}, expected 0x0000TTNN with type TT in "
            f"{{08, 09, 0b, 0c, 0d, 0e}}"
        )
    if expect_magic is not None and magic != expect_magic:
        raise ValueError(f"{path}: IDX magic 0x{magic:08x}, expected 0x{expect_magic:08x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{path}: truncated IDX header: {len(raw)} bytes, expected {header} for {ndim} dims"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_TYPES[code]
    need = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    have = len(raw) - header
    if have != need:
        what = "truncated" if have < need else "has trailing bytes"
        raise ValueError(
            f"{path}: IDX data {what}: {have} bytes of data, expected {need} for shape "
            f"{tuple(dims)} of {dtype.name}"
        )
    arr = np.frombuffer(raw, dtype=dtype, count=need // dtype.itemsize, offset=header)
    return arr.reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: PathLike, array, compress: Optional[bool] = None) -> None:
    """Write ``array`` as an IDX file atomically; gzip when ``compress`` (default: name ends .gz)."""
    path = Path(path)
    a = np.asarray(array)
    codes = {np.dtype(v.newbyteorder("=")): k for k, v in _IDX_TYPES.items()}
    key = np.dtype(a.dtype.newbyteorder("="))
    if key not in codes:
        raise ValueError(f"IDX cannot store dtype {a.dtype}; use one of {sorted(map(str, codes))}")
    if a.ndim > 255:
        raise ValueError(f"IDX stores at most 255 dimensions, got {a.ndim}")
    body = struct.pack(">I", (codes[key] << 8) | a.ndim)
    body += struct.pack(f">{a.ndim}I", *a.shape)
    body += np.ascontiguousarray(a, dtype=_IDX_TYPES[codes[key]]).tobytes()
    if compress is None:
        compress = path.name.endswith(".gz")
    if compress:
        body = gzip.compress(body, mtime=0)
    with atomic_open(path, "wb") as f:
        f.write(body)


# ----------------------------------------------------------------------------- finding files
def _locate(folder: Path, base: str) -> Optional[Path]:
    for name in (base + ".gz", base):
        p = folder / name
        if p.is_file():
            return p
    return None


def _candidates(root: Optional[PathLike], cache_dir: Optional[PathLike]) -> List[Path]:
    if root is not None:
        r = Path(root).expanduser()
        return [r, r / "fashion-mnist"]
    out = []
    env = os.environ.get("FACEMARGIN_DATA")
    if env:
        e = Path(env).expanduser()
        out += [e, e / "fashion-mnist"]
    out.append(SYSTEM_DIR)
    out.append(Path(cache_dir).expanduser() if cache_dir is not None else _default_cache())
    return out


def find_fashion_mnist(
    split: str = "train", root: Optional[PathLike] = None, cache_dir: Optional[PathLike] = None
) -> Optional[Tuple[Path, Path]]:
    """Paths ``(images, labels)`` of a split in the first folder of the search order, or None."""
    img_base, lab_base = _file_names(split)
    for folder in _candidates(root, cache_dir):
        img, lab = _locate(folder, img_base), _locate(folder, lab_base)
        if img is not None and lab is not None:
            return img, lab
    return None


def _download_file(url: str, dest: Path, progress: bool = True, timeout: float = 60.0) -> None:
    from tqdm.auto import tqdm

    try:
        resp = urllib.request.urlopen(url, timeout=timeout)
    except Exception as e:  # URLError, HTTPError, socket errors
        raise OSError(f"cannot download {url}: {e}") from e
    with resp:
        total = resp.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        got = 0
        with atomic_open(dest, "wb") as f, tqdm(
            total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress
        ) as bar:
            while True:
                chunk = resp.read(1 << 16)
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
            if total is not None and got != total:
                raise OSError(f"download of {url} stopped after {got} of {total} bytes")


def download_fashion_mnist(
    split: str = "train",
    dest: Optional[PathLike] = None,
    base_url: str = FASHION_MNIST_URL,
    progress: bool = True,
) -> Tuple[Path, Path]:
    """Download the two ``.gz`` files of ``split`` into ``dest`` (default: the cache), atomically.

    Each file is checked as IDX after download; a bad download is removed and raises.
    """
    dest = Path(dest).expanduser() if dest is not None else _default_cache()
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for base, magic in zip(_file_names(split), (0x00000803, 0x00000801)):
        name = base + ".gz"
        target = dest / name
        _download_file(base_url.rstrip("/") + "/" + name, target, progress=progress)
        try:
            read_idx(target, expect_magic=magic)
        except ValueError:
            target.unlink(missing_ok=True)
            raise
        out.append(target)
    return out[0], out[1]


# ----------------------------------------------------------------------------- public loader
def load_fashion_mnist(
    split: str = "train",
    root: Optional[PathLike] = None,
    download: bool = False,
    base_url: str = FASHION_MNIST_URL,
    cache_dir: Optional[PathLike] = None,
    progress: bool = True,
) -> Tuple[np.ndarray, np.ndarray]:
    """Load a Fashion-MNIST split: ``(images uint8 (N, 28, 28), labels int64 (N,))``.

    ``split`` is ``"train"`` (60,000 images) or ``"test"`` (10,000).  Search order and download
    in the module docstring; ``cache_dir`` overrides ``~/.cache/facemargin/fashion-mnist``.
    Raises ``FileNotFoundError`` (saying where it looked) when the files are absent and
    ``download`` is False, and ``ValueError`` naming the file when one is corrupt or truncated,
    or when the image and label counts disagree.
    """
    found = find_fashion_mnist(split, root, cache_dir)
    if found is None:
        if not download:
            places = ", ".join(str(p) for p in _candidates(root, cache_dir))
            raise FileNotFoundError(
                f"Fashion-MNIST {split!r} files ({' + '.join(_file_names(split))}[.gz]) not found "
                f"in: {places}. Pass root=/--data, set FACEMARGIN_DATA, install the Debian package "
                f"dataset-fashion-mnist, or use download=True."
            )
        dest = Path(root).expanduser() if root is not None else cache_dir
        found = download_fashion_mnist(split, dest, base_url=base_url, progress=progress)
    img_path, lab_path = found
    images = read_idx(img_path, expect_magic=0x00000803)
    labels = read_idx(lab_path, expect_magic=0x00000801)
    if len(images) != len(labels):
        raise ValueError(
            f"{img_path} has {len(images)} images but {lab_path} has {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{lab_path}: label {int(labels.max())} outside Fashion-MNIST's 0..9")
    return images, labels.astype(np.int64)
