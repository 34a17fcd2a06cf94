"""Runs are never lost, resume is honest, the backbone follows the data, packs are scored while
training (``facemargin train`` through ``facemargin.cli.main``)."""
from __future__ import annotations

import json

import pytest

from facemargin.cli import main
from facemargin.models import build as build_backbone
from facemargin.train.checkpoint import load_checkpoint
from facemargin.train.data import check_backbone_fits, choose_backbone

from trainutil import write_fashion, write_val_pack


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_fashion(tmp_path_factory.mktemp("fashion"), classes=range(10), train_per_class=20, test_per_class=12)


@pytest.fixture(scope="module")
def val_pack(tmp_path_factory):
    return write_val_pack(tmp_path_factory.mktemp("packs") / "unseen.bin", seed=5)


def common(root):
    return ["--data", str(root), "--set", "model.params.width=0.25", "--set", "model.embedding_size=8",
            "--set", "train.batch_size=12", "--set", "data.num_pairs=40", "--set", "optim.lr=0.01",
            "--set", "train.device=cpu", "--set", "train.log_every=1", "--set", "train.progress=false"]


def rows(run_dir, drop=("img_per_s",)):
    out = []
    for ln in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(ln)
        out.append({k: v for k, v in r.items() if k not in drop})
    return out


def test_a_finished_run_is_refused_and_overwrite_says_what_it_replaces(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *common(data_root), "--steps", "4", "--out", str(out)]) == 0
    before = {n: (out / n).read_bytes() for n in ("checkpoint.pt", "metrics.jsonl", "config.toml")}
    capsys.readouterr()
    assert main(["train", *common(data_root), "--steps", "2", "--out", str(out), "--set", "loss.name=cosface"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert f"{out} already holds a run (checkpoint.pt (step 4), metrics.jsonl (" in err
    assert f"--resume {out / 'checkpoint.pt'}" in err and "--overwrite" in err
    assert {n: (out / n).read_bytes() for n in before} == before  # nothing touched
    assert main(["train", *common(data_root), "--steps", "2", "--out", str(out), "--overwrite"]) == 0
    said = capsys.readouterr().out
    assert f"--overwrite: the run in {out} will be replaced: checkpoint.pt (step 4)" in said
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2
    assert [r["step"] for r in rows(out) if "loss" in r] == [1, 2]  # the old rows are gone


def test_a_failed_start_writes_nothing(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *common(data_root), "--steps", "2", "--out", str(out)]) == 0
    before = {n: (out / n).read_bytes() for n in ("checkpoint.pt", "metrics.jsonl", "config.toml")}
    # resuming on data of another class count fails after the data loaded: config.toml is kept
    assert main(["train", "--resume", str(out / "checkpoint.pt"), "--steps", "4",
                 "--set", "data.train_classes=[0,1,2]", "--set", "data.eval_classes=[6,7]"]) == 2
    err = capsys.readouterr().err
    assert "was trained on 6 classes but this data" in err and "has 3" in err
    assert {n: (out / n).read_bytes() for n in before} == before


def test_resume_takes_the_runs_config_and_matches_an_uninterrupted_run(data_root, tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    arc = ["--set", "loss.name=arcface", "--set", "loss.params.s=16.0", "--set", "optim.schedule=constant"]
    assert main(["train", *common(data_root), "--steps", "6", "--out", str(full), *arc]) == 0
    assert main(["train", *common(data_root), "--steps", "3", "--out", str(part), *arc]) == 0
    with open(part / "metrics.jsonl", "a") as f:  # rows a killed longer run left past the checkpoint
        f.write(json.dumps({"step": 4, "loss": 99.0}) + "\n")
    capsys.readouterr()
    # --resume alone: the loss, model and data come from the checkpoint; the run goes on in its folder
    assert main(["train", "--resume", str(part / "checkpoint.pt"), "--steps", "6"]) == 0
    said = capsys.readouterr().out
    assert "done: 3 steps in this call (steps 4-6), 6 of 6 in all" in said
    state = load_checkpoint(part / "checkpoint.pt")
    assert state["step"] == 6 and state["config"]["loss"] == {"name": "arcface", "params": {"s": 16.0}}
    got = [r for r in rows(part) if "loss" in r]
    want = [r for r in rows(full) if "loss" in r]
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]  # the stale row of step 4 was cut
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for k in g:
            assert g[k] == pytest.approx(w[k], rel=1e-5, abs=1e-6), (g["step"], k)
    assert [r["step"] for r in rows(part) if r.get("event") == "eval"] == [3, 6]


def test_resume_refuses_a_changed_loss_in_one_line(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *common(data_root), "--steps", "2", "--out", str(out), "--set", "loss.name=arcface"]) == 0
    capsys.readouterr()
    rc = main(["train", "--resume", str(out / "checkpoint.pt"), "--steps", "4", "--set", "loss.name=cosface",
               "--set", "model.embedding_size=16"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0
    assert "loss.name ('arcface' -> 'cosface')" in err and "model.embedding_size (8 -> 16)" in err
    # steps, schedule and logging may change
    assert main(["train", "--resume", str(out / "checkpoint.pt"), "--steps", "3", "--set", "train.log_every=2",
                 "--set", "optim.schedule=cosine"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 3


def test_bad_loss_settings_fail_before_the_data_loads(tmp_path, capsys):
    missing = tmp_path / "no-such-data"
    for setting, words in (("loss.params.m=abc", ["loss.params", "m", "abc"]),
                           ("loss.params.s=-5", ["loss.params", "s", "-5"]),
                           ("loss.params.mm=1", ["loss.params", "mm"])):
        for extra in ([], ["--print-config"]):
            rc = main(["train", "--data", str(missing), "--set", "loss.name=arcface", "--set", setting, *extra])
            err = capsys.readouterr().err
            assert rc == 2, setting
            assert all(w in err for w in words), err
            assert "no-such-data" not in err  # the data was never read
    assert main(["train", "--set", "loss.name=arcface", "--set", "loss.params.m=7"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["train", "--set", "model.name=lenetpp", "--set", "model.params.widht=1"]) == 2
    assert "model.params" in capsys.readouterr().err


def test_the_backbone_follows_the_data():
    assert choose_backbone("auto", (1, 28, 28)) == ("lenetpp", {})
    assert choose_backbone("auto", (3, 112, 112)) == ("mobilefacenet", {})
    assert choose_backbone("auto", (3, 32, 32)) == ("smallcnn", {})
    assert choose_backbone("auto", (1, 64, 64), {"image_size": 64}) == ("smallcnn", {"image_size": 64, "in_channels": 1})
    assert choose_backbone("auto", (3, 28, 28), {"width": 0.5}) == ("lenetpp", {"width": 0.5, "in_channels": 3})
    assert choose_backbone("iresnet50", (3, 112, 112)) == ("iresnet50", {})
    with pytest.raises(ValueError, match="no backbone takes 3x50x70"):
        choose_backbone("auto", (3, 50, 70))
    lenet = build_backbone("lenetpp", embedding_size=8)
    with pytest.raises(ValueError, match=r"model.name=lenetpp takes 1x28x28 images but the training set holds "
                                         r"3x112x112 images: use model.name=\w+"):
        check_backbone_fits(lenet, "lenetpp", (3, 112, 112))
    check_backbone_fits(lenet, "lenetpp", (1, 28, 28))


def test_auto_backbone_in_a_run_and_a_mismatch_names_one_that_fits(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *common(data_root), "--steps", "1", "--out", str(out)]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["config"]["model"]["name"] == "lenetpp"
    capsys.readouterr()
    plain = [a for a in common(data_root) if a != "model.params.width=0.25"]
    plain.remove("--set")
    assert main(["train", *plain, "--steps", "1", "--out", str(tmp_path / "b"), "--set", "model.name=mobilefacenet"]) == 2
    err = capsys.readouterr().err
    assert "model.name=mobilefacenet takes 3x112x112 images but the training set holds 1x28x28 images: " \
           "use model.name=lenetpp" in err
    assert not (tmp_path / "b" / "config.toml").exists()


def test_verification_packs_while_training_keep_the_best(data_root, val_pack, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *common(data_root), "--steps", "4", "--out", str(out), "--set", "train.eval_every=2",
                 "--set", f"data.val=[{str(val_pack)!r}]"]) == 0
    said = capsys.readouterr().out
    evals = [r for r in rows(out) if r.get("event") == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    scored = [r for r in evals if "val.unseen.acc" in r and "accuracy" in r]  # with Fashion's open-set figures
    assert [r["step"] for r in scored] == [2, 4]
    for r in scored:
        assert 0.0 <= r["val.unseen.acc"] <= 1.0 and r["val.unseen.acc_std"] >= 0.0
        assert r["val.mean_acc"] == r["val.unseen.acc"]
        assert "val.unseen.tar@far=0.1" in r
    best = max(scored, key=lambda r: (r["val.mean_acc"], -r["step"]))
    state = load_checkpoint(out / "best.pt")
    assert state["step"] == best["step"]
    final = load_checkpoint(out / "checkpoint.pt")
    assert final["best"] == {"score": best["val.mean_acc"], "step": best["step"]}
    assert "[train] step 2: val unseen " in said and "best.pt: mean verification accuracy" in said
    # resume keeps the best of the earlier part
    assert main(["train", "--resume", str(out / "checkpoint.pt"), "--steps", "5"]) == 0
    resumed = load_checkpoint(out / "checkpoint.pt")
    assert resumed["best"]["score"] >= best["val.mean_acc"]
    assert load_checkpoint(out / "best.pt")["step"] in (best["step"], 5)


def test_a_bad_pack_is_named_before_training(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *common(data_root), "--steps", "1", "--out", str(out),
                 "--set", f"data.val=[{str(tmp_path / 'nope.bin')!r}]"]) == 2
    assert "data.val: verification pack not found" in capsys.readouterr().err
    assert not out.exists()


def test_a_checkpoint_of_the_earlier_layout_still_resumes_and_loads(tmp_path, capsys):
    """A checkpoint written before the store/head reshaping (SphereFace, step 3, LeNet++ 8-D on
    six Fashion-like classes) resumes and gives its backbone to inference."""
    import shutil
    from pathlib import Path

    from facemargin.models.checkpoint import load_backbone

    old = Path(__file__).parent / "data" / "checkpoint_v1_sphereface.pt"
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(old, run / "checkpoint.pt")
    data = write_fashion(tmp_path / "fm", train_per_class=6, test_per_class=6)
    model, cfg = load_backbone(run / "checkpoint.pt")
    assert cfg["loss"]["name"] == "sphereface" and model.embedding_size == 8
    assert main(["train", "--resume", str(run / "checkpoint.pt"), "--steps", "5", "--set", f"data.root={data}"]) == 0
    assert "done: 2 steps in this call (steps 4-5), 5 of 5 in all" in capsys.readouterr().out
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["step"] == 5 and int(state["loss"]["schedule.iteration"]) == 5


def test_a_state_that_does_not_fit_is_told_in_one_short_line():
    import torch

    from facemargin.train.state import state_mismatch

    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    state = {f"x{i}": torch.zeros(1) for i in range(500)}  # a different model altogether
    state["0.weight"] = torch.zeros(5, 4)
    line = state_mismatch(module, state)
    assert "\n" not in line and len(line) < 300
    assert line.startswith("3 missing keys, e.g. 0.bias, 1.weight; 500 unexpected keys, e.g. x0, x1; ")
    assert line.endswith("1 of another shape (checkpoint vs run): 0.weight (5, 4) vs (3, 4)")
    assert state_mismatch(module, module.state_dict()) == "the states differ"
