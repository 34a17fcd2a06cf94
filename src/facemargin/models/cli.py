"""``facemargin export``: a trained checkpoint's backbone -> a checked ONNX file."""
from __future__ import annotations

import argparse


def register(sub) -> argparse.ArgumentParser:
    """Add the ``export`` sub-command to the ``facemargin`` sub-parsers ``sub``."""
    p = sub.add_parser(
        "export", help="export a checkpoint's backbone to ONNX (dynamic batch, checked)",
        description="Export the backbone of a facemargin checkpoint to ONNX with a dynamic batch "
                    "axis (input 'input' (B, C, H, W) normalised as (x/255-0.5)/0.5, output "
                    "'embedding'), then check onnxruntime's output against PyTorch's. 'facemargin embed', "
                    "'verify' and 'eval' take the .onnx file in place of the checkpoint.")
    p.add_argument("checkpoint", help="checkpoint file written by 'facemargin train'")
    p.add_argument("--out", "-o", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="largest allowed |onnxruntime - PyTorch| on random inputs (default 1e-4)")
    p.add_argument("--static-batch", action="store_true",
                   help="fix the batch size (2) instead of a dynamic batch axis")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Load the checkpoint's backbone, export it, print a one-line summary; 0 on success."""
    from . import input_size
    from .checkpoint import load_backbone
    from .export import export_onnx

    if str(args.checkpoint).lower().endswith(".onnx"):
        raise ValueError(f"{args.checkpoint} is an ONNX model already; export takes the checkpoint written by "
                         "'facemargin train' (embed, verify and eval run the .onnx file directly)")
    model, config = load_backbone(args.checkpoint)
    shape = getattr(model, "input_size", None)
    if shape is None:
        name = (config or {}).get("model", {}).get("name")
        if name is None:
            raise ValueError(f"checkpoint {args.checkpoint} names no model (config['model']['name'])")
        shape = input_size(name)
    res = export_onnx(model, args.out, input_shape=shape, opset=args.opset,
                      dynamic_batch=not args.static_batch, check=not args.no_check, atol=args.atol)
    diff = "not checked" if res["max_abs_diff"] is None else (
        f"max |onnx - torch| = {res['max_abs_diff']:.2e} on batches {res['checked_batch_sizes']}")
    print(f"wrote {res['path']} ({res['bytes'] / 1e6:.1f} MB, opset {res['opset']}, input "
          f"{tuple(res['input_shape'])}, {res['exporter']} exporter); {diff}")
    return 0
