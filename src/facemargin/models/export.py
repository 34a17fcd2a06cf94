"""Export a backbone to ONNX with a dynamic batch axis, checked against PyTorch with onnxruntime.

``onnx`` and ``onnxruntime`` are optional (``pip install 'facemargin[export]'``) and imported only
when needed.
"""
from __future__ import annotations

import importlib
import importlib.util
import io
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..io import atomic_open
from .base import NORMALISATION

INPUT_NAME = "input"
OUTPUT_NAME = "embedding"


class ExportCheckError(ValueError):
    """The exported ONNX model does not reproduce PyTorch's output within the tolerance."""


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"ONNX export needs the optional package {module!r}, which is not installed "
            f"({e}); install it with: pip install 'facemargin[export]'") from e


def _input_shape(model: nn.Module, input_shape) -> Tuple[int, int, int]:
    if input_shape is None:
        input_shape = getattr(model, "input_size", None) or (3, 112, 112)
    try:
        shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"input_shape must be (C, H, W) integers, got {input_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) positive integers, got {input_shape!r}")
    return shape


def _export_torchscript(model, dummy, opset, dynamic_batch) -> bytes:
    buf = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        # torch >= 2.9 marks the TorchScript exporter as deprecated; it needs no onnxscript.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(model, (dummy,), buf, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    return buf.getvalue()


def _export_dynamo(model, dummy, opset, dynamic_batch) -> bytes:
    _require("onnxscript")
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    program = torch.onnx.export(model, (dummy,), None, input_names=[INPUT_NAME],
                                output_names=[OUTPUT_NAME], dynamic_shapes=shapes,
                                opset_version=opset, dynamo=True)
    return program.model_proto.SerializeToString()


def export_onnx(model: nn.Module, path, input_shape: Optional[Sequence[int]] = None,
                opset: int = 17, dynamic_batch: bool = True, check: bool = True,
                atol: float = 1e-4, check_batch_sizes: Sequence[int] = (1, 3),
                exporter: str = "auto", seed: int = 0) -> Dict:
    """Export ``model`` (images -> embeddings) to the ONNX file ``path``; return a summary dict.

    Args:
        model: the backbone; exported in eval mode (its training flag is restored afterwards).
        path: output ``.onnx`` file, written atomically (only after the check passes).
        input_shape: ``(C, H, W)``; default ``model.input_size`` (every facemargin backbone has
            one), else ``(3, 112, 112)``.
        opset: ONNX opset version.
        dynamic_batch: make the batch axis of input ``"input"`` and output ``"embedding"`` dynamic.
        check: run the ONNX model with onnxruntime on random inputs in ``[-1, 1]`` (the range of
            normalised images) at each of ``check_batch_sizes`` (only the export batch of 2 when
            the batch is static) and compare with PyTorch; raise :class:`ExportCheckError` (a
            ``ValueError``) and write nothing when the largest difference exceeds
            ``atol · max(1, max|PyTorch output|)``: absolute for unit-scale embeddings, relative for
            un-normalised ones whose norms reach the thousands (float32 keeps ~7 digits).
        exporter: ``"torchscript"`` (``torch.onnx.export(dynamo=False)``, needs no onnxscript;
            deprecated upstream since PyTorch 2.9 but present in 2.13), ``"dynamo"`` (needs
            onnxscript), or ``"auto"``: torchscript, falling back to dynamo if it fails and
            onnxscript is installed.
        seed: seed of the random check inputs.

    Returns: ``{"path", "max_abs_diff" (None when not checked), "checked_batch_sizes",
    "input_shape", "opset", "exporter", "input_name", "output_name", "bytes"}``.
    """
    onnx = _require("onnx")
    shape = _input_shape(model, input_shape)
    if exporter not in ("auto", "torchscript", "dynamo"):
        raise ValueError(f"exporter must be 'auto', 'torchscript' or 'dynamo', got {exporter!r}")
    if not atol >= 0:
        raise ValueError(f"atol must be >= 0, got {atol}")
    path = Path(path)
    was_training = model.training
    model.eval()
    try:
        gen = torch.Generator().manual_seed(seed)
        dummy = torch.rand((2, *shape), generator=gen) * 2 - 1
        with torch.no_grad():
            model(dummy)  # wrong input size -> the model's own clear ValueError, before export
        used = exporter
        if exporter in ("auto", "torchscript"):
            try:
                data = _export_torchscript(model, dummy, opset, dynamic_batch)
                used = "torchscript"
            except Exception:
                # e.g. a future PyTorch without the TorchScript exporter: try the dynamo one
                # when onnxscript is there, else report the original error
                if exporter == "torchscript" or importlib.util.find_spec("onnxscript") is None:
                    raise
                data = _export_dynamo(model, dummy, opset, dynamic_batch)
                used = "dynamo"
        else:
            data = _export_dynamo(model, dummy, opset, dynamic_batch)

        proto = onnx.load_from_string(data)
        onnx.checker.check_model(proto)
        meta = {"facemargin.arch": str(getattr(model, "arch", type(model).__name__)),
                "facemargin.input_size": ",".join(map(str, shape)),
                "facemargin.normalisation": NORMALISATION,
                "facemargin.embedding_size": str(getattr(model, "embedding_size", ""))}
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        data = proto.SerializeToString()

        max_diff, batches = None, []
        if check:
            ort = _require("onnxruntime")
            session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
            batches = [int(b) for b in check_batch_sizes] if dynamic_batch else [2]
            max_diff, scale = 0.0, 1.0
            for b in batches:
                x = torch.rand((b, *shape), generator=gen) * 2 - 1
                with torch.no_grad():
                    ref = model(x).numpy()
                got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
                if got.shape != ref.shape:
                    raise ExportCheckError(f"ONNX output shape {got.shape} != PyTorch "
                                           f"{ref.shape} at batch {b}; nothing written to {path}")
                max_diff = max(max_diff, float(np.max(np.abs(got - ref))))
                scale = max(scale, float(np.max(np.abs(ref))))
            if not max_diff <= atol * scale:
                raise ExportCheckError(
                    f"ONNX model differs from PyTorch by up to {max_diff:.3g} (> atol {atol:g} x "
                    f"output scale {scale:.3g}) "
                    f"on batches {batches}; nothing written to {path}")
    finally:
        model.train(was_training)

    with atomic_open(path, "wb") as f:
        f.write(data)
    return {"path": str(path), "max_abs_diff": max_diff, "checked_batch_sizes": batches,
            "input_shape": list(shape), "opset": int(opset), "exporter": used,
            "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "bytes": len(data)}
