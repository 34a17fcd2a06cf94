"""Learning-rate schedules against hand values, and the deterministic, rank-split batch order."""
from __future__ import annotations

import math

import pytest
import torch

from facemargin.train.schedule import BatchOrder, lr_factor, milestones_in_steps


def opt(**kw):
    base = {"schedule": "multistep", "milestones": [0.5, 0.75], "gamma": 0.1, "power": 2.0, "warmup_steps": 0}
    base.update(kw)
    return base


def test_multistep_fraction_milestones():
    o = opt()
    got = [lr_factor(o, s, 100) for s in (0, 49, 50, 74, 75, 99)]
    assert got == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_multistep_absolute_milestones():
    o = opt(milestones=[30, 80], gamma=0.5)
    assert milestones_in_steps([30, 80], 100) == [30, 80]
    assert milestones_in_steps([0.25, 80], 200) == [50, 80]
    got = [lr_factor(o, s, 100) for s in (0, 29, 30, 79, 80)]
    assert got == pytest.approx([1, 1, 0.5, 0.5, 0.25])
    with pytest.raises(ValueError, match="milestones"):
        lr_factor(opt(milestones=[-1]), 0, 10)


def test_cosine():
    o = opt(schedule="cosine")
    assert lr_factor(o, 0, 100) == pytest.approx(1.0)
    assert lr_factor(o, 25, 100) == pytest.approx(0.5 * (1 + math.sqrt(0.5)))  # cos(π/4)
    assert lr_factor(o, 50, 100) == pytest.approx(0.5)
    assert lr_factor(o, 75, 100) == pytest.approx(0.5 * (1 - math.sqrt(0.5)))
    assert lr_factor(o, 100, 100) == pytest.approx(0.0, abs=1e-12)


def test_poly():
    o = opt(schedule="poly", power=2.0)
    assert [lr_factor(o, s, 100) for s in (0, 50, 90)] == pytest.approx([1.0, 0.25, 0.01])
    assert lr_factor(opt(schedule="poly", power=1.0), 30, 100) == pytest.approx(0.7)


def test_warmup_multiplies_the_schedule():
    o = opt(schedule="cosine", warmup_steps=10)
    # linear warm-up (step+1)/10, the cosine starting after it over the remaining 100 steps
    assert [lr_factor(o, s, 110) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_factor(o, 10, 110) == pytest.approx(1.0)
    assert lr_factor(o, 60, 110) == pytest.approx(0.5)
    m = opt(milestones=[0.5], warmup_steps=5)
    assert [lr_factor(m, s, 100) for s in (0, 2, 5, 49, 50)] == pytest.approx([0.2, 0.6, 1.0, 1.0, 0.1])
    c = opt(schedule="constant", warmup_steps=4)
    assert [lr_factor(c, s, 10) for s in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1])


def test_unknown_schedule():
    with pytest.raises(ValueError, match="'step'"):
        lr_factor(opt(schedule="step"), 0, 10)


def test_batch_order_is_a_function_of_seed_and_step():
    a, b = BatchOrder(50, 10, seed=3), BatchOrder(50, 10, seed=3)
    steps = [37, 3, 12, 3, 0, 49]
    first = [a(s).tolist() for s in steps]
    assert first == [b(s).tolist() for s in reversed(steps)][::-1]  # query order does not matter
    assert first[1] == first[3]
    other = BatchOrder(50, 10, seed=4)
    assert [other(s).tolist() for s in steps] != first


def test_every_epoch_visits_each_sample_once():
    o = BatchOrder(50, 10, seed=0)
    epochs = [torch.cat([o(e * 5 + k) for k in range(5)]) for e in range(3)]
    for ep in epochs:
        assert sorted(ep.tolist()) == list(range(50))
    assert epochs[0].tolist() != epochs[1].tolist()  # reshuffled every epoch
    # a remainder that does not fill a batch is skipped, the rest are distinct
    o = BatchOrder(53, 10, seed=0)
    ep = torch.cat([o(k) for k in range(5)])
    assert len(set(ep.tolist())) == 50 and int(ep.max()) < 53
    assert o(5).tolist() != o(0).tolist()


def test_tiny_set_fills_a_batch():
    o = BatchOrder(4, 10, seed=0)
    b = o(0)
    assert len(b) == 10 and set(b.tolist()) == {0, 1, 2, 3}


def test_rank_shares_are_disjoint_and_make_the_global_batch():
    world, batch = 4, 12
    orders = [BatchOrder(100, batch, seed=1, rank=r, world=world) for r in range(world)]
    single = BatchOrder(100, batch, seed=1)
    for step in (0, 5, 8, 9, 20):
        parts = [o(step) for o in orders]
        assert all(len(p) == batch // world for p in parts)
        flat = torch.cat(parts).tolist()
        assert len(set(flat)) == batch  # disjoint
        assert flat == single(step).tolist() == orders[2].global_batch(step).tolist()


def test_batch_order_errors():
    with pytest.raises(ValueError, match="empty"):
        BatchOrder(0, 4)
    with pytest.raises(ValueError, match="divisible"):
        BatchOrder(10, 10, world=3)
