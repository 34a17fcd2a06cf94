"""The glyph identity set: character sets, determinism from the manifest, deduplication, the split
without identity leaks, and the RecordIO / .bin round trip. Fonts come from matplotlib's own
folder, so the tests do not depend on the system's font packages."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import torch
import pytest

from facemargin.data import RecordIO, load_bin
from facemargin.data import glyphs as G

MPL_FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
FONT_FILES = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansMono.ttf",
              "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
              "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf"]
CHARS = "ABCDEFGHJKMN"
KW = dict(chars=CHARS, size=24, seed=3, test_fraction=0.25, min_fonts=4, max_test_per_identity=5, num_pairs=40,
          progress=False, workers=1)


@pytest.fixture(scope="module")
def fonts(tmp_path_factory):
    d = tmp_path_factory.mktemp("fonts")
    for name in FONT_FILES:
        shutil.copy(MPL_FONTS / name, d / name)
    shutil.copy(MPL_FONTS / "DejaVuSans.ttf", d / "ZZ-copy-of-DejaVuSans.ttf")  # a duplicate under another name
    return d


@pytest.fixture(scope="module")
def built(fonts, tmp_path_factory):
    out = tmp_path_factory.mktemp("set") / "a"
    man = G.build_glyph_set(out, font_dirs=[fonts], **KW)
    return out, man


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


OUTPUTS = ["train.rec", "train.idx", "property", "unseen/train.rec", "unseen/train.idx", "unseen.lst", "unseen.bin"]


def test_hangul_charset_is_ks_x_1001():
    h = G.charset("hangul")
    assert len(h) == 2350 and len(set(h)) == 2350
    assert h[0] == "가" and h[-1] == "힝"  # first and last syllables of the KS X 1001 table
    assert all(0xAC00 <= ord(c) <= 0xD7A3 for c in h)
    assert list(h) == sorted(h)  # the table's order is the dictionary order, as Unicode's
    assert "똠" not in h  # a syllable famously missing from KS X 1001
    assert len(G.charset("hanzi")) == 3755
    with pytest.raises(ValueError, match="unknown script"):
        G.charset("klingon")


def test_rebuild_from_manifest_is_byte_identical(built, fonts, tmp_path):
    out, man = built
    # rebuilt by two rendering processes (the first build used one): same bytes
    again = G.build_glyph_set(tmp_path / "b", manifest=out / "manifest.json", font_dirs=[fonts], progress=False,
                              workers=2)
    for name in OUTPUTS:
        assert _sha(out / name) == _sha(tmp_path / "b" / name), name
    assert again["fonts"] == man["fonts"] and again["characters"] == CHARS


def test_manifest_records_fonts_with_hashes(built, fonts):
    _, man = built
    assert man["characters"] == CHARS and man["seed"] == 3
    for f in man["fonts"]:
        assert f["sha256"] == _sha(Path(f["path"]))


def test_manifest_finds_a_moved_font_by_hash_and_names_a_missing_one(built, fonts, tmp_path):
    out, man = built
    moved = tmp_path / "moved"
    shutil.copytree(fonts, moved)
    m = json.loads((out / "manifest.json").read_text())
    for f in m["fonts"]:
        f["path"] = str(tmp_path / "gone" / Path(f["path"]).name)
    (tmp_path / "m.json").write_text(json.dumps(m))
    G.build_glyph_set(tmp_path / "c", manifest=tmp_path / "m.json", font_dirs=[moved], progress=False)
    assert _sha(tmp_path / "c" / "train.rec") == _sha(out / "train.rec")
    (moved / "DejaVuSerif.ttf").unlink()
    with pytest.raises(FileNotFoundError, match="DejaVuSerif.ttf"):
        G.build_glyph_set(tmp_path / "d", manifest=tmp_path / "m.json", font_dirs=[moved], progress=False)
    # or, when asked, the set is built without it and the manifest names the face left out
    got = G.build_glyph_set(tmp_path / "e", manifest=tmp_path / "m.json", font_dirs=[moved], progress=False,
                            allow_missing_fonts=True)
    assert [f["name"] for f in got["missing_fonts"]] == [f["name"] for f in m["fonts"]
                                                         if Path(f["path"]).name == "DejaVuSerif.ttf"]
    assert got["counts"]["faces"] == man["counts"]["faces"] - 1
    assert "DejaVuSerif.ttf" not in {Path(f["path"]).name for f in got["fonts"]}
    assert man["missing_fonts"] == []


def test_duplicate_font_and_duplicate_renderings_are_dropped(built):
    out, man = built
    names = [Path(f["path"]).name for f in man["fonts"]]
    assert "ZZ-copy-of-DejaVuSans.ttf" not in names and "DejaVuSans.ttf" in names
    skipped = {Path(s["path"]).name: s["reason"] for s in man["skipped_fonts"]}
    assert skipped["ZZ-copy-of-DejaVuSans.ttf"].startswith("same renderings as")
    ds = RecordIO(out)
    seen = {}
    for i in range(len(ds)):
        key = (int(ds.label(i)), hashlib.sha1(ds.image(i).tobytes()).hexdigest())
        assert key not in seen, f"identity {key[0]} holds the same image twice"
        seen[key] = i
    # the counts add up: every kept face renders every identity once, minus the dropped copies
    c = man["counts"]
    assert c["images"] == c["faces"] * len(CHARS) - c["duplicates_dropped"] - c["blanks_dropped"]


def test_split_has_no_identity_leak(built, fonts):
    out, man = built
    train, test = man["train_identities"], man["test_identities"]
    assert not set(train) & set(test) and sorted(train + test) == sorted(CHARS)
    assert len(test) == 3
    # every training image is a rendering of its labelled training identity in one of the kept faces
    faces = [G.FontFace(f["path"], f["index"], f["name"], f["sha256"]) for f in man["fonts"]]
    renders = {}
    for face in faces:
        r = G.Renderer(face, KW["size"])
        for ch in CHARS:
            renders.setdefault(r(ch).tobytes(), set()).add(ch)
    ds = RecordIO(out)
    assert ds.num_classes == len(train) and set(ds.labels.tolist()) == set(range(len(train)))
    for i in range(len(ds)):
        chars = renders[ds.image(i)[:, :, 0].tobytes()]
        assert chars == {train[int(ds.label(i))]}
    # unseen images: identities of the held-out characters only, at most max_test_per_identity each
    gs = G.GlyphSet(out)
    imgs, labels, quality = gs.unseen()
    assert set(labels.tolist()) == set(range(len(test)))
    assert np.bincount(labels).max() <= KW["max_test_per_identity"]
    assert imgs.shape[1:] == (KW["size"], KW["size"])
    assert quality["resolution"].min() >= G.DEGRADE["min_resolution"] and quality["resolution"].max() <= KW["size"]


def test_rec_and_bin_round_trip(built):
    out, man = built
    ds = RecordIO(out)
    assert len(ds) == man["counts"]["train_images"]
    x, y = G.GlyphSet(out).train_set(augment=True, progress=False).get_batch(torch.arange(3))
    assert tuple(x.shape) == (3, 3, KW["size"], KW["size"]) and -1.0 <= float(x.min()) <= float(x.max()) <= 1.0
    assert torch.equal(y, torch.from_numpy(ds.labels[:3]))
    pair_imgs, same = load_bin(out / "unseen.bin")
    assert len(same) == KW["num_pairs"] and same.sum() == KW["num_pairs"] // 2
    gs = G.GlyphSet(out)
    imgs, labels, _ = gs.unseen()
    lookup = {im.tobytes(): int(l) for im, l in zip(imgs, labels)}
    for k in range(len(same)):
        a, b = (lookup[pair_imgs[2 * k + j][:, :, 0].tobytes()] for j in (0, 1))
        assert (a == b) == bool(same[k])


def test_degradations_are_seeded():
    img = np.zeros((24, 24), np.uint8)
    img[6:18, 10:14] = 255
    a, qa = G.degrade(img, np.random.default_rng(5))
    b, qb = G.degrade(img, np.random.default_rng(5))
    c, _ = G.degrade(img, np.random.default_rng(6))
    assert np.array_equal(a, b) and qa == qb and not np.array_equal(a, c)
    assert a.shape == img.shape and a.dtype == np.uint8


def test_too_few_fonts_is_a_clear_error(fonts, tmp_path):
    with pytest.raises(ValueError, match=r"only \d+ distinct font faces .* \(need 50\)"):
        G.build_glyph_set(tmp_path / "x", chars=CHARS, font_dirs=[fonts], min_fonts=50, progress=False)
    with pytest.raises(ValueError, match="only 0 distinct"):
        G.build_glyph_set(tmp_path / "y", chars="가나", font_dirs=[fonts], progress=False)


def test_train_images_are_the_decoded_records_and_follow_the_rec(built, tmp_path):
    out, _ = built
    ds = RecordIO(out)
    arr = G.GlyphSet(out).train_images(progress=False)
    assert arr.dtype == np.uint8 and arr.shape == (len(ds), KW["size"], KW["size"])
    assert all(np.array_equal(arr[i], ds.image(i)[:, :, 0]) for i in range(len(ds)))
    # a set copied without the array (or with a stale one) decodes train.rec again
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / G.TRAIN_IMAGES).unlink()
    assert np.array_equal(G.GlyphSet(copy).train_images(progress=False), arr)
    np.save(copy / G.TRAIN_IMAGES, arr[:2])
    (copy / (G.TRAIN_IMAGES + ".json")).write_text('{"records": 2, "rec_bytes": 1}')
    assert np.array_equal(G.GlyphSet(copy).train_images(progress=False), arr)
    (copy / G.TRAIN_IMAGES).write_bytes(b"not an npy file")  # unreadable, with a matching stamp
    assert np.array_equal(G.GlyphSet(copy).train_images(progress=False), arr)


def _identity_draws(n, size):
    return {"angle": torch.zeros(n, dtype=torch.float64), "scale": torch.ones(n, dtype=torch.float64),
            "shift": torch.zeros(n, 2, dtype=torch.float64), "resolution": torch.full((n,), size),
            "blur": torch.zeros(n, dtype=torch.float64), "noise": torch.zeros(n, dtype=torch.float64)}


def test_batched_degradation_without_effects_is_the_identity():
    imgs = torch.randint(0, 256, (5, 24, 24), dtype=torch.uint8)
    out = G.apply_degradations(imgs, _identity_draws(5, 24))
    assert torch.equal(out, imgs.float())


def test_batched_degradation_noise_has_the_drawn_std():
    d = _identity_draws(3, 64)
    d["noise"] = torch.tensor([0.0, 5.0, 15.0], dtype=torch.float64)
    out = G.apply_degradations(torch.full((3, 64, 64), 128, dtype=torch.uint8), d,
                               generator=torch.Generator().manual_seed(0))
    std = (out - 128.0).flatten(1).std(1)
    assert float(std[0]) == 0.0
    assert abs(float(std[1]) - 5.0) < 0.4 and abs(float(std[2]) - 15.0) < 1.0


def test_batched_degradation_agrees_with_the_pillow_reference(built):
    """The training-time (torch, batched) and test-set (Pillow, per image) degradations apply the
    same draw alike: within about one grey level on average (they differ by interpolation details,
    e.g. Pillow's half-pixel convention in the affine map)."""
    out, _ = built
    imgs = G.GlyphSet(out).train_images(progress=False)[:60]
    d = G.draw_degradations(len(imgs), KW["size"], generator=torch.Generator().manual_seed(1))
    d["noise"].zero_()
    ours = G.apply_degradations(torch.from_numpy(imgs), d).numpy()
    diffs = []
    for k in range(len(imgs)):
        ref = G.degrade_pil(imgs[k], float(d["angle"][k]), float(d["scale"][k]), d["shift"][k].tolist(),
                            int(d["resolution"][k]), float(d["blur"][k]))
        diffs.append(np.abs(np.clip(np.rint(ref), 0, 255) - ours[k]).mean())
    assert bool((d["blur"] > 0).any()) and bool((d["resolution"] < KW["size"]).any())
    assert np.mean(diffs) < 2.5 and np.max(diffs) < 8.0
    # a different draw gives clearly different images (the comparison can fail)
    other = G.apply_degradations(torch.from_numpy(imgs), {**d, "angle": -d["angle"], "shift": -d["shift"]}).numpy()
    assert np.abs(other - ours).mean() > 4 * np.mean(diffs)


def test_glyph_train_set_draws_from_torchs_stream(built):
    out, _ = built
    ts = G.GlyphSet(out).train_set(progress=False)
    idx = torch.arange(8)
    torch.manual_seed(3)
    a, _ = ts.get_batch(idx)
    b, _ = ts.get_batch(idx)
    torch.manual_seed(3)
    c, _ = ts.get_batch(idx)
    assert torch.equal(a, c) and not torch.equal(a, b)
    clean, _ = G.GlyphSet(out).train_set(augment=False, progress=False).get_batch(idx)
    assert torch.equal(clean, G.normalize_grey(torch.from_numpy(ts.images[:8].numpy())))


def test_trainer_config_reads_a_glyph_set_in_memory(built):
    from facemargin.train.data import build_train_set

    out, _ = built
    ts = build_train_set({"name": "recordio", "root": str(out), "degrade": True})
    assert isinstance(ts, G.GlyphTrainSet) and ts.num_classes == RecordIO(out).num_classes
