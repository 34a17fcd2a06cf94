"""Closed-set identification on tiny hand-made embeddings."""
import numpy as np
import pytest
import torch

from facemargin.eval import closed_set_accuracy, gallery_probe_split, identify


def unit(deg):
    r = np.deg2rad(deg)
    return np.array([np.cos(r), np.sin(r)])


def test_identify_hand_case():
    # gallery: class 0 at 0 deg, class 1 at 90 and 45 deg, class 2 at 180 deg
    g = np.stack([unit(0), unit(90), unit(45), unit(180)]) * [[2.0], [1.0], [3.0], [0.5]]
    gl = np.array([0, 1, 1, 2])
    # probe at 10 deg (label 0): class scores cos10 (c0), cos35 (c1), cos170 (c2) -> rank 1
    # probe at 100 deg (label 2): c1 cos10 > c2 cos80 > c0 cos100 -> rank 2
    # probe at 200 deg (label 0): c2 cos20 > c1 cos110 > c0 cos200 -> rank 3
    p = np.stack([unit(10), unit(100), unit(200)])
    pl = np.array([0, 2, 0])
    r = identify(g, gl, p, pl, ranks=(1, 2, 3, 5))
    np.testing.assert_array_equal(r["ranks"], [1, 2, 3])
    assert r["rank1"] == pytest.approx(1 / 3)
    assert r["cmc"] == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 1.0, 5: 1.0})
    assert r["num_classes"] == 3 and r["num_probes"] == 3
    # torch input and chunking give the same answer
    r2 = identify(torch.tensor(g), torch.tensor(gl), torch.tensor(p), torch.tensor(pl), chunk=1)
    np.testing.assert_array_equal(r2["ranks"], r["ranks"])


def test_rank_counts_distinct_classes_not_samples():
    # two class-1 samples at 5 and 6 deg both beat the class-0 sample at 10 deg; ranked by class,
    # the true class 0 is second (a per-sample ranking would say third).
    g = np.stack([unit(5), unit(6), unit(10)])
    r = identify(g, [1, 1, 0], unit(0)[None], [0], ranks=(1, 2))
    assert r["ranks"].tolist() == [2]
    assert r["cmc"] == {1: 0.0, 2: 1.0}


def test_ties_count_against_the_probe():
    g = np.array([[1.0, 0.0], [0.0, 1.0]])
    r = identify(g, [0, 1], np.array([[1.0, 1.0]]), [0])
    assert r["ranks"].tolist() == [2]


def test_identify_errors():
    g = np.eye(2)
    with pytest.raises(ValueError, match="no gallery sample"):
        identify(g, [0, 1], g, [0, 5])
    with pytest.raises(ValueError, match="widths"):
        identify(g, [0, 1], np.ones((2, 3)), [0, 1])
    with pytest.raises(ValueError, match="gallery_labels has 3"):
        identify(g, [0, 1, 1], g, [0, 1])


def test_gallery_probe_split():
    labels = np.repeat(np.arange(5), [4, 4, 3, 1, 6])
    gi, pi = gallery_probe_split(labels, gallery_per_class=2, seed=7)
    assert set(gi).isdisjoint(pi)
    assert sorted(np.r_[gi, pi].tolist()) == list(range(len(labels)))
    assert np.bincount(labels[gi]).tolist() == [2, 2, 2, 1, 2]  # class 3 has one sample only
    assert np.bincount(labels[pi], minlength=5).tolist() == [2, 2, 1, 0, 4]
    gi2, pi2 = gallery_probe_split(labels, gallery_per_class=2, seed=7)
    np.testing.assert_array_equal(gi, gi2)
    np.testing.assert_array_equal(pi, pi2)
    many = np.repeat(np.arange(3), 50)
    a, _ = gallery_probe_split(many, seed=0)
    b, _ = gallery_probe_split(many, seed=1)
    assert not np.array_equal(a, b)
    with pytest.raises(ValueError, match="gallery_per_class"):
        gallery_probe_split(labels, gallery_per_class=0)


def test_closed_set_accuracy_hand_case():
    tr = np.array([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0], [0.1, 1.0]])
    ytr = np.array([0, 0, 1, 1])
    te = np.array([[2.0, 0.1], [0.3, 1.0], [0.2, 1.0]])
    # means point near 0 deg and near 90 deg: the third test vector (label 0) is closer to class 1
    assert closed_set_accuracy(tr, ytr, te, [0, 1, 0]) == pytest.approx(2 / 3)
    assert closed_set_accuracy(tr, ytr, te, [0, 1, 1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not a training class"):
        closed_set_accuracy(tr, ytr, te, [0, 1, 2])
