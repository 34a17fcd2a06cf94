"""Exact resume: a run killed after a checkpoint and resumed equals the uninterrupted run."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from facemargin.train.checkpoint import FORMAT, load_checkpoint
from facemargin.train.data import build_train_set
from facemargin.train.loop import Trainer

from trainutil import tiny_config, write_fashion

K = 6  # steps before the interruption; the runs go to 2K (120 images / batch 12: crosses an epoch)

CASES = {
    "softmax": {},
    "sphereface": {"loss": {"name": "sphereface", "params": {"m": 2, "lambda_min": 3}}},
    "center": {"aux": {"name": "center", "weight": 0.1, "params": {"alpha": 0.5}}},
    "atl": {"loss": {"name": "atl", "params": {"m": 2, "lambda_min": 3, "triplet": True, "semihard": True,
                                                "replace_prob": 0.5}}},
    "flip": {"data": {"flip": True}},
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_fashion(tmp_path_factory.mktemp("fashion"), classes=range(10), train_per_class=20, test_per_class=4)


class Killed(Exception):
    pass


def _state(trainer):
    """Everything that must agree between runs: backbone, loss and aux states."""
    out = {f"model.{k}": v.clone() for k, v in trainer.model.state_dict().items()}
    out.update({f"loss.{k}": v.clone() for k, v in trainer.loss.state_dict().items()})
    if trainer.aux is not None:
        out.update({f"aux.{k}": v.clone() for k, v in trainer.aux.state_dict().items()})
    return out


def _losses(rows):
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def _straight(cfg):
    tr = Trainer(cfg, build_train_set(cfg["data"]), log=lambda *a: None)
    tr.fit()
    return tr


def _killed_then_resumed(cfg, tmp_path):
    """Run with checkpoint_every=K, die right after the step-K checkpoint, resume in a new Trainer."""
    cfg = {**cfg, "train": {**cfg["train"], "checkpoint_every": K}}
    tr = Trainer(cfg, build_train_set(cfg["data"]), log=lambda *a: None)
    real_step = tr.train_step

    def step_or_die():
        if tr.step == K:
            raise Killed()
        return real_step()

    tr.train_step = step_or_die
    with pytest.raises(Killed):
        tr.fit()
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    assert load_checkpoint(ckpt)["step"] == K
    before = tr.history
    # something else ran in between and used the global RNG
    torch.manual_seed(12345)
    torch.rand(100)
    tr2 = Trainer(cfg, build_train_set(cfg["data"]), log=lambda *a: None)
    tr2.resume(ckpt)
    assert tr2.step == K
    tr2.fit()
    return before, tr2


@pytest.mark.parametrize("case", sorted(CASES))
def test_resume_equals_uninterrupted_run(case, data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path / "straight", steps=2 * K, **CASES[case])
    a = _straight(cfg)
    cfg_b = tiny_config(data_root, tmp_path / "killed", steps=2 * K, **CASES[case])
    before, b = _killed_then_resumed(cfg_b, tmp_path)

    la = _losses(a.history)
    assert [s for s, _ in la] == list(range(1, 2 * K + 1))
    assert len(set(v for _, v in la)) > 1  # it trains: the losses move
    assert _losses(before) == la[:K]
    assert _losses(b.history) == la[K:]  # bit-identical on one CPU thread
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k

    # the metrics file of the resumed run holds each step once, with the straight run's values
    rows = [json.loads(ln) for ln in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(ln) for ln in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [r["step"] for r in ref] == list(range(1, 2 * K + 1))
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref]

    if case == "sphereface":
        assert int(b.loss.iteration) == 2 * K  # one count per training forward, across the resume
        assert float(b.loss.lambda_) == float(a.loss.lambda_)
        assert [r["lambda"] for r in b.history] == [r["lambda"] for r in a.history[K:]]
    if case == "center":
        assert not torch.equal(b.aux.centers, torch.zeros_like(b.aux.centers))
    if case == "atl":
        assert b.loss.weight.grad is None or not b.loss.weight.grad.any()


@pytest.mark.parametrize("case", ["flip", "atl"])
def test_resume_without_rng_state_would_differ(case, data_root, tmp_path):
    """Negative control: these cases depend on the RNG, so restoring it is what the test above checks."""
    cfg = tiny_config(data_root, tmp_path / "a", steps=2 * K, **CASES[case])
    a = _straight(cfg)
    cfg_b = tiny_config(data_root, tmp_path / "b", steps=K, **CASES[case])
    first = Trainer(cfg_b, build_train_set(cfg_b["data"]), log=lambda *a: None)
    first.fit()
    cfg_c = tiny_config(data_root, tmp_path / "c", steps=2 * K, **CASES[case])
    tr = Trainer(cfg_c, build_train_set(cfg_c["data"]), log=lambda *a: None)
    tr.resume(tmp_path / "b" / "checkpoint.pt")
    torch.manual_seed(777)  # a wrong RNG state after the resume
    tr.fit()
    assert _losses(tr.history) != _losses(a.history)[K:]


def test_resume_from_final_checkpoint_of_shorter_run(data_root, tmp_path):
    """The checkpoint fit() writes at its end continues a longer run (absolute milestones: same lr)."""
    over = {"optim": {"milestones": [8], "gamma": 0.5}}
    a = _straight(tiny_config(data_root, tmp_path / "a", steps=10, **over))
    first = _straight(tiny_config(data_root, tmp_path / "b", steps=4, **over))
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 4
    cfg = tiny_config(data_root, tmp_path / "c", steps=10, **over)
    tr = Trainer(cfg, build_train_set(cfg["data"]), log=lambda *a: None)
    tr.resume(tmp_path / "b" / "checkpoint.pt")
    tr.fit()
    assert _losses(first.history) + _losses(tr.history) == _losses(a.history)
    assert [r["lr"] for r in tr.history] == [0.01] * 4 + [0.005] * 2  # 0-based steps 4..9, milestone at 8
    for k, v in _state(a).items():
        assert torch.equal(v, _state(tr)[k]), k


def test_checkpoint_every_writes_intermediate_checkpoints(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path / "run", steps=6, train={"checkpoint_every": 2})
    tr = Trainer(cfg, build_train_set(cfg["data"]), log=lambda *a: None)
    seen = []
    real_save = tr.save

    def save(path=None):
        p = real_save(path)
        state = load_checkpoint(p)
        seen.append(state["step"])
        shutil.copy(p, tmp_path / f"copy{state['step']}.pt")
        return p

    tr.save = save
    tr.fit()
    assert seen == [2, 4, 6]
    # each intermediate one holds that step's weights: they differ from each other
    w = [load_checkpoint(tmp_path / f"copy{s}.pt")["model"]["fc.weight"] for s in seen]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    assert torch.equal(w[2], tr.model.fc.weight.detach())
    # nothing but the checkpoint, metrics (and no temporary files) is left in the run folder
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.pt", "metrics.jsonl"]


def test_checkpoint_write_is_atomic(data_root, tmp_path, monkeypatch):
    """A crash while writing a checkpoint leaves the previous one intact and no partial file."""
    cfg = tiny_config(data_root, tmp_path / "run", steps=2)
    tr = _straight(cfg)
    path = tmp_path / "run" / "checkpoint.pt"
    good = path.read_bytes()
    real_save = torch.save

    def crashing_save(obj, f, *a, **kw):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        tr.save()
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == good
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt", "metrics.jsonl"]


def test_checkpoint_loads_with_weights_only(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path / "run", steps=2, loss={"name": "sphereface", "params": {"m": 2}},
                      aux={"name": "center", "weight": 0.1, "params": {}})
    tr = _straight(cfg)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["format"] == FORMAT and state["step"] == 2
    assert state["config"] == cfg
    assert int(state["loss"]["schedule.iteration"]) == 2  # the λ counter travels in the checkpoint
    assert torch.equal(state["aux"]["centers"], tr.aux.centers)
    assert set(state["model"]) == set(tr.model.state_dict())
    assert isinstance(state["rng"]["torch"], torch.Tensor)


def test_corrupted_checkpoint_is_a_value_error_naming_the_file(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path / "run", steps=1)
    _straight(cfg)
    path = tmp_path / "run" / "checkpoint.pt"
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.pt"):
        load_checkpoint(bad)
    tr = Trainer(cfg, build_train_set(cfg["data"]), log=lambda *a: None)
    with pytest.raises(ValueError, match="truncated.pt"):
        tr.resume(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="other.pt.*not a facemargin checkpoint"):
        load_checkpoint(other)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
