"""MXNet RecordIO face sets (insightface's ``train.rec`` / ``train.idx`` / ``property``), without mxnet.

Byte layout (dmlc-core ``recordio``, mxnet ``recordio.pack``), little-endian:

* The ``.rec`` file is a sequence of *frames*: ``uint32 magic = 0xced7230a``, ``uint32 lrecord``
  (upper 3 bits ``cflag``, lower 29 bits the length ``n``), ``n`` payload bytes, zero padding to a
  multiple of 4 bytes. A logical record is normally one frame (``cflag = 0``). When the payload
  holds the magic word at a 4-byte-aligned position, dmlc splits it there: frames with ``cflag``
  1 (first), 2 (middle), 3 (last); the reader joins the parts, putting the magic word back
  between them. :func:`write_frame` and :func:`read_frame` implement both directions.
* A record payload starts with the image-record header ``struct "IfQQ"`` = ``(flag, label, id,
  id2)`` (24 bytes). When ``flag > 0`` the header label is replaced by ``flag`` float32 labels that
  follow it. The rest is the encoded image (JPEG in insightface sets).
* ``train.idx`` is text, one line per record: ``key<TAB>byte offset of its first frame``.
* ``property`` is one line ``num_classes,height,width``.

insightface's layout: key 0 is a *header record* with ``flag = 2``, no image, and labels
``(a, b)``: images are keys ``1 .. a-1`` and keys ``a .. b-1`` are *identity records*, one per
class, whose labels ``(start, end)`` give the key range of that class's images (no image either).
Files made by mxnet's ``im2rec`` have no such records: every key of the index is an image whose
class is the header label (or the first of the float labels when ``flag > 0``).
"""
from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Iterable, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from ..io import atomic_open, read_text
from .images import decode_image, encode_image, parse_size, to_rgb_array

try:  # torch is a hard dependency of the package, but keep the format code importable without it
    from torch.utils.data import Dataset as _Dataset
except Exception:  # pragma: no cover
    _Dataset = object

PathLike = Union[str, os.PathLike]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_FRAME = struct.Struct("<II")
_IRHEADER = struct.Struct("<IfQQ")
_LEN_MASK = (1 << 29) - 1
_MAX_LEN = 1 << 29


class IRHeader(NamedTuple):
    """The image-record header: ``flag``, ``label`` (a float, or a tuple of floats when flag > 0), ``id``, ``id2``."""

    flag: int
    label: Union[float, Tuple[float, ...]]
    id: int
    id2: int


# ----------------------------------------------------------------------------- payload level
def pack_payload(label, data: bytes = b"", id: int = 0, id2: int = 0) -> bytes:
    """Build a record payload: ``IfQQ`` header (+ float32 labels when ``label`` is a sequence) + ``data``."""
    if np.ndim(label) == 0:
        head = _IRHEADER.pack(0, float(label), int(id), int(id2))
        return head + bytes(data)
    labels = np.asarray(label, dtype="<f4").ravel()
    head = _IRHEADER.pack(len(labels), 0.0, int(id), int(id2))
    return head + labels.tobytes() + bytes(data)


def unpack_payload(payload, where: str = "record") -> Tuple[IRHeader, bytes]:
    """Split a record payload into its :class:`IRHeader` and the remaining (image) bytes."""
    payload = memoryview(payload)
    if len(payload) < _IRHEADER.size:
        raise ValueError(f"{where}: payload of {len(payload)} bytes is shorter than the 24-byte IfQQ header")
    flag, label, id_, id2 = _IRHEADER.unpack_from(payload, 0)
    pos = _IRHEADER.size
    if flag > 0:
        end = pos + 4 * flag
        if end > len(payload):
            raise ValueError(f"{where}: header announces {flag} float labels but the payload is only {len(payload)} bytes")
        label = tuple(float(v) for v in np.frombuffer(payload[pos:end], dtype="<f4"))
        pos = end
    return IRHeader(int(flag), label, int(id_), int(id2)), bytes(payload[pos:])


def _first_label(header: IRHeader) -> float:
    return header.label[0] if isinstance(header.label, tuple) else header.label


# ----------------------------------------------------------------------------- frame level
def write_frame(f, payload: bytes) -> int:
    """Write one logical record to the binary file ``f`` in dmlc framing; return the bytes written.

    Splits the payload at every 4-byte-aligned occurrence of the magic word (cflag 1/2/3), as
    dmlc-core's ``RecordIOWriter::WriteRecord`` does, and pads the last part to 4 bytes.
    """
    payload = bytes(payload)
    n = len(payload)
    if n >= _MAX_LEN:
        raise ValueError(f"record of {n} bytes exceeds the RecordIO limit of 2^29 bytes")
    written = 0
    start = 0
    for i in range(0, n - n % 4, 4):
        if payload[i:i + 4] == _MAGIC_BYTES:
            cflag = 1 if start == 0 else 2
            part = payload[start:i]
            f.write(_FRAME.pack(MAGIC, (cflag << 29) | len(part)))
            f.write(part)
            written += 8 + len(part)
            start = i + 4
    cflag = 3 if start != 0 else 0
    part = payload[start:]
    pad = (-len(part)) % 4
    f.write(_FRAME.pack(MAGIC, (cflag << 29) | len(part)))
    f.write(part)
    f.write(b"\0" * pad)
    return written + 8 + len(part) + pad


def read_frame(buf, offset: int, where: str = "record") -> Tuple[bytes, int]:
    """Read the logical record starting at byte ``offset`` of ``buf`` (bytes/mmap).

    Returns ``(payload, offset of the next record)``. Raises ``ValueError`` naming ``where`` on a
    bad magic word, a length running past the end of the file, or a broken multi-part sequence.
    """
    size = len(buf)
    parts: List[bytes] = []
    pos = offset
    first = True
    while True:
        if pos + 8 > size:
            raise ValueError(f"{where}: truncated at byte offset {pos} (file has {size} bytes, need an 8-byte frame header)")
        magic, lrec = _FRAME.unpack_from(buf, pos)
        if magic != MAGIC:
            raise ValueError(f"{where}: bad magic 0x{magic:08x} at byte offset {pos} (expected 0x{MAGIC:08x}); "
                             "the file is corrupted or the index does not match it")
        cflag, n = lrec >> 29, lrec & _LEN_MASK
        end = pos + 8 + n
        if end > size:
            raise ValueError(f"{where}: record length {n} at byte offset {pos} runs past the end of the file "
                             f"({size} bytes); the file is truncated")
        if (first and cflag not in (0, 1)) or (not first and cflag not in (2, 3)):
            raise ValueError(f"{where}: unexpected continuation flag {cflag} at byte offset {pos}")
        parts.append(bytes(buf[pos + 8:end]))
        pos = end + (-n) % 4
        if cflag in (0, 3):
            return _MAGIC_BYTES.join(parts), min(pos, size)
        first = False


# ----------------------------------------------------------------------------- index
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


# ----------------------------------------------------------------------------- reader
class RecordIO(_Dataset):
    """An insightface/im2rec RecordIO face set as a random-access ``torch.utils.data.Dataset``.

    Args:
        root: folder holding ``train.rec``, ``train.idx`` and optionally ``property``; or the path
            of a ``.rec`` file (its ``.idx`` beside it with the same stem).
        transform: optional callable applied to the ``(H, W, 3)`` uint8 RGB image by
            ``__getitem__``; without it the image becomes a float tensor ``(3, H, W)`` normalised
            as ``(x/255 - 0.5)/0.5``.
        image_size: expected ``(height, width)`` (or int); defaults to the one in ``property``.
            Images of another size raise ``ValueError`` naming the expected size.

    ``len(ds)`` counts images; ``ds.labels`` (int64), ``ds.num_classes``, ``ds.image(i)``,
    ``ds.label(i)``, ``ds.keys`` (record keys of the images). ``ds[i]`` is ``(image, label)``.
    The file is opened lazily in each process (memory-mapped), so the object pickles and works in
    DataLoader workers.
    """

    def __init__(self, root: PathLike, transform=None, image_size=None):
        self.rec_path, self.idx_path, self.property_path = _resolve_paths(root)
        self.transform = transform
        if not self.rec_path.is_file():
            raise FileNotFoundError(f"record file not found: {self.rec_path}")
        if not self.idx_path.is_file():
            raise FileNotFoundError(
                f"index file not found: {self.idx_path} (needed for random access into {self.rec_path}). "
                f"Rebuild it with: python -c \"from facemargin.data.recordio import rebuild_index; "
                f"rebuild_index('{self.rec_path}')\"")
        self._pid = None
        self._fh = None
        self._buf = None
        keys, offsets = read_index(self.idx_path)
        # offsets past the end are reported when that record is read (naming it); these are never valid:
        bad = np.flatnonzero((offsets < 0) | (offsets % 4 != 0))
        if len(bad):
            raise ValueError(f"{self.idx_path}: offset {offsets[bad[0]]} of key {keys[bad[0]]} is negative or not "
                             f"a multiple of 4, so it cannot start a record of {self.rec_path}; "
                             "rebuild the index with rebuild_index()")
        by_key = np.argsort(keys, kind="stable")
        sorted_keys, sorted_offsets = keys[by_key], offsets[by_key]

        def lookup(want: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
            """Offsets of the keys ``want`` and whether each is in the index."""
            at = np.minimum(np.searchsorted(sorted_keys, want), max(len(sorted_keys) - 1, 0))
            found = (sorted_keys[at] == want) if len(sorted_keys) else np.zeros(len(want), bool)
            return (sorted_offsets[at] if len(sorted_keys) else np.zeros(len(want), np.int64)), found

        prop_classes, prop_size = None, None
        if self.property_path.is_file():
            prop_classes, prop_size = read_property(self.property_path)
        self.image_size = parse_size(image_size) if image_size is not None else prop_size

        self.header_range: Optional[Tuple[int, int]] = None
        self.identity_range: Optional[Tuple[int, int]] = None
        off0, has0 = lookup(np.zeros(1, np.int64))
        if has0[0]:
            where = f"record 0 (header) of {self.rec_path}"
            header, rest = unpack_payload(read_frame(self._map(), int(off0[0]), where)[0], where)
            if header.flag >= 2 and len(rest) == 0:
                a, b = int(header.label[0]), int(header.label[1])
                if not (1 <= a <= b) or header.label[0] != a or header.label[1] != b:
                    raise ValueError(f"{where}: header labels {header.label[:2]} are not a valid key range")
                self.header_range = (0, a)
                self.identity_range = (a, b)
        if self.header_range is not None:
            a = self.identity_range[0]
            img_keys = np.arange(1, a, dtype=np.int64)
            img_offsets, found = lookup(img_keys)
            missing = img_keys[~found]
            if len(missing):
                raise ValueError(f"{self.idx_path}: the header record of {self.rec_path} announces image keys 1..{a - 1} "
                                 f"but key {missing[0]} is not in the index ({len(missing)} missing)")
        else:
            img_keys, img_offsets = keys, offsets
        self.keys = img_keys
        self._identity_offsets = {}
        if self.identity_range is not None:
            sel = (keys >= self.identity_range[0]) & (keys < self.identity_range[1])
            self._identity_offsets = dict(zip(keys[sel].tolist(), offsets[sel].tolist()))
        self._offsets = np.asarray(img_offsets, dtype=np.int64)
        self._labels: Optional[np.ndarray] = None
        if prop_classes is not None:
            self._num_classes = prop_classes
        elif self.identity_range is not None:
            self._num_classes = self.identity_range[1] - self.identity_range[0]
        else:
            self._num_classes = None

    # -- file handling (one memory map per process) --
    def _map(self):
        pid = os.getpid()
        if self._buf is None or self._pid != pid:
            self._fh, self._buf = _open_map(self.rec_path)
            self._pid = pid
        return self._buf

    def close(self) -> None:
        """Close this process's memory map (reopened on the next access)."""
        if self._pid == os.getpid():
            if isinstance(self._buf, mmap.mmap):
                self._buf.close()
            if self._fh is not None:
                self._fh.close()
        self._buf = self._fh = self._pid = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_buf"] = state["_fh"] = state["_pid"] = None
        return state

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    # -- records --
    def _where(self, i: int) -> str:
        return f"record {i} (key {int(self.keys[i])}) of {self.rec_path}"

    def _check_index(self, i) -> int:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"image index {i} out of range for {n} images in {self.rec_path}")
        return i

    def record(self, i: int) -> Tuple[IRHeader, bytes]:
        """Header and encoded image bytes of image ``i``."""
        i = self._check_index(i)
        where = self._where(i)
        payload, _ = read_frame(self._map(), int(self._offsets[i]), where)
        return unpack_payload(payload, where)

    def _label_of(self, header: IRHeader, i: int) -> int:
        v = _first_label(header)
        if not np.isfinite(v) or v < 0 or v != int(v):
            raise ValueError(f"{self._where(i)}: label {v} is not a non-negative integer")
        return int(v)

    def label(self, i: int) -> int:
        """Class label of image ``i`` (read from its record header)."""
        header, _ = self.record(i)
        return self._label_of(header, self._check_index(i))

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` decoded as ``(H, W, 3)`` uint8 RGB."""
        i = self._check_index(i)
        _, data = self.record(i)
        return self._decode(data, i)

    def _decode(self, data: bytes, i: int) -> np.ndarray:
        img = decode_image(data, self._where(i))
        if self.image_size is not None and tuple(img.shape[:2]) != tuple(self.image_size):
            h, w = self.image_size
            raise ValueError(f"{self._where(i)}: image is {img.shape[0]}x{img.shape[1]} (HxW) but the expected "
                             f"size is {h}x{w}" + (f" (from {self.property_path})" if self.property_path.is_file() else ""))
        return img

    @property
    def labels(self) -> np.ndarray:
        """Class label of every image (int64), read once from the record headers."""
        if self._labels is None:
            buf = self._map()
            size = len(buf)
            data = np.frombuffer(buf, dtype=np.uint8) if size else np.zeros(0, np.uint8)
            out = np.empty(len(self), dtype=np.int64)
            need = 8 + _IRHEADER.size + 4  # frame header, IfQQ, first float label
            cols = np.arange(need)
            chunk = 1 << 18
            for lo in range(0, len(self), chunk):
                offs = self._offsets[lo:lo + chunk]
                fits = offs + need <= size
                rows = np.zeros((len(offs), need), dtype=np.uint8)
                rows[fits] = data[offs[fits, None] + cols]
                word = rows[:, :16].copy().view("<u4")  # magic, lrec, flag, label (as bits)
                magic, lrec, flag = word[:, 0], word[:, 1], word[:, 2]
                length = (lrec & _LEN_MASK).astype(np.int64)
                ok = fits & (magic == MAGIC) & (lrec >> 29 == 0) & (length >= _IRHEADER.size + 4) \
                    & (offs + 8 + length <= size)
                scalar = rows[:, 12:16].copy().view("<f4")[:, 0]
                first = rows[:, 32:36].copy().view("<f4")[:, 0]
                lab = np.where(flag > 0, first, scalar).astype(np.float64)
                with np.errstate(invalid="ignore"):
                    ok &= np.isfinite(lab) & (lab >= 0) & (lab == np.floor(lab))
                out[lo:lo + len(offs)][ok] = lab[ok].astype(np.int64)
                for j in np.flatnonzero(~ok):  # multi-part, corrupted or odd records: the slow, exact path
                    out[lo + j] = self.label(lo + j)
            if self._num_classes is not None and len(out) and out.max() >= self._num_classes:
                j = int(np.argmax(out))
                raise ValueError(f"{self._where(j)}: label {out[j]} >= num_classes {self._num_classes}")
            self._labels = out
        return self._labels

    @property
    def num_classes(self) -> int:
        """Number of classes: from ``property``, else the identity records, else ``max(label) + 1``."""
        if self._num_classes is None:
            self._num_classes = int(self.labels.max()) + 1 if len(self) else 0
        return self._num_classes

    def identity(self, c: int) -> Tuple[int, int]:
        """Key range ``[start, end)`` of class ``c``'s images from its identity record (insightface layout only)."""
        if self.identity_range is None:
            raise ValueError(f"{self.rec_path} has no identity records (not in insightface's layout)")
        a, b = self.identity_range
        if not 0 <= c < b - a:
            raise IndexError(f"class {c} out of range for {b - a} identity records in {self.rec_path}")
        off = self._identity_offsets.get(a + c)
        where = f"identity record {c} (key {a + c}) of {self.rec_path}"
        if off is None:
            raise ValueError(f"{where}: key missing from {self.idx_path}")
        header, _ = unpack_payload(read_frame(self._map(), off, where)[0], where)
        if header.flag < 2:
            raise ValueError(f"{where}: expected a (start, end) label pair, got flag {header.flag}")
        return int(header.label[0]), int(header.label[1])

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i):
        i = self._check_index(i)
        header, data = self.record(i)
        label = self._label_of(header, i)
        img = self._decode(data, i)
        if self.transform is not None:
            return self.transform(img), label
        import torch

        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()
        return (x / 255.0 - 0.5) / 0.5, label

    def __repr__(self) -> str:
        layout = "insightface" if self.header_range is not None else "im2rec"
        return f"RecordIO({str(self.rec_path)!r}, images={len(self)}, layout={layout})"


# ----------------------------------------------------------------------------- writer
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
