"""Every head on a 2-rank sharded store equals the single-process head on the global batch (float64)."""
from __future__ import annotations

import pytest
import torch

import head_workers as H
from dist_launch import assert_ok, run_ranks
from facemargin.io import load_torch


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("heads2")
    assert_ok(run_ranks(H.worker, 2, out, timeout=180), out)
    return out


def _close(a, b, tol=1e-9):
    return torch.allclose(a.to(torch.float64), b.to(torch.float64), rtol=tol, atol=tol)


@pytest.mark.parametrize("name,hyper", H.heads(), ids=lambda v: v if isinstance(v, str) else str(v or ""))
def test_sharded_equals_single_process(ranks, name, hyper):
    ref = H.reference(name, hyper)
    tag = name + "".join(f"-{k}{v}" for k, v in hyper.items())
    K = hyper.get("K", 3 if name == "subcenter_arcface" else 1)
    for rank in range(2):
        got = load_torch(ranks / f"{tag}_rank{rank}.pt")
        start, n = H._rows(rank, 2)
        assert _close(got["loss"], ref["loss"]), (rank, float(got["loss"]), float(ref["loss"]))
        assert _close(got["x_grad"], ref["x_grad"][start:start + n]), rank
        r0, r1 = got["start"] * K, (got["start"] + got["n"]) * K
        for k, g in got["grads"].items():
            want = ref["grads"][k]
            if k in ("weight", "bias"):
                want = want[r0:r1] if k == "weight" else want[got["start"]:got["start"] + got["n"]]
            assert _close(g, want), (rank, k)
        assert set(got["grads"]) == set(ref["grads"])
        for a, b in zip(got["stats"], ref["stats"]):
            assert _close(a, b), rank
        # state after two calls: class rows, buffers (λ counters, EMA statistics, generators)
        for k, v in ref["state"].items():
            assert k in got["full"], k
            if v.is_floating_point():
                assert _close(got["full"][k], v), (rank, k)
            else:
                assert torch.equal(got["full"][k], v), (rank, k)
