"""Identification among distractors: a case worked by hand and brute-force ranks."""
import numpy as np
import pytest

from facemargin.eval.distractors import distractor_counts, identify_with_distractors


def unit(deg):
    r = np.deg2rad(np.asarray(deg, dtype=np.float64))
    return np.stack([np.cos(r), np.sin(r)], axis=1)


def test_megaface_form_by_hand():
    # identity 0 at 0 and 10 degrees, identity 1 at 90 and 100 degrees: each true score is cos 10
    probes, labels = unit([0, 10, 90, 100]), np.array([0, 0, 1, 1])
    # distractors in this order: 180 (beats nobody), 5 (beats both searches of identity 0),
    # 95 (beats both searches of identity 1), 50 (beats nobody)
    d = unit([180, 5, 95, 50])
    r = identify_with_distractors(probes, labels, d, counts=[1, 2, 4], max_rank=3)
    assert r["form"] == "megaface" and r["num_searches"] == 4
    assert r["rank1"] == {1: 1.0, 2: 0.5, 4: 0.0}
    assert r["cmc"][4] == [0.0, 1.0, 1.0]
    assert r["cmc"][2] == [0.5, 1.0, 1.0]


def test_gallery_form_by_hand():
    # gallery: identity 0 at 0 degrees, identity 1 at 40 degrees; probe of identity 0 at 15 degrees
    g, gl = unit([0, 40]), np.array([0, 1])
    p, pl = unit([15, 70]), np.array([0, 7])  # the second probe has no gallery identity: no search
    # true score cos 15; the gallery non-mate at 40 is 25 degrees away; distractor at 20 beats it
    d = unit([200, 20, 12])
    r = identify_with_distractors(p, pl, d, gallery_emb=g, gallery_labels=gl, counts=[1, 2, 3], max_rank=2)
    assert r["form"] == "gallery" and r["num_searches"] == 1
    assert r["rank1"] == {1: 1.0, 2: 0.0, 3: 0.0}
    assert r["cmc"][2] == [0.0, 1.0] and r["cmc"][3] == [0.0, 0.0]  # 20 and 12 degrees both beat it


def brute_ranks(P, pl, D, n):
    P = P / np.linalg.norm(P, axis=1, keepdims=True)
    D = D / np.linalg.norm(D, axis=1, keepdims=True)
    ranks = []
    for i in range(len(P)):
        for j in range(len(P)):
            if i != j and pl[i] == pl[j]:
                t = P[j] @ P[i]
                ranks.append(1 + int(np.sum(D[:n] @ P[j] >= t)))
    return np.array(ranks)


def test_chunked_search_matches_brute_force():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 16))
    pl = np.repeat(np.arange(6), 4)
    P = centres[pl] + 0.9 * rng.normal(size=(24, 16))
    D = rng.normal(size=(3000, 16))
    # a tiny memory budget forces several distractor chunks and probe blocks
    r = identify_with_distractors(P.astype(np.float32), pl, D.astype(np.float32), max_rank=5, memory_mb=0)
    assert r["counts"] == [10, 100, 1000, 3000]
    for n in r["counts"]:
        ranks = brute_ranks(P.astype(np.float32).astype(np.float64), pl, D.astype(np.float32).astype(np.float64), n)
        ref = [float(np.mean(ranks <= k)) for k in range(1, 6)]
        assert r["cmc"][n] == pytest.approx(ref, abs=1.5 / len(ranks))  # float32 ties at most one search
    assert r["num_searches"] == 6 * 4 * 3


def test_counts_and_errors():
    assert distractor_counts(1) == [1]
    assert distractor_counts(10) == [10]
    assert distractor_counts(1_000_000) == [10, 100, 1000, 10_000, 100_000, 1_000_000]
    assert distractor_counts(2500) == [10, 100, 1000, 2500]
    p, lab = unit([0, 10]), np.array([0, 0])
    with pytest.raises(ValueError, match="2-D"):
        identify_with_distractors(p, lab, np.zeros((3, 5)))
    with pytest.raises(ValueError, match="counts"):
        identify_with_distractors(p, lab, unit([50]), counts=[5])
    with pytest.raises(ValueError, match="row 1"):
        identify_with_distractors(p, lab, np.array([[1.0, 0], [np.nan, 0]]))
    with pytest.raises(ValueError, match="no searches"):
        identify_with_distractors(p, np.array([0, 1]), unit([50]))


def test_npy_rows_reads_chunks_and_gives_the_same_result(tmp_path):
    from facemargin.eval.distractors import NpyRows

    rng = np.random.default_rng(5)
    d = rng.normal(size=(1500, 6)).astype(np.float32)
    np.save(tmp_path / "d.npy", d)
    rows = NpyRows(tmp_path / "d.npy")
    assert rows.shape == (1500, 6) and len(rows) == 1500
    np.testing.assert_array_equal(rows[100:230], d[100:230])
    np.testing.assert_array_equal(rows[1490:2000], d[1490:])
    p, lab = rng.normal(size=(8, 6)), np.repeat([0, 1], 4)
    a = identify_with_distractors(p, lab, rows, memory_mb=0)
    b = identify_with_distractors(p, lab, d, memory_mb=0)
    assert a["cmc"] == b["cmc"]
    (tmp_path / "bad.npy").write_bytes(b"not a numpy file")
    with pytest.raises(ValueError, match="bad.npy is not a .npy file"):
        NpyRows(tmp_path / "bad.npy")
