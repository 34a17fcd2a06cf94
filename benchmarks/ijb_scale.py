"""Time the IJB-C 1:1 protocol at full size on synthetic embeddings (no images, no model).

IJB-C's 1:1 list: 469,375 images in 23,124 templates (3,531 gallery templates, one per subject,
and 19,593 mixed-media probe templates) and 15,658,489 template pairs, of which about 19,557 are
genuine.  This script builds a set of that shape: subject centres plus noise as 512-D image
embeddings (and their "flipped" twins), stills and video frames as media, faceness scores, every
genuine gallery/probe pair and random impostor pairs.  It then times, given the embeddings:

* template pooling (flip fusion, norm and faceness weighting, media mean, template sum, L2),
* the 15.7M pair scores,
* the ROC and TAR at FAR 1e-6 .. 1e-1,
* 1:N search of the probe templates in two galleries (G1, G2),

and optionally reading the meta files written to a temporary IJB layout (``--with-files``).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/ijb_scale.py [--with-files] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from facemargin.eval.ijb import IJBOptions, identify_open_set, pool_templates, read_ijb, score_pairs, verification_1to1

IMAGES, TEMPLATES, GALLERY, PAIRS, D = 469_375, 23_124, 3_531, 15_658_489, 512


def build(seed: int = 0, d: int = D):
    rng = np.random.default_rng(seed)
    probes = TEMPLATES - GALLERY
    subj_of_template = np.concatenate([np.arange(GALLERY), rng.integers(0, GALLERY, probes)])
    # every template gets at least one image; the rest are spread at random
    t = np.concatenate([np.arange(TEMPLATES), rng.integers(0, TEMPLATES, IMAGES - TEMPLATES)])
    t.sort()
    # media: about 60% of images are single stills, the rest frames of videos of ~8 frames
    video = rng.random(IMAGES) < 0.4
    m = np.arange(IMAGES, dtype=np.int64)
    m[video] = IMAGES + t[video] * 1000 + rng.integers(0, 4, int(video.sum()))
    centres = rng.standard_normal((GALLERY, d), dtype=np.float32)
    emb = np.empty((IMAGES, d), np.float32)
    emb_f = np.empty((IMAGES, d), np.float32)
    for a in range(0, IMAGES, 65536):
        s = subj_of_template[t[a:a + 65536]]
        emb[a:a + 65536] = centres[s] + 10.0 * rng.standard_normal((len(s), d), dtype=np.float32)
        emb_f[a:a + 65536] = centres[s] + 10.0 * rng.standard_normal((len(s), d), dtype=np.float32)
    faceness = np.where(rng.random(IMAGES) < 0.01, 0.1, 0.99).astype(np.float32)
    # genuine: every probe with its subject's gallery template; impostors: random gallery/probe pairs
    p_ids = np.arange(GALLERY, TEMPLATES)
    g1, g2 = subj_of_template[p_ids], p_ids
    n_imp = PAIRS - len(g1)
    i1 = rng.integers(0, GALLERY, n_imp)
    i2 = rng.integers(GALLERY, TEMPLATES, n_imp)
    clash = subj_of_template[i2] == i1
    i1[clash] = (i1[clash] + 1) % GALLERY
    t1 = np.concatenate([g1, i1])
    t2 = np.concatenate([g2, i2])
    label = np.concatenate([np.ones(len(g1), bool), np.zeros(n_imp, bool)])
    perm = rng.permutation(PAIRS)
    return emb, emb_f, faceness, t, m, t1[perm], t2[perm], label[perm], subj_of_template


def write_layout(root: Path, t, m, faceness, t1, t2, label) -> None:
    meta = root / "meta"
    meta.mkdir(parents=True)
    names = [f"{i}.jpg" for i in range(len(t))]
    with open(meta / "ijbc_face_tid_mid.txt", "w") as f:
        f.writelines(f"{n} {a} {b}\n" for n, a, b in zip(names, t.tolist(), m.tolist()))
    with open(meta / "ijbc_name_5pts_score.txt", "w") as f:
        lm = "38.3 51.7 73.5 51.5 56.0 71.7 41.5 92.4 70.7 92.2"
        f.writelines(f"{n} {lm} {s:.3f}\n" for n, s in zip(names, faceness.tolist()))
    tab = np.stack([t1, t2, label.astype(np.int64)], 1)
    np.savetxt(meta / "ijbc_template_pair_label.txt", tab, fmt="%d")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--with-files", action="store_true", help="also time reading the meta files")
    ap.add_argument("--json", help="write the timings here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    emb, emb_f, faceness, t, m, t1, t2, label, subj = build()
    print(f"built synthetic IJB-C: {IMAGES} images, {TEMPLATES} templates, {PAIRS} pairs "
          f"({int(label.sum())} genuine) in {time.perf_counter() - t0:.1f} s")
    load = os.getloadavg()
    res = {"images": IMAGES, "templates": TEMPLATES, "pairs": PAIRS, "dim": D,
           "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "machine": f"{platform.machine()} {platform.system()} {platform.release()}, torch {torch.__version__}",
           "load_before": [round(v, 2) for v in load]}
    opts = IJBOptions()  # flip, norm and faceness weighting: the published default
    ta = time.perf_counter()
    tids, feats = pool_templates(emb, t, m, emb_f, faceness, opts)
    tb = time.perf_counter()
    scores = score_pairs(tids, feats, t1, t2)
    tc = time.perf_counter()
    r = verification_1to1(scores, label)
    td = time.perf_counter()
    res.update({"pool_s": round(tb - ta, 2), "score_s": round(tc - tb, 2), "roc_s": round(td - tc, 2),
                "total_s": round(td - ta, 2), "tar_at_far": {str(k): v for k, v in r["tar_at_far"].items()},
                "load_after": [round(v, 2) for v in os.getloadavg()]})
    print(f"pool {tb - ta:.1f} s, score {tc - tb:.1f} s, ROC+TAR {td - tc:.1f} s: total {td - ta:.1f} s "
          f"(load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}, {torch.get_num_threads()} threads)")
    print("TAR@FAR:", ", ".join(f"{k:g}: {v:.4f}" for k, v in r["tar_at_far"].items()))
    # 1:N: gallery G1 = the first half of the gallery templates, G2 the rest; every probe template
    # searches both in turn (IJB-C: 1,772 + 1,759 gallery templates, 19,593 probes)
    te = time.perf_counter()
    probes = np.arange(GALLERY, TEMPLATES)
    one_n = {}
    for name, g in (("G1", np.arange(0, 1772)), ("G2", np.arange(1772, GALLERY))):
        one_n[name] = identify_open_set(feats[probes], subj[probes], feats[g], subj[g])
    res["one_to_n_s"] = round(time.perf_counter() - te, 2)
    res["one_to_n_top1"] = {k: round(v["top1"], 4) for k, v in one_n.items()}
    print(f"1:N, {len(probes)} probes against G1 and G2 in turn: {res['one_to_n_s']:.1f} s; top-1 "
          + ", ".join(f"{k} {v['top1']:.4f}" for k, v in one_n.items()))
    if args.with_files:
        with tempfile.TemporaryDirectory() as tmp:
            write_layout(Path(tmp), t, m, faceness, t1, t2, label)
            te = time.perf_counter()
            meta = read_ijb(tmp, "IJBC")
            res["read_meta_s"] = round(time.perf_counter() - te, 2)
            assert len(meta.pair_t1) == PAIRS
        print(f"reading the meta files: {res['read_meta_s']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
