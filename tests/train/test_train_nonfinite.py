"""Non-finite values never corrupt a run: the step is skipped, counted and logged; checkpoints stay finite."""
from __future__ import annotations

import json

import pytest
import torch

from facemargin.train.data import build_train_set
from facemargin.train.loop import Trainer

from trainutil import tiny_config, write_fashion


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_fashion(tmp_path_factory.mktemp("fashion_nan"), classes=range(10), train_per_class=8, test_per_class=4)


def make(cfg, logs):
    return Trainer(cfg, build_train_set(cfg["data"]), log=logs.append)


def state(tr):
    """Everything a step may change: weights, buffers (centres), momentum."""
    out = {f"model.{k}": v.clone() for k, v in tr.model.state_dict().items()}
    out.update({f"loss.{k}": v.clone() for k, v in tr.loss.state_dict().items() if k != "schedule.iteration"})
    if tr.aux is not None:
        out.update({f"aux.{k}": v.clone() for k, v in tr.aux.state_dict().items()})
    for i, opt in enumerate(tr.optimizers):
        for j, st in enumerate(opt.state.values()):
            out.update({f"opt{i}.{j}.{k}": v.clone() for k, v in st.items() if torch.is_tensor(v)})
    return out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("fault, cause", [
    ("input", "input batch holds NaN"),
    ("loss", "loss is non-finite"),
    ("gradients", "gradients are non-finite"),
])
def test_a_nonfinite_step_is_skipped_counted_and_logged(fault, cause, data_root, tmp_path):
    # a center loss beside the head: its centres move in the backward pass and must be put back
    cfg = tiny_config(data_root, tmp_path, steps=4, aux={"name": "center", "weight": 0.01})
    logs = []
    tr = make(cfg, logs)
    tr.train_step()  # a good step first, so that momentum buffers exist
    before = state(tr)
    if fault == "input":
        idx = tr.order(tr.step)
        saved = tr.train_set.images[idx].clone()
        tr.train_set.images[idx] = float("nan")

        def undo():
            tr.train_set.images[idx] = saved
    elif fault == "loss":
        forward = tr.loss.forward
        tr.loss.forward = lambda x, y: forward(x, y) * float("inf")

        def undo():
            del tr.loss.forward
    else:
        hook = tr.model.fc.weight.register_hook(lambda g: g * float("inf"))
        undo = hook.remove
    row = tr.train_step()
    undo()
    assert row["skipped"] and tr.step == 2 and tr.skipped == 1 and tr.skipped_in_a_row == 1
    assert_same(before, state(tr))  # nothing moved: weights, centres, momentum
    assert len(logs) == 1 and "step 2" in logs[0] and cause in logs[0], logs
    tr.fit()  # the run goes on; its good steps reset the consecutive count
    assert tr.step == 4 and tr.skipped == 1 and tr.skipped_in_a_row == 0
    rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r.get("skipped", 0)) for r in rows] == [(3, 0), (4, 0)]  # train_step alone logs no row
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_skipped_steps_are_in_the_metrics(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path, steps=4, train={"log_every": 2})
    tr = make(cfg, [])
    hook = tr.model.fc.weight.register_hook(lambda g: g * float("nan") if tr.step == 2 else g)
    tr.fit()
    hook.remove()
    rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r.get("skipped", 0)) for r in rows] == [(2, 0), (4, 1)]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)  # the average of the good steps only


def test_too_many_skips_in_a_row_stop_the_run_and_keep_the_last_checkpoint(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path, steps=8, train={"checkpoint_every": 2, "max_consecutive_skips": 2})
    tr = make(cfg, [])
    hook = tr.model.fc.weight.register_hook(lambda g: g * float("inf") if tr.step >= 3 else g)
    with pytest.raises(FloatingPointError, match=r"step 5: 2 consecutive steps skipped.*gradients.*"
                                                 r"last good checkpoint .*checkpoint.pt is kept"):
        tr.fit()
    hook.remove()
    # step 4 was skipped: its checkpoint holds the (finite) weights of step 3; step 5 stopped the run
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 4
    assert all(torch.equal(ckpt["model"][k], v) for k, v in tr.model.state_dict().items())
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_a_checkpoint_is_never_written_with_nan(data_root, tmp_path):
    tr = make(tiny_config(data_root, tmp_path, steps=2), [])
    tr.fit()
    good = (tmp_path / "checkpoint.pt").read_bytes()
    with torch.no_grad():
        tr.loss.weight[1, 0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"step 2: checkpoint .* not written: non-finite values in loss.weight"):
        tr.save()
    assert (tmp_path / "checkpoint.pt").read_bytes() == good
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []
