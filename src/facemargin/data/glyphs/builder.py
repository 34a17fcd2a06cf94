"""Building a glyph set: fonts found and deduplicated, every identity rendered, the split, the
training RecordIO, the degraded unseen identities, their pair pack and the manifest."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ...io import atomic_open, write_json
from ..binpack import write_bin
from ..recordio import RecordIO, write_encoded_record
from .degrade import DEGRADE, degrade
from .fonts import FONT_DIRS, _resolve_faces, charset, find_fonts
from .glyphset import _write_train_images
from .render import Renderer, _png, _render_all, image_hash

__all__ = ["MANIFEST_VERSION", "PROBE_CHARS", "split_identities", "build_glyph_set", "sample_pairs"]

PathLike = Union[str, os.PathLike]

MANIFEST_VERSION = 1
#: how many characters are rendered to recognise a face that copies an earlier one
PROBE_CHARS = 48


def split_identities(num: int, test_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded split of identity indices ``0..num-1`` into sorted (train, test) index arrays."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    perm = np.random.default_rng([int(seed), 1]).permutation(num)
    n_test = max(1, int(round(num * test_fraction)))
    if n_test >= num:
        raise ValueError(f"{num} identities are too few to keep {n_test} unseen and train on the rest")
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def build_glyph_set(out: PathLike, script: str = "hangul", chars: Optional[str] = None,
                    font_dirs: Optional[Sequence[PathLike]] = None, size: int = 32, seed: int = 0,
                    test_fraction: float = 0.2, min_fonts: int = 8, max_test_per_identity: int = 20,
                    num_pairs: int = 6000, manifest: Optional[PathLike] = None, progress: bool = True,
                    workers: Optional[int] = None, allow_missing_fonts: bool = False) -> Dict:
    """Render a glyph identity set into ``out`` (see the package docstring); returns the manifest.

    Args:
        out: output folder.
        script / chars: the identities: a script of :func:`charset`, or an explicit string.
        font_dirs: where to look for fonts (default: the system font folders).
        size: image side in pixels.
        seed: split, test degradations and pairs.
        test_fraction: share of identities kept unseen.
        min_fonts: fewest distinct covering faces accepted (a clear error below it).
        max_test_per_identity: at most this many images per unseen identity (seeded choice), which
            bounds the all-vs-all comparison.
        num_pairs: pairs of the ``unseen.bin`` pack (half same, half different identities).
        manifest: rebuild exactly the set described by this ``manifest.json`` (other arguments ignored).
        allow_missing_fonts: with ``manifest``, leave out the faces whose font files are not on this
            machine (listed under ``missing_fonts`` in the new manifest) instead of refusing.
        workers: rendering processes (default: the CPU count); the set does not depend on it.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    missing_fonts: Optional[List[Dict]] = None
    if manifest is not None:
        mpath = Path(manifest)
        if not mpath.is_file():
            raise FileNotFoundError(f"manifest not found: {mpath}")
        try:
            m = json.loads(mpath.read_text(encoding="utf-8"))
            chars, size, seed = m["characters"], int(m["size"]), int(m["seed"])
            test_fraction, max_test_per_identity = float(m["test_fraction"]), int(m["max_test_per_identity"])
            num_pairs, script = int(m["num_pairs"]), m.get("script", "")
            face_entries = m["fonts"]
            degrade_params = m["degrade"]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{mpath}: not a glyph-set manifest ({type(e).__name__}: {e})") from None
        missing_fonts = [] if allow_missing_fonts else None
        faces = _resolve_faces(face_entries, font_dirs, missing_fonts)
        min_fonts = 1
    else:
        if chars is None:
            chars = charset(script)
        else:
            script = ""
        if len(set(chars)) != len(chars):
            raise ValueError("chars holds a character twice; each character is one identity")
        degrade_params = dict(DEGRADE)
        faces = find_fonts(chars, font_dirs, progress=progress)
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    if len(chars) < 2:
        raise ValueError("need at least two characters (identities)")
    where = ", ".join(str(d) for d in (font_dirs if font_dirs is not None else FONT_DIRS))

    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    # 1. drop faces that copy an earlier face (same renderings of a probe set) or render blanks
    probe_idx = np.linspace(0, len(chars) - 1, min(PROBE_CHARS, len(chars))).round().astype(int)
    kept, skipped, seen_prints = [], [], {}
    renderers = {}
    for face in (tqdm(faces, desc="fingerprinting faces", unit="face") if progress else faces):
        try:
            r = Renderer(face, size)
            probe = [r(chars[i]) for i in probe_idx]
        except Exception as e:
            skipped.append({**face.as_dict(), "reason": f"cannot render: {type(e).__name__}: {e}"})
            continue
        if any(p is None for p in probe):
            skipped.append({**face.as_dict(), "reason": "blank renderings"})
            continue
        fp = hashlib.sha1(b"".join(p.tobytes() for p in probe)).hexdigest()
        if fp in seen_prints:
            skipped.append({**face.as_dict(), "reason": f"same renderings as {seen_prints[fp]}"})
            continue
        seen_prints[fp] = f"{face.name} ({Path(face.path).name}#{face.index})"
        kept.append(face)
        renderers[face] = r
    if len(kept) < min_fonts:
        raise ValueError(
            f"only {len(kept)} distinct font faces under {where} cover all {len(chars)} characters "
            f"(need {min_fonts}); install more fonts (scripts/setup.sh installs the Korean and CJK families), "
            "pass font_dirs, choose another script, or lower min_fonts")

    # 2. render every identity in every kept face, dropping blanks and duplicate renderings
    images: List[np.ndarray] = []
    labels: List[int] = []
    dropped_dup = dropped_blank = 0
    rendered = _render_all(kept, chars, size, workers, renderers)
    if progress:
        rendered = tqdm(rendered, total=len(chars), desc=f"rendering {len(chars)} identities x {len(kept)} faces",
                        unit="id")
    for ci, row in enumerate(rendered):
        seen = set()
        for img in row:
            if img is None:
                dropped_blank += 1
                continue
            h = image_hash(img)
            if h in seen:
                dropped_dup += 1
                continue
            seen.add(h)
            images.append(img)
            labels.append(ci)
    labels_arr = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels_arr, minlength=len(chars))
    if counts.min() < 2:
        bad = int(np.argmin(counts))
        raise ValueError(f"character {chars[bad]!r} has only {counts[bad]} distinct rendering(s) in the fonts under "
                         f"{where}; every identity needs at least two")

    # 3. split identities; write the training set (clean, degraded while training)
    train_ids, test_ids = split_identities(len(chars), test_fraction, seed)
    lut = np.full(len(chars), -1, dtype=np.int64)
    lut[train_ids] = np.arange(len(train_ids))
    sel = np.flatnonzero(lut[labels_arr] >= 0)
    out.mkdir(parents=True, exist_ok=True)
    train_labels = lut[labels_arr[sel]]
    order = np.argsort(train_labels, kind="stable")  # insightface's layout: records grouped by identity
    sel, train_labels = sel[order], train_labels[order]

    def encoded(rows):  # our own renderings: their size is known, so nothing is decoded back
        return ((_png(images[i]), images[i].shape[:2], f"rendering {i}") for i in rows)

    write_encoded_record(out, encoded(sel), train_labels, num_classes=len(train_ids), progress=progress)
    _write_train_images(RecordIO(out), np.stack([images[i] for i in sel]))

    # 4. the unseen identities: a seeded subset of their renderings, each degraded once
    rng = np.random.default_rng([int(seed), 2])
    test_rows: List[int] = []
    for c in test_ids:
        rows = np.flatnonzero(labels_arr == c)
        if len(rows) > max_test_per_identity:
            rows = np.sort(rng.choice(rows, size=max_test_per_identity, replace=False))
        test_rows += rows.tolist()
    tlut = np.full(len(chars), -1, dtype=np.int64)
    tlut[test_ids] = np.arange(len(test_ids))
    test_imgs, test_q = [], []
    for k, i in enumerate(test_rows):
        img, q = degrade(images[i], np.random.default_rng([int(seed), 3, k]), degrade_params)
        test_imgs.append(img)
        test_q.append(q)
    test_labels = tlut[labels_arr[test_rows]]
    write_encoded_record(out / "unseen", ((_png(x), x.shape[:2], f"unseen image {k}") for k, x in enumerate(test_imgs)),
                         test_labels, with_header=False, num_classes=len(test_ids))
    with atomic_open(out / "unseen.lst", "w", encoding="utf-8") as f:
        f.write("# record\tidentity\tresolution\tblur\tnoise\n")
        for k, (y, q) in enumerate(zip(test_labels, test_q)):
            f.write(f"{k}\t{int(y)}\t{q['resolution']}\t{q['blur']}\t{q['noise']}\n")

    # 5. a pair pack of the degraded unseen images (half same identity, half different)
    i1, i2, same = sample_pairs(test_labels, num_pairs, np.random.default_rng([int(seed), 4]))
    pair_imgs = []
    for a, b in zip(i1, i2):
        pair_imgs += [_png(test_imgs[a]), _png(test_imgs[b])]
    write_bin(out / "unseen.bin", pair_imgs, same)

    from PIL import features
    import PIL

    man = {
        "version": MANIFEST_VERSION,
        "script": script,
        "characters": chars,
        "size": int(size),
        "seed": int(seed),
        "test_fraction": float(test_fraction),
        "max_test_per_identity": int(max_test_per_identity),
        "num_pairs": int(num_pairs),
        "degrade": degrade_params,
        "fonts": [f.as_dict() for f in kept],
        "skipped_fonts": skipped,
        "missing_fonts": missing_fonts or [],
        "train_identities": "".join(chars[i] for i in train_ids),
        "test_identities": "".join(chars[i] for i in test_ids),
        "counts": {"identities": len(chars), "faces": len(kept), "images": len(images),
                   "train_images": int(len(sel)), "test_images": len(test_rows),
                   "duplicates_dropped": int(dropped_dup), "blanks_dropped": int(dropped_blank),
                   "pairs": int(len(same))},
        "renderer": {"pillow": PIL.__version__, "freetype": features.version("freetype2")},
    }
    write_json(out / "manifest.json", man)
    return man


def sample_pairs(labels: np.ndarray, num_pairs: int, rng: np.random.Generator):
    """``num_pairs`` index pairs of ``labels``: the first half same-label, the rest different; the
    order is shuffled. Returns ``(i1, i2, issame)``."""
    labels = np.asarray(labels)
    n_same = num_pairs // 2
    by = {}
    for i, y in enumerate(labels.tolist()):
        by.setdefault(y, []).append(i)
    multi = [v for v in by.values() if len(v) >= 2]
    if not multi or len(by) < 2:
        raise ValueError("pairs need an identity with two images and at least two identities")
    i1, i2 = [], []
    for _ in range(n_same):
        g = multi[int(rng.integers(len(multi)))]
        a, b = rng.choice(len(g), size=2, replace=False)
        i1.append(g[a]), i2.append(g[b])
    while len(i1) < num_pairs:
        a, b = rng.integers(len(labels), size=2)
        if labels[a] != labels[b]:
            i1.append(int(a)), i2.append(int(b))
    i1, i2 = np.asarray(i1), np.asarray(i2)
    same = labels[i1] == labels[i2]
    perm = rng.permutation(num_pairs)
    return i1[perm], i2[perm], same[perm]
