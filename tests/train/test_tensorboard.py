"""train.tensorboard: event files mirroring metrics.jsonl, read back with the tensorboard package."""
import json

import numpy as np
import pytest
import torch

from facemargin.train.config import load_config
from facemargin.train.data import InMemorySet
from facemargin.train.loop import Trainer


def _run(tmp_path, tensorboard, steps=4):
    cfg = load_config(overrides=[f"train.out={tmp_path}", f"train.steps={steps}", "train.batch_size=16",
                                 "train.log_every=2", "train.eval_every=2", "train.device=cpu", "train.progress=false",
                                 f"train.tensorboard={'true' if tensorboard else 'false'}", "model.embedding_size=8",
                                 "loss.name=sphereface", "optim.lr=0.01"])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 28, 28, generator=g)
    y = torch.arange(64) % 4
    trainer = Trainer(cfg, InMemorySet(x, y, 4), evaluate=lambda model: {"accuracy": 0.75, "auc": 0.5})
    trainer.fit()
    trainer.close()
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def test_events_mirror_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = _run(tmp_path, tensorboard=True)
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    train_rows = [r for r in rows if "event" not in r]
    assert [r["step"] for r in train_rows] == [2, 4]
    for key in ("loss", "lr", "lambda", "train_acc", "easy", "semihard", "hard"):
        events = acc.Scalars(f"train/{key}")
        assert [e.step for e in events] == [2, 4]
        np.testing.assert_allclose([e.value for e in events], [r[key] for r in train_rows], rtol=1e-6)
    evals = acc.Scalars("eval/accuracy")
    assert [(e.step, e.value) for e in evals] == [(2, 0.75), (4, 0.75)]
    assert "train/embedding_norm" in tags["histograms"]
    hist = acc.Histograms("train/embedding_norm")
    assert [h.step for h in hist] == [2, 4] and hist[-1].histogram_value.num == 16
    assert hist[-1].histogram_value.min > 0


def test_off_by_default_and_clear_when_missing(tmp_path, monkeypatch):
    _run(tmp_path / "plain", tensorboard=False, steps=2)
    assert not (tmp_path / "plain" / "tensorboard").exists()
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ValueError, match=r"facemargin\[tb\]"):
        _run(tmp_path / "tb", tensorboard=True, steps=2)


def test_resumed_run_curves_match_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def config(out, steps, tb):
        return load_config(overrides=[f"train.out={out}", f"train.steps={steps}", "train.batch_size=16",
                                      "train.log_every=1", "train.device=cpu", "train.progress=false",
                                      f"train.tensorboard={tb}", "model.embedding_size=8", "optim.lr=0.01"])

    g = torch.Generator().manual_seed(0)
    data = InMemorySet(torch.randn(64, 1, 28, 28, generator=g), torch.arange(64) % 4, 4)
    first = Trainer(config(tmp_path, 4, "true"), data)   # an interrupted run that got to step 4
    first.fit()
    first.close()
    early = Trainer(config(tmp_path / "early", 2, "false"), data)   # the same run's step-2 checkpoint
    early.fit()
    resumed = Trainer(config(tmp_path, 4, "true"), data)
    resumed.resume(tmp_path / "early" / "checkpoint.pt")   # metrics.jsonl is cut back to step 2
    resumed.fit()
    resumed.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    events = acc.Scalars("train/loss")
    assert [e.step for e in events] == [1, 2, 3, 4]   # steps 3 and 4 of the first run are gone, not doubled
    np.testing.assert_allclose([e.value for e in events], [r["loss"] for r in rows], rtol=1e-6)
