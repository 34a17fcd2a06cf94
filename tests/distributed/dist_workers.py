"""Rank programs run by the distributed tests (importable by spawned children) and their references."""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn as nn

from facemargin import losses
from facemargin.distributed import (DistributedError, PartialFCOptimizer, sharded_head,
                                    full_optimizer_state_dict, full_state_dict,
                                    load_full_optimizer_state_dict, load_full_state_dict)
from facemargin.io import load_torch, save_torch

D_IN, D, C = 6, 4, 7
LR, MOM, WD = 0.1, 0.9, 5e-4

# (name, hyper, optimizer of the head); sphereface/atl with a small λ so that the margin matters
CASES = [
    ("arcface", {"s": 8.0, "m": 0.5}, "pfc"),
    ("cosface", {"s": 8.0, "m": 0.35}, "sgd"),
    ("sphereface", {"m": 4, "base": 1.0, "lambda_min": 0.5}, "pfc"),
    ("normface", {"s": 4.0, "learn_scale": True}, "sgd"),
    ("softmax", {}, "pfc"),
    ("atl", {"m": 2, "base": 1.0, "lambda_min": 0.5, "triplet": True, "semihard": True, "replace_prob": 1.0}, "sgd"),
]


def problem(batch: int, seed: int = 0):
    """Backbone init, full class weights and ``steps`` global batches, identical in every process."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(D_IN, D).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(D, D_IN, generator=g, dtype=torch.float64))
        lin.bias.copy_(torch.randn(D, generator=g, dtype=torch.float64))
    weight = torch.randn(C, D, generator=g, dtype=torch.float64)
    bias = torch.randn(C, generator=g, dtype=torch.float64)
    data = [(torch.randn(batch, D_IN, generator=g, dtype=torch.float64),
             torch.randint(0, C, (batch,), generator=g)) for _ in range(3)]
    return lin, weight, bias, data


def full_init(name, hyper, weight, bias):
    """A full state for the head ``name`` holding ``weight`` (and ``bias`` when it has one)."""
    head = losses.build(name, embedding_size=D, num_classes=C, **hyper).double()
    state = head.state_dict()
    state["weight"] = weight.clone()
    if "bias" in state:
        state["bias"] = bias.clone()
    return state


def split(n: int, world: int):
    q, r = divmod(n, world)
    sizes = [q + (i < r) for i in range(world)]
    starts = [sum(sizes[:i]) for i in range(world)]
    return list(zip(starts, sizes))


def reference(name, hyper, batch, steps, seed=0):
    """Single-process model + preset head, ``steps`` SGD steps on the global batches."""
    lin, weight, bias, data = problem(batch, seed)
    head = losses.build(name, embedding_size=D, num_classes=C, **hyper).double()
    head.load_state_dict(full_init(name, hyper, weight, bias))
    opt_b = torch.optim.SGD(lin.parameters(), lr=LR, momentum=MOM, weight_decay=WD)
    opt_h = torch.optim.SGD(head.parameters(), lr=LR, momentum=MOM, weight_decay=WD)
    out = []
    for x, y in data[:steps]:
        loss = head(lin(x), y)
        opt_b.zero_grad(), opt_h.zero_grad()
        loss.backward()
        opt_b.step(), opt_h.step()
        out.append(loss.item())
    return out, lin.state_dict(), head.state_dict()


def _make(name, hyper, world, rank, opt_kind, lin, state, group=None):
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = DDP(lin, process_group=group)
    head = sharded_head(name, D, C, seed=0, group=group, **hyper).double()
    load_full_state_dict(head, state)
    opt_b = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOM, weight_decay=WD)
    if opt_kind == "pfc":
        opt_h = PartialFCOptimizer(head, lr=LR, momentum=MOM, weight_decay=WD)
    else:
        opt_h = torch.optim.SGD(head.parameters(), lr=LR, momentum=MOM, weight_decay=WD)
    return model, head, opt_b, opt_h


def _step(model, head, opt_b, opt_h, x, y):
    loss = head(model(x), y)
    opt_b.zero_grad(), opt_h.zero_grad()
    loss.backward()
    opt_b.step(), opt_h.step()
    return float(loss)


def equivalence_worker(rank, world, out_dir, batch, steps, group=None, cases=None):
    """Every case of CASES: ``steps`` DDP steps on this rank's share of the global batches."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for name, hyper, opt_kind in (CASES if cases is None else cases):
        lin, weight, bias, data = problem(batch)
        model, head, opt_b, opt_h = _make(name, hyper, world, rank, opt_kind, lin,
                                          full_init(name, hyper, weight, bias), group)
        s0, n = split(batch, world)[rank]
        losses_ = [_step(model, head, opt_b, opt_h, x[s0:s0 + n], y[s0:s0 + n]) for x, y in data[:steps]]
        save_torch({"losses": torch.tensor(losses_), "backbone": lin.state_dict(),
                    "local": head.state_dict(), "start": head.start, "n": head.num_local,
                    "full": full_state_dict(head)}, Path(out_dir, f"{name}_rank{rank}.pt"))


def checkpoint_worker(rank, world, out_dir, batch, phase):
    """phase 'write': one step, then rank 0 writes the full checkpoint; 'resume': load it, one step."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    name, hyper, _ = CASES[0]
    lin, weight, bias, data = problem(batch)
    path = Path(out_dir).parent / "ckpt.pt"
    if phase == "write":
        state = full_init(name, hyper, weight, bias)
    else:
        ckpt = load_torch(path)
        state = ckpt["head"]
        lin.load_state_dict(ckpt["backbone"])
    model, head, opt_b, opt_h = _make(name, hyper, world, rank, "pfc", lin, state)
    s0, n = split(batch, world)[rank]
    if phase == "write":
        x, y = data[0]
        _step(model, head, opt_b, opt_h, x[s0:s0 + n], y[s0:s0 + n])
        full = full_state_dict(head, rank0_only=True)
        opt_full = full_optimizer_state_dict(opt_h, head, rank0_only=True)
        also = full_state_dict(head)  # the all-gather variant, on every rank
        if rank == 0:
            assert all(torch.equal(full[k], also[k]) for k in full)
            save_torch({"head": full, "opt_head": opt_full, "backbone": lin.state_dict(),
                        "opt_backbone": opt_b.state_dict()}, path)
        else:
            assert full is None and opt_full is None
    else:
        load_full_optimizer_state_dict(opt_h, head, ckpt["opt_head"])
        opt_b.load_state_dict(ckpt["opt_backbone"])
        loaded = full_state_dict(head)
        x, y = data[1]
        loss = _step(model, head, opt_b, opt_h, x[s0:s0 + n], y[s0:s0 + n])
        save_torch({"loaded": loaded, "loss": loss, "full": full_state_dict(head),
                    "backbone": lin.state_dict(), "local": head.state_dict()["weight"],
                    "start": head.start}, Path(out_dir, f"rank{rank}.pt"))


PFC_C = 40


def partial_fc_worker(rank, world, out_dir, sample_rate):
    """Two Partial-FC steps; record indices, positives, rows and momentum before/after."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    head = sharded_head("cosface", D, PFC_C, sample_rate=sample_rate, seed=5, s=8.0).double()
    opt = PartialFCOptimizer(head, lr=LR, momentum=MOM, weight_decay=WD)
    records = []
    for step in range(2):
        x = torch.randn(6, D, generator=g, dtype=torch.float64)  # same global draw on all ranks
        y = torch.randint(0, PFC_C, (6,), generator=g)
        xs, ys = x[3 * rank:3 * rank + 3].clone().requires_grad_(), y[3 * rank:3 * rank + 3]
        before = head.weight.detach().clone()
        buf = opt.state[head.weight].get("momentum_buffer")
        buf_before = None if buf is None else buf.clone()
        loss = head(xs, ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
        records.append({"x": x, "y": y, "loss": float(loss), "index": head.sampled_index.clone(),
                        "before": before, "after": head.weight.detach().clone(),
                        "buf_before": buf_before, "buf_after": opt.state[head.weight]["momentum_buffer"].clone(),
                        "xgrad": xs.grad.clone()})
    save_torch({"records": records, "start": head.start, "n": head.num_local}, Path(out_dir, f"rank{rank}.pt"))


def world2_worker(rank, world, out_dir, batch_eq, steps, batch_ck, rate):
    """All world-size-2 programs in one launch (process start-up dominates the test time)."""
    equivalence_worker(rank, world, Path(out_dir, "eq"), batch_eq, steps)
    checkpoint_worker(rank, world, Path(out_dir, "w2"), batch_ck, "write")
    partial_fc_worker(rank, world, Path(out_dir, "pfc"), rate)


def world3_worker(rank, world, out_dir, batch_eq, steps, batch_ck, ckpt_dir):
    """World size 3: resume the world-2 checkpoint; a sub-group of ranks {1, 2} runs two cases."""
    import shutil
    import torch.distributed as dist

    if rank == 0:
        shutil.copy(Path(ckpt_dir, "ckpt.pt"), Path(out_dir, "ckpt.pt"))
    dist.barrier()
    checkpoint_worker(rank, world, Path(out_dir, "w3"), batch_ck, "resume")
    sub = dist.new_group([1, 2])
    if rank in (1, 2):
        equivalence_worker(rank - 1, 2, Path(out_dir, "sub"), batch_eq, steps, group=sub, cases=CASES[:2])


def failure_worker(rank, world, out_dir, mode):
    """Rank 1 dies (``os._exit``) or hangs; rank 0 must get a clear error, and records it."""
    head = sharded_head("arcface", D, C, seed=0)
    if rank == 1:
        if mode == "die":
            os._exit(3)
        time.sleep(600)  # hang: never joins the collective
    t0 = time.monotonic()
    try:
        loss = head(torch.randn(2, D), torch.tensor([0, 6]))
        loss.backward()
    except DistributedError as e:
        Path(out_dir, "rank0.txt").write_text(f"{time.monotonic() - t0:.2f}\n{e}")
        os._exit(0)  # the group is broken: no orderly teardown
    raise AssertionError("the collective succeeded although rank 1 is gone")


def train_cli_worker(rank, world, out_dir, argv, kill_rank=None, kill_step=None, nan_rank=None, nan_step=None):
    """``facemargin train argv`` on this rank, as under torchrun (the group already exists).

    Rank ``kill_rank`` kills itself with SIGKILL when step ``kill_step`` (0-based) begins; rank
    ``nan_rank`` reads a batch of NaN images at step ``nan_step``. The ranks left record the exit
    code of ``main``, what it printed on stderr, and when it returned.
    """
    import contextlib
    import io
    import json
    import signal

    from facemargin.cli import main
    from facemargin.train.loop import Trainer

    step = Trainer.train_step

    def train_step(self):
        if rank == kill_rank and self.step == kill_step:
            Path(out_dir, "killed_at").write_text(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)
        return step(self)

    Trainer.train_step = train_step
    batch = Trainer._batch

    def _batch(self):
        x, y = batch(self)
        if rank == nan_rank and self.step == nan_step:
            x = torch.full_like(x, float("nan"))
        return x, y

    Trainer._batch = _batch
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(argv))
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"code": code, "stderr": err.getvalue(),
                                                            "returned_at": time.time()}))
    os._exit(0)  # main tore the group down; nothing is left to do
