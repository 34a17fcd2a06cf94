"""The shipped defaults train: no options, both ATL recipes, every head at its default hyper-parameters.

Each run is a few dozen steps of the default optimizer settings (learning rate, momentum, weight
decay, schedule) on a tiny synthetic Fashion-MNIST-like set; it must end with a finite loss lower
than where it started and no skipped step. The heads run on LeNet++ at a quarter of its channels
(the same layers; the full width is covered by the no-options run) to keep the suite fast.
"""
from __future__ import annotations

import copy
import json
import math

import pytest

from trainutil import write_fashion

from facemargin import losses
from facemargin.cli import main
from facemargin.train.config import DEFAULTS
from facemargin.train.data import build_train_set
from facemargin.train.loop import Trainer

STEPS, BATCH = 30, 16


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_fashion(tmp_path_factory.mktemp("fm_defaults"), train_per_class=16, test_per_class=4)


def _went_down(loss_values, what):
    assert len(loss_values) >= STEPS // 2, f"{what}: only {len(loss_values)} logged losses"
    assert all(math.isfinite(v) for v in loss_values), f"{what}: non-finite loss {loss_values}"
    k = max(len(loss_values) // 5, 1)
    first, last = sum(loss_values[:k]) / k, sum(loss_values[-k:]) / k
    assert last < first, f"{what}: loss did not go down ({first:.4f} -> {last:.4f})"


def _metrics_losses(path):
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    assert not any(r.get("skipped") for r in rows), f"{path}: steps were skipped"
    return [r["loss"] for r in rows if "loss" in r and "event" not in r]


def _cli(root, out, *extra):
    return ["train", "--data", str(root), "--out", str(out), "--steps", str(STEPS), "--set", f"train.batch_size={BATCH}",
            "--set", "train.log_every=1", "--set", "train.progress=false", "--set", "train.device=cpu",
            "--set", "data.num_pairs=40", *extra]


def test_train_with_no_options_trains(root, tmp_path):
    # the default backbone at full width, the default loss and optimizer
    assert main(_cli(root, tmp_path)) == 0
    _went_down(_metrics_losses(tmp_path / "metrics.jsonl"), "facemargin train")


@pytest.mark.parametrize("recipe", ["atl-direct", "atl-step"])
def test_atl_recipes_train(recipe, root, tmp_path):
    assert main(_cli(root, tmp_path, "--recipe", recipe, "--set", "model.params.width=0.25")) == 0
    if recipe == "atl-direct":
        _went_down(_metrics_losses(tmp_path / "metrics.jsonl"), recipe)
    else:  # each stage trains
        for stage in ("stage1", "stage2"):
            _went_down(_metrics_losses(tmp_path / stage / "metrics.jsonl"), f"{recipe} {stage}")


HEADS = [name for name in losses.available() if losses.is_head(name)]


@pytest.mark.parametrize("name", HEADS)
def test_every_head_trains_at_its_defaults(name, root, tmp_path):
    cfg = copy.deepcopy(DEFAULTS)
    cfg["data"].update(root=str(root), num_pairs=40)
    cfg["model"]["params"] = {"width": 0.25}
    cfg["loss"] = {"name": name, "params": {}}  # the head's own defaults
    cfg["train"].update(steps=STEPS, batch_size=BATCH, progress=False, device="cpu", out=str(tmp_path), log_every=1)
    tr = Trainer(cfg, build_train_set(cfg["data"]), log=lambda *a: None)
    tr.fit()
    assert tr.skipped == 0
    _went_down([r["loss"] for r in tr.history if "event" not in r], name)
