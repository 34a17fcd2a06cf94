"""The model an inference command runs: a facemargin checkpoint or the ONNX file of ``facemargin export``.

:func:`load_model` tells the two apart by their content, not their name: a PyTorch file (a zip
archive or a pickle) is read as a checkpoint with ``weights_only=True``, anything else is handed
to onnxruntime.  Either way the result is a ``torch.nn.Module`` with an ``input_size`` ``(C, H, W)``,
so :func:`facemargin.eval.embed_images`, the pair-set and IJB protocols and the image preparation
of the commands treat both alike: the ONNX model gets exactly the tensors the checkpoint's backbone
would get (RGB, normalised as ``(x/255 - 0.5)/0.5``), and flip-test fusion works the same way.

onnxruntime is optional (``pip install 'facemargin[export]'``) and imported only for an ONNX file.
A file that is neither kind raises one ``ValueError`` line,
``not a facemargin checkpoint or ONNX model: PATH (reason)``.
"""
from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from ..models.base import NORMALISATION
from ..models.checkpoint import load_backbone

__all__ = ["OnnxBackbone", "load_model", "NOT_A_MODEL"]

NOT_A_MODEL = "not a facemargin checkpoint or ONNX model"
ONNX_EXTRA = "pip install 'facemargin[export]'"


def _head(path: Path, n: int = 512) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _looks_like_torch(head: bytes) -> bool:
    """A zip archive (``torch.save`` since PyTorch 1.6) or a pickle (the older format)."""
    return head[:4] in (b"PK\x03\x04", b"PK\x05\x06") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _is_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not merely a character cut at the end of the sample
            return False
        text = head[: e.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\n\r\f\v" for c in text)


def _onnxruntime():
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as e:
        raise ImportError(f"running an ONNX model needs the optional package 'onnxruntime', which is not "
                          f"installed ({e}); install it with: {ONNX_EXTRA}") from e


class OnnxBackbone(torch.nn.Module):
    """An ONNX backbone (images -> embeddings) run by onnxruntime on the CPU, behind the backbone interface.

    ``forward`` takes the float ``(B, C, H, W)`` tensors a facemargin backbone takes and returns a
    float32 ``(B, D)`` tensor.  A model exported with a fixed batch size is fed in chunks of that
    size (the last one padded).  It has no parameters; its one buffer, ``onnx_sha256``, holds the
    file's digest, so that caches keyed on a model's state (IJB, distractor embeddings) tell
    different ONNX files apart.  onnxruntime uses as many threads as ``torch.get_num_threads()``.
    """

    def __init__(self, path, session, input_name: str, output_name: str, input_size: Tuple[int, int, int],
                 batch: Optional[int], digest: bytes, arch: str, embedding_size: Optional[int]):
        super().__init__()
        self.path = Path(path)
        self.session = session
        self.input_name = input_name
        self.output_name = output_name
        self.input_size = tuple(input_size)
        self.batch = batch
        self.arch = arch
        self.embedding_size = embedding_size
        self.register_buffer("onnx_sha256", torch.tensor(list(digest), dtype=torch.uint8))

    @classmethod
    def load(cls, path) -> "OnnxBackbone":
        """Open ``path`` with onnxruntime and check that it is an image -> embedding model.

        Raises ``ImportError`` (with the install command) without onnxruntime, and ``ValueError``
        when the file does not load or its input is not one float ``(B, C, H, W)`` image batch.
        """
        path = Path(path)
        ort = _onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only: no warnings on stderr
        try:
            session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            detail = detail.split("failed:", 1)[-1].strip() or detail
            raise ValueError(f"{NOT_A_MODEL}: {path} (not a PyTorch file, and onnxruntime cannot load it: "
                             f"{detail})") from None
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ValueError(f"{path}: expected an ONNX model with one image input and an embedding output, "
                             f"got inputs {[i.name for i in inputs]} and outputs {[o.name for o in outputs]}")
        inp = inputs[0]
        if inp.type != "tensor(float)" or len(inp.shape) != 4:
            raise ValueError(f"{path}: the ONNX input {inp.name!r} must be a float (B, C, H, W) image batch, "
                             f"got {inp.type} of shape {inp.shape}")
        meta = dict(session.get_modelmeta().custom_metadata_map or {})
        norm = meta.get("facemargin.normalisation")
        if norm is not None and norm != NORMALISATION:
            raise ValueError(f"{path}: the ONNX model expects images normalised as {norm}, not as {NORMALISATION}")
        size = None
        if meta.get("facemargin.input_size"):
            try:
                size = tuple(int(v) for v in meta["facemargin.input_size"].split(","))
            except ValueError:
                size = None
        if size is None or len(size) != 3:
            size = tuple(inp.shape[1:])
            if not all(isinstance(v, int) and v > 0 for v in size):
                raise ValueError(f"{path}: the ONNX input {inp.name!r} has shape {inp.shape}: its channels, "
                                 "height and width must be fixed")
        batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        names = [o.name for o in outputs]
        output = "embedding" if "embedding" in names else names[0]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        emb = meta.get("facemargin.embedding_size", "")
        return cls(path, session, inp.name, output, size, batch, h.digest(),
                   arch=meta.get("facemargin.arch") or "onnx", embedding_size=int(emb) if emb.isdigit() else None)

    def _run(self, a: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: a})[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w = self.input_size
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != self.input_size:
            shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise ValueError(f"{self.arch} (ONNX model {self.path.name}) expects images of shape (B, {c}, {h}, {w}), "
                             f"got {shape}")
        if x.shape[0] == 0:
            raise ValueError(f"{self.arch} (ONNX model {self.path.name}) got an empty batch (B=0)")
        a = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        if self.batch is None:
            out = self._run(a)
        else:
            parts = []
            for i in range(0, len(a), self.batch):
                chunk = a[i: i + self.batch]
                n = len(chunk)
                if n < self.batch:
                    chunk = np.concatenate([chunk, np.zeros((self.batch - n, *chunk.shape[1:]), np.float32)])
                parts.append(self._run(chunk)[:n])
            out = np.concatenate(parts)
        out = np.asarray(out, dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise ValueError(f"{self.path}: the ONNX output {self.output_name!r} must be (B, D) embeddings, "
                             f"got shape {out.shape} for a batch of {x.shape[0]}")
        return torch.from_numpy(out)

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, input_size={self.input_size}, batch={self.batch or 'dynamic'}"


def load_model(path) -> Tuple[torch.nn.Module, Optional[Dict]]:
    """The model of ``path`` in eval mode and its run config (``None`` for an ONNX model).

    A PyTorch file is loaded with :func:`facemargin.models.checkpoint.load_backbone`
    (``weights_only=True``); any other file is opened as an ONNX model.  Raises
    ``FileNotFoundError`` for a missing file, ``ValueError`` with the one line
    ``not a facemargin checkpoint or ONNX model: PATH (reason)`` for a file that is neither, and
    ``ImportError`` naming the extra to install when an ONNX model needs the absent onnxruntime.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint or ONNX model not found: {path}")
    head = _head(path)
    if _looks_like_torch(head):
        try:
            return load_backbone(path)
        except ValueError as e:
            own = f"not a facemargin checkpoint: {path} "
            if str(e).startswith(own):  # the same reason, in the wording of a command that also takes ONNX
                raise ValueError(f"{NOT_A_MODEL}: {path} {str(e)[len(own):]}") from None
            raise
    if not head:
        raise ValueError(f"{NOT_A_MODEL}: {path} (empty file)")
    if _is_text(head):
        raise ValueError(f"{NOT_A_MODEL}: {path} (a text file)")
    model = OnnxBackbone.load(path)
    model.eval()
    return model, None
