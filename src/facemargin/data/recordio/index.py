"""The files beside a ``.rec``: its ``.idx`` (read fast, written atomically, rebuilt by scanning the
records) and ``property``; where the three files of a set are; the read-only memory map."""
from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Iterable, Optional, Tuple, Union

import numpy as np

from ...io import atomic_open, read_text
from .format import read_frame, unpack_payload

__all__ = ["read_index", "rebuild_index", "read_property"]

PathLike = Union[str, os.PathLike]

_DIGITS_MAX = 18  # longer numbers would overflow int64
_BYTE_CLASS = np.zeros(256, dtype=np.uint8)  # 0: not allowed, 1: digit, 2: newline, 3: other whitespace
_BYTE_CLASS[48:58] = 1
_BYTE_CLASS[10] = 2
_BYTE_CLASS[[9, 11, 12, 13, 32]] = 3


def _parse_index_chunk(b: np.ndarray) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Parse whole lines ``key<whitespace>offset`` (unsigned decimal) held in the uint8 array ``b``."""
    cls = _BYTE_CLASS[b]
    if not cls.all():  # a sign or any other character
        return None
    digit = cls == 1
    edge = np.flatnonzero(digit[1:] != digit[:-1]) + 1   # where runs of digits start and end
    if digit[0]:
        edge = np.concatenate([[0], edge])
    if digit[-1]:
        edge = np.concatenate([edge, [len(b)]])
    starts, ends = edge[0::2], edge[1::2]
    if len(starts) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    lengths = ends - starts
    if len(starts) % 2 or lengths.max() > _DIGITS_MAX:
        return None
    tok_line = np.searchsorted(np.flatnonzero(cls == 2), starts)  # line of every number
    if np.any(tok_line[0::2] != tok_line[1::2]) or np.any(np.diff(tok_line[0::2]) == 0):
        return None  # two numbers on each line, and a line never holds four
    values = np.zeros(len(starts), dtype=np.int64)
    last = len(b) - 1
    for j in range(int(lengths.max())):  # Horner's rule, one digit position of every number at a time
        d = b[np.minimum(starts + j, last)].astype(np.int64) - 48
        values = np.where(lengths > j, values * 10 + d, values)
    return values[0::2].copy(), values[1::2].copy()


def _parse_index_fast(data: bytes, chunk: int = 1 << 23) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Vectorised parse of a whole index, in chunks of about ``chunk`` bytes cut at line ends.

    Returns ``None`` for anything but lines of two unsigned decimal integers (signs, other
    characters, a line with one or three numbers, numbers too long), so that the exact
    line-by-line parser can name the problem.
    """
    b = np.frombuffer(data, dtype=np.uint8)
    keys, offsets = [], []
    lo = 0
    while lo < len(b):
        hi = min(lo + chunk, len(b))
        if hi < len(b):
            nl = data.find(b"\n", hi)
            hi = len(b) if nl < 0 else nl + 1
        part = _parse_index_chunk(b[lo:hi])
        if part is None:
            return None
        keys.append(part[0])
        offsets.append(part[1])
        lo = hi
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(keys), np.concatenate(offsets)


def _has_duplicates(keys: np.ndarray) -> bool:
    if len(keys) < 2 or np.all(keys[1:] > keys[:-1]):  # the usual, increasing index: no sort needed
        return False
    s = np.sort(keys, kind="stable")
    return bool(np.any(s[1:] == s[:-1]))


def read_index(idx_path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Parse a ``.idx`` file into ``(keys, offsets)`` int64 arrays (file order).

    Well-formed files are parsed with NumPy in one pass; any other file goes through a line-by-line
    parser that names the offending line.
    """
    with open(idx_path, "rb") as f:
        data = f.read()
    fast = _parse_index_fast(data)
    if fast is not None:
        keys_a, offsets_a = fast
        if _has_duplicates(keys_a):
            raise ValueError(f"{idx_path}: duplicate keys in the index")
        return keys_a, offsets_a
    keys, offsets = [], []
    # decoded first: a file that is not UTF-8 is a ValueError naming it, not a UnicodeDecodeError
    for lineno, line in enumerate(read_text(idx_path).split("\n"), 1):
        line = line.strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"{idx_path}, line {lineno}: expected 'key<TAB>offset', got {line!r}")
        try:
            key, offset = int(fields[0]), int(fields[1])
        except ValueError:
            raise ValueError(f"{idx_path}, line {lineno}: key and offset must be integers, got {line!r}") from None
        if not (-2**63 <= key < 2**63 and -2**63 <= offset < 2**63):
            raise ValueError(f"{idx_path}, line {lineno}: key or offset out of the 64-bit range, got {line!r}")
        keys.append(key)
        offsets.append(offset)
    keys_a = np.asarray(keys, dtype=np.int64)
    if _has_duplicates(keys_a):
        raise ValueError(f"{idx_path}: duplicate keys in the index")
    return keys_a, np.asarray(offsets, dtype=np.int64)


def _write_index(idx_path: PathLike, keys: Iterable[int], offsets: Iterable[int]) -> None:
    with atomic_open(idx_path, "w", encoding="utf-8") as f:
        for k, o in zip(keys, offsets):
            f.write(f"{int(k)}\t{int(o)}\n")


def _open_map(path: PathLike):
    fh = open(path, "rb")
    try:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return fh, b""
        return fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except BaseException:
        fh.close()
        raise


def rebuild_index(rec_path: PathLike, idx_path: Optional[PathLike] = None, progress: bool = False) -> Path:
    """Scan a ``.rec`` file from the start and write its ``.idx`` (default: beside it, same stem).

    Keys are the records' header ``id`` fields when those are unique (insightface and im2rec both
    write the key there), else the record's position in the file (0, 1, 2, ...).
    Returns the path of the index written.
    """
    rec_path = Path(rec_path)
    if not rec_path.is_file():
        raise FileNotFoundError(f"record file not found: {rec_path}")
    idx_path = Path(idx_path) if idx_path is not None else rec_path.with_suffix(".idx")
    fh, buf = _open_map(rec_path)
    ids, offsets = [], []
    try:
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(buf), unit="B", unit_scale=True, desc=f"indexing {rec_path.name}")
        pos = 0
        while pos < len(buf):
            where = f"record {len(offsets)} of {rec_path}"
            payload, nxt = read_frame(buf, pos, where)
            header, _ = unpack_payload(payload, where)
            ids.append(header.id)
            offsets.append(pos)
            if bar is not None:
                bar.update(nxt - pos)
            pos = nxt
        if bar is not None:
            bar.close()
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()
        fh.close()
    keys = ids if len(set(ids)) == len(ids) else list(range(len(offsets)))
    _write_index(idx_path, keys, offsets)
    return idx_path


def _resolve_paths(root: PathLike) -> Tuple[Path, Path, Path]:
    root = Path(root)
    if root.is_dir():
        return root / "train.rec", root / "train.idx", root / "property"
    if root.suffix == ".rec":
        return root, root.with_suffix(".idx"), root.parent / "property"
    if not root.exists():
        raise FileNotFoundError(f"RecordIO set not found: {root} (give a folder holding train.rec or a .rec file)")
    raise ValueError(f"{root}: expected a folder holding train.rec or a path to a .rec file")


def read_property(path: PathLike) -> Tuple[int, Optional[Tuple[int, int]]]:
    """Parse a ``property`` file ``num_classes[,height,width]`` into ``(num_classes, (h, w) or None)``."""
    text = read_text(path).strip()
    try:
        fields = [int(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise ValueError(f"{path}: expected 'num_classes,height,width', got {text!r}") from None
    if len(fields) not in (1, 3) or min(fields) <= 0:
        raise ValueError(f"{path}: expected 'num_classes,height,width' with positive integers, got {text!r}")
    return fields[0], (tuple(fields[1:]) if len(fields) == 3 else None)
