"""Multi-process tests: gloo ranks spawned by the test, bounded in time, always torn down."""
from __future__ import annotations

import torch
import pytest

import dist_workers as W
from dist_launch import assert_ok, errors, run_ranks
from facemargin import losses
from facemargin.distributed import sharded_head, full_state_dict, load_full_state_dict, shard_range
from facemargin.io import load_torch

BATCH = 7  # uneven over 2 ranks (4 + 3), and C = 7 classes over 2 ranks (4 + 3)
STEPS = 2  # the second step exercises the momentum buffers
CK_BATCH = 6
PFC_RATE = 0.25


# Process start-up (importing torch) dominates: every world-2 program runs in one launch, every
# world-3 program in a second one; the tests below read what the ranks wrote.
@pytest.fixture(scope="module")
def world2(tmp_path_factory):
    out = tmp_path_factory.mktemp("world2")
    codes = run_ranks(W.world2_worker, 2, out, args=(BATCH, STEPS, CK_BATCH, PFC_RATE), timeout=120)
    assert_ok(codes, out)
    return out


@pytest.fixture(scope="module")
def world3(world2, tmp_path_factory):
    out = tmp_path_factory.mktemp("world3")
    codes = run_ranks(W.world3_worker, 3, out, args=(BATCH, STEPS, CK_BATCH, str(world2)), timeout=120)
    assert_ok(codes, out)
    return out


def _close(a, b, tol=1e-10):
    return torch.allclose(a, b, rtol=tol, atol=tol)


def _check_equivalence(out_dir, cases):
    for name, hyper, _ in cases:
        ref_losses, ref_backbone, ref_head = W.reference(name, hyper, BATCH, STEPS)
        for rank in range(2):
            got = load_torch(out_dir / f"{name}_rank{rank}.pt")
            start, n = shard_range(W.C, rank, 2)
            assert (got["start"], got["n"]) == (start, n)
            # the same loss on every rank, equal to the single-process loss on the global batch
            assert _close(got["losses"], torch.tensor(ref_losses, dtype=got["losses"].dtype)), (name, got["losses"], ref_losses)
            for k, v in ref_backbone.items():
                assert _close(got["backbone"][k], v), (name, rank, k)
            # each shard's rows equal the single-process rows, bias and scale too
            assert _close(got["local"]["weight"], ref_head["weight"][start:start + n]), (name, rank)
            if "bias" in ref_head:
                assert _close(got["local"]["bias"], ref_head["bias"][start:start + n]), (name, rank)
            for k, v in ref_head.items():
                assert _close(got["full"][k].to(v.dtype), v), (name, rank, k)
        # the step really changed things (the comparison is not between two unchanged states)
        _, weight, _, _ = W.problem(BATCH)
        assert not _close(ref_head["weight"], weight)


def test_ddp_step_equals_single_process(world2):
    """arcface, cosface, sphereface, normface (learnable s), softmax (bias), atl (triplet+semihard)."""
    _check_equivalence(world2 / "eq", W.CASES)


def test_sub_group_of_a_larger_world(world3):
    """``group=`` a sub-group {1, 2} of a world of 3: the same single-process equivalence."""
    _check_equivalence(world3 / "sub", W.CASES[:2])


def test_checkpoint_written_at_2_resumes_at_1_and_3(world2, world3):
    name, hyper, _ = W.CASES[0]
    batch = CK_BATCH
    ckpt = load_torch(world2 / "ckpt.pt")
    _, ref_backbone1, ref_head1 = W.reference(name, hyper, batch, 1)
    assert tuple(ckpt["head"]["weight"].shape) == (W.C, W.D)
    assert _close(ckpt["head"]["weight"], ref_head1["weight"])
    assert tuple(ckpt["opt_head"]["state"][0]["momentum_buffer"].shape) == (W.C, W.D)

    ref_losses, ref_backbone2, ref_head2 = W.reference(name, hyper, batch, 2)
    for rank in range(3):
        got = load_torch(world3 / "w3" / f"rank{rank}.pt")
        start, n = shard_range(W.C, rank, 3)
        assert got["start"] == start
        assert torch.equal(got["loaded"]["weight"], ckpt["head"]["weight"])  # same full weight
        # the resumed step at world size 3 continues the single-process run exactly (momentum too)
        assert abs(got["loss"] - ref_losses[1]) < 1e-10
        assert _close(got["full"]["weight"], ref_head2["weight"])
        assert _close(got["local"], ref_head2["weight"][start:start + n])
        for k, v in ref_backbone2.items():
            assert _close(got["backbone"][k], v)

    # world size 1: a plain process without a process group
    head = sharded_head(name, W.D, W.C, seed=0, **hyper).double()
    load_full_state_dict(head, ckpt["head"])
    assert (head.start, head.num_local) == (0, W.C)
    assert torch.equal(head.weight.detach(), ckpt["head"]["weight"])
    assert torch.equal(full_state_dict(head)["weight"], ckpt["head"]["weight"])
    # and the same file loads into the single-process preset
    preset = losses.build(name, embedding_size=W.D, num_classes=W.C, **hyper).double()
    preset.load_state_dict(ckpt["head"])
    x, y = torch.randn(5, W.D, dtype=torch.float64), torch.tensor([0, 1, 4, 6, 3])
    head.eval(), preset.eval()
    assert _close(head(x, y), preset(x, y))


def test_partial_fc_keeps_positives_and_leaves_unsampled_rows(world2):
    rate = PFC_RATE
    got = [load_torch(world2 / "pfc" / f"rank{r}.pt") for r in range(2)]
    for step in range(2):
        rec = [g["records"][step] for g in got]
        y = rec[0]["y"]
        assert abs(rec[0]["loss"] - rec[1]["loss"]) < 1e-12
        full_rows, full_weight = [], []
        for g, r in zip(got, rec):
            start, n = g["start"], g["n"]
            idx = r["index"]
            assert idx.numel() == max(round(rate * n), 1) or idx.numel() == len({int(c) for c in y if start <= c < start + n})
            assert torch.equal(idx, torch.unique(idx))  # sorted, no repeats
            positives = {int(c) - start for c in y if start <= c < start + n}
            assert positives <= set(idx.tolist()), (positives, idx)  # every positive kept
            unsampled = torch.ones(n, dtype=torch.bool)
            unsampled[idx] = False
            assert unsampled.any()
            # unsampled rows: weight and momentum bit-for-bit untouched
            assert torch.equal(r["after"][unsampled], r["before"][unsampled])
            if r["buf_before"] is None:
                assert torch.equal(r["buf_after"][unsampled], torch.zeros_like(r["buf_after"][unsampled]))
            else:
                assert torch.equal(r["buf_after"][unsampled], r["buf_before"][unsampled])
            assert not torch.equal(r["after"][~unsampled], r["before"][~unsampled])
            full_rows.append(idx + start)
            full_weight.append(r["before"][idx])
        # the loss is the single-process CosFace over exactly the sampled classes of all ranks
        classes = torch.cat(full_rows)
        remap = {int(c): i for i, c in enumerate(classes)}
        ref = losses.build("cosface", embedding_size=W.D, num_classes=len(classes), s=8.0).double()
        with torch.no_grad():
            ref.weight.copy_(torch.cat(full_weight))
        x = rec[0]["x"].clone().requires_grad_()
        loss = ref(x, torch.tensor([remap[int(c)] for c in y]))
        loss.backward()
        assert abs(loss.item() - rec[0]["loss"]) < 1e-10
        # embedding gradient: the full-batch one, times the world size (DDP averages it back)
        assert _close(rec[0]["xgrad"], 2 * x.grad[:3]) and _close(rec[1]["xgrad"], 2 * x.grad[3:])
    # the two steps drew different negatives
    assert not all(torch.equal(g["records"][0]["index"], g["records"][1]["index"]) for g in got)


@pytest.mark.parametrize("mode", ["die", "hang"])
def test_lost_rank_fails_fast_with_clear_error(tmp_path, mode):
    pg_timeout = 4.0
    codes = run_ranks(W.failure_worker, 2, tmp_path, args=(mode,), timeout=45, pg_timeout=pg_timeout,
                      wait_for=[0])
    report = tmp_path / "rank0.txt"
    assert codes[0] == 0 and report.exists(), f"exit codes {codes}\n{errors(tmp_path)}"
    elapsed, message = report.read_text().split("\n", 1)
    assert "failed on rank 0 of 2" in message and "all_gather" in message
    assert float(elapsed) < pg_timeout + 15
    if mode == "hang":
        assert codes[1] is None  # still hanging when rank 0 had already failed; then terminated
