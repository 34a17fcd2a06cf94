"""Soak test of clean exits: N consecutive 2-rank ``torchrun`` runs of ``facemargin train``.

Each run trains a tiny LeNet++ for a few steps on a small synthetic Fashion-MNIST-like set (gloo,
CPU) and must end with exit status 0 and no abort message from any rank. A run is *abnormal*
when torchrun's status is not 0, when the output holds ``terminate called`` / ``SIGABRT`` /
``Signal 6``, or when it does not finish within ``--timeout`` seconds. The figure printed at the end
is the number of abnormal runs out of N; their outputs are kept under ``--keep`` for inspection.

    python benchmarks/soak_torchrun.py 50
    python benchmarks/soak_torchrun.py 20 --loss cosface --sample-rate 0.5 --keep runs/soak
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ABORT_MARKS = ("terminate called", "SIGABRT", "Signal 6", "core dumped")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_tiny_fashion(root: Path, per_class: int = 8, seed: int = 0) -> Path:
    """Train/test IDX files (Fashion-MNIST names) of random 28x28 images with a class-dependent band."""
    import numpy as np

    from facemargin.data.fashion import write_idx

    rng = np.random.default_rng(seed)
    for split in ("train", "t10k"):
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(len(labels), 28, 28)).astype(np.int32)
        for i, c in enumerate(labels):
            images[i, 2 + 2 * int(c):4 + 2 * int(c), 2:26] += 180
        write_idx(root / f"{split}-images-idx3-ubyte.gz", np.clip(images, 0, 255).astype(np.uint8))
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


def one_run(data: Path, out: Path, a) -> tuple:
    """Launch one 2-rank run; returns (abnormal: bool, reason, seconds, output)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={a.nproc}",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "facemargin.cli", "train",
           "--data", str(data), "--out", str(out), "--steps", str(a.steps),
           "--set", "model.embedding_size=8", "--set", "model.params.width=0.25", "--set", "optim.lr=0.01",
           "--set", "train.batch_size=12", "--set", "train.progress=false", "--set", "train.device=cpu",
           "--set", "train.log_every=1", "--set", "data.num_pairs=40", "--set", f"loss.name={a.loss}",
           "--set", f"dist.sample_rate={a.sample_rate}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FACEMARGIN_DIST_TIMEOUT": "60"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.timeout)
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return True, f"timed out after {a.timeout} s", time.perf_counter() - t0, text
    dt = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    marks = [m for m in ABORT_MARKS if m in text]
    if proc.returncode != 0 or marks:
        return True, f"exit status {proc.returncode}" + (f", output holds {marks}" if marks else ""), dt, text
    return False, "", dt, text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=int, help="number of consecutive runs (N)")
    p.add_argument("--nproc", type=int, default=2, help="ranks per run (default 2)")
    p.add_argument("--steps", type=int, default=3, help="training steps per run (default 3)")
    p.add_argument("--loss", default="arcface", help="loss/head name (default arcface)")
    p.add_argument("--sample-rate", type=float, default=1.0, help="dist.sample_rate (< 1: Partial FC)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per run")
    p.add_argument("--keep", help="folder for the outputs of abnormal runs (default: a temporary folder)")
    a = p.parse_args(argv)
    if a.runs <= 0:
        p.error("runs must be positive")
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        tmp = Path(tmp)
        keep = Path(a.keep) if a.keep else tmp / "abnormal"
        data = write_tiny_fashion(tmp / "data")
        abnormal, times = [], []
        for i in range(a.runs):
            bad, reason, dt, text = one_run(data, tmp / f"run{i}", a)
            times.append(dt)
            status = f"ABNORMAL ({reason})" if bad else "ok"
            print(f"run {i + 1}/{a.runs}: {status} in {dt:.1f} s", flush=True)
            if bad:
                abnormal.append(i + 1)
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"run{i + 1}.log").write_text(text)
        times.sort()
        print(f"\n{len(abnormal)} abnormal exits in {a.runs} runs of {a.nproc} ranks "
              f"(median {times[len(times) // 2]:.1f} s per run, total {sum(times):.0f} s)")
        if abnormal:
            print(f"abnormal runs: {abnormal}; outputs in {keep}" + (" (deleted: pass --keep)" if not a.keep else ""))
    return 1 if abnormal else 0


if __name__ == "__main__":
    sys.exit(main())
