"""Single-process tests of the sharded head's pieces (world size 1, no process group)."""
from __future__ import annotations

import math

import pytest
import torch

from facemargin import losses
from facemargin.distributed import (DistributedEvalSampler, PartialFCOptimizer, sharded_head,
                                    full_optimizer_state_dict, full_state_dict,
                                    init_process_group_from_env, is_main_process,
                                    load_full_optimizer_state_dict, load_full_state_dict,
                                    num_sampled, sample_rows, shard_range)
from facemargin.losses import ENGINES, seeded_rows

D, C = 5, 7

HEADS = [
    ("softmax", {}),
    ("l2softmax", {}),
    ("normface", {"learn_scale": True}),
    ("sphereface", {"base": 1.0, "lambda_min": 0.5}),
    ("lsoftmax", {"m": 3, "base": 1.0, "lambda_min": 0.5}),
    ("cosface", {"s": 8.0}),
    ("arcface", {"s": 8.0}),
    ("arcface", {"s": 8.0, "easy_margin": True}),
    ("combined", {"s": 8.0, "m1": 1.2}),
    ("atl", {"m": 2, "base": 2.0, "lambda_min": 1.0}),
]


def _pair(name, hyper, seed=0):
    torch.manual_seed(seed)
    sh = sharded_head(name, D, C, seed=3, **hyper).double()
    ref = losses.build(name, embedding_size=D, num_classes=C, **hyper).double()
    with torch.no_grad():
        if ref.bias is not None:
            sh.bias.normal_()
    ref.load_state_dict(full_state_dict(sh))
    return sh, ref


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("classes", [7, 8, 100])
def test_shard_range_partitions_the_classes(classes, world):
    ranges = [shard_range(classes, r, world) for r in range(world)]
    assert ranges[0][0] == 0
    for (s0, n0), (s1, _) in zip(ranges, ranges[1:]):
        assert s0 + n0 == s1  # contiguous
    assert sum(n for _, n in ranges) == classes
    assert {n for _, n in ranges} <= {classes // world, classes // world + 1}
    assert [n for _, n in ranges] == sorted((n for _, n in ranges), reverse=True)  # extra rows first
    assert shard_range(7, 1, 2) == (4, 3) and shard_range(7, 2, 3) == (5, 2)


def test_shard_range_errors():
    with pytest.raises(ValueError, match="at least one class"):
        shard_range(2, 0, 3)
    with pytest.raises(ValueError, match="rank 3"):
        shard_range(10, 3, 3)


@pytest.mark.parametrize("name,hyper", HEADS)
def test_world1_equals_the_preset(name, hyper):
    sh, ref = _pair(name, hyper)
    x = torch.randn(6, D, dtype=torch.float64) * 3
    y = torch.tensor([0, 3, 3, 6, 1, 5])
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    l1, l2 = sh(x1, y), ref(x2, y)
    l1.backward(), l2.backward()
    assert torch.allclose(l1, l2, rtol=1e-12, atol=1e-12)
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-10, atol=1e-12)
    assert torch.allclose(sh.weight.grad, ref.weight.grad, rtol=1e-10, atol=1e-12)
    if ref.bias is not None:
        assert torch.allclose(sh.bias.grad, ref.bias.grad, rtol=1e-10, atol=1e-12)
    if isinstance(ref.scale, torch.nn.Parameter):
        assert torch.allclose(sh.scale.grad, ref.scale.grad, rtol=1e-10, atol=1e-12)
    if ref.schedule is not None:
        assert int(sh.iteration) == int(ref.iteration) == 1 and sh.lambda_ == ref.lambda_
        sh.eval()
        sh(x, y)
        assert int(sh.iteration) == 1  # eval-mode calls do not count


@pytest.mark.parametrize("weight_norm", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_gradcheck_float64(weight_norm, with_bias):
    """The engine's backward over a 'shard' where some targets are foreign (cols = -1), with the
    target logits an input, against finite differences."""
    torch.manual_seed(1)
    f = (torch.randn(5, D, dtype=torch.float64) * 2).requires_grad_()
    w = torch.randn(4, D, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True) if with_bias else None
    T = torch.randn(5, dtype=torch.float64, requires_grad=True)
    cols = torch.tensor([0, 3, -1, 1, 2])  # -1: the label lives on another rank (here: nowhere)
    fused = ENGINES.get("fused")

    def fn(f, w, T, *b):
        return fused(f, w, b[0] if b else None, T, cols, weight_norm=weight_norm)[0]

    assert torch.autograd.gradcheck(fn, (f, w, T) + ((b,) if b is not None else ()), eps=1e-6, atol=1e-6)


def test_triplet_and_semihard_match_the_preset():
    hyper = {"m": 2, "base": 1.0, "lambda_min": 0.5, "triplet": True, "semihard": True, "replace_prob": 1.0}
    sh, ref = _pair("atl", hyper)
    x = torch.randn(8, D, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 4, 0, 6, 2, 4])
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    sh(x1, y).backward(), ref(x2, y).backward()
    assert sh.weight.grad is None
    assert torch.equal(sh.weight.detach(), ref.weight.detach())
    for c in (0, 1, 4):  # the last sample of the class replaced its row
        last = max(i for i in range(8) if int(y[i]) == c)
        assert torch.equal(sh.weight.detach()[c], x[last])
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-10, atol=1e-12)
    keep = ~sh.last_stats.easy & ~sh.last_stats.hard
    assert torch.equal(x1.grad.abs().sum(1) > 0, keep)


def test_partial_fc_sampling():
    pos = torch.tensor([3, 17, 17, 40])
    a = sample_rows(pos, 50, 0.2, seed=9, step=4, rank=1)
    assert a.numel() == num_sampled(0.2, 50, 3) == 10
    assert set(pos.tolist()) <= set(a.tolist()) and torch.equal(a, torch.unique(a))
    assert torch.equal(a, sample_rows(pos, 50, 0.2, seed=9, step=4, rank=1))  # reproducible
    assert not torch.equal(a, sample_rows(pos, 50, 0.2, seed=9, step=5, rank=1))
    assert not torch.equal(a, sample_rows(pos, 50, 0.2, seed=9, step=4, rank=0))
    many = torch.arange(20)
    assert torch.equal(sample_rows(many, 50, 0.2, 0, 0, 0)[:20], many)  # more positives than the rate
    assert torch.equal(sample_rows(pos, 50, 1.0, 0, 0, 0), torch.arange(50))


def test_partial_fc_loss_is_softmax_over_the_sampled_classes():
    sh = sharded_head("arcface", D, 40, sample_rate=0.25, seed=2, s=8.0).double()
    x = torch.randn(6, D, dtype=torch.float64)
    y = torch.tensor([3, 3, 17, 30, 39, 0])
    loss = sh(x, y)
    idx = sh.sampled_index
    assert set(y.tolist()) <= set(idx.tolist()) and idx.numel() == 10
    ref = losses.build("arcface", embedding_size=D, num_classes=idx.numel(), s=8.0).double()
    with torch.no_grad():
        ref.weight.copy_(sh.weight[idx])
    remap = {int(c): i for i, c in enumerate(idx)}
    assert torch.allclose(loss, ref(x, torch.tensor([remap[int(c)] for c in y])), rtol=1e-12)
    assert int(sh.store.pfc_step) == 1
    sh.eval()  # evaluation uses every class
    full = losses.build("arcface", embedding_size=D, num_classes=40, s=8.0).double()
    full.load_state_dict({"weight": sh.weight.detach()})
    assert torch.allclose(sh(x, y), full(x, y), rtol=1e-12) and int(sh.store.pfc_step) == 1


@pytest.mark.parametrize("nesterov", [False, True])
def test_partial_fc_optimizer_without_sampling_is_sgd(nesterov):
    sh, ref = _pair("softmax", {})
    ref.load_state_dict(full_state_dict(sh))
    kw = dict(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    o1, o2 = PartialFCOptimizer(sh, **kw), torch.optim.SGD(ref.parameters(), **kw)
    for step in range(3):
        x, y = torch.randn(4, D, dtype=torch.float64), torch.randint(0, C, (4,))
        for head, opt in ((sh, o1), (ref, o2)):
            opt.zero_grad()
            head(x, y).backward()
            opt.step()
    assert torch.allclose(sh.weight, ref.weight, rtol=1e-12, atol=1e-14)
    assert torch.allclose(sh.bias, ref.bias, rtol=1e-12, atol=1e-14)
    # the optimizer's row state round-trips through the full form
    state = full_optimizer_state_dict(o1, sh)
    o3 = PartialFCOptimizer(sh, **kw)
    load_full_optimizer_state_dict(o3, sh, state)
    assert torch.equal(o3.state[sh.weight]["momentum_buffer"], o1.state[sh.weight]["momentum_buffer"])


def test_partial_fc_optimizer_touches_only_sampled_rows():
    sh = sharded_head("cosface", D, 30, sample_rate=0.2, seed=0).double()
    opt = PartialFCOptimizer(sh, lr=0.5, momentum=0.9, weight_decay=0.1)
    snapshots = []
    for step in range(3):
        before = sh.weight.detach().clone()
        buf = opt.state[sh.weight].get("momentum_buffer")
        buf = torch.zeros_like(before) if buf is None else buf.clone()
        opt.zero_grad()
        sh(torch.randn(4, D, dtype=torch.float64), torch.randint(0, 30, (4,))).backward()
        opt.step()
        untouched = torch.ones(30, dtype=torch.bool)
        untouched[sh.sampled_index] = False
        assert torch.equal(sh.weight.detach()[untouched], before[untouched])
        assert torch.equal(opt.state[sh.weight]["momentum_buffer"][untouched], buf[untouched])
        assert (sh.weight.detach()[~untouched] != before[~untouched]).all(dim=1).all()
        snapshots.append(untouched)
    assert opt.head.take_touched_rows().numel() == 0  # consumed by step()


def test_state_round_trip_and_errors(tmp_path):
    sh = sharded_head("sphereface", D, C, seed=1, base=1.0, lambda_min=0.5)
    for _ in range(3):
        sh(torch.randn(2, D), torch.tensor([1, 2]))
    state = full_state_dict(sh)
    assert int(state["schedule.iteration"]) == 3
    other = sharded_head("sphereface", D, C, seed=2, base=1.0, lambda_min=0.5)
    assert not torch.equal(other.weight, sh.weight)
    load_full_state_dict(other, state)
    assert torch.equal(other.weight, sh.weight) and int(other.iteration) == 3
    with pytest.raises(ValueError, match=r"shape \(8, 5\), expected \(7, 5\)"):
        load_full_state_dict(other, {**state, "weight": torch.zeros(8, D)})
    with pytest.raises(ValueError, match="classification head"):
        sharded_head("center", D, C)
    with pytest.raises(ValueError, match="sample_rate"):
        sharded_head("arcface", D, C, sample_rate=0.0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 7\)"):
        sh(torch.randn(2, D), torch.tensor([1, 7]))
    with pytest.raises(ValueError, match="embedding width"):
        sh(torch.randn(2, D + 1), torch.tensor([1, 2]))


def test_init_is_seeded_and_world_size_independent():
    a = sharded_head("arcface", 3, 9000, seed=11)
    b = sharded_head("arcface", 3, 9000, seed=11)
    assert torch.equal(a.weight, b.weight)
    bound = math.sqrt(6 / (9000 + 3))
    top = float(a.weight.detach().abs().max())
    assert 0.9 * bound < top <= bound
    # a rank of a 3-way split draws exactly its rows of the full matrix (blocks straddle ranks)
    for rank in range(3):
        start, n = shard_range(9000, rank, 3)
        assert torch.equal(seeded_rows(9000, 3, 11, start, n), a.weight.detach()[start:start + n])
    # a single-process head started from the same seed holds the same matrix
    dense = losses.build("arcface", embedding_size=3, num_classes=9000)
    dense.init_weights(11)
    assert torch.equal(dense.weight, a.weight)


def test_process_group_helpers(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    assert init_process_group_from_env() is False and is_main_process()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match="MASTER_ADDR, MASTER_PORT not set"):
        init_process_group_from_env()
    parts = [list(DistributedEvalSampler(range(10), r, 3)) for r in range(3)]
    assert parts == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
