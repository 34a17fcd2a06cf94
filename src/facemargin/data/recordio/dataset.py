"""The reader: a RecordIO set as a random-access dataset of ``(image, label)``."""
from __future__ import annotations

import mmap
import os
from typing import Optional, Tuple

import numpy as np

from ..images import decode_image, parse_size
from .format import _IRHEADER, _LEN_MASK, MAGIC, IRHeader, _first_label, read_frame, unpack_payload
from .index import PathLike, _open_map, _resolve_paths, read_index, read_property

try:  # torch is a hard dependency of the package, but keep the format code importable without it
    from torch.utils.data import Dataset as _Dataset
except Exception:  # pragma: no cover
    _Dataset = object

__all__ = ["RecordIO"]


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
