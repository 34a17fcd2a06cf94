"""The training loop's options: optimiser groups, joint losses, logging, λ, bf16, evaluation, errors."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from facemargin.train.data import build_train_set
from facemargin.train.loop import Trainer, build_loss
from facemargin.train.schedule import lr_factor

from trainutil import tiny_config, write_fashion


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_fashion(tmp_path_factory.mktemp("fashion"), classes=range(10), train_per_class=10, test_per_class=6)


def make(cfg, **kw):
    return Trainer(cfg, build_train_set(cfg["data"]), log=lambda *a: None, **kw)


def test_optimizer_groups_and_lr_follow_the_config(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path, steps=4, loss={"name": "softmax"},
                      optim={"lr": 0.05, "weight_decay": 1e-3, "head_lr_mult": 10.0, "head_weight_decay": 0.0,
                             "schedule": "cosine", "warmup_steps": 2})
    tr = make(cfg)
    groups = {g["name"]: g for g in tr.optimizer.param_groups}
    assert set(groups) == {"backbone", "loss.weight", "loss.other"}
    assert groups["backbone"]["weight_decay"] == 1e-3
    assert groups["loss.weight"]["weight_decay"] == 0.0 and groups["loss.other"]["weight_decay"] == 0.0
    assert groups["loss.weight"]["params"][0] is tr.loss.weight and groups["loss.other"]["params"][0] is tr.loss.bias
    n_backbone = sum(p.numel() for p in tr.model.parameters())
    assert sum(p.numel() for p in groups["backbone"]["params"]) == n_backbone
    tr.fit()
    want = [0.05 * lr_factor(cfg["optim"], k, 4) for k in range(4)]
    assert [r["lr"] for r in tr.history] == pytest.approx(want)
    assert groups["loss.weight"]["lr"] == pytest.approx(10 * want[-1])


def test_head_weight_decay_defaults_to_weight_decay(data_root, tmp_path):
    tr = make(tiny_config(data_root, tmp_path, optim={"weight_decay": 2e-4}))
    groups = {g["name"]: g for g in tr.optimizer.param_groups}
    assert groups["loss.weight"]["weight_decay"] == 2e-4 and groups["loss.weight"]["lr_mult"] == 1.0


@pytest.mark.parametrize("aux", ["center", "contrastive"])
def test_joint_loss_is_main_plus_weighted_aux(aux, data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path, steps=3, aux={"name": aux, "weight": 0.25, "params": {}})
    tr = make(cfg)
    tr.fit()
    for r in tr.history:
        assert r["loss"] == pytest.approx(r["main_loss"] + 0.25 * r["aux_loss"], rel=1e-6)
        assert r["aux_loss"] > 0
    if aux == "center":  # centers are moved by their own rule, not by SGD
        assert all(p is not tr.aux.centers for g in tr.optimizer.param_groups for p in g["params"])
        assert tr.aux.centers.abs().sum() > 0


def test_log_every_averages_the_steps(data_root, tmp_path):
    a = make(tiny_config(data_root, tmp_path / "a", steps=4))
    a.fit()
    b = make(tiny_config(data_root, tmp_path / "b", steps=4, train={"log_every": 2}))
    b.fit()
    la = [r["loss"] for r in a.history]
    assert [r["step"] for r in b.history] == [2, 4]
    assert [r["loss"] for r in b.history] == pytest.approx([(la[0] + la[1]) / 2, (la[2] + la[3]) / 2])
    rows = [json.loads(ln) for ln in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all(r["img_per_s"] > 0 for r in rows)


def test_sphereface_lambda_per_step(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path, steps=4, loss={"name": "sphereface", "params": {"m": 2, "lambda_min": 5}})
    tr = make(cfg)
    tr.fit()
    # the counter is incremented before the forward: step k uses iteration k
    assert [r["lambda"] for r in tr.history] == pytest.approx([max(5, 1000 / (1 + 0.12 * k)) for k in range(1, 5)])
    assert {"train_acc", "easy", "semihard", "hard"} <= set(tr.history[0])
    for r in tr.history:
        assert r["easy"] + r["semihard"] + r["hard"] == pytest.approx(1.0)


def test_atl_triplet_rows_are_the_last_samples(data_root, tmp_path):
    """triplet=True, replace_prob=1: after a step, each class row of the batch is its last sample's embedding."""
    cfg = tiny_config(data_root, tmp_path, steps=3, loss={"name": "atl", "params": {
        "m": 2, "triplet": True, "semihard": True, "replace_prob": 1.0}})
    tr = make(cfg)
    tr.train_step()
    before = copy.deepcopy(tr.model)
    x, y = tr.train_set.get_batch(tr.order(tr.step))
    rows_before = tr.loss.weight.detach().clone()
    tr.train_step()
    with torch.no_grad():
        emb = before(x)
    w = tr.loss.weight.detach()
    assert tr.loss.weight.grad is None or not tr.loss.weight.grad.any()  # no SGD on the class rows
    for c in range(tr.num_classes):
        hits = torch.nonzero(y == c).flatten()
        if len(hits):  # written over by the class's last sample (neither decayed nor moved by momentum)
            torch.testing.assert_close(w[c], emb[int(hits[-1])], rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(w[c], rows_before[c])


def test_bf16_autocast_runs(data_root, tmp_path):
    tr = make(tiny_config(data_root, tmp_path, steps=2, train={"bf16": True}))
    tr.fit()
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in tr.history)
    assert all(p.dtype == torch.float32 for p in tr.model.parameters())


def test_evaluation_during_training(data_root, tmp_path):
    calls = []

    def evaluate(model):
        calls.append(model.training)
        return {"accuracy": 0.5 + 0.1 * len(calls), "note": "not a number"}

    tr = make(tiny_config(data_root, tmp_path, steps=5, train={"eval_every": 2}), evaluate=evaluate)
    result = tr.fit()
    assert calls == [False, False, False]  # at steps 2, 4 and the end, in eval mode
    assert result["accuracy"] == pytest.approx(0.8)
    evals = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"eval"' in ln]
    assert [e["step"] for e in evals] == [2, 4, 5] and "note" not in evals[0]


def test_divergence_is_a_clear_error(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path, steps=5, train={"max_consecutive_skips": 3})
    tr = make(cfg)
    with torch.no_grad():
        tr.model.fc.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="step 3: 3 consecutive steps skipped.*embeddings.*optim.lr"):
        tr.fit()
    assert tr.skipped == 3 and not (tmp_path / "checkpoint.pt").exists()


def test_bad_settings_are_named(data_root, tmp_path):
    with pytest.raises(ValueError, match="train.steps"):
        make(tiny_config(data_root, tmp_path, steps=0))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            make(tiny_config(data_root, tmp_path, train={"device": "cuda"}))
    with pytest.raises(ValueError, match="'arcface'.*bad parameters"):
        build_loss({"name": "arcface", "params": {"margin_typo": 1}}, 8, 6)
    with pytest.raises(ValueError, match="overlap"):
        build_train_set({**tiny_config(data_root, tmp_path)["data"], "eval_classes": [5, 6]})
    with pytest.raises(ValueError, match="data.name"):
        build_train_set({**tiny_config(data_root, tmp_path)["data"], "name": "imagenet"})
    with pytest.raises(ValueError, match="data.root"):
        build_train_set({**tiny_config(data_root, tmp_path)["data"], "name": "recordio", "root": ""})


def test_resume_into_another_model_names_the_checkpoint(data_root, tmp_path):
    a = make(tiny_config(data_root, tmp_path / "a", steps=1))
    a.fit()
    ck = tmp_path / "a" / "checkpoint.pt"
    other = make(tiny_config(data_root, tmp_path / "b", loss={"name": "arcface", "params": {"s": 16.0}},
                             model={"embedding_size": 4}))
    with pytest.raises(ValueError, match="checkpoint.pt.*does not match"):
        other.resume(ck)
    with pytest.raises(ValueError, match="checkpoint.pt"):
        other.init_from(ck)
    # same backbone, head with another class count: init_from says so
    c = make(tiny_config(data_root, tmp_path / "c", data={"train_classes": [0, 1, 2]}))
    with pytest.raises(ValueError, match="checkpoint.pt.*3 classes"):
        c.init_from(ck)
    # same backbone, softmax -> arcface: the backbone and the class weights carry over, bias is dropped
    d = make(tiny_config(data_root, tmp_path / "d", loss={"name": "arcface", "params": {"s": 16.0}}))
    d.init_from(ck)
    assert torch.equal(d.loss.weight.detach(), a.loss.weight.detach())
    assert d.step == 0
