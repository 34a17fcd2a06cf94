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
from trainutil import write_fashion  # noqa: E402

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
