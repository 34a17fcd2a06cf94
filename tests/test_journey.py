"""A face researcher's first day, end to end, on a folder of photos with the bad files they also hold.

photos (four "people": scikit-image's astronaut portrait in four colour casts, shifted, one crop
non-square; plus a photo without a face and a text file) -> ``align --detect --skip-bad`` ->
``pack --skip-bad`` (with a corrupt crop) -> ``pack-pairs`` -> ``train`` with no backbone named and
the pack as ``data.val`` -> a second ``train`` on the same folder, refused -> ``--resume`` ->
``eval`` -> ``export`` -> ``embed`` and ``verify`` with the ``.onnx``, whose embeddings match the
checkpoint's.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("skimage")

from facemargin.cli import main  # noqa: E402
from facemargin.data.binpack import load_bin  # noqa: E402
from facemargin.data.recordio import RecordIO  # noqa: E402
from facemargin.train.checkpoint import load_checkpoint  # noqa: E402

CASTS = [(1.0, 1.0, 1.0), (1.15, 0.9, 0.85), (0.85, 0.95, 1.2), (0.9, 1.1, 0.9)]
SHIFTS = [(0, 0), (12, -10), (-8, 14)]


def write_photos(root):
    from PIL import Image
    from skimage import data

    face = data.astronaut()
    for i, cast in enumerate(CASTS):
        (root / f"id{i}").mkdir(parents=True)
        for k, shift in enumerate(SHIFTS):
            img = np.clip(np.roll(face, shift, axis=(0, 1)) * np.array(cast), 0, 255).astype(np.uint8)
            if k == 2:
                img = img[:, 40:480]  # a non-square photo
            Image.fromarray(img).resize((img.shape[1] // 2, img.shape[0] // 2)).save(root / f"id{i}" / f"{k}.jpg")
    Image.fromarray(data.coffee()).save(root / "id0" / "coffee.jpg")  # no face in it
    (root / "id1" / "notes.txt").write_text("not an image")


def test_photos_to_onnx(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_photos(tmp_path / "photos")

    # detect and align; the photo without a face and the text file are logged, not fatal
    assert main(["align", "--images", "photos", "--detect", "--out", "aligned", "--skip-bad", "--quiet"]) == 0
    log = {r["path"]: r["status"] for r in csv.DictReader(open("aligned/detections.log.csv"))}
    assert log == {"id0/coffee.jpg": "no_face", "id1/notes.txt": "not_image"}
    crops = sorted(p.relative_to(tmp_path / "aligned").as_posix() for p in (tmp_path / "aligned").rglob("*.jpg"))
    assert crops == [f"id{i}/{k}.jpg" for i in range(4) for k in range(3)]

    # pack, skipping a corrupt crop
    (tmp_path / "aligned" / "id3" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    assert main(["pack", "aligned", "--out", "rec", "--skip-bad", "--quiet"]) == 0
    skipped = list(csv.DictReader(open("rec/skipped.csv")))
    assert [r["path"].endswith("id3/broken.jpg") for r in skipped] == [True]
    (tmp_path / "aligned" / "id3" / "broken.jpg").unlink()
    rec = RecordIO("rec")
    assert len(rec) == 12 and rec.num_classes == 4

    # a verification pack: genuine and impostor pairs of the crops, interleaved
    lines = []
    for k in range(10):
        a, b = k % 4, (k + 1) % 4
        lines.append(f"aligned/id{a}/0.jpg aligned/id{a}/{1 + k % 2}.jpg 1")
        lines.append(f"aligned/id{a}/2.jpg aligned/id{b}/0.jpg 0")
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    assert main(["pack-pairs", "pairs.txt", "--out", "val.bin", "--quiet"]) == 0
    images, issame = load_bin("val.bin")
    assert images.shape == (40, 112, 112, 3) and issame.sum() == 10

    # train with no backbone named: 112x112 faces get MobileFaceNet; the pack is scored while training
    train = ["train", "--set", "data.name=recordio", "--data", "rec", "--out", "runs/faces",
             "--set", 'data.val=["val.bin"]', "--set", "train.eval_every=2", "--set", "train.batch_size=8",
             "--set", "train.progress=false", "--set", "train.device=cpu", "--set", "loss.name=arcface",
             "--set", "loss.params.s=16.0"]
    assert main([*train, "--steps", "2"]) == 0
    state = load_checkpoint("runs/faces/checkpoint.pt")
    assert state["config"]["model"]["name"] == "mobilefacenet" and state["step"] == 2
    rows = [json.loads(ln) for ln in open("runs/faces/metrics.jsonl")]
    assert [r["step"] for r in rows if "val.val.acc" in r] == [2]
    assert (tmp_path / "runs/faces/best.pt").is_file()

    # a second run on the same folder is refused, and the checkpoint stays as it was
    before = (tmp_path / "runs/faces/checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert main([*train, "--steps", "1"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "runs/faces/checkpoint.pt").read_bytes() == before

    # resume: its own settings, two more steps
    assert main(["train", "--resume", "runs/faces/checkpoint.pt", "--steps", "4"]) == 0
    assert "done: 2 steps in this call (steps 3-4), 4 of 4 in all" in capsys.readouterr().out
    assert load_checkpoint("runs/faces/checkpoint.pt")["step"] == 4

    # evaluate on the pack
    assert main(["eval", "runs/faces/checkpoint.pt", "--pairs", "val.bin", "--json", "eval.json", "--quiet"]) == 0
    assert "warning" not in capsys.readouterr().err  # 20 interleaved pairs: both kinds in every fold
    report = json.loads((tmp_path / "eval.json").read_text())
    assert "val" in json.dumps(report) and "accuracy" in json.dumps(report)

    # export, then embed and verify with the ONNX model: the same embeddings as the checkpoint's
    assert main(["export", "runs/faces/checkpoint.pt", "--out", "model.onnx"]) == 0
    assert main(["embed", "runs/faces/checkpoint.pt", "--images", "aligned", "--out", "ckpt.npy", "--quiet"]) == 0
    assert main(["embed", "model.onnx", "--images", "aligned", "--out", "onnx.npy", "--quiet"]) == 0
    a, b = np.load("ckpt.npy"), np.load("onnx.npy")
    assert a.shape == b.shape == (12, 64)
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.999
    capsys.readouterr()
    assert main(["verify", "model.onnx", "aligned/id0/0.jpg", "aligned/id0/1.jpg"]) == 0
    said_onnx = capsys.readouterr().out
    assert main(["verify", "runs/faces/checkpoint.pt", "aligned/id0/0.jpg", "aligned/id0/1.jpg"]) == 0
    said_ckpt = capsys.readouterr().out
    score = lambda text: float(text.split("cosine similarity:")[1].split()[0])  # noqa: E731
    assert score(said_onnx) == pytest.approx(score(said_ckpt), abs=1e-3)
