"""The ROC helpers shared by every protocol: thinning and the two TAR@FAR readings."""
import numpy as np
import pytest

from facemargin.eval import roc_curve, roc_for_plot, tar_at_far, tar_at_far_nearest, tar_at_fars, thin_roc


def small_case():
    # sorted by score: P N N N P N  -> 2 same pairs, 4 different pairs
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    y = np.array([1, 0, 0, 0, 1, 0], dtype=bool)
    return s, y


def test_thin_roc_worked_by_hand():
    s, y = small_case()
    # per-score counts (fps, tps): (0,1) (1,1) (2,1) (3,1) (3,2) (4,2); the inner points (1,1) and
    # (2,1) of the run of different pairs have zero second differences and are dropped
    fpr, tpr, thr = thin_roc(s, y)
    np.testing.assert_allclose(fpr, [0, 0, 0.75, 0.75, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.6, 0.5, 0.4])
    full = roc_curve(s, y)[0]
    assert len(full) == 7


def test_nearest_reading_worked_by_hand():
    s, y = small_case()
    fpr, tpr, _ = thin_roc(s, y)
    # FAR 0.25: thinned FPRs 0, 0, .75, .75, 1 -> the two points at 0 are nearest; the later one wins
    assert tar_at_far_nearest(fpr, tpr, 0.25) == 0.5
    # FAR 0.5: 0.75 is as near as 0 is not (0.25 vs 0.5): the point (0.75, 1.0)
    assert tar_at_far_nearest(fpr, tpr, 0.5) == 1.0
    # on the full ROC the point (0.5, 0.5) exists, and the at-most reading gives 0.5 too
    ffpr, ftpr, _ = roc_curve(s, y)
    assert tar_at_far_nearest(ffpr, ftpr, 0.5) == 0.5
    assert tar_at_far(ffpr, ftpr, 0.5) == 0.5
    assert tar_at_fars(s, y, fars=(0.25, 0.5)) == {0.25: 0.5, 0.5: 1.0}
    assert tar_at_fars(s, y, fars=(0.25, 0.5), rule="at_most") == {0.25: 0.5, 0.5: 0.5}
    # 4 different pairs cannot resolve FAR 0.1
    assert tar_at_fars(s, y, fars=(0.1, 0.5)) == {0.5: 1.0}
    with pytest.raises(ValueError, match="rule"):
        tar_at_fars(s, y, rule="closest")


def test_nearest_reading_matches_the_published_scripts():
    """insightface's IJB scripts: sklearn's default ROC, flipped, argmin of |fpr - far|."""
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for trial in range(5):
        n = 4000
        y = rng.random(n) < 0.1
        s = np.round(rng.normal(size=n) + 1.5 * y, 2 if trial % 2 else 6)  # with and without ties
        f, t, th = metrics.roc_curve(y, s)
        f2, t2, th2 = thin_roc(s, y)
        np.testing.assert_allclose(f2, f)
        np.testing.assert_allclose(t2, t)
        np.testing.assert_allclose(th2[1:], th[1:])
        ff, tt = np.flipud(f), np.flipud(t)
        for far in (1e-3, 1e-2, 3e-2, 1e-1, 0.5):
            ref = tt[np.argmin(np.abs(ff - far))]
            assert tar_at_far_nearest(f2, t2, far) == ref


def test_roc_for_plot_is_a_lower_staircase():
    rng = np.random.default_rng(1)
    y = rng.random(50_000) < 0.05
    s = rng.normal(size=50_000) + 2 * y
    fpr, tpr, _ = roc_curve(s, y)
    pf, pt = roc_for_plot(fpr, tpr, points=200)
    assert len(pf) <= 201 and pf[0] == 0 and pf[-1] == 1.0 and pt[-1] == 1.0
    for g, v in zip(pf[1:], pt[1:]):
        assert v == tar_at_far(fpr, tpr, g)
