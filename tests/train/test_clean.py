"""``facemargin clean``: outliers of a sub-center run, worked out independently from its checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facemargin.cli import main
from facemargin.data.recordio import RecordIO, write_record
from facemargin.eval.embed import embed_images
from facemargin.train.checkpoint import load_backbone, load_checkpoint


def _images(ids=3, per=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(ids):
        base = rng.integers(20, 236, size=(4, 4, 3)).astype(np.float32)
        face = np.kron(base, np.ones((7, 7, 1), dtype=np.float32))
        for _ in range(per):
            out.append(np.clip(face + rng.normal(0, 40, size=face.shape), 0, 255).astype(np.uint8))
    return np.stack(out), np.repeat(np.arange(ids), per)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clean")
    images, labels = _images()
    write_record(tmp / "rec", images, labels)
    code = main(["train", "--set", "data.name=recordio", "--set", f"data.root={tmp / 'rec'}",
                 "--set", "model.embedding_size=8", "--set", "model.params.in_channels=3",
                 "--set", "model.params.width=0.25", "--set", "train.batch_size=6", "--set", "optim.lr=0.01",
                 "--set", "train.device=cpu", "--set", "train.progress=false", "--set", "loss.name=subcenter_arcface",
                 "--set", "loss.params.K=2", "--set", "loss.params.s=8.0", "--steps", "3", "--out", str(tmp / "run")])
    assert code == 0
    return tmp


def _angles_to_dominant(ckpt, rec):
    """The angle of every sample to its class's dominant sub-center, computed here from scratch."""
    model, _ = load_backbone(ckpt)
    ds = RecordIO(rec)
    emb = embed_images(model, ds)
    W = load_checkpoint(ckpt)["loss"]["weight"].numpy().astype(np.float64).reshape(-1, 2, 8)
    W /= np.linalg.norm(W, axis=2, keepdims=True)
    x = emb.astype(np.float64) / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = np.einsum("nd,nkd->nk", x, W[ds.labels])
    nearest = cos.argmax(axis=1)
    dominant = np.array([np.bincount(nearest[ds.labels == c], minlength=2).argmax() for c in range(3)])
    return np.degrees(np.arccos(np.clip(cos[np.arange(len(x)), dominant[ds.labels]], -1, 1))), ds


def test_clean_lists_exactly_the_far_samples_and_copies_the_rest(run, tmp_path):
    ckpt = run / "run" / "checkpoint.pt"
    angles, ds = _angles_to_dominant(ckpt, run / "rec")
    order = np.sort(angles)
    threshold = float((order[-4] + order[-3]) / 2)  # three samples beyond it
    want = np.sort(np.asarray(ds.keys)[angles > threshold])
    assert len(want) == 3
    out = tmp_path / "outliers.txt"
    code = main(["clean", str(ckpt), "--data", str(run / "rec"), "--out", str(out), "--threshold", f"{threshold}",
                 "--clean-rec", str(tmp_path / "cleaned"), "--no-progress"])
    assert code == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("# record keys of 3 outliers among 18 images")
    assert sorted(int(v) for v in lines[1:]) == want.tolist()
    cleaned = RecordIO(tmp_path / "cleaned")
    keep = [i for i in range(len(ds)) if int(ds.keys[i]) not in set(want.tolist())]
    assert len(cleaned) == len(keep) == 15
    for j, i in enumerate(keep):  # same encoded bytes, same labels, same order
        assert cleaned.record(j)[1] == ds.record(i)[1]
        assert cleaned.label(j) == ds.label(i)


def test_clean_refuses_a_head_without_subcenters(run, tmp_path):
    from facemargin.train.clean import subcenter_head_from_checkpoint

    state = load_checkpoint(run / "run" / "checkpoint.pt")
    state["config"]["loss"] = {"name": "arcface", "params": {}}
    state["loss"] = {"weight": torch.zeros(3, 8)}
    with pytest.raises(ValueError, match="one row per class"):
        subcenter_head_from_checkpoint(state, "x.pt")
