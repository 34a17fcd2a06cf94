"""Quality-stratified TAR@FAR and the error-versus-reject curve against hand-worked values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from facemargin import eval as fm_eval
from facemargin.eval.allvsall import all_vs_all
from facemargin.eval.quality import (DEFAULT_FRACTIONS, error_vs_reject, image_quality, quality_cuts, random_scores,
                                     stratified_tar)


def _unit(deg):
    return np.stack([np.cos(np.radians(deg)), np.sin(np.radians(deg))], 1)


def _cos(deg):
    return math.cos(math.radians(deg))


# six images on the unit circle, three identities; the cosine of a pair is the cosine of the angle
# between its points, so pairs rank by that angle alone (every angle differs: no ties)
ANGLES = [0, 20, 70, 115, 155, 220]
EMB = _unit(ANGLES)
Y = np.array([0, 0, 1, 1, 2, 2])
Q = np.array([3.0, 3.0, 1.0, 2.0, 2.0, 3.0])
# pair (angle, genuine/impostor, lower quality -> stratum with cuts [1, 2]):
#   (0,1) 20 G q3 s2   (3,4) 40 I q2 s1   (2,3) 45 G q1 s0   (1,2) 50 I q1 s0   (4,5) 65 G q2 s1
#   (0,2) 70 I q1 s0   (2,4) 85 I q1 s0   (1,3) 95 I q2 s1   (3,5) 105 I q2 s1  (0,3) 115 I q2 s1
#   (1,4) 135 I q2 s1  (0,5) 140 I q3 s2  (2,5) 150 I q1 s0  (0,4) 155 I q2 s1  (1,5) 160 I q3 s2
# 12 impostors; strata 0/1/2 hold 1/1/1 genuine and 4/6/2 impostor pairs


def _close(a, b):
    """Nested dicts/lists of numbers equal up to float rounding (NaN equal to NaN)."""
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _close(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, z in zip(a, b):
            _close(x, z)
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b)
    else:
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)


# ------------------------------------------------------------------ image quality


def test_effective_resolution_by_hand():
    deg = {"resolution": [32, 16, 32, 10], "blur": [0.0, 0.0, 1.2, 1.2], "noise": [0.0, 9.0, 0.0, 18.0]}
    q = image_quality(deg, size=32)
    # sharp images keep their resolution; blur σ at size S adds 3σ²/S² to 1/r²
    assert q[0] == pytest.approx(32.0)
    assert q[1] == pytest.approx(16.0)
    assert q[2] == pytest.approx(32.0 / math.sqrt(1 + 3 * 1.44))    # 13.87: strongest blur alone
    assert q[3] == pytest.approx(1.0 / math.sqrt(0.01 + 3 * 1.44 / 1024))  # 8.39
    np.testing.assert_array_equal(image_quality(deg, size=32, method="resolution"), [32, 16, 32, 10])


def test_rank_quality_by_hand():
    deg = {"resolution": [10, 20, 20], "blur": [0.0, 1.0, 0.0], "noise": [5.0, 5.0, 1.0]}
    # ranks 0..2, ties sharing: resolution [0, 1.5, 1.5], -blur [1.5, 0, 1.5], -noise [0.5, 0.5, 2]
    np.testing.assert_allclose(image_quality(deg, size=32, method="rank"), [2 / 6, 2 / 6, 5 / 6])


@pytest.mark.parametrize("deg, kw, msg", [
    ({"resolution": [10, 20]}, {"method": "sharpness"}, "unknown quality method"),
    ({"blur": [0.0]}, {}, "must hold 'resolution'"),
    ({"resolution": [10, 20]}, {}, "needs degradation\\['blur'\\]"),
    ({"resolution": [10, 20], "blur": [0.0, 1.0]}, {"method": "rank"}, "needs degradation\\['noise'\\]"),
    ({"resolution": [0, 20], "blur": [0.0, 1.0]}, {}, "resolution must be positive"),
    ({"resolution": [10, 20], "blur": [0.0, -1.0]}, {}, "blur must not be negative"),
    ({"resolution": [10, 20], "blur": [0.0]}, {}, "blur must be \\(2,\\)"),
    ({"resolution": [10, np.nan], "blur": [0.0, 0.0]}, {}, "non-finite"),
    ({"resolution": [10, 20], "blur": [0.0, 0.0]}, {"size": 0}, "size must be a positive"),
])
def test_image_quality_input_checks(deg, kw, msg):
    kw = {"size": 32, **kw}
    with pytest.raises(ValueError, match=msg):
        image_quality(deg, **kw)


# ------------------------------------------------------------------ strata


def test_quality_cuts_from_the_pair_minimum():
    # sorted [1,2,2,3,3,3]; the pairs whose lower image is q_(i) number 5,4,3,2,1,0 -> pair minimum
    # 1: 5 pairs, 2: 7, 3: 3 of 15; cumulative shares 1/3, 12/15, 1 -> cuts at 1/3: 1, at 2/3: 2
    np.testing.assert_array_equal(quality_cuts(Q, 3), [1.0, 2.0])
    # distinct values 0..5: cumulative 5, 9, 12, 14, 15 of 15 -> quarters at 0, 1, 2
    np.testing.assert_array_equal(quality_cuts(np.arange(6.0)[::-1], 4), [0.0, 1.0, 2.0])


def test_quality_cuts_drop_coinciding_cuts():
    # [1,1,1,1,2,3]: cumulative 5, 9, 12, 14, 15 -> both cuts at 1: one cut, two strata
    np.testing.assert_array_equal(quality_cuts([1, 1, 1, 1, 2, 3], 3), [1.0])
    # one value everywhere: no cut
    assert quality_cuts([2, 2, 2], 3).size == 0


def test_strata_take_the_lower_quality_image():
    r = stratified_tar(EMB, Y, Q, fars=[1 / 12], bins=3)
    assert r["cuts"] == [1.0, 2.0]
    counts = [(b["num_genuine"], b["num_impostor"]) for b in r["bins"]]
    assert counts == [(1, 4), (1, 6), (1, 2)]
    assert [(b["quality_low"], b["quality_high"]) for b in r["bins"]] == [(1, 1), (2, 2), (3, 3)]
    assert (r["num_genuine"], r["num_impostor"]) == (3, 12)
    # the same strata from the cut points given
    same = stratified_tar(EMB, Y, Q, fars=[1 / 12], bins=[1.5, 2.5])
    assert [(b["num_genuine"], b["num_impostor"]) for b in same["bins"]] == counts


def test_tar_per_stratum_at_one_threshold():
    r = stratified_tar(EMB, Y, Q, fars=[1 / 12, 0.25], bins=3)
    lo, mid, hi = r["bins"]
    # FAR 1/12: one false accept allowed -> threshold at the 2nd impostor, the 50° pair;
    # genuine 20° (stratum 2) and 45° (stratum 0) pass, 65° (stratum 1) does not
    f = 1 / 12
    assert r["threshold"][f] == pytest.approx(_cos(50))
    assert r["tar"][f] == pytest.approx(2 / 3)
    assert (lo["tar"][f], mid["tar"][f], hi["tar"][f]) == (1.0, 0.0, 1.0)
    # the one impostor above it (40°) lies in stratum 1
    assert (lo["far"][f], mid["far"][f], hi["far"][f]) == pytest.approx((0.0, 1 / 6, 0.0))
    # FAR 1/4: threshold at the 4th impostor (85°): every genuine passes; 40°, 50°, 70° are false accepts
    f = 0.25
    assert r["threshold"][f] == pytest.approx(_cos(85))
    assert r["tar"][f] == 1.0 and all(b["tar"][f] == 1.0 for b in r["bins"])
    assert (lo["far"][f], mid["far"][f], hi["far"][f]) == pytest.approx((2 / 4, 1 / 6, 0.0))


def test_own_threshold_per_stratum():
    r = stratified_tar(EMB, Y, Q, fars=[1 / 12, 0.25], bins=3)
    lo, mid, hi = r["bins"]
    # FAR 1/4 within stratum 0 (4 impostors: 50°, 70°, 85°, 150°): 1 allowed -> threshold at 70°
    assert lo["threshold_own"][0.25] == pytest.approx(_cos(70))
    assert lo["tar_own"][0.25] == 1.0
    # stratum 1 (40°, 95°, 105°, …): floor(0.25·6) = 1 allowed -> threshold at 95°, the 65° genuine passes
    assert mid["threshold_own"][0.25] == pytest.approx(_cos(95))
    assert mid["tar_own"][0.25] == 1.0
    # stratum 2 has 2 impostors: 0.25·2 < 1 is not measurable; FAR 1/12 nowhere within a stratum
    assert math.isnan(hi["tar_own"][0.25]) and math.isnan(hi["threshold_own"][0.25])
    assert all(math.isnan(b["tar_own"][1 / 12]) for b in r["bins"])


def test_one_stratum_equals_all_vs_all_and_strata_add_up():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 12, 90)
    e = rng.normal(size=(12, 8))[y] + rng.normal(size=(90, 8))
    q = rng.integers(10, 33, 90).astype(float)
    fars = [0.1, 0.01, 1e-3]
    ref = all_vs_all(e, y, fars=fars)["tar_at_far"]
    whole = stratified_tar(e, y, q, fars=fars, bins=[0.0])  # every pair minimum is above the cut
    assert len(whole["bins"]) == 2 and whole["bins"][0]["num_genuine"] + whole["bins"][0]["num_impostor"] == 0
    _close(whole["tar"], ref)
    _close(whole["bins"][1]["tar"], ref)
    r = stratified_tar(e, y, q, fars=fars, bins=4)
    _close(r["tar"], ref)
    assert sum(b["num_genuine"] for b in r["bins"]) == r["num_genuine"]
    assert sum(b["num_impostor"] for b in r["bins"]) == r["num_impostor"]
    for f in r["fars"]:  # one threshold: the strata's accepts add up to the whole set's
        assert sum(b["tar"][f] * b["num_genuine"] for b in r["bins"]) == pytest.approx(r["tar"][f] * r["num_genuine"])
        assert sum(b["far"][f] * b["num_impostor"] for b in r["bins"]) <= math.floor(f * r["num_impostor"] * (1 + 1e-9))


def test_far_below_one_impostor_is_not_reported():
    r = stratified_tar(EMB, Y, Q, fars=[0.5, 0.01], bins=3)
    assert r["fars"] == [0.5] and set(r["tar"]) == {0.5}


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_stratified_chunking_changes_nothing(chunk):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 8, 40)
    e = rng.normal(size=(8, 6))[y] + rng.normal(size=(40, 6))
    q = rng.random(40)
    _close(stratified_tar(e, y, q, fars=[0.2, 0.02], bins=3, chunk=chunk),
           stratified_tar(e, y, q, fars=[0.2, 0.02], bins=3, chunk=1000))
    _close(stratified_tar(EMB, Y, Q, fars=[0.25], chunk=chunk), stratified_tar(EMB, Y, Q, fars=[0.25], chunk=100))


@pytest.mark.parametrize("kw, msg", [
    ({"quality": Q[:5]}, "quality must be \\(6,\\)"),
    ({"quality": np.r_[Q[:5], np.nan]}, "quality hold non-finite"),
    ({"bins": 1}, "bins must be an integer >= 2"),
    ({"bins": [2.0, 1.0]}, "strictly increasing"),
    ({"bins": []}, "strictly increasing"),
    ({"bins": "ab"}, "bins must be an integer or a sequence"),
    ({"fars": [0.0]}, "FARs must lie in \\(0, 1\\]"),
    ({"fars": []}, "fars is empty"),
    ({"labels": Y[:5]}, "labels must be \\(6,\\)"),
    ({"labels": np.zeros(6)}, "need genuine and impostor pairs"),
    ({"embeddings": EMB[:1]}, "must be \\(N, D\\) with N >= 2"),
    ({"chunk": 0}, "chunk must be a positive"),
])
def test_stratified_input_checks(kw, msg):
    args = {"embeddings": EMB, "labels": Y, "quality": Q, "fars": [0.25], **kw}
    with pytest.raises(ValueError, match=msg):
        stratified_tar(**args)


# ------------------------------------------------------------------ error versus reject

# rejection order by these scores: image 2, 4, 3, 5, 1, 0
RANK = np.array([6.0, 5.0, 1.0, 3.0, 2.0, 4.0])


def test_error_vs_reject_by_hand():
    # FMR 1/12 fixes the threshold at the 50° impostor: the 65° genuine pair (4,5) is the one miss
    c = error_vs_reject(EMB, Y, RANK, fmr=1 / 12, fractions=[0, 1 / 6, 2 / 6, 3 / 6])
    assert c["threshold"] == pytest.approx(_cos(50))
    assert c["rejected"] == [0, 1, 2, 3]
    # none rejected: 1 miss of 3; image 2 out: (2,3) goes, 1 of 2; image 4 out too: (4,5) goes, 0 of 1
    assert c["fnmr"] == pytest.approx([1 / 3, 1 / 2, 0.0, 0.0])
    # the false match (3,4) at 40°: 1 of 12 impostors; of 8 left without image 2; gone with image 4
    assert c["fmr"] == pytest.approx([1 / 12, 1 / 8, 0.0, 0.0])
    # trapezoids: (1/6)(1/3 + 1/2)/2 + (1/6)(1/2 + 0)/2 + 0 = 5/72 + 3/72
    assert c["area"] == pytest.approx(1 / 9)
    assert (c["num_genuine"], c["num_impostor"], c["fmr_target"]) == (3, 12, 1 / 12)


def test_equal_scores_reject_the_lower_index_first():
    # by quality: image 2 (q=1), then 3 and 4 (q=2) in index order -> at 2/6, images 2 and 3 are out,
    # (0,1) and the missed (4,5) remain
    c = error_vs_reject(EMB, Y, Q, fmr=1 / 12, fractions=[0, 1 / 6, 2 / 6])
    assert c["fnmr"] == pytest.approx([1 / 3, 1 / 2, 1 / 2])


def test_several_rankings_in_one_pass():
    both = error_vs_reject(EMB, Y, {"rank": RANK, "quality": Q}, fmr=1 / 12, fractions=[0, 1 / 6, 2 / 6])
    assert set(both) == {"rank", "quality"}
    _close(both["rank"], error_vs_reject(EMB, Y, RANK, fmr=1 / 12, fractions=[0, 1 / 6, 2 / 6]))
    _close(both["quality"], error_vs_reject(EMB, Y, Q, fmr=1 / 12, fractions=[0, 1 / 6, 2 / 6]))


def test_default_fractions_and_random_scores():
    assert DEFAULT_FRACTIONS[0] == 0.0 and DEFAULT_FRACTIONS[-1] == 0.5 and len(DEFAULT_FRACTIONS) == 11
    a, b = random_scores(50, seed=3), random_scores(50, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (50,) and np.all((a >= 0) & (a < 1))
    assert not np.array_equal(a, random_scores(50, seed=4))
    with pytest.raises(ValueError, match="positive integer"):
        random_scores(0)


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_error_vs_reject_chunking_changes_nothing(chunk):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 10, 60)
    e = rng.normal(size=(10, 6))[y] + rng.normal(size=(60, 6))
    s = {"norm": rng.random(60), "random": random_scores(60, 0)}
    _close(error_vs_reject(e, y, s, fmr=0.01, chunk=chunk), error_vs_reject(e, y, s, fmr=0.01, chunk=1000))


def test_rejecting_the_misses_lowers_the_curve():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(20), 5)
    good = rng.random(100) > 0.3
    e = rng.normal(size=(20, 16))[y] * 3 + rng.normal(size=(100, 16)) * np.where(good, 0.5, 4.0)[:, None]
    oracle = error_vs_reject(e, y, good.astype(float) + 0.01 * rng.random(100), fmr=0.01)
    rand = error_vs_reject(e, y, random_scores(100, 0), fmr=0.01)
    assert oracle["fnmr"][0] == rand["fnmr"][0]
    assert oracle["area"] < rand["area"]


@pytest.mark.parametrize("kw, msg", [
    ({"fmr": 1e-3}, "allows less than one of the 12 impostor pairs"),
    ({"fmr": 0.0}, "fmr must lie in"),
    ({"fractions": [0, 1.0]}, "shares in \\[0, 1\\)"),
    ({"fractions": [0.2, 0.1]}, "strictly increasing"),
    ({"fractions": []}, "shares in"),
    ({"rank_scores": RANK[:4]}, "rank_scores must be \\(6,\\)"),
    ({"rank_scores": {"norm": RANK[:4]}}, "rank_scores\\['norm'\\] must be \\(6,\\)"),
    ({"rank_scores": {}}, "empty mapping"),
    ({"rank_scores": np.r_[RANK[:5], np.inf]}, "non-finite"),
    ({"labels": np.arange(6)}, "need genuine and impostor pairs"),
])
def test_error_vs_reject_input_checks(kw, msg):
    args = {"embeddings": EMB, "labels": Y, "rank_scores": RANK, "fmr": 0.25, **kw}
    with pytest.raises(ValueError, match=msg):
        error_vs_reject(**args)


def test_public_names():
    for name in ("image_quality", "quality_cuts", "stratified_tar", "error_vs_reject", "random_scores"):
        assert getattr(fm_eval, name) is globals()[name]
        assert name in fm_eval.__all__
