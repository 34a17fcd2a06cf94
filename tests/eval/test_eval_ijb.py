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
    # FPIR 0.01 x 10 < 1: not resolvable.  FPIR 0.1: ceil(1) = 1st largest non-mated score = cos 20;
    # nothing is strictly above it (FPIR 0); mated at rank 1 above cos 20: the two at cos 10
    assert set(r["tpir_at_fpir"]) == {0.1, 0.2}
    t1 = r["tpir_at_fpir"][0.1]
    assert t1["threshold"] == pytest.approx(math.cos(math.radians(20)))
    assert t1["fpir"] == 0.0 and t1["tpir"] == pytest.approx(2 / 3)
    # FPIR 0.2: the 2nd largest, cos 45; the probe at 20 degrees alarms (FPIR 0.1)
    t2 = r["tpir_at_fpir"][0.2]
    assert t2["threshold"] == pytest.approx(R2) and t2["fpir"] == pytest.approx(0.1)
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
    assert r1["tpir_at_fpir"][1.0]["threshold"] == pytest.approx(-1.0)
    assert r1["tpir_at_fpir"][1.0]["tpir"] == 1.0  # R2 > -1
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
