"""IJB-B/IJB-C protocols on small folders in the IJB layout, with values worked by hand."""
import json
import math

import numpy as np
import pytest
import torch

from facemargin.align import ARCFACE_112
from facemargin.data.images import save_image
from facemargin.eval.ijb import (
    IJBOptions,
    embed_ijb,
    identify_open_set,
    ijb_1to1,
    ijb_1toN,
    pool_templates,
    read_ijb,
    read_ijb_1n,
    score_pairs,
)

R2 = 1 / math.sqrt(2)

# image, template, media, faceness, embedding, flipped-image embedding (2-D, worked by hand)
IMAGES = [
    ("a.png", 1, 10, 1.0, (1, 0), (1, 0)),   # feature (2, 0)
    ("b.png", 1, 11, 1.0, (0, 1), (0, 1)),   # feature (0, 2)
    ("c.png", 1, 11, 0.5, (0, 3), (0, 1)),   # feature (0, 4) x 0.5 = (0, 2)
    ("d.png", 2, 20, 1.0, (1, 0), (1, 0)),
    ("e.png", 3, 30, 1.0, (0, 1), (0, 1)),
    ("f.png", 4, 40, 1.0, (-1, 0), (-1, 0)),
]
# template 1 = media 10 (2, 0) + mean of media 11 ((0, 2), (0, 2)) = (2, 2) -> (1/sqrt2, 1/sqrt2)
PAIRS = [(1, 2, 1), (3, 4, 1), (1, 3, 0), (2, 3, 0), (2, 4, 0), (1, 4, 0)]
SCORES = [R2, 0.0, R2, 0.0, -1.0, -R2]


def write_layout(root, images=IMAGES, pairs=PAIRS, ds="ijbc", crops=True, size=28, seed=0):
    meta = root / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    pts = ARCFACE_112 * size / 112  # crops already aligned: the alignment is the identity
    with open(meta / f"{ds}_face_tid_mid.txt", "w") as f:
        for name, t, m, *_ in images:
            f.write(f"{name} {t} {m}\n")
    with open(meta / f"{ds}_name_5pts_score.txt", "w") as f:
        for name, t, m, s, *_ in images:
            f.write(name + " " + " ".join(f"{v:.4f}" for v in pts.reshape(-1)) + f" {s}\n")
    with open(meta / f"{ds}_template_pair_label.txt", "w") as f:
        for a, b, y in pairs:
            f.write(f"{a} {b} {y}\n")
    if crops:
        rng = np.random.default_rng(seed)
        (root / "loose_crop").mkdir(exist_ok=True)
        for name, *_ in images:
            save_image(root / "loose_crop" / name, rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return root


def embeddings(images=IMAGES):
    e = np.array([im[4] for im in images], dtype=np.float32)
    ef = np.array([im[5] for im in images], dtype=np.float32)
    return e, ef


def test_templates_scores_and_tar_by_hand(tmp_path):
    meta = read_ijb(write_layout(tmp_path, crops=False), "IJBC")
    assert meta.names.tolist() == [im[0] for im in IMAGES]
    e, ef = embeddings()
    tids, feats = pool_templates(e, meta.templates, meta.medias, ef, meta.faceness)
    assert tids.tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(feats, [[R2, R2], [1, 0], [0, 1], [-1, 0]], atol=1e-6)
    r = ijb_1to1(meta, e, ef, fars=(0.25, 0.5, 0.1))
    np.testing.assert_allclose(r["scores"], SCORES, atol=1e-6)
    # 2 genuine, 4 impostor pairs; per-score counts (FP, TP): 0.707 -> (1, 1), 0 -> (2, 2),
    # -0.707 -> (3, 2), -1 -> (4, 2).  The thinned ROC drops (3, 2): FPR 0, .25, .5, 1
    assert r["num_genuine"] == 2 and r["num_impostor"] == 4 and r["num_templates"] == 4
    assert r["tar_at_far"] == {0.25: 0.5, 0.5: 1.0}  # FAR 0.1 needs 10 impostor pairs: omitted
    assert r["tar_at_far_at_most"] == {0.25: 0.5, 0.5: 1.0}
    # AUC: P(genuine > impostor) + ties/2 over the 8 genuine/impostor pairs
    # genuine .707: > 0, -1, -.707 and ties .707 -> 3.5; genuine 0: > -1, -.707, tie 0 -> 2.5
    assert r["auc"] == pytest.approx(6 / 8)
    assert r["code"] == "F1N1D1"


def test_options_change_the_templates_as_worked_by_hand(tmp_path):
    meta = read_ijb(write_layout(tmp_path, crops=False), "IJBC")
    e, ef = embeddings()
    # norm weighting off: a -> (1, 0); b -> (0, 1); c -> (0, 1) x 0.5; media 11 = (0, 0.75)
    _, f = pool_templates(e, meta.templates, meta.medias, ef, meta.faceness, IJBOptions(norm_weight=False))
    np.testing.assert_allclose(f[0], [0.8, 0.6], atol=1e-6)
    # faceness off: c -> (0, 4); media 11 = (0, 3); template (2, 3)
    _, f = pool_templates(e, meta.templates, meta.medias, ef, meta.faceness, IJBOptions(faceness_weight=False))
    np.testing.assert_allclose(f[0], np.array([2, 3]) / math.sqrt(13), atol=1e-6)
    # flip off: a (1, 0); b (0, 1); c (0, 3) x 0.5; media 11 = (0, 1.25); template (1, 1.25)
    _, f = pool_templates(e, meta.templates, meta.medias, None, meta.faceness, IJBOptions(flip=False))
    np.testing.assert_allclose(f[0], np.array([1, 1.25]) / math.hypot(1, 1.25), atol=1e-6)
    with pytest.raises(ValueError, match="flipped"):
        pool_templates(e, meta.templates, meta.medias, None, meta.faceness)
    with pytest.raises(ValueError, match="template 9 has no images"):
        pool_templates(e, meta.templates, meta.medias, ef, meta.faceness, select=[1, 9])
    bad = e.copy()
    bad[3, 0] = np.nan  # image d.png of template 2
    with pytest.raises(ValueError, match="template 2 has a non-finite feature"):
        pool_templates(bad, meta.templates, meta.medias, ef, meta.faceness)
    tids, feats = pool_templates(e, meta.templates, meta.medias, ef, meta.faceness, select=[4, 1])
    assert tids.tolist() == [1, 4]
    np.testing.assert_allclose(feats, [[R2, R2], [-1, 0]], atol=1e-6)


def test_pooling_and_scoring_match_a_direct_computation():
    rng = np.random.default_rng(3)
    n, d = 3000, 8
    t = rng.integers(100, 160, n)
    m = rng.integers(0, 4, n) + 10 * t
    e, ef = rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(n, d)).astype(np.float32)
    fs = rng.random(n).astype(np.float32)
    for opt in (IJBOptions(), IJBOptions(flip=False, norm_weight=False, faceness_weight=False)):
        tids, feats = pool_templates(e, t, m, ef, fs, opt, chunk=257)
        for k, tt in enumerate(tids):
            acc = np.zeros(d)
            for mm in np.unique(m[t == tt]):
                r = (t == tt) & (m == mm)
                f = (e[r] + ef[r]) if opt.flip else e[r].astype(np.float64)
                if not opt.norm_weight:
                    f = f / np.linalg.norm(f, axis=1, keepdims=True)
                if opt.faceness_weight:
                    f = f * fs[r, None]
                acc += f.mean(axis=0)
            np.testing.assert_allclose(feats[k], acc / np.linalg.norm(acc), atol=2e-6)
    # block products (few templates per side) and row-wise products give the same scores
    t1, t2 = rng.choice(tids, 5000), rng.choice(tids, 5000)
    ref = (feats[np.searchsorted(tids, t1)] * feats[np.searchsorted(tids, t2)]).sum(1)
    np.testing.assert_allclose(score_pairs(tids, feats, t1, t2, block_elems=100), ref, atol=1e-6)
    few = score_pairs(tids, feats, t1[:3], t2[:3])  # 9 products > 8 x 3 pairs: row by row
    np.testing.assert_allclose(few, ref[:3], atol=1e-6)
    with pytest.raises(ValueError, match="template 5 has no template feature"):
        score_pairs(tids, feats, [tids[0]], [5])


def test_degenerate_layouts_get_clear_errors(tmp_path):
    # a pair naming a template with no images
    root = write_layout(tmp_path / "a", pairs=PAIRS + [(1, 77, 0)], crops=False)
    with pytest.raises(ValueError, match=r"pair 7: template 77 has no images in .*ijbc_face_tid_mid.txt"):
        read_ijb(root, "IJBC")
    # a label that is not 0/1
    root = write_layout(tmp_path / "b", pairs=[(1, 2, 3)], crops=False)
    with pytest.raises(ValueError, match="label must be 0 or 1"):
        read_ijb(root, "IJBC")
    # the landmark list disagrees with the template list
    root = write_layout(tmp_path / "c", crops=False)
    lines = (root / "meta" / "ijbc_name_5pts_score.txt").read_text().splitlines()
    lines[2] = lines[2].replace("c.png", "z.png")
    (root / "meta" / "ijbc_name_5pts_score.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"line 3: image 'z.png' but .* has 'c.png'"):
        read_ijb(root, "IJBC")
    # a malformed template line
    root = write_layout(tmp_path / "d", crops=False)
    with open(root / "meta" / "ijbc_face_tid_mid.txt", "a") as f:
        f.write("g.png x 3\n")
    with pytest.raises(ValueError, match="line 7: template and media ids must be integers"):
        read_ijb(root, "IJBC")
    # no such set
    with pytest.raises(FileNotFoundError, match="ijbb_face_tid_mid.txt"):
        read_ijb(tmp_path / "a", "IJBB")
    with pytest.raises(ValueError, match="IJBB or IJBC"):
        read_ijb(tmp_path / "a", "IJBA")


def write_1n(root, gallery1, gallery2, probes, ds="ijbc"):
    names = ("G1", "G2") if ds == "ijbc" else ("S1", "S2")
    for name, rows in ((f"{ds}_1N_gallery_{names[0]}.csv", gallery1), (f"{ds}_1N_gallery_{names[1]}.csv", gallery2),
                       (f"{ds}_1N_probe_mixed.csv", probes)):
        with open(root / "meta" / name, "w") as f:
            f.write("TEMPLATE_ID,SUBJECT_ID,FILENAME\n")
            for t, s in rows:
                f.write(f"{t},{s},img/{t}.jpg\n")


def unit(deg):
    r = np.deg2rad(np.asarray(deg, dtype=np.float64))
    return np.stack([np.cos(r), np.sin(r)], axis=1)


def test_open_set_identification_by_hand():
    # gallery: subject 1 at 0 degrees, subject 2 at 90 degrees
    g, gs = unit([0, 90]), np.array([1, 2])
    # mated probes: subject 1 at 10 (rank 1, score cos 10), subject 2 at 80 (rank 1, cos 10),
    # subject 1 at 60 (subject 2 scores cos 30 > cos 60: rank 2)
    # 10 non-mated probes: best scores cos 20 (at 20 degrees), cos 45 (at 45), and 8 x cos 135 (at 225)
    p = unit([10, 80, 60, 20, 45] + [225] * 8)
    ps = np.array([1, 2, 1] + [9] * 10)
    r = identify_open_set(p, ps, g, gs, fpirs=(0.01, 0.1, 0.2))
    assert r["num_mated"] == 3 and r["num_non_mated"] == 10
    assert r["top1"] == pytest.approx(2 / 3) and r["top5"] == 1.0
    assert r["ranks"][:3].tolist() == [1, 1, 2]
    # FPIR 0.01 allows floor(0.1) = 0 of the 10 non-mated probes to alarm: not resolvable.
    # FPIR 0.1 allows 1: threshold = the 2nd largest non-mated score, cos 45; the probe at 20 degrees
    # alarms (FPIR 0.1); mated at rank 1 above cos 45: the two at cos 10
    assert set(r["tpir_at_fpir"]) == {0.1, 0.2}
    t1 = r["tpir_at_fpir"][0.1]
    assert t1["threshold"] == pytest.approx(R2)
    assert t1["fpir"] == pytest.approx(0.1) and t1["false_alarms"] == 1
    assert t1["tpir"] == pytest.approx(2 / 3) and t1["identified"] == 2
    # FPIR 0.2 allows 2: the 3rd largest, cos 135 (the eight at 225 degrees); 20 and 45 degrees alarm
    t2 = r["tpir_at_fpir"][0.2]
    assert t2["threshold"] == pytest.approx(-R2) and t2["fpir"] == pytest.approx(0.2)
    assert t2["tpir"] == pytest.approx(2 / 3)
    # a closed set (every probe mated) has no TPIR@FPIR
    r = identify_open_set(p[:3], ps[:3], g, gs)
    assert r["tpir_at_fpir"] == {} and r["num_non_mated"] == 0
    with pytest.raises(ValueError, match="mated"):
        identify_open_set(p[3:], ps[3:], g, gs)


def test_one_to_n_galleries(tmp_path):
    # templates 1..4 as in IMAGES; gallery G1 = template 2 (subject 20), G2 = template 3 (subject 30);
    # probes: template 1 (subject 20), template 4 (subject 30)
    root = write_layout(tmp_path, crops=False)
    write_1n(root, [(2, 20)], [(3, 30)], [(1, 20), (1, 20), (4, 30)])
    meta = read_ijb(root, "IJBC")
    e, ef = embeddings()
    # G1: probe 1 (R2, R2) mated, rank 1; probe 4 (-1, 0) non-mated, best score -1
    r1 = ijb_1toN(meta, e, ef, gallery="G1", fpirs=(1.0,))
    assert r1["num_mated"] == 1 and r1["top1"] == 1.0 and r1["num_gallery_templates"] == 1
    # FPIR 1 allows the one non-mated probe to alarm: no threshold (reported as None)
    assert r1["tpir_at_fpir"][1.0]["threshold"] is None and r1["tpir_at_fpir"][1.0]["fpir"] == 1.0
    assert r1["tpir_at_fpir"][1.0]["tpir"] == 1.0
    # both: closed set; probe 1 scores R2 with template 2 and R2 with template 3 (a tie: rank 2),
    # probe 4 scores 0 with its own template 3 and -1 with template 2 (rank 1)
    rb = ijb_1toN(meta, e, ef, gallery="both")
    assert rb["num_mated"] == 2 and rb["top1"] == 0.5 and rb["tpir_at_fpir"] == {}
    ra = ijb_1toN(meta, e, ef, gallery="average", fpirs=(1.0,))
    assert set(ra["per_gallery"]) == {"G1", "G2"} and ra["num_mated"] == 2
    assert ra["top1"] == 1.0  # alone in its gallery each probe is at rank 1
    # a gallery template without images
    write_1n(root, [(2, 20), (55, 21)], [(3, 30)], [(1, 20)])
    with pytest.raises(ValueError, match=r"ijbc_1N_gallery_G1.csv: template 55 has no images"):
        read_ijb_1n(meta)
    write_1n(root, [(2, 20)], [(3, 20)], [(1, 20)])
    with pytest.raises(ValueError, match="both galleries"):
        read_ijb_1n(meta)


def axis_search(own, others, non_mated, fpirs, tpir_rule="open_set"):
    """Gallery = the unit axes of subjects 0..G-1, so a probe's feature row is its score list.

    ``own``: mated probes as (subject, score of own subject); ``others``: the same probes' score for
    every other subject (one value); ``non_mated``: the best score of each non-mated probe (subject
    99, scoring it against subject 0 and 0 elsewhere)."""
    n_sub = 2
    rows, subj = [], []
    for (s, v) in own:
        row = np.full(n_sub, float(others))
        row[s] = v
        rows.append(row)
        subj.append(s)
    for v in non_mated:
        rows.append([v, 0.0])
        subj.append(99)
    return identify_open_set(np.array(rows), subj, np.eye(n_sub), np.arange(n_sub), fpirs=fpirs, tpir_rule=tpir_rule)


def test_fpir_f_allows_floor_f_n_false_alarms():
    # 4 mated probes at rank 1 (other subject scores 0) with own scores .9 .7 .5 .3;
    # 10 non-mated probes with best scores .95 .85 ... .05
    own = [(0, 0.9), (1, 0.7), (0, 0.5), (1, 0.3)]
    nm = [0.95 - 0.1 * i for i in range(10)]
    r = axis_search(own, 0.0, nm, fpirs=(0.05, 0.1, 0.15, 0.25, 0.3, 1.0))
    tp = r["tpir_at_fpir"]
    # 0.05 x 10 = 0.5: no alarm is allowed, a level finer than 1/N: omitted
    assert set(tp) == {0.1, 0.15, 0.25, 0.3, 1.0}
    # FPIR 0.1, N = 10: exactly 1 false alarm (.95); threshold .85; only .9 is above it
    assert tp[0.1]["false_alarms"] == 1 and tp[0.1]["fpir"] == pytest.approx(0.1)
    assert tp[0.1]["threshold"] == pytest.approx(0.85) and tp[0.1]["tpir"] == 0.25
    # 0.15 x 10 = 1.5: still 1 alarm
    assert tp[0.15]["false_alarms"] == 1 and tp[0.15]["threshold"] == pytest.approx(0.85)
    # 0.25 x 10 = 2.5: 2 alarms (.95 .85), threshold .75, realised FPIR 0.2 <= 0.25
    assert tp[0.25]["false_alarms"] == 2 and tp[0.25]["fpir"] == pytest.approx(0.2)
    assert tp[0.25]["threshold"] == pytest.approx(0.75) and tp[0.25]["tpir"] == 0.25
    # 0.3 x 10 = 3 alarms, threshold .65: .9 and .7 found
    assert tp[0.3]["false_alarms"] == 3 and tp[0.3]["threshold"] == pytest.approx(0.65)
    assert tp[0.3]["tpir"] == 0.5
    # FPIR 1: every non-mated probe may alarm, so no threshold; TPIR = rank-1 share
    assert tp[1.0] == {"tpir": 1.0, "fpir": 1.0, "threshold": None, "identified": 4, "false_alarms": 10}

    # N = 20 (best scores .975 .925 ... .025), FPIR 0.1: 2 false alarms, threshold .875
    nm = [0.975 - 0.05 * i for i in range(20)]
    tp = axis_search(own, 0.0, nm, fpirs=(0.1, 0.01))["tpir_at_fpir"]
    assert set(tp) == {0.1}  # 0.01 x 20 < 1
    assert tp[0.1]["false_alarms"] == 2 and tp[0.1]["fpir"] == pytest.approx(0.1)
    assert tp[0.1]["threshold"] == pytest.approx(0.875) and tp[0.1]["tpir"] == 0.25

    # N = 100 (best scores .995 .985 ... .005): 0.57 x 100 is 56.99999999999999 in floating point,
    # still 57 alarms; the threshold is the 58th largest, .425
    nm = [0.995 - 0.01 * i for i in range(100)]
    tp = axis_search(own, 0.0, nm, fpirs=(0.57,))["tpir_at_fpir"]
    assert tp[0.57]["false_alarms"] == 57 and tp[0.57]["fpir"] == pytest.approx(0.57)
    assert tp[0.57]["threshold"] == pytest.approx(0.425) and tp[0.57]["tpir"] == 0.75


def test_fpir_with_tied_scores_stays_at_most_f():
    # 10 non-mated best scores with ties: .9, .8 x 3, .5, and .25 x 5
    own = [(0, 0.85), (1, 0.8), (0, 0.6), (1, 0.2)]
    nm = [0.9, 0.8, 0.8, 0.8, 0.5] + [0.25] * 5
    tp = axis_search(own, 0.0, nm, fpirs=(0.2, 0.4, 0.5, 0.9))["tpir_at_fpir"]
    # FPIR 0.2 allows 2, but the 2nd to 4th largest tie at .8: the threshold is .8 and only .9
    # alarms (realised FPIR 0.1); the mated probe at exactly .8 is not above it
    assert tp[0.2]["threshold"] == pytest.approx(0.8) and tp[0.2]["false_alarms"] == 1
    assert tp[0.2]["fpir"] == pytest.approx(0.1) and tp[0.2]["tpir"] == 0.25
    # FPIR 0.4 allows 4: threshold .5 (the 5th largest), 4 alarms; .85 .8 .6 found
    assert tp[0.4]["threshold"] == pytest.approx(0.5) and tp[0.4]["false_alarms"] == 4
    assert tp[0.4]["tpir"] == 0.75
    # FPIR 0.5 allows 5: threshold .25 (the 6th), still 5 alarms
    assert tp[0.5]["threshold"] == pytest.approx(0.25) and tp[0.5]["fpir"] == pytest.approx(0.5)
    # FPIR 0.9 allows 9: the 10th largest is .25 too, so only 5 alarm (FPIR 0.5 <= 0.9); .2 not found
    assert tp[0.9]["threshold"] == pytest.approx(0.25) and tp[0.9]["false_alarms"] == 5
    assert tp[0.9]["tpir"] == 0.75
    # all ten tied: FPIR 0.5 allows 5, but none can alarm without all ten alarming
    tp = axis_search(own, 0.0, [0.6] * 10, fpirs=(0.5,))["tpir_at_fpir"]
    assert tp[0.5]["false_alarms"] == 0 and tp[0.5]["threshold"] == pytest.approx(0.6)
    assert tp[0.5]["tpir"] == 0.5  # .85 and .8; .6 is not above .6


def test_insightface_reading_by_hand():
    # subjects 0 and 1 (axes); mated probes (0, .9), (1, .7), and (0, .5) whose other subject scores
    # .6 (rank 2); 2 non-mated probes with scores (.8, 0) and (.3, 0)
    p = np.array([[0.9, 0.1], [0.2, 0.7], [0.5, 0.6], [0.8, 0.0], [0.3, 0.0]])
    ps = [0, 1, 0, 99, 99]
    r = identify_open_set(p, ps, np.eye(2), [0, 1], fpirs=(0.2, 0.4, 0.6, 0.9), tpir_rule="insightface")
    # non-mated pairs: .1 .2 .6 (mated probes, other subject) and .8 0 .3 0 (non-mated probes): 7,
    # sorted .8 .6 .3 .2 .1 0 0; Q = 5 probes
    assert r["num_non_mated_pairs"] == 7
    tp = r["tpir_at_fpir"]
    assert tp == r["tpir_at_fpir_insightface"]
    # FPIR 0.2: ceil(1) = 1st largest, .8; nothing above it; own scores above .8: .9
    assert tp[0.2]["threshold"] == pytest.approx(0.8) and tp[0.2]["false_alarms"] == 0
    assert tp[0.2]["tpir"] == pytest.approx(1 / 3) and tp[0.2]["fpir"] == 0.0
    # FPIR 0.4: 2nd largest, .6; .8 above it (FPIR 1/5); .9 and .7 above it
    assert tp[0.4]["threshold"] == pytest.approx(0.6) and tp[0.4]["fpir"] == pytest.approx(0.2)
    assert tp[0.4]["tpir"] == pytest.approx(2 / 3)
    # FPIR 0.6: 3rd largest, .3; .5 counts although that probe is at rank 2
    assert tp[0.6]["threshold"] == pytest.approx(0.3) and tp[0.6]["false_alarms"] == 2
    assert tp[0.6]["tpir"] == 1.0 and tp[0.6]["fpir"] == pytest.approx(0.4)
    # FPIR 0.9: ceil(4.5) = 5th largest, .1; 4 pairs above it
    assert tp[0.9]["threshold"] == pytest.approx(0.1) and tp[0.9]["false_alarms"] == 4
    # the open-set reading of the same search: N = 2, FPIR 0.6 allows 1 alarm, threshold .3
    # (the 2nd largest best score); rank-1 only: .9 and .7, not the .5 at rank 2
    r = identify_open_set(p, ps, np.eye(2), [0, 1], fpirs=(0.6,))
    assert r["tpir_at_fpir"][0.6]["threshold"] == pytest.approx(0.3)
    assert r["tpir_at_fpir"][0.6]["tpir"] == pytest.approx(2 / 3)
    assert r["tpir_at_fpir_insightface"][0.6]["tpir"] == 1.0
    # closed set (the mated probes alone): the open-set reading is empty, insightface's is defined:
    # Q = 3, pairs .6 .2 .1; FPIR 1: the 3rd largest .1, 2 pairs above it (FPIR 2/3), TPIR 3/3
    r = identify_open_set(p[:3], ps[:3], np.eye(2), [0, 1], fpirs=(1.0,))
    assert r["tpir_at_fpir"] == {}
    assert r["tpir_at_fpir_insightface"][1.0]["threshold"] == pytest.approx(0.1)
    assert r["tpir_at_fpir_insightface"][1.0]["fpir"] == pytest.approx(2 / 3)
    assert r["tpir_at_fpir_insightface"][1.0]["tpir"] == 1.0
    # a level needing more pairs than there are is omitted: a one-subject gallery has none
    r = identify_open_set(p[[0, 2]], [0, 0], np.eye(2)[:1], [0], fpirs=(0.5,), tpir_rule="insightface")
    assert r["num_non_mated_pairs"] == 0 and r["tpir_at_fpir"] == {}
    with pytest.raises(ValueError, match="tpir_rule"):
        identify_open_set(p, ps, np.eye(2), [0, 1], tpir_rule="nist")


def test_insightface_reading_matches_a_transcription_of_its_script():
    # insightface's ijb_1n.py evaluation(): one gallery template per subject, every probe mated
    import heapq

    rng = np.random.default_rng(7)
    g = rng.normal(size=(40, 16)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    mask = rng.integers(0, 40, 500)
    q = g[mask] + 0.9 * rng.normal(size=(500, 16)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    fars = [0.01, 0.1]
    sims = np.dot(q, g.T)
    required_topk = [math.ceil(len(q) * x) for x in fars]
    pos_sims = sims[np.arange(len(q)), mask].copy()
    sims[np.arange(len(q)), mask] = -2.0
    neg_sims = heapq.nlargest(max(required_topk), sims[np.where(sims > -2.0)])
    ref = {far: np.sum(pos_sims > neg_sims[k - 1]) / len(q) for far, k in zip(fars, required_topk)}
    r = identify_open_set(q, mask, g, np.arange(40), fpirs=fars, tpir_rule="insightface", chunk=64)
    for far in fars:
        assert r["tpir_at_fpir"][far]["tpir"] == pytest.approx(ref[far])
        assert r["tpir_at_fpir"][far]["threshold"] == pytest.approx(float(neg_sims[math.ceil(len(q) * far) - 1]))
    assert 0 < ref[0.01] < ref[0.1] < 1


# two galleries of 4-D axis templates: G1 = subject 1 (axis 0), G2 = subjects 2 and 3 (axes 1, 2)
AVG_GALLERY = {1: (1, (1, 0, 0, 0)), 2: (2, (0, 1, 0, 0)), 3: (3, (0, 0, 1, 0))}
AVG_PROBES = {  # template: (subject, feature = its scores against subjects 1, 2, 3)
    11: (1, (0.8, 0.6, 0, 0)),
    12: (1, (12 / 13, 0, 0, 5 / 13)),
    13: (2, (0.28, 0.96, 0, 0)),
    14: (2, (0, 20 / 29, 21 / 29, 0)),  # subject 3 scores above its own: rank 2 in G2
    15: (3, (0.352, 0, 0.936, 0)),
    16: (3, (0, 0, 8 / 17, 15 / 17)),
}


def average_layout(root):
    items = {**{t: v for t, (s, v) in AVG_GALLERY.items()}, **{t: v for t, (s, v) in AVG_PROBES.items()}}
    images = [(f"{t}.png", t, t, 1.0, v, v) for t, v in items.items()]
    write_layout(root, images=images, pairs=[(1, 2, 0)], crops=False)
    write_1n(root, [(1, 1)], [(2, 2), (3, 3)], [(t, s) for t, (s, v) in AVG_PROBES.items()])
    e, ef = embeddings(images)
    return read_ijb(root, "IJBC"), e, ef


def test_average_gallery_pools_cmc_and_tpir_alike(tmp_path):
    meta, e, ef = average_layout(tmp_path)
    r = ijb_1toN(meta, e, ef, gallery="average", fpirs=(0.5,))
    g1, g2 = r["per_gallery"]["G1"], r["per_gallery"]["G2"]
    # G1: mated 11, 12 (rank 1, own .8 and .923); non-mated best scores .28 0 .352 0.  FPIR 0.5 allows
    # 2 of 4: threshold 0 (the 3rd largest), TPIR 2/2
    assert g1["num_mated"] == 2 and g1["tpir_at_fpir"][0.5]["threshold"] == 0.0
    assert g1["tpir_at_fpir"][0.5]["tpir"] == 1.0 and g1["tpir_at_fpir"][0.5]["false_alarms"] == 2
    # G2: mated 13, 14, 15, 16, with 14 at rank 2; non-mated best scores .6 (11) and 0 (12).  FPIR
    # 0.5 allows 1 of 2: threshold 0; TPIR 3/4
    assert g2["num_mated"] == 4 and g2["top1"] == 0.75
    assert g2["tpir_at_fpir"][0.5]["threshold"] == 0.0 and g2["tpir_at_fpir"][0.5]["tpir"] == 0.75
    # pooled over the 6 mated searches: top-1 (2 + 3) / 6 and TPIR (2 + 3) / 6, not the mean of the
    # two galleries (1 + 0.75) / 2 = 0.875; FPIR (2 + 1) / (4 + 2)
    assert r["top1"] == pytest.approx(5 / 6)
    assert r["tpir_at_fpir"][0.5]["tpir"] == pytest.approx(5 / 6)
    assert r["tpir_at_fpir"][0.5]["fpir"] == pytest.approx(0.5)
    assert r["num_mated"] == 6 and r["num_non_mated"] == 6
    # insightface's reading per gallery (Q = 6).  G1: non-mated pairs .28 0 .352 0, ceil(3) = 3rd
    # largest 0, 2 above it; TPIR 2/2.  G2: pairs .6 0 (11), 0 0 (12), 0 (13), .724 (14), 0 (15),
    # 0 (16): 3rd largest 0, 2 above; own scores .96 .690 .936 .471 all above: 14 counts at rank 2
    ins = r["tpir_at_fpir_insightface"][0.5]
    assert g2["tpir_at_fpir_insightface"][0.5]["tpir"] == 1.0
    assert ins["tpir"] == 1.0 and ins["fpir"] == pytest.approx(4 / 12)
    ri = ijb_1toN(meta, e, ef, gallery="average", fpirs=(0.5,), tpir_rule="insightface")
    assert ri["tpir_at_fpir"] == r["tpir_at_fpir_insightface"] and ri["top1"] == r["top1"]
    assert "ceil(f x #probes)" in ri["tpir_rule"]


def test_both_galleries_with_the_insightface_reading(tmp_path):
    # insightface's own setup: G1 and G2 as one gallery, every probe mated (the open-set reading
    # then has no non-mated probe and stays empty)
    meta, e, ef = average_layout(tmp_path)
    r = ijb_1toN(meta, e, ef, gallery="both", fpirs=(0.01, 0.2, 0.5))
    assert r["tpir_at_fpir"] == {} and r["top1"] == pytest.approx(5 / 6)
    # 12 non-mated pairs: .6 0 (11), 0 0 (12), .28 0 (13), 0 .724 (14), .352 0 (15), 0 0 (16),
    # sorted .724 .6 .352 .28 0 x 8
    assert r["num_non_mated_pairs"] == 12
    tp = r["tpir_at_fpir_insightface"]
    # FPIR 0.01: ceil(0.06) = 1st largest .724: own .8 .923 .96 .936 above it, 4/6
    assert tp[0.01]["threshold"] == pytest.approx(21 / 29, abs=1e-6) and tp[0.01]["tpir"] == pytest.approx(4 / 6)
    # FPIR 0.2: ceil(1.2) = 2nd largest .6; .724 above it (FPIR 1/6); own scores above .6: all but .471
    assert tp[0.2]["threshold"] == pytest.approx(0.6, abs=1e-6) and tp[0.2]["fpir"] == pytest.approx(1 / 6)
    assert tp[0.2]["tpir"] == pytest.approx(5 / 6)
    # FPIR 0.5: 3rd largest .352; every own score is above it, the rank-2 probe 14 included, so
    # TPIR 1 > top-1 5/6
    assert tp[0.5]["threshold"] == pytest.approx(0.352, abs=1e-6) and tp[0.5]["tpir"] == 1.0
    assert tp[0.5]["false_alarms"] == 2


def tiny_model():
    from facemargin.models import build

    torch.manual_seed(0)
    return build("lenetpp", embedding_size=4, in_channels=3, width=0.25).eval()


def test_embedding_aligns_caches_and_names_a_missing_image(tmp_path):
    from facemargin.data.arrays import images_to_tensor
    from facemargin.data.images import load_image

    root = write_layout(tmp_path / "ijb")
    meta = read_ijb(root, "IJBC")
    model = tiny_model()
    e, ef = embed_ijb(model, meta, cache_dir=tmp_path / "cache", batch_size=4, progress=False)
    # the crops sit on the template already, so the aligned crop is the image itself
    x = images_to_tensor(np.stack([load_image(root / "loose_crop" / n) for n in meta.names]))
    with torch.no_grad():
        np.testing.assert_allclose(e, model(x).numpy(), atol=1e-5)
        np.testing.assert_allclose(ef, model(x.flip(3)).numpy(), atol=1e-5)
    assert len(list((tmp_path / "cache").glob("ijbc_*.npy"))) == 2
    # a second run reads the cache: it needs no image any more
    (root / "loose_crop" / "c.png").unlink()
    e2, ef2 = embed_ijb(model, meta, cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(e2, e)
    # without the cache the missing crop is named
    with pytest.raises(FileNotFoundError, match=r"1 IJB image\(s\) missing .*c.png"):
        embed_ijb(model, meta, cache_dir=tmp_path / "other", progress=False)


def test_eval_command_runs_several_targets(tmp_path, capsys):
    from facemargin.cli import main
    from facemargin.data.binpack import write_bin
    from facemargin.train.checkpoint import save_checkpoint

    model = tiny_model()
    ckpt = tmp_path / "run" / "checkpoint.pt"
    cfg = {"model": {"name": "lenetpp", "embedding_size": 4, "params": {"in_channels": 3, "width": 0.25}}}
    save_checkpoint(ckpt, config=cfg, step=0, model=model)
    # 12 images in 6 templates (2 media each), 15 template pairs, 1:N lists
    rng = np.random.default_rng(1)
    images = [(f"{i}.png", i // 2 + 1, i % 2, 0.9, None, None) for i in range(12)]
    pairs = [(a, b, int((a + b) % 3 == 0)) for a in range(1, 7) for b in range(a + 1, 7)]
    root = write_layout(tmp_path / "IJB" / "IJBC", images=images, pairs=pairs)
    write_1n(root, [(1, 1), (2, 2)], [(3, 3)], [(4, 1), (5, 3), (6, 9)])
    write_bin(tmp_path / "p.bin", rng.integers(0, 256, (20, 28, 28, 3), dtype=np.uint8), [True, False] * 5)
    js = tmp_path / "out" / "eval.json"
    assert main(["eval", str(ckpt), "--pairs", str(tmp_path / "p.bin"), "--ijb", str(tmp_path / "IJB"),
                 "--dataset", "ijbc", "--ijb-1n", "--ijb-gallery", "G1", "--no-ijb-faceness",
                 "--folds", "2", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "p: accuracy" in out and "IJBC 1:1: TAR@FAR" in out
    table = out[out.index("target"):]
    assert "IJBC 1:N" in table and "gallery G1" in table and "faceness weighting off" in table
    res = json.loads(js.read_text())
    sets = res["sets"]
    assert set(sets) == {"p", "IJBC 1:1", "IJBC 1:N"}
    assert sets["IJBC 1:1"]["kind"] == "ijb_1to1" and sets["IJBC 1:1"]["num_pairs"] == 15
    assert sets["IJBC 1:1"]["code"] == "F1N1D0"
    # G1 holds subjects 1 and 2: of the probes (subjects 1, 3, 9) only the first is mated
    assert sets["IJBC 1:N"]["num_mated"] == 1 and sets["IJBC 1:N"]["num_non_mated"] == 2
    assert sets["IJBC 1:N"]["gallery"] == "G1"
    assert (tmp_path / "out" / "eval_roc.png").is_file()
    assert list((tmp_path / "run" / "eval_cache").glob("ijbc_*_flip.npy"))
    # the same 1:1 numbers from the library, independently of the command
    meta = read_ijb(root, "IJBC")
    e, ef = embed_ijb(model, meta, progress=False)
    r = ijb_1to1(meta, e, ef, IJBOptions(faceness_weight=False))
    assert sets["IJBC 1:1"]["auc"] == pytest.approx(r["auc"])
    # argument errors
    assert main(["eval", str(ckpt), "--ijb", str(tmp_path / "IJB")]) == 2
    assert "--dataset" in capsys.readouterr().err
    assert main(["eval", str(ckpt)]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err


def test_pair_file_with_blank_lines_and_a_bad_line(tmp_path):
    root = write_layout(tmp_path, crops=False)
    f = root / "meta" / "ijbc_template_pair_label.txt"
    f.write_text("1 2 1\n\n3 4 1\n1 3 0")  # a blank line, no final newline
    meta = read_ijb(root, "IJBC")
    assert meta.pair_t1.tolist() == [1, 3, 1] and meta.pair_label.tolist() == [True, True, False]
    f.write_text("1 2 1\n3 4\n1 3 0\n")
    with pytest.raises(ValueError, match=r"ijbc_template_pair_label.txt, line 2: expected 3 integers, got 2 fields"):
        read_ijb(root, "IJBC")
    f.write_text("1 2 1\n3 4 x\n")
    with pytest.raises(ValueError, match="line 2: expected 3 integers"):
        read_ijb(root, "IJBC")


def test_scoring_with_sparse_template_ids():
    # ids far apart take the sort-based path; the scores do not depend on the numbering
    rng = np.random.default_rng(4)
    feats = rng.normal(size=(5, 3)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    dense, sparse = np.arange(5), np.array([3, 10**9, 2 * 10**12, 3 * 10**12, 4 * 10**15])
    a, b = rng.integers(0, 5, 40), rng.integers(0, 5, 40)
    s1 = score_pairs(dense, feats, dense[a], dense[b])
    s2 = score_pairs(sparse, feats, sparse[a], sparse[b])
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_allclose(s1, (feats[a] * feats[b]).sum(1), atol=1e-6)
    with pytest.raises(ValueError, match="pair 1: template 17 has no template feature"):
        score_pairs(sparse, feats, sparse[:3], [sparse[0], 17, sparse[1]])
    with pytest.raises(ValueError, match="pair 2: template 4 has no template feature"):
        score_pairs(dense[:4], feats[:4], [0, 1, 4], [3, 0, 1])
