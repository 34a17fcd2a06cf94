"""Faults of a distributed run: a rank killed mid-run, resuming it on 2 ranks (two nodes) and on 1,
and a process killed while it writes a checkpoint."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from dist_launch import run_ranks  # noqa: E402
from dist_workers import train_cli_worker  # noqa: E402
from test_torchrun_train import COMMON, _free_port  # noqa: E402
from trainutil import write_fashion  # noqa: E402

from facemargin.cli import main  # noqa: E402
from facemargin.train.checkpoint import load_checkpoint  # noqa: E402

PG_TIMEOUT = 30.0
STEPS, KILL_AT, CKPT_EVERY = 7, 5, 2  # rank 1 dies when step 6 begins; the last checkpoint is step 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fashion(tmp_path_factory.mktemp("fm_faults"), train_per_class=8, test_per_class=8)


def _args(data):
    # constant lr: the resumed runs' schedule does not depend on where they stopped
    return ["--data", str(data), "--set", "loss.name=cosface", "--set", "loss.params.s=8.0",
            "--set", "optim.schedule=constant", "--set", f"train.checkpoint_every={CKPT_EVERY}", *COMMON]


def _by_step(out: Path):
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r and "event" not in r}


def test_killed_rank_fails_the_others_fast_and_the_run_resumes_exactly(data, tmp_path):
    args = _args(data)
    # the reference: one uninterrupted process (2 ranks equal one process, see test_torchrun_train)
    straight = tmp_path / "straight"
    assert main(["train", *args, "--steps", str(STEPS), "--out", str(straight)]) == 0
    ref = _by_step(straight)

    # 2 ranks; rank 1 is SIGKILLed mid-run, rank 0 must stop with a clear error, well within the timeout
    run = tmp_path / "killed"
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    argv = ["train", *args, "--steps", str(STEPS), "--out", str(run)]
    codes = run_ranks(train_cli_worker, 2, ranks, args=(argv, 1, KILL_AT), timeout=240, pg_timeout=PG_TIMEOUT,
                      wait_for=[0])
    assert codes[1] == -signal.SIGKILL, codes
    assert codes[0] == 0, f"rank 0 did not report: {codes}"
    rank0 = json.loads((ranks / "rank0.json").read_text())
    assert rank0["code"] == 1, rank0
    assert f"step {KILL_AT + 1}" in rank0["stderr"] and "rank died" in rank0["stderr"], rank0["stderr"]
    assert "Traceback" not in rank0["stderr"]
    waited = rank0["returned_at"] - float((ranks / "killed_at").read_text())
    assert 0 <= waited < PG_TIMEOUT, waited
    ckpt = load_checkpoint(run / "checkpoint.pt")  # the last one written before the kill
    assert ckpt["step"] == KILL_AT - KILL_AT % CKPT_EVERY
    start = ckpt["step"]
    saved = tmp_path / "last.pt"
    shutil.copy(run / "checkpoint.pt", saved)

    # resumed on 2 ranks and on 1 process: the losses of the uninterrupted run, step for step. The 2 ranks
    # are two nodes: two `torchrun --nnodes 2` launchers on loopback meeting through the c10d rendezvous
    on2, on1 = tmp_path / "on2", tmp_path / "on1"
    two_nodes(["train", *args, "--steps", str(STEPS), "--out", str(on2), "--resume", str(saved)])
    assert main(["train", *args, "--steps", str(STEPS), "--out", str(on1), "--resume", str(saved)]) == 0
    want = torch.tensor([ref[k] for k in range(start + 1, STEPS + 1)])
    for out in (on2, on1):
        got = _by_step(out)
        assert sorted(got) == list(range(start + 1, STEPS + 1)), (out, sorted(got))
        torch.testing.assert_close(torch.tensor([got[k] for k in sorted(got)]), want, rtol=1e-4, atol=1e-5)


def test_a_nan_batch_on_one_rank_skips_the_step_on_every_rank(data, tmp_path):
    out, ranks = tmp_path / "run", tmp_path / "ranks"
    ranks.mkdir()
    argv = ["train", *_args(data), "--steps", "4", "--out", str(out)]
    codes = run_ranks(train_cli_worker, 2, ranks, args=(argv, None, None, 1, 2), timeout=240, pg_timeout=PG_TIMEOUT)
    assert codes == [0, 0], codes
    assert [json.loads((ranks / f"rank{r}.json").read_text())["code"] for r in (0, 1)] == [0, 0]
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    # rank 0 read finite data at step 3 but skipped it with rank 1: the two ranks stay one model
    assert [(r["step"], r.get("skipped", 0)) for r in rows] == [(1, 0), (2, 0), (3, 1), (4, 0)]
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def two_nodes(argv, timeout=240):
    """``facemargin argv`` on 2 nodes of 1 process each (as on a cluster, but both on this machine)."""
    env = {**os.environ, "FACEMARGIN_DIST_TIMEOUT": "60", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{_free_port()}", "--rdzv_id=facemargin-test",
                "-m", "facemargin.cli", *argv]
    nodes = [subprocess.Popen(launcher, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in nodes]
    finally:
        for p in nodes:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(log[-2000:] for log in logs)


_SLOW_WRITER = textwrap.dedent("""
    import sys, time, torch
    from facemargin.train.checkpoint import save_checkpoint
    real_save = torch.save

    def slow_save(obj, f, *a, **kw):  # half of the bytes, then stall: the parent kills us here
        import io
        buf = io.BytesIO()
        real_save(obj, buf, *a, **kw)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        print("writing", flush=True)
        time.sleep(120)
        f.write(data[len(data) // 2:])

    torch.save = slow_save
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(2.0)
    save_checkpoint(sys.argv[1], config={"model": {}}, step=2, model=model)
""")


def test_kill_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    from facemargin.train.checkpoint import save_checkpoint

    path = tmp_path / "checkpoint.pt"
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(1.0)
    save_checkpoint(path, config={"model": {}}, step=1, model=model)
    before = path.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout.readline().strip() == "writing"
        partial = [p for p in tmp_path.iterdir() if p.name != path.name]
        assert partial and partial[0].stat().st_size > 0  # the new checkpoint is being written beside it
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["model"]["weight"], torch.ones(2, 3))
    # the killed writer's temporary is left; the next save of the same file removes it, and only it
    left = [p for p in tmp_path.iterdir() if p.name != path.name]
    assert [p.name.split(".")[-1] for p in left] == ["tmp"] and f"-{proc.pid}." in left[0].name
    other = tmp_path / f".other.pt.{left[0].name.split('.pt.', 1)[1]}"  # another file's temporary
    other.write_bytes(b"x")
    live = tmp_path / left[0].name.replace(f"-{proc.pid}.", f"-{os.getppid()}.")  # a writer still running
    live.write_bytes(b"x")
    save_checkpoint(path, config={"model": {}}, step=2, model=model)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, other.name, live.name])
    assert load_checkpoint(path)["step"] == 2
