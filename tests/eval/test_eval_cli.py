"""embed / verify / eval from the command line: checkpoint or ONNX model, clear one-line errors,
fold checks before embedding, pairs-file line numbers, progress bars only on a terminal."""
from __future__ import annotations

import argparse
import json
import pickle
import re
import sys

import numpy as np
import pytest
import torch

import facemargin.models as M
from facemargin.cli import main
from facemargin.data.images import load_image, resize_image, save_image
from facemargin.eval import inference
from facemargin.train.checkpoint import save_checkpoint

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

EMB = 16


def _rgb(rng, h=112, w=112):
    # smooth colour blobs rather than pure noise: closer to what a face backbone sees
    coarse = rng.integers(20, 236, size=(7, 7, 3)).astype(np.float32)
    img = np.kron(coarse, np.ones((h // 7 + 1, w // 7 + 1, 1), np.float32))[:h, :w]
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A small 112x112 backbone (MobileFaceNet) as a checkpoint and as its ONNX export, plus images."""
    from facemargin.models.export import export_onnx

    tmp = tmp_path_factory.mktemp("infer")
    torch.manual_seed(0)
    model = M.build("mobilefacenet", EMB).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so that eval mode matters
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
    ckpt = tmp / "checkpoint.pt"
    save_checkpoint(ckpt, config={"model": {"name": "mobilefacenet", "embedding_size": EMB, "params": {}}},
                    step=0, model=model)
    onnx_path = tmp / "model.onnx"
    export_onnx(model, onnx_path, check_batch_sizes=(1,))
    rng = np.random.default_rng(0)
    images = tmp / "images"
    for c in range(2):
        for i in range(2):
            save_image(images / f"id{c}" / f"{i}.png", _rgb(rng))
    save_image(tmp / "odd.png", _rgb(rng, 120, 100))
    return {"tmp": tmp, "ckpt": ckpt, "onnx": onnx_path, "model": model, "images": images}


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# ------------------------------------------------------------------------------------------------ ONNX
@pytest.mark.parametrize("flip", [False, True])
def test_embed_onnx_matches_checkpoint(models, tmp_path, flip):
    outs = {}
    for kind in ("ckpt", "onnx"):
        out = tmp_path / f"{kind}.npy"
        argv = ["embed", str(models[kind]), "--images", str(models["images"]), "--out", str(out), "--quiet"]
        assert main(argv + (["--flip"] if flip else [])) == 0
        outs[kind] = np.load(out)
    assert outs["ckpt"].shape == outs["onnx"].shape == (4, EMB)
    assert _cos(outs["ckpt"], outs["onnx"]).min() > 0.999
    # and both are the backbone's own output on the normalised images (flip: plus the mirror's)
    x = torch.stack([torch.from_numpy(load_image(p)).permute(2, 0, 1).float()
                     for p in sorted(models["images"].glob("*/*.png"))])
    x = (x / 255 - 0.5) / 0.5
    with torch.no_grad():
        ref = models["model"](x) + (models["model"](x.flip(3)) if flip else 0)
    assert _cos(outs["onnx"], ref.numpy()).min() > 0.999


def test_verify_onnx_matches_checkpoint(models, capsys):
    a, b = sorted(models["images"].glob("*/*.png"))[:2]
    scores = {}
    for kind in ("ckpt", "onnx"):
        for flip in ([], ["--flip"]):
            capsys.readouterr()
            assert main(["verify", str(models[kind]), str(a), str(b), "--threshold", "0.5"] + flip) == 0
            m = re.fullmatch(r"cosine similarity: (-?\d\.\d{4}) \(threshold 0\.5000\): (same|different)\n",
                             capsys.readouterr().out)
            assert m
            scores[kind, bool(flip)] = float(m.group(1))
    for flip in (False, True):
        assert scores["ckpt", flip] == pytest.approx(scores["onnx", flip], abs=2e-4)
    assert scores["ckpt", False] != scores["ckpt", True]  # the flag does something on both


def test_load_model_kinds(models):
    model, config = inference.load_model(models["ckpt"])
    assert config["model"]["name"] == "mobilefacenet" and not model.training
    onnx_model, none = inference.load_model(models["onnx"])
    assert none is None and isinstance(onnx_model, inference.OnnxBackbone)
    assert onnx_model.input_size == (3, 112, 112) and onnx_model.embedding_size == EMB
    assert onnx_model.arch == "mobilefacenet" and onnx_model.batch is None
    assert list(onnx_model.parameters()) == []
    # the file digest is part of the state, so caches keyed on the model state tell files apart
    assert onnx_model.state_dict()["onnx_sha256"].numel() == 32
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 3, 112, 112\), got \(2, 3, 28, 28\)"):
        onnx_model(torch.zeros(2, 3, 28, 28))


def test_static_batch_onnx_runs_in_chunks(tmp_path):
    from facemargin.models.export import export_onnx

    torch.manual_seed(1)
    small = M.build("lenetpp", 4, width=0.25).eval()
    path = tmp_path / "static.onnx"
    export_onnx(small, path, dynamic_batch=False)
    model, _ = inference.load_model(path)
    assert model.batch == 2 and model.input_size == (1, 28, 28)
    x = torch.rand(5, 1, 28, 28) * 2 - 1  # 2 + 2 + 1 (padded)
    with torch.no_grad():
        ref = small(x).numpy()
    np.testing.assert_allclose(model(x).numpy(), ref, rtol=0, atol=1e-4)


def test_eval_onnx_equals_checkpoint_and_fashion_needs_checkpoint(models, tmp_path, capsys):
    lfw = _lfw(tmp_path, interleaved=True)
    res = {}
    for kind in ("ckpt", "onnx"):
        js = tmp_path / f"{kind}.json"
        assert main(["eval", str(models[kind]), "--pairs", str(lfw), "--folds", "4", "--flip", "--json", str(js),
                     "--cache", str(tmp_path / "cache"), "-q"]) == 0
        res[kind] = json.loads(js.read_text())["sets"]["lfw"]
    for k in ("auc", "eer", "accuracy"):
        assert res["ckpt"][k] == pytest.approx(res["onnx"][k], abs=1e-6), k
    capsys.readouterr()
    assert main(["eval", str(models["onnx"]), "--pairs", "fashion"]) == 2
    assert "an ONNX model has none; give the checkpoint" in capsys.readouterr().err


def test_missing_onnxruntime_names_the_extra(models, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    a = str(next(models["images"].glob("*/*.png")))
    assert main(["verify", str(models["onnx"]), a, a]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnxruntime" in err and "pip install 'facemargin[export]'" in err
    # a checkpoint needs no onnxruntime
    assert main(["verify", str(models["ckpt"]), a, a]) == 0


# ------------------------------------------------------------------------------------------------ bad files
def _bad_files(tmp, models):
    data = models["ckpt"].read_bytes()
    torch.save({"fc.weight": torch.ones(2, 2)}, tmp / "state_dict.pt")
    torch.save(argparse.Namespace(lr=0.1), tmp / "object.pt")
    legacy = tmp / "legacy.pt"
    torch.save({"a": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    files = {
        "notes.txt": (b"epoch 3 loss 0.42\n", "a text file"),
        "state_dict.pt": (None, "a PyTorch file without the facemargin checkpoint layout, e.g. a bare state dict"),
        "object.pt": (None, "it pickles Python objects other than tensors and plain values, which are not "
                            "loaded for safety"),
        "cut.pt": (data[: len(data) // 2], "truncated or damaged file"),
        "cut_early.pt": (data[:5000], "truncated or damaged file"),
        "cut_legacy.pt": (legacy.read_bytes()[:-20], "truncated or damaged file"),
        "empty.pt": (b"", "empty file"),
        "noise.bin": (bytes(range(256)) * 8, "not a PyTorch file, and onnxruntime cannot load it"),
        "cut.onnx": (models["onnx"].read_bytes()[:20000], "not a PyTorch file, and onnxruntime cannot load it"),
        "pickle.pt": (pickle.dumps({"format": "x"}, protocol=2)[:-1], None),
    }
    out = {}
    for name, (content, reason) in files.items():
        if content is not None:
            (tmp / name).write_bytes(content)
        out[tmp / name] = reason
    return out


def test_not_a_model_is_one_line(models, tmp_path, capsys):
    a = str(next(models["images"].glob("*/*.png")))
    for path, reason in _bad_files(tmp_path, models).items():
        for argv in (["verify", str(path), a, a], ["embed", str(path), "--images", str(models["images"]),
                                                     "--out", str(tmp_path / "e.npy")],
                     ["eval", str(path), "--pairs", str(tmp_path / "x.bin")]):
            capsys.readouterr()
            assert main(argv) == 2, (path, argv[0])
            err = capsys.readouterr().err
            prefix = f"facemargin {argv[0]}: error: not a facemargin checkpoint or ONNX model: {path} ("
            assert err.startswith(prefix) and err.endswith(")\n") and err.count("\n") == 1, err
            assert "weights_only=False" not in err and "\x1b" not in err
            if reason is not None:
                assert err == prefix + reason + ")\n" or err.startswith(prefix + reason), err
    # export takes checkpoints only, and says so in its own words
    capsys.readouterr()
    assert main(["export", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert capsys.readouterr().err == (f"facemargin export: error: not a facemargin checkpoint: "
                                       f"{tmp_path / 'notes.txt'} (a text file)\n")
    assert main(["export", str(models["onnx"]), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "is an ONNX model already" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "absent.pt"), a, a]) == 2
    assert capsys.readouterr().err == (f"facemargin verify: error: checkpoint or ONNX model not found: "
                                       f"{tmp_path / 'absent.pt'}\n")


def test_checkpoint_with_wrong_weights_is_one_line(models, tmp_path, capsys):
    bad = tmp_path / "wrong.pt"
    other = M.build("mobilefacenet", EMB + 1)
    save_checkpoint(bad, config={"model": {"name": "mobilefacenet", "embedding_size": EMB, "params": {}}},
                    step=0, model=other)
    a = str(next(models["images"].glob("*/*.png")))
    assert main(["verify", str(bad), a, a]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"checkpoint {bad}: backbone weights do not match" in err


# ------------------------------------------------------------------------------------------------ verify --resize
def test_verify_resize(models, capsys):
    a = sorted(models["images"].glob("*/*.png"))[0]
    odd = models["tmp"] / "odd.png"
    assert main(["verify", str(models["ckpt"]), str(a), str(odd)]) == 2
    err = capsys.readouterr().err
    assert "odd.png: images are 120x100 (HxW) but the model expects 112x112" in err and "--resize" in err
    for kind in ("ckpt", "onnx"):
        assert main(["verify", str(models[kind]), str(a), str(odd), "--resize"]) == 0
        score = float(re.search(r"cosine similarity: (-?\d\.\d{4})", capsys.readouterr().out).group(1))
        x = np.stack([load_image(a), resize_image(load_image(odd), (112, 112))])
        x = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
        with torch.no_grad():
            e = torch.nn.functional.normalize(models["model"](x), dim=1)
        assert score == pytest.approx(float(e[0] @ e[1]), abs=2e-4)


# ------------------------------------------------------------------------------------------------ folds
def _lfw(tmp, interleaved: bool, n_ids: int = 4, sizes=None):
    """An LFW folder of ``n_ids`` people x 2 images, 8 pairs: 4 same and 4 different."""
    rng = np.random.default_rng(3)
    root = tmp / "lfw"
    names = [f"P{k}" for k in range(n_ids)]
    for name in names:
        for k in (1, 2):
            save_image(root / name / f"{name}_{k:04d}.png", _rgb(rng, 112, 112))
    same = [f"{n} 1 2" for n in names]
    diff = [f"{names[k]} 1 {names[(k + 1) % n_ids]} 2" for k in range(n_ids)]
    lines = [x for pair in zip(same, diff) for x in pair] if interleaved else same + diff
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture()
def no_embedding(monkeypatch):
    import facemargin.eval.embed as embed_module

    def refuse(*a, **k):
        raise AssertionError("embedded before checking the folds")

    monkeypatch.setattr(embed_module, "embed_images", refuse)


def test_too_few_pairs_for_the_folds_fails_before_embedding(models, tmp_path, capsys, no_embedding):
    lfw = _lfw(tmp_path, interleaved=True)
    assert main(["eval", str(models["ckpt"]), "--pairs", str(lfw)]) == 2
    assert capsys.readouterr().err == ("facemargin eval: error: lfw: cannot split 8 pairs into 10 folds: "
                                       "use --folds 8 or fewer\n")
    with pytest.raises(SystemExit):
        main(["eval", str(models["ckpt"]), "--pairs", str(lfw), "--folds", "1"])
    assert "at least 2 folds, got 1" in capsys.readouterr().err


def test_one_class_folds_warn(models, tmp_path, capsys):
    sorted_lfw = _lfw(tmp_path / "a", interleaved=False)
    assert main(["eval", str(models["ckpt"]), "--pairs", str(sorted_lfw), "--folds", "2", "-q"]) == 0
    out, err = capsys.readouterr()
    assert err == ("facemargin eval: warning: lfw: 2 of 2 folds hold pairs of one class only (the pairs are split "
                   "into folds in file order), so the accuracy is not meaningful; list the pairs shuffled or with "
                   "same and different pairs interleaved, as LFW's pairs.txt does (AUC, EER and TAR@FAR are "
                   "unaffected)\n")
    assert "lfw: accuracy 0.0000 ± 0.0000" in out  # what the warning is about
    mixed = _lfw(tmp_path / "b", interleaved=True)
    assert main(["eval", str(models["ckpt"]), "--pairs", str(mixed), "--folds", "4", "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_check_pair_sets_warns_before_embedding(models, tmp_path, no_embedding):
    from facemargin.eval.cli import check_pair_sets

    lfw = _lfw(tmp_path, interleaved=False)
    lines = []
    check_pair_sets([str(lfw)], None, None, 4, warn=lines.append)
    assert len(lines) == 1 and lines[0].startswith("lfw: 4 of 4 folds hold pairs of one class only")
    with pytest.raises(ValueError, match=r"^lfw: cannot split 8 pairs into 9 folds: use --folds 8 or fewer$"):
        check_pair_sets([str(lfw)], None, None, 9)
    (lfw / "pairs.txt").write_text("P0 1 2\nP1 1 2\n")
    with pytest.raises(ValueError, match="both same and different pairs; got 2 same, 0 different"):
        check_pair_sets([str(lfw)], None, None, 2)


# ------------------------------------------------------------------------------------------------ pairs files
def test_pairs_file_errors_name_file_and_line(models, tmp_path, capsys, no_embedding):
    lfw = _lfw(tmp_path, interleaved=True)
    pairs = lfw / "pairs.txt"
    lines = pairs.read_text().splitlines()
    pairs.write_text("\n".join(lines[:2] + ["P2 1 7"] + lines[3:]) + "\n")
    assert main(["eval", str(models["ckpt"]), "--pairs", str(lfw), "--folds", "2"]) == 2
    assert capsys.readouterr().err == (f"facemargin eval: error: {pairs}, line 3: image {lfw / 'P2' / 'P2_0007.jpg'} "
                                       "not found (also looked for .jpeg and .png)\n")
    pairs.write_text("\n".join(lines[:4] + ["P2 1 P3"] + lines[5:]) + "\n")
    assert main(["eval", str(models["ckpt"]), "--pairs", str(lfw), "--folds", "2"]) == 2
    assert capsys.readouterr().err == (f"facemargin eval: error: {pairs}, line 5: expected 'name n1 n2' or "
                                       "'name1 n1 name2 n2', got 'P2 1 P3'\n")


def test_undecodable_lfw_image_names_the_line(tmp_path):
    from facemargin.data.lfw import load_lfw

    lfw = _lfw(tmp_path, interleaved=True)
    (lfw / "P3" / "P3_0002.png").write_bytes(b"not an image")  # first listed on line 6 (P2 1 P3 2)
    with pytest.raises(ValueError, match=r"pairs\.txt, line 6: .*P3_0002\.png: cannot decode image"):
        load_lfw(lfw)


# ------------------------------------------------------------------------------------------------ progress
def test_progress_only_on_a_terminal(models, tmp_path, capsys, monkeypatch):
    from facemargin.eval import embed_images
    from facemargin.eval.cli import _progress

    class Tty:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.setattr(sys, "stderr", Tty(True))
    assert _progress(argparse.Namespace(quiet=False)) is True
    assert _progress(argparse.Namespace(quiet=True)) is False
    monkeypatch.setattr(sys, "stderr", Tty(False))
    assert _progress(argparse.Namespace(quiet=False)) is False
    monkeypatch.undo()
    # the library's bar stays out of a captured (non-terminal) stderr too
    capsys.readouterr()
    embed_images(torch.nn.Flatten(), torch.zeros(3, 1, 2, 2), batch_size=1, progress=True)
    assert capsys.readouterr().err == ""
    assert main(["embed", str(models["ckpt"]), "--images", str(models["images"]), "--out",
                 str(tmp_path / "e.npy")]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("[embed] 4 embeddings of width 16")


def test_cli_modules_import_neither_torch_nor_numpy_at_top():
    import ast
    from pathlib import Path

    import facemargin.eval.cli as eval_cli
    import facemargin.models.cli as models_cli

    for mod in (eval_cli, models_cli):
        tree = ast.parse(Path(mod.__file__).read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in top if isinstance(n, ast.ImportFrom) and n.level == 0}
        assert not names & {"torch", "numpy"}, mod.__name__


def test_building_the_parser_imports_no_torch():
    import subprocess

    code = ("import sys, argparse; import facemargin.eval.cli as c; "
            "p = argparse.ArgumentParser(); s = p.add_subparsers(); c.register(s); "
            "print(sorted(k for k in ('torch', 'numpy', 'facemargin.eval.ijb') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from facemargin.eval.cli import IJB_GALLERIES
    from facemargin.eval.ijb import GALLERIES

    assert IJB_GALLERIES == GALLERIES
