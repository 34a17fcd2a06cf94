"""The RecordIO byte format: the image-record payload (``IfQQ`` header, labels, image bytes) and
dmlc's framing of a payload into the ``.rec`` file (magic word, length and continuation flag,
padding to 4 bytes, payloads split where they hold the magic word)."""
from __future__ import annotations

import struct
from typing import List, NamedTuple, Tuple, Union

import numpy as np

__all__ = ["MAGIC", "IRHeader", "pack_payload", "unpack_payload", "write_frame", "read_frame"]

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
