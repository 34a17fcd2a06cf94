"""All-vs-all TAR@FAR and rank-1 against hand-worked values and a brute-force ROC."""
from __future__ import annotations

import numpy as np
import pytest

from facemargin.eval.allvsall import all_vs_all, pair_counts
from facemargin.eval.verification import roc_curve, tar_at_far, equal_error_rate


def _unit(deg):
    return np.stack([np.cos(np.radians(deg)), np.sin(np.radians(deg))], 1)


# five points on the unit circle: (1,0), (.6,.8), (0,1), (-.6,.8), (-1,0); labels 0,0,1,1,2
HAND = np.array([[1, 0], [0.6, 0.8], [0, 1], [-0.6, 0.8], [-1, 0]], dtype=np.float32)
HAND_Y = np.array([0, 0, 1, 1, 2])
# pair cosines (worked by hand):
#   genuine  (0,1)=.6  (2,3)=.8
#   impostor (1,2)=.8 (3,4)=.6 (1,3)=.28 (0,2)=0 (2,4)=0 (0,3)=-.6 (1,4)=-.6 (0,4)=-1


def test_counts_by_hand():
    assert pair_counts(HAND_Y) == (2, 8)


@pytest.mark.parametrize("far, tar", [
    (1 / 8, 0.5),   # 1 false accept allowed: threshold above the 2nd impostor (.6): only .8 passes
    (0.2, 0.5),     # floor(0.2*8) = 1: same threshold
    (0.25, 1.0),    # 2 allowed: threshold above .28: both genuine pass
    (0.5, 1.0),
    (1.0, 1.0),
])
def test_tar_at_far_hand_worked(far, tar):
    r = all_vs_all(HAND, HAND_Y, fars=[far], chunk=2)
    assert r["tar_at_far"][far] == pytest.approx(tar)
    assert r["num_genuine"] == 2 and r["num_impostor"] == 8


def test_far_below_one_impostor_is_not_reported():
    r = all_vs_all(HAND, HAND_Y, fars=[0.1, 0.125])
    assert 0.1 not in r["tar_at_far"] and r["tar_at_far"][0.125] == pytest.approx(0.5)


def test_rank1_hand_worked():
    # e0=(1,0) e1=(.8,.6) e2=(0,1) e3=(.6,.8), labels 0,0,1,1
    # nearest others: e0->e1 (.8, same), e1->e3 (.96, other), e2->e3 (.8, same), e3->e1 (.96, other)
    e = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8]])
    for chunk in (1, 3, 10):
        assert all_vs_all(e, [0, 0, 1, 1], fars=[0.25], chunk=chunk)["rank1"] == pytest.approx(0.5)


def test_singletons_are_galleries_not_probes():
    # label 2 has one image: it can be a neighbour but is not scored as a probe
    e = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.7, 0.7]])
    r = all_vs_all(e, [0, 0, 1, 1, 2], fars=[0.5])
    assert r["rank1"] == pytest.approx(1.0)


def test_matches_brute_force_roc_and_is_chunk_independent():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 30, size=300)
    centres = rng.normal(size=(30, 16))
    e = centres[y] + 1.3 * rng.normal(size=(300, 16))
    en = e / np.linalg.norm(e, axis=1, keepdims=True)
    iu = np.triu_indices(300, 1)
    s = (en @ en.T)[iu]
    same = (y[:, None] == y[None, :])[iu]
    fpr, tpr, _ = roc_curve(s, same)
    fars = [1e-1, 1e-2, 1e-3, 1e-4]
    results = [all_vs_all(e, y, fars=fars, chunk=c, keep_far=0.1) for c in (7, 64, 1000)]
    for far in fars:
        want = tar_at_far(fpr, tpr, far)
        for r in results:
            assert r["tar_at_far"][far] == pytest.approx(want, abs=1e-12)
    assert results[0]["num_impostor"] == int((~same).sum())
    # histogram EER within a few bins of the exact one
    assert results[0]["eer"] == pytest.approx(equal_error_rate(fpr, tpr), abs=5e-3)
    # rank-1 against the brute-force nearest neighbour
    full = en @ en.T
    np.fill_diagonal(full, -np.inf)
    nn = full.argmax(1)
    counts = np.bincount(y)
    probe = counts[y] >= 2
    want_r1 = float(np.mean((y[nn] == y)[probe]))
    for r in results:
        assert r["rank1"] == pytest.approx(want_r1)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="labels"):
        all_vs_all(HAND, HAND_Y[:3])
    with pytest.raises(ValueError, match="genuine"):
        all_vs_all(HAND, [0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="non-finite"):
        all_vs_all(np.full((3, 2), np.nan), [0, 0, 1])
