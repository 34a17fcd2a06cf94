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

The modules: :mod:`.format` (payloads and frames), :mod:`.index` (the ``.idx`` and ``property``
files, rebuilding an index), :mod:`.dataset` (:class:`RecordIO`, the reader) and :mod:`.writer`
(:func:`write_record`, :func:`write_encoded_record`).
"""
from __future__ import annotations

from .dataset import RecordIO
from .format import MAGIC, IRHeader, pack_payload, read_frame, unpack_payload, write_frame
from .index import read_index, read_property, rebuild_index
from .writer import write_encoded_record, write_record

__all__ = ["MAGIC", "IRHeader", "pack_payload", "unpack_payload", "write_frame", "read_frame", "read_index",
           "read_property", "rebuild_index", "RecordIO", "write_record", "write_encoded_record"]
