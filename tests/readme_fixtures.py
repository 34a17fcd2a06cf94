"""Tiny stand-ins for the data the README's commands name, written in the formats' real layouts.

``build_workspace(root)`` fills one folder that is the working directory of every README command
in ``tests/test_readme.py``. Relative README paths (``lfw.bin``, ``my.toml``, ``photos/``,
``faces_rec``, ``megaface_1m.npy``, ...) are files of that folder under the README's own names;
absolute README paths (``/data/lfw``, ``/data/IJB_release``, ...) are mapped into it by the
substitution table of the test.

Two image sizes are needed, because the README trains two kinds of models:

* ``runs/arc`` is the README's first ``facemargin train`` on the default data (Fashion-MNIST, here
  the tiny IDX files of ``fashion/`` found through ``$FACEMARGIN_DATA``), so ``model.name=auto``
  picks LeNet++ (1x28x28). Everything that README evaluates ``runs/arc`` on is written at 28x28:
  ``lfw.bin``/``cfp_fp.bin``/``agedb_30.bin``, the LFW folder, the IJB crops (aligned to 28x28 by
  the evaluator), the MegaFace probes and distractors.
* the face models (``--set data.name=recordio --data faces_rec``, and ``OUT`` of ``facemargin
  pack``) train on RGB face crops; at 32x32 ``model.name=auto`` picks the small CNN, the cheapest
  RGB backbone (MobileFaceNet at 112x112 costs 20 s a run on 2 cores). Their ``data.val`` packs are
  ``val32/lfw.bin`` and ``val32/cfp_fp.bin`` at 32x32, since a pack must be at the backbone's size.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent / "train"))
from trainutil import write_fashion  # noqa: E402

ARC = 28    # LeNet++ input (the default Fashion-MNIST run, runs/arc)
FACE = 32   # small CNN input (the face runs on faces_rec / OUT)
EMBEDDING = 64  # the default model.embedding_size: the width of runs/arc's embeddings

TINY_TOML = """\
# my.toml of the README: a user's config file; here a tiny budget
[train]
steps = 3
batch_size = 8
progress = false
out = "runs/my"
"""


def _faces(rng, identities: int, per: int, size: int):
    """``{identity: [uint8 (size, size, 3)]}``: each identity a smooth random face-sized pattern plus noise."""
    out = {}
    yy, xx = np.mgrid[0:size, 0:size] / size
    for k in range(identities):
        a, b, c = rng.uniform(1, 4, 3)
        base = 127 + 100 * np.stack([np.sin(a * 6 * xx + k), np.cos(b * 6 * yy - k), np.sin(c * 6 * (xx + yy))], -1)
        out[k] = [np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8) for _ in range(per)]
    return out


def write_pack(path: Path, size: int, pairs: int = 20, seed: int = 0) -> Path:
    """A verification pack of ``pairs`` pairs at ``size``, same and different alternating (every fold holds both)."""
    from facemargin.data import write_bin

    rng = np.random.default_rng(seed)
    faces = _faces(rng, identities=pairs + 1, per=2, size=size)
    images, same = [], []
    for i in range(pairs):
        s = i % 2 == 0
        images += [faces[i][0], faces[i][1] if s else faces[i + 1][0]]
        same.append(s)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bin(path, np.stack(images), same)
    return path


def write_identity_folder(root: Path, identities: int, per: int, size: int, seed: int, ext: str = "jpg") -> Path:
    """``root/<identity>/<image>``."""
    from facemargin.data import save_image

    for k, imgs in _faces(np.random.default_rng(seed), identities, per, size).items():
        d = root / f"id{k:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for j, img in enumerate(imgs):
            save_image(d / f"{j}.{ext}", img)
    return root


def write_lfw(root: Path, size: int = ARC, seed: int = 1) -> Path:
    """An LFW folder (``Name/Name_0001.jpg``) and its ``pairs.txt`` in the fold layout: 10 folds of 1 same + 1 different."""
    from facemargin.data import save_image

    names = [f"Person_{chr(65 + k)}" for k in range(11)]
    for k, imgs in _faces(np.random.default_rng(seed), len(names), 2, size).items():
        (root / names[k]).mkdir(parents=True, exist_ok=True)
        for j, img in enumerate(imgs, 1):
            save_image(root / names[k] / f"{names[k]}_{j:04d}.jpg", img)
    lines = ["10\t1"]
    for f in range(10):
        lines.append(f"{names[f]}\t1\t2")
        lines.append(f"{names[f]}\t1\t{names[f + 1]}\t2")
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


def write_ijb(root: Path, ds: str, seed: int, one_to_n: bool) -> Path:
    """insightface's IJB layout: ``meta/<ds>_face_tid_mid.txt``, ``_name_5pts_score.txt``,
    ``_template_pair_label.txt`` (and the 1:N CSVs), ``loose_crop/`` images of 112x112 whose
    landmarks are the arcface template (the evaluator warps them to the model's input size)."""
    from facemargin.align import ARCFACE_112
    from facemargin.data import save_image

    ds = ds.lower()
    meta = root / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    (root / "loose_crop").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    subjects = 4
    faces = _faces(rng, subjects, 4, 112)
    # templates 1..8: subject s has template s+1 (gallery) and s+5 (probe); media = image index
    rows, n = [], 0
    for t in range(1, 2 * subjects + 1):
        s = (t - 1) % subjects
        for j in range(2):
            n += 1
            name = f"{n}.jpg"
            save_image(root / "loose_crop" / name, faces[s][2 * ((t - 1) // subjects) + j])
            rows.append((name, t, 100 + n, 0.5 + 0.5 * rng.random()))
    pts = " ".join(f"{v:.2f}" for v in ARCFACE_112.reshape(-1))
    (meta / f"{ds}_face_tid_mid.txt").write_text("".join(f"{nm} {t} {m}\n" for nm, t, m, _ in rows))
    (meta / f"{ds}_name_5pts_score.txt").write_text("".join(f"{nm} {pts} {s:.3f}\n" for nm, _, _, s in rows))
    pairs = [(t, t + subjects, 1) for t in range(1, subjects + 1)]
    pairs += [(t, (t % subjects) + 1 + subjects, 0) for t in range(1, subjects + 1)]
    (meta / f"{ds}_template_pair_label.txt").write_text("".join(f"{a} {b} {y}\n" for a, b, y in pairs))
    if one_to_n:
        g = ("G1", "G2") if ds == "ijbc" else ("S1", "S2")
        files = {f"{ds}_1N_gallery_{g[0]}.csv": [(1, 0), (2, 1)], f"{ds}_1N_gallery_{g[1]}.csv": [(3, 2), (4, 3)],
                 f"{ds}_1N_probe_mixed.csv": [(t, t - 1 - subjects) for t in range(subjects + 1, 2 * subjects + 1)]}
        for fname, tpl in files.items():
            (meta / fname).write_text("TEMPLATE_ID,SUBJECT_ID,FILENAME\n"
                                      + "".join(f"{t},{s},img/{t}.jpg\n" for t, s in tpl))
    return root


def write_photos(root: Path, size: int = 256) -> Path:
    """Photos for the detector: scikit-image's astronaut (public domain), scaled to ``size``, and its mirror image."""
    from PIL import Image
    from skimage import data

    root.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.ascontiguousarray(data.astronaut())).resize((size, size), Image.BILINEAR)
    img.save(root / "astronaut.jpg", quality=95)
    img.transpose(Image.FLIP_LEFT_RIGHT).save(root / "astronaut_mirrored.png")
    return root


def write_bench(root: Path) -> Path:
    """A finished Fashion-MNIST bench folder in the layout ``facemargin plot`` reads:
    ``runs/<loss>/metrics.jsonl`` and ``runs/<loss>/scores.npz``."""
    rng = np.random.default_rng(0)
    for k, loss in enumerate(("softmax", "arcface")):
        d = root / "runs" / loss
        d.mkdir(parents=True, exist_ok=True)
        rows = [{"step": s, "loss": 3.0 * math.exp(-s / 10) + 0.1 * k, "train_acc": 1 - math.exp(-s / 8)}
                for s in range(1, 21)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        same = np.r_[np.ones(50, bool), np.zeros(50, bool)]
        np.savez(d / "scores.npz", scores=np.where(same, 0.6, 0.1) + rng.normal(0, 0.2, 100), issame=same)
    return root


def build_workspace(root: Path) -> dict:
    """Write every fixture into ``root``; returns the environment additions for the commands."""
    from facemargin.data import pack_folder

    root.mkdir(parents=True, exist_ok=True)
    fashion = write_fashion(root / "fashion", classes=range(10), train_per_class=8, test_per_class=40)
    (root / "my.toml").write_text(TINY_TOML)
    # runs/arc's evaluation data (28x28)
    for i, name in enumerate(("lfw", "cfp_fp", "agedb_30")):
        write_pack(root / f"{name}.bin", ARC, seed=10 + i)
    write_lfw(root / "data" / "lfw")
    ijb = root / "data" / "IJB_release"
    write_ijb(ijb / "IJBC", "IJBC", seed=2, one_to_n=True)
    write_ijb(ijb / "IJBB", "IJBB", seed=3, one_to_n=False)
    write_identity_folder(root / "data" / "facescrub_aligned", identities=3, per=3, size=ARC, seed=4)
    write_identity_folder(root / "data" / "megaface_aligned", identities=6, per=2, size=ARC, seed=5)
    # the distractor embeddings that README's `facemargin embed ... --out megaface_1m.npy` writes; the
    # eval command that reads them comes first in README, so a stand-in of runs/arc's width is there
    np.save(root / "megaface_1m.npy", np.random.default_rng(6).normal(size=(24, EMBEDDING)).astype(np.float32))
    # the face models' data (32x32 RGB)
    faces = write_identity_folder(root / "faces", identities=4, per=4, size=FACE, seed=7)
    pack_folder(faces, root / "faces_rec")
    for i, name in enumerate(("lfw", "cfp_fp")):
        write_pack(root / "val32" / f"{name}.bin", FACE, seed=20 + i)
    shutil.copy(faces / "id00" / "0.jpg", root / "a.jpg")  # two aligned faces of one identity
    shutil.copy(faces / "id00" / "1.jpg", root / "b.jpg")
    pairs = [f"faces/id{k:02d}/0.jpg faces/id{k:02d}/1.jpg 1\nfaces/id{k:02d}/2.jpg faces/id{(k + 1) % 4:02d}/3.jpg 0\n"
             for k in range(4)]
    (root / "PAIRS").write_text("".join(pairs))
    write_photos(root / "photos")
    write_bench(root / "runs" / "bench")
    return {"FACEMARGIN_DATA": str(fashion)}
