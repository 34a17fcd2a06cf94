"""``facemargin train`` / ``eval --pairs fashion`` / ``--help`` through ``facemargin.cli.main``."""
from __future__ import annotations

import json
import tomllib

import pytest
import torch

from facemargin.cli import main
from facemargin.train.checkpoint import load_checkpoint

from trainutil import write_fashion


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_fashion(tmp_path_factory.mktemp("fashion"), classes=range(10), train_per_class=20, test_per_class=12)


def common(root):
    return ["--data", str(root), "--set", "model.params.width=0.25", "--set", "model.embedding_size=8",
            "--set", "train.batch_size=12", "--set", "data.num_pairs=40", "--set", "optim.lr=0.01",
            "--set", "train.device=cpu", "--set", "train.log_every=1", "--set", "train.progress=false"]


def losses_of(run_dir):
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for cmd in ("bench", "train", "eval", "embed", "align", "export", "plot"):
        assert cmd in text, cmd


def test_train_writes_checkpoint_metrics_and_config(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *common(data_root), "--steps", "4", "--out", str(out), "--set", "loss.name=cosface",
                 "--set", "loss.params.s=16.0"]) == 0
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 4
    assert state["config"]["loss"] == {"name": "cosface", "params": {"s": 16.0}}
    assert state["config"]["model"] == {"name": "lenetpp", "embedding_size": 8, "params": {"width": 0.25}}
    assert state["loss"]["weight"].shape == (6, 8)  # six training classes, 8-D
    assert [s for s, _ in losses_of(out)] == [1, 2, 3, 4]
    saved = tomllib.loads((out / "config.toml").read_text())
    assert saved == state["config"]
    # the run ends with an open-set evaluation on the eval classes
    assert "[train] evaluation: accuracy=" in capsys.readouterr().out
    evals = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in ln]
    assert len(evals) == 1 and 0.0 <= evals[0]["accuracy"] <= 1.0


def test_print_config_and_recipe_atl_direct(data_root, tmp_path, capsys):
    assert main(["train", *common(data_root), "--out", str(tmp_path / "x"), "--recipe", "atl-direct",
                 "--print-config"]) == 0
    cfg = tomllib.loads(capsys.readouterr().out)
    assert cfg["loss"] == {"name": "atl", "params": {"m": 2, "lambda_min": 3, "triplet": True, "semihard": True}}
    assert cfg["model"]["params"] == {"width": 0.25} and cfg["train"]["out"] == str(tmp_path / "x")
    assert not (tmp_path / "x").exists()  # --print-config trains nothing
    # a given margin wins over the small-set default; the switches are forced on
    assert main(["train", "--set", "loss.name=sphereface", "--set", "loss.params.m=4", "--recipe", "atl-direct",
                 "--print-config"]) == 0
    cfg = tomllib.loads(capsys.readouterr().out)
    assert cfg["loss"]["params"] == {"m": 4, "lambda_min": 3, "triplet": True, "semihard": True}


def test_recipe_atl_direct_trains(data_root, tmp_path):
    out = tmp_path / "direct"
    assert main(["train", *common(data_root), "--steps", "3", "--out", str(out), "--recipe", "atl-direct"]) == 0
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["config"]["loss"]["params"]["triplet"] is True
    assert int(state["loss"]["schedule.iteration"]) == 3


def test_recipe_atl_step_continues_the_lambda_counter(data_root, tmp_path):
    out = tmp_path / "step"
    assert main(["train", *common(data_root), "--steps", "6", "--out", str(out), "--recipe", "atl-step"]) == 0
    s1 = load_checkpoint(out / "stage1" / "checkpoint.pt")
    s2 = load_checkpoint(out / "stage2" / "checkpoint.pt")
    p1, p2 = s1["config"]["loss"]["params"], s2["config"]["loss"]["params"]
    assert s1["config"]["loss"]["name"] == s2["config"]["loss"]["name"] == "atl"
    assert (p1["triplet"], p1["semihard"], p2["triplet"], p2["semihard"]) == (False, False, True, True)
    assert p1["m"] == p2["m"] == 2 and p1["lambda_min"] == p2["lambda_min"] == 3
    assert s1["step"] == 3 and s2["step"] == 3
    assert int(s1["loss"]["schedule.iteration"]) == 3
    assert int(s2["loss"]["schedule.iteration"]) == 6  # stage 2 continued stage 1's λ counter
    lam = [json.loads(ln).get("lambda") for ln in (out / "stage2" / "metrics.jsonl").read_text().splitlines()]
    lam = [v for v in lam if v is not None]
    assert lam[0] == pytest.approx(max(3.0, 1000.0 / (1 + 0.12 * 4)))  # iteration 4 = first step of stage 2
    # stage 2 starts from stage 1's backbone: its first loss is not the loss of a fresh network
    fresh = tmp_path / "fresh"
    assert main(["train", *common(data_root), "--steps", "1", "--out", str(fresh), "--recipe", "atl-direct"]) == 0
    assert losses_of(out / "stage2")[0] != losses_of(fresh)[0]


def test_resume_from_the_cli_matches_a_straight_run(data_root, tmp_path):
    const = ["--set", "optim.schedule=constant", "--set", "data.flip=true"]
    straight, part = tmp_path / "straight", tmp_path / "part"
    assert main(["train", *common(data_root), *const, "--steps", "8", "--out", str(straight)]) == 0
    assert main(["train", *common(data_root), *const, "--steps", "4", "--out", str(part)]) == 0
    assert main(["train", *common(data_root), *const, "--steps", "8", "--out", str(part),
                 "--resume", str(part / "checkpoint.pt")]) == 0
    assert losses_of(part) == losses_of(straight)
    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(part / "checkpoint.pt")
    assert b["step"] == 8
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_train_errors_name_the_problem(data_root, tmp_path, capsys):
    assert main(["train", "--set", "optim.lrr=1", "--print-config"]) == 2
    assert "optim.lrr" in capsys.readouterr().err
    ck = tmp_path / "c.pt"
    assert main(["train", *common(data_root), "--resume", str(ck), "--init-from", str(ck)]) == 2
    assert "exclusive" in capsys.readouterr().err
    assert main(["train", *common(data_root), "--steps", "2", "--out", str(tmp_path / "r"),
                 "--resume", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nodata"), "--steps", "1", "--out", str(tmp_path / "r2")]) == 2
    assert "nodata" in capsys.readouterr().err


def test_eval_fashion_pairs(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *common(data_root), "--steps", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    js = tmp_path / "eval.json"
    assert main(["eval", str(out / "checkpoint.pt"), "--pairs", "fashion", "--json", str(js)]) == 0
    assert "fashion-openset: accuracy" in capsys.readouterr().out
    res = json.loads(js.read_text())
    assert res["checkpoint"] == str(out / "checkpoint.pt") and res["flip"] is False
    r = res["sets"]["fashion-openset"]
    assert r["pairs"] == 40
    assert {"accuracy", "accuracy_std", "threshold", "auc", "eer", "tar_at_far"} <= set(r)
    # the same open-set accuracy as the evaluation the training run logged at its end
    logged = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in ln][-1]
    assert r["accuracy"] == pytest.approx(logged["accuracy"]) and r["auc"] == pytest.approx(logged["auc"])
