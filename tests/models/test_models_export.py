"""ONNX export: dynamic batch, onnxruntime equals PyTorch, atomic writes, clear errors."""
import argparse
import sys
import types

import numpy as np
import pytest
import torch

import facemargin.models as M
from facemargin.models.export import ExportCheckError, export_onnx
from models_helpers import randomise_norms

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def _ort_run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess, sess.run(["embedding"], {"input": x.numpy()})[0]


@pytest.mark.parametrize("name,emb,kw", [("lenetpp", 64, {"width": 0.5}),
                                         ("mobilefacenet", 128, {})])
def test_export_matches_torch_dynamic_batch(tmp_path, name, emb, kw):
    model = randomise_norms(M.build(name, emb, **kw))
    model.train()
    out = tmp_path / f"{name}.onnx"
    res = export_onnx(model, out)
    assert model.training  # training flag restored
    assert res["path"] == str(out) and out.is_file() and res["exporter"] in ("torchscript", "dynamo")
    assert res["input_shape"] == list(M.input_size(name))
    assert res["checked_batch_sizes"] == [1, 3] and res["max_abs_diff"] <= 1e-4

    # independent check here, at batch sizes the exporter never saw
    model.eval()
    sess = None
    for b in (5, 2):
        x = torch.rand(b, *M.input_size(name)) * 2 - 1
        sess, got = _ort_run(out, x)
        with torch.no_grad():
            ref = model(x).numpy()
        assert got.shape == (b, emb)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
    # the output is not trivially constant: different images give different embeddings
    assert np.abs(got[0] - got[1]).max() > 1e-3
    assert isinstance(sess.get_inputs()[0].shape[0], str)  # symbolic batch dimension
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["facemargin.arch"] == name
    assert meta["facemargin.input_size"] == ",".join(map(str, M.input_size(name)))
    assert meta["facemargin.embedding_size"] == str(emb)


def test_static_batch(tmp_path):
    model = M.build("lenetpp", 2, width=0.25)
    res = export_onnx(model, tmp_path / "s.onnx", dynamic_batch=False)
    assert res["checked_batch_sizes"] == [2]
    sess = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [2, 1, 28, 28]


class _Drifting(torch.nn.Module):
    """Multiplies by a Python counter that grows every call: a trace bakes in one value, so
    later PyTorch calls disagree with the exported graph."""

    input_size = (1, 4, 4)

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x.flatten(1) * float(self.calls)


def test_mismatch_raises_and_writes_nothing(tmp_path):
    out = tmp_path / "bad.onnx"
    out.write_bytes(b"previous")
    with pytest.raises(ExportCheckError, match="differs from PyTorch.*nothing written"):
        export_onnx(_Drifting(), out)
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["bad.onnx"]  # no temp file left
    # a ValueError, so the CLI reports it cleanly
    assert issubclass(ExportCheckError, ValueError)


def test_no_check_skips_onnxruntime(tmp_path):
    res = export_onnx(_Drifting(), tmp_path / "d.onnx", check=False)
    assert res["max_abs_diff"] is None and (tmp_path / "d.onnx").is_file()


def test_wrong_input_shape_is_the_models_error(tmp_path):
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 1, 28, 28\)"):
        export_onnx(M.build("lenetpp", 2), tmp_path / "x.onnx", input_shape=(3, 112, 112))
    with pytest.raises(ValueError, match="input_shape"):
        export_onnx(M.build("lenetpp", 2), tmp_path / "x.onnx", input_shape=(28, 28))
    assert not (tmp_path / "x.onnx").exists()


def test_missing_onnxruntime_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"onnxruntime.*facemargin\[export\]"):
        export_onnx(M.build("lenetpp", 2, width=0.25), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_cli_export(tmp_path, monkeypatch, capsys):
    from facemargin.models import cli

    model = randomise_norms(M.build("lenetpp", 3, width=0.25)).eval()
    fake = types.ModuleType("facemargin.models.checkpoint")
    seen = {}

    def load_backbone(path):
        seen["path"] = path
        return model, {"model": {"name": "lenetpp"}}

    fake.load_backbone = load_backbone
    monkeypatch.setitem(sys.modules, "facemargin.models.checkpoint", fake)
    parser = argparse.ArgumentParser(prog="facemargin")
    cli.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "m.onnx"
    args = parser.parse_args(["export", "ckpt.pt", "--out", str(out), "--opset", "13"])
    assert args.func(args) == 0
    assert seen["path"] == "ckpt.pt"
    line = capsys.readouterr().out
    assert str(out) in line and "opset 13" in line and "max |onnx - torch|" in line
    assert onnx.load(str(out)).opset_import[0].version == 13
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    _, got = _ort_run(out, x)
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=0, atol=1e-4)
