"""Memory per rank and step time of the class-sharded head on 1, 2, 4 CPU ranks (gloo).

Every configuration runs in fresh processes started like ``torchrun`` does (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` in the environment), so peak RSS is that of the
configuration alone. One *step* is what a training step costs the head: forward (all-gather of
the embeddings, local margin logits, distributed softmax cross-entropy), backward, and an SGD
step with momentum on the head's rows (``PartialFCOptimizer``). The batch per rank is fixed, so
the global batch grows with the number of ranks. Side by side, in its own process: the
single-process head of the zoo on the same per-rank batch (``plain`` and, when registered, the
``fused`` backend), with ``torch.optim.SGD``.

Columns: ``weight MB/rank`` is the class-weight shard ``n·D·4`` bytes (its gradient and momentum
buffer add the same twice more); ``peak RSS`` the largest peak resident set over the ranks
(includes ~0.3-0.5 GB of Python and torch); ``RSS-base`` the same minus the RSS measured before
the head was built; ``step s`` the median over the timed steps of the slowest rank.

    python benchmarks/sharded.py            # C = 100k and 1M, W = 1, 2, 4; B = 64/rank, D = 512
    python benchmarks/sharded.py --quick    # C = 10k and 100k, W = 1, 2
    python benchmarks/sharded.py --json out.json

On a machine with fewer cores than ranks the ranks share cores (threads per rank =
cores // W), so step times there show the communication and bookkeeping overhead, not a speed-up.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KB on Linux


def worker(args) -> None:
    """One rank (or the single-process baseline): build, warm up, time, write a JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    from facemargin.distributed import destroy_process_group, init_process_group_from_env

    init_process_group_from_env(backend="gloo", timeout_s=args.timeout)
    try:  # any exit (error, Ctrl-C included) tears the group down, after _measure's objects are gone
        _measure(args)
    finally:
        destroy_process_group()


def _measure(args) -> None:
    import torch
    import torch.distributed as dist

    from facemargin import losses
    from facemargin.distributed import PartialFCOptimizer, get_rank, get_world_size, sharded_head

    rank, world = get_rank(), get_world_size()
    base = _rss_mb()
    torch.manual_seed(rank)
    if args.mode == "sharded":
        head = sharded_head(args.head, args.dim, args.classes, seed=0)
        opt = PartialFCOptimizer(head, lr=0.1, momentum=0.9, weight_decay=5e-4)
        n_local = head.num_local
    else:
        head = losses.build(args.head, embedding_size=args.dim, num_classes=args.classes, engine=args.mode)
        opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        n_local = args.classes
    times = []
    for step in range(args.warmup + args.steps):
        x = torch.randn(args.batch, args.dim, requires_grad=True)
        y = torch.randint(0, args.classes, (args.batch,))
        if world > 1:
            dist.barrier()
        t0 = time.perf_counter()
        loss = head(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if world > 1:  # the step of the slowest rank
            t = torch.tensor([dt], dtype=torch.float64)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            dt = float(t)
        if step >= args.warmup:
            times.append(dt)
    peak = _peak_rss_mb()
    out = {"rank": rank, "world": world, "n_local": n_local, "peak_rss_mb": peak, "base_rss_mb": base,
           "step_s": statistics.median(times), "loss": loss.item()}
    Path(args.out).with_suffix(f".{rank}.json").write_text(json.dumps(out))


def run_config(mode: str, classes: int, world: int, a) -> dict:
    """Start ``world`` worker processes for one configuration and collect their results."""
    cores = os.cpu_count() or 1
    threads = max(1, cores // world)
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "result")
        cmd = [sys.executable, os.path.abspath(__file__), "--_worker", "--mode", mode, "--head", a.head,
               "--classes", str(classes), "--batch", str(a.batch), "--dim", str(a.dim),
               "--steps", str(a.steps), "--warmup", str(a.warmup), "--threads", str(threads),
               "--timeout", str(a.timeout), "--out", str(out)]
        procs = []
        try:
            for rank in range(world):
                env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                           MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS=str(threads))
                procs.append(subprocess.Popen(cmd, env=env))
            deadline = time.monotonic() + a.timeout
            for p in procs:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise SystemExit(f"{mode} C={classes} W={world}: timed out after {a.timeout} s")
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        codes = [p.returncode for p in procs]
        if any(codes):
            raise SystemExit(f"{mode} C={classes} W={world}: ranks exited with {codes}")
        ranks = [json.loads(out.with_suffix(f".{r}.json").read_text()) for r in range(world)]
    n_max = max(r["n_local"] for r in ranks)
    return {
        "head": a.head, "mode": mode, "classes": classes, "world": world, "batch_per_rank": a.batch,
        "dim": a.dim, "threads_per_rank": threads, "rows_per_rank": n_max,
        "weight_mb_per_rank": n_max * a.dim * 4 / 2**20,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in ranks),
        "peak_minus_base_mb": max(r["peak_rss_mb"] - r["base_rss_mb"] for r in ranks),
        "step_s": max(r["step_s"] for r in ranks),
        "loss": ranks[0]["loss"],
    }


def table(rows) -> str:
    """A Markdown table of the results."""
    head = ("| C | path | ranks | rows/rank | weight MB/rank | peak RSS MB/rank | RSS-base MB/rank | step s |\n"
            "|---:|---|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        path = "sharded_head" if r["mode"] == "sharded" else f"single-process ({r['mode']})"
        lines.append(f"| {r['classes']:,} | {path} | {r['world']} | {r['rows_per_rank']:,} | "
                     f"{r['weight_mb_per_rank']:.1f} | {r['peak_rss_mb']:.0f} | {r['peak_minus_base_mb']:.0f} | "
                     f"{r['step_s']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--head", default="arcface")
    p.add_argument("--classes", type=int, nargs="+", default=None, help="default 100000 1000000")
    p.add_argument("--worlds", type=int, nargs="+", default=None, help="default 1 2 4")
    p.add_argument("--batch", type=int, default=64, help="batch per rank")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds per configuration")
    p.add_argument("--no-single", action="store_true", help="skip the single-process heads")
    p.add_argument("--quick", action="store_true", help="C = 10k, 100k; ranks 1, 2; 2 timed steps")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    # internal: one rank
    p.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="sharded", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._worker:
        a.classes = a.classes[0]
        worker(a)
        return 0
    if a.quick:
        a.classes = a.classes or [10_000, 100_000]
        a.worlds = a.worlds or [1, 2]
        a.steps = min(a.steps, 2)
    classes = a.classes or [100_000, 1_000_000]
    worlds = a.worlds or [1, 2, 4]
    from facemargin.losses import ENGINES

    singles = [] if a.no_single else [m for m in ("plain", "fused") if m in ENGINES]
    rows = []
    for c in classes:
        for mode in singles:
            rows.append(run_config(mode, c, 1, a))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
        for w in worlds:
            rows.append(run_config("sharded", c, w, a))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(f"head={a.head}, batch per rank={a.batch}, D={a.dim}, {os.cpu_count()} cores, "
          f"torch threads per rank = cores // ranks")
    print(table(rows))
    if a.json:
        from facemargin.io import write_json

        write_json(a.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
