"""verify() and the ROC family against hand-worked cases and independent computations."""

import numpy as np
import pytest
import torch

from facemargin.eval import (
    auc,
    best_threshold,
    equal_error_rate,
    fold_slices,
    roc_auc,
    roc_curve,
    tar_at_far,
    verify,
)


def hand_case():
    """20 pairs in 10 folds of 2 (a same pair then a different pair).

    Fold f: same score 0.50 + 0.02 f, different score 0.10 + 0.02 f, except that the same pair
    of fold 3 scores 0.05 (below every different pair).  Worked by hand:
    * fold 3 trains on separable data; its threshold is the midpoint of the largest different
      score (0.28) and the smallest same score (0.50) = 0.39; its same pair at 0.05 is rejected:
      accuracy 1/2.
    * every other fold trains with the outlier: the best split is still the gap between the
      different and same blocks (1 training error, vs 9 for "all same"); threshold = midpoint of
      max different and min same among the *other* folds: fold 0 -> (0.28+0.52)/2 = 0.40,
      fold 9 -> (0.26+0.50)/2 = 0.38, folds 1,2,4..8 -> 0.39; accuracy 1.
    """
    s, y = [], []
    for f in range(10):
        s += [0.50 + 0.02 * f if f != 3 else 0.05, 0.10 + 0.02 * f]
        y += [True, False]
    return np.array(s), np.array(y)


def test_hand_built_folds():
    s, y = hand_case()
    r = verify(s, issame=y, folds=10)
    assert r["fold_accuracies"] == pytest.approx([1, 1, 1, 0.5, 1, 1, 1, 1, 1, 1])
    assert r["accuracy"] == pytest.approx(0.95)
    assert r["accuracy_std"] == pytest.approx(0.15)  # sqrt((9 * 0.05^2 + 0.45^2) / 10)
    expected_thr = [0.40, 0.39, 0.39, 0.39, 0.39, 0.39, 0.39, 0.39, 0.39, 0.38]
    assert r["thresholds"] == pytest.approx(expected_thr, abs=1e-12)
    assert r["threshold"] == pytest.approx(0.39, abs=1e-12)
    assert r["num_pairs"] == 20 and r["folds"] == 10


def test_folds_are_contiguous_not_shuffled():
    # Same scores, pairs permuted: the outlier now sits in a different fold -> different fold
    # accuracies, which a shuffling implementation would not reproduce.
    s, y = hand_case()
    perm = np.r_[6:20, 0:6]  # move folds 0-2 to the end: outlier's fold becomes fold 0
    r = verify(s[perm], issame=y[perm], folds=10)
    assert r["fold_accuracies"][0] == pytest.approx(0.5)
    assert r["fold_accuracies"][1:] == pytest.approx([1.0] * 9)


def test_strict_greater_rule_at_the_threshold():
    # folds=2. fold 0: (0.5 same, 0.0 diff); fold 1: (0.75 same, 0.25 diff).
    # fold 0 is tested with fold 1's threshold (0.25+0.75)/2 = 0.5: its same pair scores exactly
    # 0.5 and 0.5 > 0.5 is false -> rejected -> 1/2.  fold 1 is tested with fold 0's threshold
    # (0+0.5)/2 = 0.25: its different pair at 0.25 is rejected (correct) -> 1.
    s = np.array([0.5, 0.0, 0.75, 0.25])
    y = np.array([True, False, True, False])
    r = verify(s, issame=y, folds=2)
    assert r["thresholds"] == [0.5, 0.25]
    assert r["fold_accuracies"] == [0.5, 1.0]


def test_uneven_folds_match_sklearn_kfold():
    model_selection = pytest.importorskip("sklearn.model_selection")
    for n, k in [(23, 10), (20, 10), (7, 3), (10, 10)]:
        ours = [np.arange(n)[sl] for sl in fold_slices(n, k)]
        theirs = [test for _, test in model_selection.KFold(k, shuffle=False).split(np.zeros(n))]
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)


def test_best_threshold_tie_goes_to_smallest():
    # candidates: -0.9 (2/4), 0.15 (3/4), 0.25 (2/4), 0.35 (3/4), 1.4 (2/4)
    thr, acc = best_threshold([0.1, 0.2, 0.3, 0.4], [False, True, False, True])
    assert thr == pytest.approx(0.15) and acc == 0.75
    thr, acc = best_threshold([0.3, 0.6], [True, True])  # everything same: below the minimum
    assert thr < 0.3 and acc == 1.0
    thr, acc = best_threshold([0.3, 0.6], [False, False])  # everything different
    assert thr >= 0.6 and acc == 1.0


def test_best_threshold_is_optimal_by_brute_force():
    rng = np.random.default_rng(1)
    for trial in range(20):
        n = int(rng.integers(2, 40))
        s = np.round(rng.normal(size=n), 1)  # rounding creates ties
        y = rng.random(n) < 0.5
        thr, acc = best_threshold(s, y)
        assert np.mean((s > thr) == y) == pytest.approx(acc)
        brute = max(np.mean((s > t) == y) for t in np.r_[-np.inf, s])
        assert acc == pytest.approx(brute)


def test_auc_and_eer_hand_values():
    pos = [0.9, 0.8, 0.7, 0.3]
    neg = [0.6, 0.4, 0.2, 0.1]
    s = np.array(pos + neg)
    y = np.array([True] * 4 + [False] * 4)
    # 0.9, 0.8, 0.7 beat all 4 negatives, 0.3 beats 2 -> 14 / 16
    assert roc_auc(s, y) == pytest.approx(14 / 16)
    fpr, tpr, thr = roc_curve(s, y)
    np.testing.assert_allclose(fpr, [0, 0, 0, 0, 0.25, 0.5, 0.5, 0.75, 1])
    np.testing.assert_allclose(tpr, [0, 0.25, 0.5, 0.75, 0.75, 0.75, 1, 1, 1])
    assert thr[0] == np.inf
    # at threshold 0.6: FPR = 1/4 and FNR = 1 - 3/4 = 1/4
    assert equal_error_rate(fpr, tpr) == pytest.approx(0.25)
    r = verify(s, issame=y, folds=2)
    assert r["auc"] == pytest.approx(14 / 16) and r["eer"] == pytest.approx(0.25)


def test_eer_interpolated():
    # pos 0.9, 0.8, 0.3; neg 0.7, 0.2. ROC: (0,1/3), (0,2/3), (1/2,2/3), (1/2,1), (1,1).
    # FNR = 1/3 on the segment (0,2/3)-(1/2,2/3); FPR reaches 1/3 two thirds along it.
    s = [0.9, 0.8, 0.3, 0.7, 0.2]
    y = [True, True, True, False, False]
    fpr, tpr, _ = roc_curve(s, y)
    assert equal_error_rate(fpr, tpr) == pytest.approx(1 / 3)


def test_auc_with_ties_matches_hand_count_and_sklearn():
    rng = np.random.default_rng(0)
    s = np.round(rng.normal(size=300), 1)
    y = rng.random(300) < 0.4
    p, n = s[y], s[~y]
    hand = (np.sum(p[:, None] > n[None, :]) + 0.5 * np.sum(p[:, None] == n[None, :])) / (
        len(p) * len(n)
    )
    assert roc_auc(s, y) == pytest.approx(hand, abs=1e-12)
    metrics = pytest.importorskip("sklearn.metrics")
    assert roc_auc(s, y) == pytest.approx(metrics.roc_auc_score(y, s), abs=1e-12)
    f1, t1, th1 = metrics.roc_curve(y, s, drop_intermediate=False)
    f2, t2, th2 = roc_curve(s, y)
    np.testing.assert_allclose(f1, f2)
    np.testing.assert_allclose(t1, t2)
    np.testing.assert_allclose(th1[1:], th2[1:])


def test_auc_function_trapezoid():
    assert auc([0, 1], [0, 1]) == pytest.approx(0.5)
    assert auc([0, 0, 1], [0, 1, 1]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        auc([0, 1, 0.5], [0, 1, 1])


def test_tar_at_far_and_levels_reported():
    neg = [i / 10 for i in range(10)]  # 10 different pairs: 0.0 .. 0.9
    pos = [0.95, 0.85, 0.55, 0.05]
    s = np.array(pos + neg)
    y = np.array([True] * 4 + [False] * 10)
    fpr, tpr, _ = roc_curve(s, y)
    # at most 1 false accept: threshold 0.85 accepts 0.95, 0.85 (and neg 0.9) -> TAR 2/4
    assert tar_at_far(fpr, tpr, 0.1) == pytest.approx(0.5)
    # threshold 0.55 accepts 3 same pairs and 4 different ones (0.6 .. 0.9): FAR 0.4, TAR 3/4
    assert tar_at_far(fpr, tpr, 0.4) == pytest.approx(0.75)
    assert tar_at_far(fpr, tpr, 0.39) == pytest.approx(0.5)
    # no false accept at all: threshold 0.95 accepts only the top same pair
    assert tar_at_far(fpr, tpr, 0.0) == pytest.approx(0.25)
    r = verify(s, issame=y, folds=2)
    assert set(r["tar_at_far"]) == {0.1}  # 10 negatives resolve 1e-1 only
    assert r["tar_at_far"][0.1] == pytest.approx(0.5)
    r = verify(s, issame=y, folds=2, far_targets=(0.5, 0.1, 0.01))
    assert set(r["tar_at_far"]) == {0.5, 0.1}


def test_embeddings_are_normalised_and_torch_accepted():
    rng = np.random.default_rng(3)
    e1 = rng.normal(size=(40, 8))
    e2 = rng.normal(size=(40, 8))
    y = rng.random(40) < 0.5
    e2[y] = e1[y] + 0.3 * rng.normal(size=(int(y.sum()), 8))
    cos = np.array([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(e1, e2)])
    ref = verify(cos, issame=y, folds=10)
    scaled = verify(e1 * rng.uniform(0.1, 10, size=(40, 1)), e2 * 7.0, y, folds=10)
    as_torch = verify(torch.tensor(e1, dtype=torch.float32), torch.tensor(e2), torch.tensor(y))
    for r in (scaled, as_torch):
        assert r["accuracy"] == pytest.approx(ref["accuracy"])
        assert r["auc"] == pytest.approx(ref["auc"], abs=1e-6)
        assert r["fold_accuracies"] == pytest.approx(ref["fold_accuracies"])
    # positional issame with scores, 0/1 integers accepted as booleans
    r = verify(cos, y.astype(int))
    assert r["accuracy"] == pytest.approx(ref["accuracy"])


def test_bad_inputs():
    s, y = hand_case()
    with pytest.raises(ValueError, match="20 pairs|issame has"):
        verify(s, issame=y[:-1])
    with pytest.raises(ValueError, match="empty"):
        verify(np.array([]), issame=np.array([], dtype=bool))
    with pytest.raises(ValueError, match="at least 10 pairs"):
        verify(s[:6], issame=y[:6], folds=10)
    with pytest.raises(ValueError, match="boolean"):
        verify(s, issame=np.arange(20))
    with pytest.raises(ValueError, match="boolean"):
        verify(s, issame=np.array(["yes"] * 20))
    bad = s.copy()
    bad[4] = np.nan
    with pytest.raises(ValueError, match="index 4"):
        verify(bad, issame=y)
    with pytest.raises(ValueError, match="both same and different"):
        verify(s, issame=np.ones(20, dtype=bool))
    with pytest.raises(ValueError, match="same shape"):
        verify(np.ones((5, 3)), np.ones((5, 4)), np.ones(5, dtype=bool))
    with pytest.raises(ValueError, match="issame is required"):
        verify(s)
    with pytest.raises(ValueError, match="folds"):
        verify(s, issame=y, folds=1)
    e = np.ones((20, 3))
    e[2, 1] = np.inf
    with pytest.raises(ValueError, match="row 2"):
        verify(e, np.ones((20, 3)), y)


def test_one_class_folds():
    from facemargin.eval.verification import one_class_folds

    s, y = hand_case()  # every fold: a same then a different pair
    assert one_class_folds(y, 10) == [] and verify(s, issame=y, folds=10)["one_class_folds"] == []
    # the same scores listed by label (all same pairs, then all different): every fold is one class
    order = np.argsort(~y, kind="stable")
    assert one_class_folds(y[order], 10) == list(range(10))
    r = verify(s[order], issame=y[order], folds=10)
    assert r["one_class_folds"] == list(range(10))
    assert r["auc"] == verify(s, issame=y)["auc"]  # the ROC does not see the folds
    # two folds, one per class: each threshold is fitted to the other class alone
    r = verify(s[order], issame=y[order], folds=2)
    assert r["one_class_folds"] == [0, 1] and r["accuracy"] == 0.0 and r["auc"] == pytest.approx(0.9)
    # 3 folds of 7, 7 and 6: the middle one holds both classes
    assert one_class_folds(y[order], 3) == [0, 2]
    with pytest.raises(ValueError, match="at least 10 pairs"):
        one_class_folds(y[:6], 10)
