"""`facemargin train` under torchrun (2 gloo ranks): same run as one process, resumable anywhere."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from trainutil import write_fashion, write_val_pack  # noqa: E402

from facemargin.cli import main  # noqa: E402
from facemargin.train.checkpoint import load_checkpoint  # noqa: E402

COMMON = ["--set", "model.name=lenetpp", "--set", "model.embedding_size=8", "--set", "model.params.width=0.25",
          "--set", "optim.lr=0.01", "--set", "train.batch_size=12", "--set", "train.log_every=1",
          "--set", "train.progress=false", "--set", "train.device=cpu", "--set", "data.num_pairs=40"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args, nproc=2, timeout=240):
    env = {**os.environ, "FACEMARGIN_DIST_TIMEOUT": "60", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "facemargin.cli", "train", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _losses(out: Path):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r and "event" not in r]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fashion(tmp_path_factory.mktemp("fm"), train_per_class=8, test_per_class=8)


def test_two_ranks_equal_one_process_and_resume_on_one(data, tmp_path):
    args = ["--data", str(data), "--set", "loss.name=arcface", "--set", "loss.params.s=8.0", *COMMON]
    single = tmp_path / "single"
    assert main(["train", *args, "--steps", "4", "--out", str(single)]) == 0
    dist_out = tmp_path / "dist"
    _torchrun([*args, "--steps", "4", "--out", str(dist_out)])
    # the same run: 2 ranks x 6 samples of each global batch of 12
    torch.testing.assert_close(torch.tensor(_losses(dist_out)), torch.tensor(_losses(single)), rtol=1e-4, atol=1e-5)
    a, b = load_checkpoint(single / "checkpoint.pt"), load_checkpoint(dist_out / "checkpoint.pt")
    assert b["loss"]["weight"].shape == a["loss"]["weight"].shape  # full class weights, not a shard
    torch.testing.assert_close(b["loss"]["weight"], a["loss"]["weight"], rtol=1e-4, atol=1e-5)
    # the distributed checkpoint resumes in one process and continues like the single run
    assert main(["train", *args, "--steps", "6", "--out", str(dist_out), "--resume", str(dist_out / "checkpoint.pt")]) == 0
    assert main(["train", *args, "--steps", "6", "--out", str(single), "--resume", str(single / "checkpoint.pt")]) == 0
    torch.testing.assert_close(torch.tensor(_losses(dist_out)), torch.tensor(_losses(single)), rtol=1e-4, atol=1e-5)


def test_partial_fc_run_keeps_full_checkpoint(data, tmp_path):
    out = tmp_path / "pfc"
    _torchrun(["--data", str(data), "--set", "loss.name=cosface", "--set", "loss.params.s=8.0",
               "--set", "dist.sample_rate=0.5", *COMMON, "--steps", "3", "--out", str(out)])
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["loss"]["weight"].shape == (6, 8)
    assert state["head_optimizer"] is not None
    assert len(_losses(out)) == 3


def test_center_aux_is_refused_under_torchrun(data, tmp_path):
    env = {**os.environ, "FACEMARGIN_DIST_TIMEOUT": "30"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "facemargin.cli", "train", "--data", str(data),
           "--set", "aux.name=center", "--set", "aux.weight=0.01", *COMMON, "--steps", "2", "--out", str(tmp_path / "c")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    assert "not supported in distributed runs" in proc.stdout + proc.stderr


def test_verification_packs_under_torchrun_match_one_process(data, tmp_path):
    pack = write_val_pack(tmp_path / "unseen.bin")
    args = ["--data", str(data), "--set", "loss.name=cosface", "--set", "loss.params.s=8.0", *COMMON,
            "--set", f"data.val=[{str(pack)!r}]", "--set", "train.eval_every=2", "--steps", "4"]
    single, dist_out = tmp_path / "single", tmp_path / "dist"
    assert main(["train", *args, "--out", str(single)]) == 0
    proc = _torchrun([*args, "--out", str(dist_out)])
    assert proc.stdout.count("[train] step 2: val unseen") == 1  # rank 0 reports, once

    def vals(out):
        rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["val.unseen.acc"], r["val.mean_acc"]) for r in rows if "val.mean_acc" in r]

    got, want = vals(dist_out), vals(single)
    assert [s for s, _, _ in got] == [2, 4] == [s for s, _, _ in want]
    for (_, acc_d, mean_d), (_, acc_s, mean_s) in zip(got, want):
        assert acc_d == pytest.approx(acc_s, abs=1e-9) and mean_d == pytest.approx(mean_s, abs=1e-9)
    assert load_checkpoint(dist_out / "best.pt")["step"] == load_checkpoint(single / "best.pt")["step"]
    assert load_checkpoint(dist_out / "checkpoint.pt")["best"] == load_checkpoint(single / "checkpoint.pt")["best"]


def test_each_rank_embeds_only_its_share(tmp_path, monkeypatch):
    """The validator of rank r embeds the r-th contiguous share of a pack; the shares are gathered."""
    import numpy as np

    from facemargin.models import build
    from facemargin.train import validation

    pack = write_val_pack(tmp_path / "p.bin")
    model = build("lenetpp", embedding_size=8, width=0.25).eval()
    whole = validation.Validator([str(pack)], model.input_size)
    full = whole._embed(model, whole.packs[0])
    seen = {}

    class Ctx:
        def __init__(self, rank):
            self.rank, self.world = rank, 3

    def fake_gather(mine, sizes, what=""):
        seen[what] = sizes
        return torch.from_numpy(full)  # what the other ranks would contribute

    monkeypatch.setattr("facemargin.distributed.utils.all_gather_rows", fake_gather)
    calls = []
    real = validation.embed_images
    monkeypatch.setattr(validation, "embed_images", lambda m, x, **kw: calls.append(len(x)) or real(m, x, **kw))
    for rank in range(3):
        v = validation.Validator([str(pack)], model.input_size, dist=Ctx(rank))
        np.testing.assert_allclose(v._embed(model, v.packs[0]), full)
    assert calls == [13, 13, 14] and sum(calls) == 40  # each image embedded once over the ranks
    assert list(seen.values())[0] == [13, 13, 14]
