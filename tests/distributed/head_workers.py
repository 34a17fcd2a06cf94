"""Rank program of the every-head parity test (importable by spawned children) and its reference."""
from __future__ import annotations

from pathlib import Path

import torch

from facemargin import losses
from facemargin.distributed import sharded_head, full_state_dict, load_full_state_dict
from facemargin.io import save_torch

D, C, B = 5, 7, 7  # 7 classes over 2 ranks (4 + 3), a global batch of 7 (4 + 3)


def heads():
    """Every registered classification head at its defaults (and a sub-center with K=2)."""
    out = [(n, {}) for n in losses.available() if losses.is_head(n)]
    return out + [("subcenter_arcface", {"K": 2})]


def problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=torch.float64) * 3.0
    y = torch.tensor([0, 6, 3, 3, 1, 5, 2])
    return x, y


def initial_state(name, hyper, seed: int = 1):
    torch.manual_seed(seed)
    head = losses.build(name, embedding_size=D, num_classes=C, **hyper).double()
    head.init_weights(seed)
    if head.bias is not None:
        with torch.no_grad():
            head.bias.normal_(generator=torch.Generator().manual_seed(seed))
    return head.state_dict()


def _rows(rank, world, batch=B):
    q, r = divmod(batch, world)
    sizes = [q + (i < r) for i in range(world)]
    return sum(sizes[:rank]), sizes[rank]


def run_case(head, x, y, start, n):
    """Two training calls (state updated by the first is used by the second); grads of the last."""
    head.train()
    xs = x[start:start + n].clone().requires_grad_(True)
    head(xs.detach().clone(), y[start:start + n])  # first call: λ counters, EMA buffers move
    for p in head.parameters():
        p.grad = None
    loss = head(xs, y[start:start + n])
    loss.backward()
    # the class rows live in the head's store ("store.weight"): keyed as in the state_dict
    grads = {k.removeprefix("store."): p.grad.detach().clone() for k, p in head.named_parameters() if p.grad is not None}
    stats = head.last_stats
    return {"loss": loss.detach(), "x_grad": xs.grad.detach(), "grads": grads,
            "stats": [s.detach().clone() for s in stats]}


def worker(rank, world, out_dir):
    x, y = problem()
    start, n = _rows(rank, world)
    for name, hyper in heads():
        torch.manual_seed(5)
        head = sharded_head(name, D, C, seed=0, ddp_grad_scale=False, **hyper).double()
        load_full_state_dict(head, initial_state(name, hyper))
        got = run_case(head, x, y, start, n)
        got["full"] = full_state_dict(head)
        got["start"], got["n"] = head.start, head.num_local
        tag = name + "".join(f"-{k}{v}" for k, v in hyper.items())
        save_torch(got, Path(out_dir) / f"{tag}_rank{rank}.pt")


def reference(name, hyper):
    x, y = problem()
    torch.manual_seed(5)
    head = losses.build(name, embedding_size=D, num_classes=C, **hyper).double()
    head.load_state_dict(initial_state(name, hyper))
    out = run_case(head, x, y, 0, B)
    out["state"] = {k: v.detach().clone() for k, v in head.state_dict().items()}
    return out
