"""End to end on face-style data: RecordIO training set -> train -> .bin eval -> embed, verify, export."""
from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch

from facemargin.cli import main
from facemargin.data.binpack import load_bin, write_bin
from facemargin.data.images import load_image, save_image
from facemargin.data.recordio import RecordIO, write_record
from facemargin.train.checkpoint import load_backbone, load_checkpoint

IDS, PER_ID = 4, 8


def identity_images(identity: int, n: int, seed: int) -> np.ndarray:
    """``n`` 28x28 RGB images of one synthetic identity: its own smooth colour pattern, jittered and noised."""
    base_rng = np.random.default_rng(1000 + identity)
    coarse = base_rng.integers(30, 226, size=(4, 4, 3)).astype(np.float32)
    face = np.kron(coarse, np.ones((7, 7, 1), dtype=np.float32))  # 28x28x3 blocks
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        dy, dx = rng.integers(-1, 2, size=2)
        img = np.roll(face, (int(dy), int(dx)), axis=(0, 1)) + rng.normal(0, 12, size=face.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A RecordIO set of 4 identities x 8 images, and a short training on it from the CLI."""
    tmp = tmp_path_factory.mktemp("faces")
    images = np.concatenate([identity_images(i, PER_ID, seed=i) for i in range(IDS)])
    labels = np.repeat(np.arange(IDS), PER_ID)
    write_record(tmp / "rec", images, labels)
    out = tmp / "run"
    code = main(["train", "--set", "data.name=recordio", "--set", f"data.root={tmp / 'rec'}",
                 "--set", "model.embedding_size=8", "--set", "model.params.in_channels=3",
                 "--set", "model.params.width=0.25", "--set", "train.batch_size=8", "--set", "optim.lr=0.01",
                 "--set", "train.device=cpu", "--set", "train.progress=false", "--set", "train.log_every=1",
                 "--set", "loss.name=cosface", "--set", "loss.params.s=16.0", "--set", "optim.clip_grad_norm=1.0",
                 "--steps", "6", "--out", str(out)])
    assert code == 0
    # a .bin pack of 20 pairs of unseen identities (open set): 10 same, 10 different
    rng = np.random.default_rng(7)
    pair_images, issame = [], []
    for k in range(20):
        a = 10 + k % 5
        if k % 2 == 0:
            pair_images += list(identity_images(a, 2, seed=100 + k))
        else:
            b = 10 + (k + 1 + int(rng.integers(0, 3))) % 5
            b = b if b != a else 10 + (a - 9) % 5
            pair_images += [identity_images(a, 1, seed=200 + k)[0], identity_images(b, 1, seed=300 + k)[0]]
        issame.append(k % 2 == 0)
    write_bin(tmp / "pairs.bin", pair_images, issame)
    return {"tmp": tmp, "ckpt": out / "checkpoint.pt", "images": images, "labels": labels, "issame": issame}


def test_training_on_recordio(run):
    state = load_checkpoint(run["ckpt"])
    assert state["step"] == 6
    assert state["config"]["data"]["name"] == "recordio"
    assert state["loss"]["weight"].shape == (IDS, 8)  # num_classes from the set's property file
    model, _ = load_backbone(run["ckpt"])
    assert model.input_size == (3, 28, 28)


def test_eval_bin_with_flip_writes_the_json(run, capsys):
    js = run["tmp"] / "eval.json"
    assert main(["eval", str(run["ckpt"]), "--pairs", str(run["tmp"] / "pairs.bin"), "--flip", "--json", str(js)]) == 0
    assert re.search(r"pairs: accuracy \d\.\d{4} ± \d\.\d{4}", capsys.readouterr().out)
    res = json.loads(js.read_text())
    assert res["flip"] is True and res["checkpoint"] == str(run["ckpt"])
    r = res["sets"]["pairs"]
    assert {"accuracy", "accuracy_std", "threshold", "auc", "eer", "tar_at_far", "pairs"} <= set(r)
    assert r["pairs"] == 20 and 0 <= r["accuracy"] <= 1 and 0 <= r["auc"] <= 1
    assert all(0 < float(k) < 1 for k in r["tar_at_far"])
    # the AUC is that of flip-fused cosine scores computed here from the decoded pack
    model, _ = load_backbone(run["ckpt"])
    imgs, same = load_bin(run["tmp"] / "pairs.bin")
    x = (torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        e = model(x) + model(x.flip(3))
    e = torch.nn.functional.normalize(e, dim=1).numpy()
    scores = (e[0::2] * e[1::2]).sum(1)
    pos, neg = scores[same], scores[~same]
    auc = ((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
    assert r["auc"] == pytest.approx(auc, abs=1e-6)


def test_embed_recordio(run):
    out = run["tmp"] / "emb" / "e.npy"
    assert main(["embed", str(run["ckpt"]), "--images", str(run["tmp"] / "rec"), "--out", str(out)]) == 0
    emb = np.load(out)
    assert emb.shape == (IDS * PER_ID, 8) and emb.dtype == np.float32
    rows = list(csv.reader(out.with_suffix(".csv").open()))
    assert rows[0] == ["row", "source", "label"] and len(rows) == IDS * PER_ID + 1
    ds = RecordIO(run["tmp"] / "rec")
    assert [int(r[2]) for r in rows[1:]] == ds.labels.tolist()
    assert [int(r[0]) for r in rows[1:]] == list(range(IDS * PER_ID))
    # row i is the embedding of record i
    model, _ = load_backbone(run["ckpt"])
    with torch.no_grad():
        ref = model(torch.stack([ds[i][0] for i in range(len(ds))])).numpy()
    np.testing.assert_allclose(emb, ref, rtol=1e-5, atol=1e-5)


def test_verify_with_threshold_from_eval(run, capsys):
    js = run["tmp"] / "eval_for_verify.json"
    assert main(["eval", str(run["ckpt"]), "--pairs", str(run["tmp"] / "pairs.bin"), "--json", str(js)]) == 0
    threshold = json.loads(js.read_text())["sets"]["pairs"]["threshold"]
    a, b, c = (run["tmp"] / n for n in ("a.png", "b.png", "c.png"))
    save_image(a, run["images"][0])
    save_image(b, run["images"][1])                 # same identity
    save_image(c, run["images"][-1])                # another identity
    model, _ = load_backbone(run["ckpt"])
    for other in (b, c):
        capsys.readouterr()
        assert main(["verify", str(run["ckpt"]), str(a), str(other), "--threshold-from", str(js)]) == 0
        text = capsys.readouterr().out
        m = re.search(r"cosine similarity: (-?\d\.\d+) \(threshold (-?\d\.\d+)\): (same|different)", text)
        assert m, text
        x = torch.stack([torch.from_numpy(load_image(p)).permute(2, 0, 1).float() for p in (a, other)])
        with torch.no_grad():
            e = torch.nn.functional.normalize(model((x / 255 - 0.5) / 0.5), dim=1)
        score = float(e[0] @ e[1])
        assert float(m.group(1)) == pytest.approx(score, abs=1e-4)
        assert float(m.group(2)) == pytest.approx(threshold, abs=1e-4)
        assert m.group(3) == ("same" if score > threshold else "different")
    # a wrong image size names the expected size
    save_image(run["tmp"] / "big.png", np.zeros((40, 40, 3), np.uint8))
    assert main(["verify", str(run["ckpt"]), str(a), str(run["tmp"] / "big.png"), "--threshold", "0.3"]) == 2
    err = capsys.readouterr().err
    assert "big.png" in err and "28x28" in err


def test_export_onnx(run):
    ort = pytest.importorskip("onnxruntime")
    path = run["tmp"] / "m.onnx"
    assert main(["export", str(run["ckpt"]), "--out", str(path)]) == 0
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model, _ = load_backbone(run["ckpt"])
    x = (torch.from_numpy(run["images"][:5]).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref = model(x).numpy()
    assert got.shape == (5, 8)  # dynamic batch
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
