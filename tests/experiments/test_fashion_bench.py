"""``run_bench`` on a tiny budget: the results schema, the report, the figures, and no open-set leak."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import facemargin.experiments.fashion as bench
from facemargin.train.config import DEFAULTS
from facemargin.data.fashion import read_idx

from trainutil import write_fashion

LOSSES = ["softmax", "atl", "triplet", "center"]
KEYS = {"loss", "accuracy", "accuracy_std", "auc", "eer", "tar_at_far", "closed_set_accuracy", "train_seconds", "steps"}


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One tiny bench (4 losses, 6 steps, 200 pairs), capturing the evaluator and the training set."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("bench")
    root = write_fashion(tmp / "data", classes=range(10), train_per_class=20, test_per_class=12, seed=5)
    budgets = {k: dict(v, num_pairs=200) for k, v in bench.BUDGETS.items()}
    mp.setattr(bench, "BUDGETS", budgets)
    seen = {"train_sets": [], "evaluators": []}
    real_train_one = bench.train_one

    def spy(name, cfg, train_set, evaluator, out, **kw):
        seen["train_sets"].append(train_set)
        seen["evaluators"].append(evaluator)
        return real_train_one(name, cfg, train_set, evaluator, out, **kw)

    mp.setattr(bench, "train_one", spy)
    try:
        result = bench.run_bench(out=str(tmp / "out"), quick=True, data_root=str(root), losses=LOSSES, steps=6,
                                 figures=True, device="cpu")
    finally:
        mp.undo()
    return {"out": tmp / "out", "root": root, "result": result, **seen}


def test_results_json_schema(bench_run):
    rows = json.loads((bench_run["out"] / "results.json").read_text())
    assert isinstance(rows, list) and [r["loss"] for r in rows] == LOSSES
    for r in rows:
        assert KEYS <= set(r), KEYS - set(r)
        for k in ("accuracy", "auc", "closed_set_accuracy"):
            assert 0.0 <= r[k] <= 1.0
        assert 0.0 <= r["eer"] <= 1.0 and r["accuracy_std"] >= 0.0
        assert r["steps"] == 6 and r["train_seconds"] > 0
        assert isinstance(r["tar_at_far"], dict) and r["tar_at_far"]
        for far, tar in r["tar_at_far"].items():
            assert 0.0 < float(far) < 1.0 and 0.0 <= tar <= 1.0
        assert (bench_run["out"] / "runs" / r["loss"] / "checkpoint.pt").is_file()
    assert rows == bench_run["result"]["rows"]
    # each loss trained what its name says
    assert {r["loss"]: r["config"]["loss"]["name"] for r in rows} == {
        "softmax": "softmax", "atl": "atl", "triplet": "triplet", "center": "softmax"}
    assert next(r for r in rows if r["loss"] == "center")["config"]["aux"]["name"] == "center"


def test_report_has_the_sorted_table_and_the_figures(bench_run):
    out = bench_run["out"]
    text = (out / "report.md").read_text()
    rows = json.loads((out / "results.json").read_text())
    assert "| loss | open-set accuracy |" in text
    table = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| loss")]
    assert sorted(ln.split("|")[1].strip() for ln in table) == sorted(LOSSES)
    accs = [float(ln.split("|")[2]) for ln in table]
    assert accs == sorted(accs, reverse=True)
    for r in rows:
        assert f"| {r['loss']} | {r['accuracy']:.4f} | {r['accuracy_std']:.4f} |" in text
    assert "## What the numbers show" in text
    assert f"SGD {bench.LR}," in text  # the protocol line states the learning rate actually used

    pngs = sorted((out / "figures").glob("*.png"))
    assert pngs, "no figures written"
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figs = bench_run["result"]["figures"]
    assert figs
    for name, rel in figs.items():
        assert f"![{name}]({rel})" in text and (out / rel).is_file()


def test_open_set_evaluation_never_uses_a_training_class(bench_run):
    train_classes = set(DEFAULTS["data"]["train_classes"])
    eval_classes = set(DEFAULTS["data"]["eval_classes"])
    ev = bench_run["evaluators"][0]
    assert all(e is ev for e in bench_run["evaluators"])
    assert set(np.unique(ev.open_labels)) == eval_classes
    assert not set(np.unique(ev.open_labels)) & train_classes
    i1, i2, same = ev.pairs
    assert len(same) == 200 and same.sum() == 100
    assert int(max(i1.max(), i2.max())) < len(ev.open_labels)
    assert np.all((ev.open_labels[i1] == ev.open_labels[i2]) == same)

    # the open-set images are exactly the test images of the eval classes
    te_img = read_idx(bench_run["root"] / "t10k-images-idx3-ubyte.gz")
    te_lab = read_idx(bench_run["root"] / "t10k-labels-idx1-ubyte.gz")
    back = np.round((ev.open_images[:, 0].numpy() * 0.5 + 0.5) * 255).astype(np.uint8)
    assert np.array_equal(back, te_img[np.isin(te_lab, list(eval_classes))])

    # every training image is a training-set image of a training class, and all of them are used
    tr_img = read_idx(bench_run["root"] / "train-images-idx3-ubyte.gz")
    tr_lab = read_idx(bench_run["root"] / "train-labels-idx1-ubyte.gz")
    allowed = {im.tobytes(): int(c) for im, c in zip(tr_img, tr_lab) if int(c) in train_classes}
    for ts in {id(t): t for t in bench_run["train_sets"]}.values():
        imgs = np.round((ts.images[:, 0].numpy() * 0.5 + 0.5) * 255).astype(np.uint8)
        assert len(imgs) == len(allowed) == 20 * len(train_classes)
        assert ts.num_classes == len(train_classes)
        for im, y in zip(imgs, ts.labels.tolist()):
            c = allowed[im.tobytes()]  # KeyError = a test image or an eval-class image was trained on
            assert sorted(train_classes).index(c) == y

    # the leak check itself fires when an evaluation image of a training class slips in
    tampered = copy.copy(ev)
    tampered.open_labels = np.concatenate([ev.open_labels, [0]])
    with pytest.raises(RuntimeError, match="leak"):
        tampered.leak_check()


def test_unknown_bench_loss_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="nosuchloss"):
        bench.run_bench(out=str(tmp_path), losses=["softmax", "nosuchloss"], steps=1)
