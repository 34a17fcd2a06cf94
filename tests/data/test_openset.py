"""Open-set protocol: no leak of training classes, balance, folds, uniqueness, determinism."""
from collections import Counter

import numpy as np
import pytest

from facemargin.data.openset import OpenSetProtocol


def fashion_like_labels(per_class=120, seed=0):
    rng = np.random.default_rng(seed)
    return rng.permutation(np.repeat(np.arange(10), per_class))


def test_default_protocol_structure():
    p = OpenSetProtocol()
    assert p.train_classes == (0, 1, 2, 3, 4, 5) and p.eval_classes == (6, 7, 8, 9)
    assert p.num_pairs == 6000 and p.folds == 10 and p.fold_size == 600
    y = fashion_like_labels(per_class=1000)  # Fashion-MNIST test split size
    i1, i2, same = p.pairs(y)
    assert len(i1) == len(i2) == len(same) == 6000
    assert i1.dtype == np.int64 and same.dtype == bool
    # no training class ever appears in an evaluation pair
    assert set(y[i1]) | set(y[i2]) == {6, 7, 8, 9}
    assert np.array_equal(same, y[i1] == y[i2])
    for sl in p.fold_slices():
        assert sl.stop - sl.start == 600
        assert same[sl].sum() == 300 and (~same[sl]).sum() == 300


def test_no_duplicates_no_self_pairs_and_class_balance():
    p = OpenSetProtocol(num_pairs=1200, folds=10, seed=3)
    y = fashion_like_labels(per_class=60)
    i1, i2, same = p.pairs(y)
    assert np.all(i1 != i2)
    keys = {(min(a, b), max(a, b)) for a, b in zip(i1.tolist(), i2.tolist())}
    assert len(keys) == 1200
    same_counts = Counter(y[i1[same]].tolist())
    assert max(same_counts.values()) - min(same_counts.values()) <= 1
    diff_counts = Counter(tuple(sorted(t)) for t in zip(y[i1[~same]], y[i2[~same]]))
    assert len(diff_counts) == 6  # every pair of the 4 eval classes
    assert max(diff_counts.values()) - min(diff_counts.values()) <= 1
    # both orders occur inside pairs (no systematic "first class first")
    firsts = y[i1[~same]] < y[i2[~same]]
    assert 0 < firsts.mean() < 1


def test_training_selection_never_contains_eval_classes():
    p = OpenSetProtocol(train_classes=(2, 5, 7), eval_classes=(0, 1, 9), num_pairs=60, folds=3)
    y = fashion_like_labels(per_class=20)
    tr = p.train_indices(y)
    assert set(y[tr]) == {2, 5, 7}
    assert len(tr) == 60
    assert p.map_train_labels(y[tr]).tolist() == [(2, 5, 7).index(c) for c in y[tr]]
    assert set(y[p.eval_indices(y)]) == {0, 1, 9}
    i1, i2, _ = p.pairs(y)
    assert set(y[i1]) | set(y[i2]) <= {0, 1, 9}
    assert p.num_train_classes == 3
    with pytest.raises(ValueError, match="not a training class"):
        p.map_train_labels([2, 9])


def test_determinism_and_seed():
    y = fashion_like_labels(per_class=50)
    a = OpenSetProtocol(num_pairs=400, seed=11).pairs(y)
    b = OpenSetProtocol(num_pairs=400, seed=11).pairs(y)
    c = OpenSetProtocol(num_pairs=400, seed=12).pairs(y)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])


def test_dense_case_uses_every_pair_exactly_once():
    # 2 eval classes of 5 images: 10 same pairs each and 25 different pairs exist.
    y = np.array([0] * 5 + [1] * 5 + [2] * 3)
    p = OpenSetProtocol(train_classes=(2,), eval_classes=(0, 1), num_pairs=40, folds=2)
    i1, i2, same = p.pairs(y)
    keys = {(min(a, b), max(a, b)) for a, b in zip(i1.tolist(), i2.tolist())}
    assert len(keys) == 40
    same_keys = {k for k, s in zip(zip(np.minimum(i1, i2), np.maximum(i1, i2)), same) if s}
    assert len(same_keys) == 20  # all 10 + 10 same pairs
    with pytest.raises(ValueError, match="eval class 0: cannot draw same pairs"):
        OpenSetProtocol(train_classes=(2,), eval_classes=(0, 1), num_pairs=44, folds=2).pairs(y)


def test_errors():
    with pytest.raises(ValueError, match="overlap on \\[5\\]"):
        OpenSetProtocol(train_classes=(0, 5), eval_classes=(5, 6))
    with pytest.raises(ValueError, match="divisible by 2\\*folds=20"):
        OpenSetProtocol(num_pairs=6010)
    with pytest.raises(ValueError, match="at least 2 classes"):
        OpenSetProtocol(eval_classes=(9,))
    with pytest.raises(ValueError, match="duplicate"):
        OpenSetProtocol(eval_classes=(6, 6, 7))
    with pytest.raises(ValueError, match="folds"):
        OpenSetProtocol(folds=1)
    with pytest.raises(ValueError, match="eval class 9 has 1 image"):
        OpenSetProtocol(num_pairs=20, folds=2).pairs(np.array([6, 6, 7, 7, 8, 8, 9]))
    with pytest.raises(ValueError, match="integer"):
        OpenSetProtocol().pairs(np.array([6.0, 7.0]))
