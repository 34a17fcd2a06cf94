"""``facemargin pack`` / ``pack-pairs``: image folders and lists to .rec and .bin, read back by our readers."""
import csv
import io
import json
import pickle
import sys

import numpy as np
import pytest
from PIL import Image

from facemargin.cli import main
from facemargin.data import RecordIO, encode_image, load_bin, load_image
from facemargin.data.binpack import read_bin_raw
from facemargin.data.images import resize_image
from facemargin.data.pack import fit_image, pack_folder, pack_images, pack_pairs, read_image_list


def _identity_image(identity: int, k: int, size=28) -> np.ndarray:
    rng = np.random.default_rng(1000 * identity + k)
    coarse = np.random.default_rng(identity).integers(30, 226, size=(4, 4, 3))
    img = np.kron(coarse, np.ones((size // 4, size // 4, 1))) + rng.normal(0, 10, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _folder(root, ids, per_id, ext=".jpg", size=28):
    for i in range(ids):
        d = root / f"person_{chr(ord('z') - i)}"   # names sort in reverse of i
        d.mkdir(parents=True)
        for k in range(per_id):
            Image.fromarray(_identity_image(i, k, size)).save(d / f"{k:03d}{ext}", quality=90)
    return root


def test_pack_folder_round_trip_and_layout(tmp_path):
    src = _folder(tmp_path / "src", 3, 4)
    result = pack_folder(src, tmp_path / "rec", progress=False)
    assert result["images"] == 12 and result["classes"] == 3 and result["size"] == (28, 28)
    assert result["identities"] == ["person_x", "person_y", "person_z"]
    ds = RecordIO(tmp_path / "rec")
    assert len(ds) == 12 and ds.num_classes == 3
    assert (tmp_path / "rec" / "property").read_text() == "3,28,28\n"
    for i in range(12):
        label, k = i // 4, i % 4
        path = src / result["identities"][label] / f"{k:03d}.jpg"
        # JPEG files are stored unchanged: the record holds the file's bytes
        assert ds.record(i)[1] == path.read_bytes()
        np.testing.assert_array_equal(ds.image(i), load_image(path))
        assert ds.label(i) == label
    np.testing.assert_array_equal(ds.labels, np.repeat([0, 1, 2], 4))
    # insightface's layout: header (1+N, 1+N+C), identity records with their key ranges
    assert ds.header_range == (0, 13) and ds.identity_range == (13, 16)
    assert [ds.identity(c) for c in range(3)] == [(1, 5), (5, 9), (9, 13)]


def test_png_sizes_and_workers(tmp_path):
    src = _folder(tmp_path / "src", 2, 3, ext=".png")
    Image.fromarray(_identity_image(5, 0, 40)).save(src / "person_y" / "big.png")
    with pytest.raises(ValueError, match=r"big\.png is 40x40 \(HxW\) but the expected size is 28x28"):
        pack_folder(src, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad" / "train.rec").exists()
    a = pack_folder(src, tmp_path / "a", size=28, quality=100, progress=False)
    b = pack_folder(src, tmp_path / "b", size=28, quality=100, progress=False, workers=2)
    assert a["images"] == b["images"] == 7
    for name in ("train.rec", "train.idx", "property"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    ds = RecordIO(tmp_path / "a")
    # PNGs are re-encoded as JPEG at the quality asked for; the big one is resized first
    assert ds.record(0)[1] == encode_image(load_image(src / "person_y" / "000.png"), "jpeg", 100)
    assert ds.record(3)[1] == encode_image(load_image(src / "person_y" / "big.png", size=28), "jpeg", 100)


def test_list_files(tmp_path):
    src = _folder(tmp_path / "src", 2, 2)
    lst = tmp_path / "train.lst"
    lst.write_text("0\t1\tsrc/person_z/000.jpg\n1\t1\tsrc/person_z/001.jpg\n2\t0\tsrc/person_y/000.jpg\n")
    plain = tmp_path / "plain.txt"
    plain.write_text("# path label\nsrc/person_y/001.jpg 2\nsrc/person_z/000.jpg,0\n")
    paths, labels = read_image_list(lst)
    assert [p.name for p in paths] == ["000.jpg", "001.jpg", "000.jpg"] and labels.tolist() == [1, 1, 0]
    assert main(["pack", str(plain), "--out", str(tmp_path / "rec"), "--quiet"]) == 0
    ds = RecordIO(tmp_path / "rec")
    assert ds.labels.tolist() == [0, 2] and ds.num_classes == 3
    assert ds.record(0)[1] == (src / "person_z" / "000.jpg").read_bytes()
    bad = tmp_path / "bad.txt"
    bad.write_text("src/person_y/001.jpg -1\n")
    with pytest.raises(ValueError, match=r"bad\.txt, line 1: label '-1' must be a non-negative integer"):
        read_image_list(bad)
    missing = tmp_path / "missing.txt"
    missing.write_text("src/nobody.jpg 0\n")
    assert main(["pack", str(missing), "--out", str(tmp_path / "m"), "--quiet"]) == 2


def test_pack_pairs_list_and_lfw(tmp_path):
    src = _folder(tmp_path / "src", 2, 2)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("src/person_z/000.jpg src/person_z/001.jpg 1\nsrc/person_z/000.jpg src/person_y/000.jpg false\n")
    assert main(["pack-pairs", str(pairs), "--out", str(tmp_path / "p.bin"), "--quiet"]) == 0
    bins, issame = read_bin_raw(tmp_path / "p.bin")
    assert issame.tolist() == [True, False]
    assert bins[1] == (src / "person_z" / "001.jpg").read_bytes()
    images, _ = load_bin(tmp_path / "p.bin")
    np.testing.assert_array_equal(images[3], load_image(src / "person_y" / "000.jpg"))
    with open(tmp_path / "p.bin", "rb") as f:   # a plain pickle of (list of bytes, list of bool), as insightface reads
        raw = pickle.load(f)
    assert isinstance(raw[0][0], bytes) and raw[1] == [True, False]

    lfw = tmp_path / "lfw"
    for name in ("Ann_Lee", "Bo_Chan"):
        (lfw / name).mkdir(parents=True)
        for n in (1, 2):
            Image.fromarray(_identity_image(len(name) + n, n, 32)).save(lfw / name / f"{name}_{n:04d}.jpg")
    (lfw / "pairs.txt").write_text("Ann_Lee 1 2\nAnn_Lee 1 Bo_Chan 2\n")
    result = pack_pairs(lfw / "pairs.txt", tmp_path / "lfw.bin", size=28, progress=False)
    assert result == {"pairs": 2, "same": 1, "out": str(tmp_path / "lfw.bin")}
    images, issame = load_bin(tmp_path / "lfw.bin")
    assert images.shape == (4, 28, 28, 3) and issame.tolist() == [True, False]
    bad = tmp_path / "bad_pairs.txt"
    bad.write_text("a.jpg b.jpg maybe\n")
    with pytest.raises(ValueError, match=r"bad_pairs\.txt, line 1: the third field must be 1/0"):
        pack_pairs(bad, tmp_path / "x.bin", progress=False)


def test_thousand_images_pack_and_train(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    for i in range(20):   # 20 identities x 50 photos: a colour pattern each, with noise
        (src / f"id{i:02d}").mkdir(parents=True)
        base = np.kron(rng.integers(30, 226, (4, 4, 3)), np.ones((7, 7, 1)))
        for k in range(50):
            img = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(src / f"id{i:02d}" / f"{k:02d}.jpg", quality=90)
    assert main(["pack", str(src), "--out", str(tmp_path / "rec"), "--quiet"]) == 0
    ds = RecordIO(tmp_path / "rec")
    assert len(ds) == 1000 and ds.num_classes == 20
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "rec"), "--set", "data.name=recordio",
                 "--set", "model.params.in_channels=3", "--set", "model.params.width=0.25",
                 "--set", "model.embedding_size=8", "--set", "train.batch_size=32", "--set", "train.device=cpu",
                 "--set", "train.progress=false", "--set", "train.log_every=1", "--set", "loss.name=cosface",
                 "--set", "loss.params.s=16.0", "--set", "optim.lr=0.01", "--steps", "3", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
    assert (out / "checkpoint.pt").is_file()


def test_read_index_vectorised_matches_lines(tmp_path):
    from facemargin.data.recordio.index import _parse_index_fast, read_index

    rng = np.random.default_rng(0)
    keys = rng.permutation(5000)
    offs = rng.integers(0, 10 ** 15, 5000)
    text = "".join(f"{k}\t{o}\n" if i % 7 else f"  {k} {o} \r\n" for i, (k, o) in enumerate(zip(keys, offs)))
    (tmp_path / "a.idx").write_text(text + "\n")
    k, o = read_index(tmp_path / "a.idx")
    np.testing.assert_array_equal(k, keys)
    np.testing.assert_array_equal(o, offs)
    # chunk boundaries fall inside lines: the chunks are cut at the next line end
    k2, o2 = _parse_index_fast(text.encode(), chunk=97)
    np.testing.assert_array_equal(k2, keys)
    np.testing.assert_array_equal(o2, offs)
    for bad, msg in (("1\t2\n3\n", "line 2: expected"), ("1\t2\n-3\t4\n", None), ("1\t2\n1\t8\n", "duplicate keys"),
                     ("1\t2\t3\n", "line 1: expected"), ("1\tx\n", "line 1: key and offset must be integers")):
        (tmp_path / "b.idx").write_text(bad)
        if msg is None:   # a sign is left to the exact parser, which accepts it as Python's int() does
            assert read_index(tmp_path / "b.idx")[0].tolist() == [1, -3]
            continue
        with pytest.raises(ValueError, match=msg):
            read_index(tmp_path / "b.idx")


def _bad_folder(root):
    """person_z: 3 photos, a text file named .jpg and notes; person_y: only a truncated PNG; person_x: 2 photos
    and an empty .jpg. Returns the paths of the bad files."""
    _folder(root, 3, 2)
    Image.fromarray(_identity_image(0, 9)).save(root / "person_z" / "002.jpg", quality=90)
    bad = {"text": root / "person_z" / "003.jpg", "notes": root / "person_z" / "notes.txt",
           "truncated": root / "person_y" / "000.png", "empty": root / "person_x" / "002.jpg"}
    bad["text"].write_text("this is not a photo")
    bad["notes"].write_text("taken in 2019")
    for p in (root / "person_y").iterdir():
        p.unlink()
    Image.fromarray(_identity_image(1, 0)).save(bad["truncated"])
    bad["truncated"].write_bytes(bad["truncated"].read_bytes()[:60])
    bad["empty"].write_bytes(b"")
    return bad


def test_pack_skip_bad_drops_files_and_empty_identities(tmp_path, capsys):
    src = tmp_path / "src"
    bad = _bad_folder(src)
    # without --skip-bad: the first unreadable file stops the pack, named, with why; nothing is written
    assert main(["pack", str(src), "--out", str(tmp_path / "strict"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (f"facemargin pack: error: {bad['empty']}: empty file")
    assert not (tmp_path / "strict" / "train.rec").exists()
    with pytest.raises(ValueError, match=r"person_z/003\.jpg: not an image file \(no image format recognised\)$"):
        pack_images([bad["text"]], [0], tmp_path / "strict", progress=False)
    with pytest.raises(ValueError, match=r"person_y/000\.png: corrupt or truncated image \(OSError: "):
        pack_images([bad["truncated"]], [0], tmp_path / "strict", progress=False)

    out = tmp_path / "rec"
    assert main(["pack", str(src), "--out", str(out), "--quiet", "--skip-bad"]) == 0
    stdout, stderr = capsys.readouterr()
    assert stdout.strip() == (f"packed 5 image(s) of 2 identities (28x28) into {out / 'train.rec'}, train.idx and "
                              f"property; skipped 4 file(s), listed in {out / 'skipped.csv'}; dropped 1 identity "
                              "folder(s) left without a readable image (person_y), the others numbered from 0")
    assert f"skipped: {bad['text']}: not an image file (no image format recognised)" in stderr.splitlines()
    with open(out / "skipped.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["path"]: (r["label"], r["reason"].split(" (")[0]) for r in rows} == {
        str(bad["notes"]): ("1", "not an image"), str(bad["empty"]): ("0", "empty file"),
        str(bad["truncated"]): ("", "corrupt or truncated image"), str(bad["text"]): ("1", "not an image file")}
    assert not list(out.glob(".pack-*"))   # the temporary file is gone
    ds = RecordIO(out)
    assert ds.num_classes == 2 and len(ds) == 5
    assert (out / "property").read_text() == "2,28,28\n"
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1, 1])   # person_x, person_z: contiguous
    assert ds.header_range == (0, 6) and ds.identity_range == (6, 8)
    assert [ds.identity(c) for c in range(2)] == [(1, 3), (3, 6)]
    kept = [src / "person_x" / "000.jpg", src / "person_x" / "001.jpg"] + \
        [src / "person_z" / f"{k:03d}.jpg" for k in range(3)]
    assert [ds.record(i)[1] for i in range(5)] == [p.read_bytes() for p in kept]

    result = pack_folder(src, tmp_path / "rec2", skip_bad=True, progress=False, workers=2)
    assert result["identities"] == ["person_x", "person_z"] and result["dropped"] == ["person_y"]
    assert (tmp_path / "rec2" / "train.rec").read_bytes() == (out / "train.rec").read_bytes()

    # a list file keeps its own labels: an emptied label keeps an empty identity record
    lst = tmp_path / "list.txt"
    lst.write_text(f"{bad['truncated']} 0\n{kept[0]} 1\n{bad['text']} 2\n{kept[3]} 3\n")
    assert main(["pack", str(lst), "--out", str(tmp_path / "lrec"), "--quiet", "--skip-bad"]) == 0
    assert "skipped 2 file(s)" in capsys.readouterr().out
    ds = RecordIO(tmp_path / "lrec")
    assert ds.num_classes == 4 and ds.labels.tolist() == [1, 3]
    assert [ds.identity(c) for c in range(4)] == [(1, 1), (1, 2), (2, 2), (2, 3)]
    # nothing readable at all: an error, with the list of what was skipped
    lst.write_text(f"{bad['truncated']} 0\n{bad['empty']} 1\n")
    assert main(["pack", str(lst), "--out", str(tmp_path / "none"), "--quiet", "--skip-bad"]) == 2
    assert "no readable image to pack: all 2 were skipped" in capsys.readouterr().err
    assert len((tmp_path / "none" / "skipped.csv").read_text().splitlines()) == 3
    assert not (tmp_path / "none" / "train.rec").exists()


def test_non_image_files_in_a_folder_get_a_note(tmp_path, capsys):
    src = _folder(tmp_path / "src", 2, 2)
    (src / "person_y" / "notes.txt").write_text("hello")
    assert main(["pack", str(src), "--out", str(tmp_path / "rec"), "--quiet"]) == 0
    assert capsys.readouterr().err.strip() == ("facemargin pack: note: left out 1 file(s) that are not images (.jpg, "
                                               f".jpeg, .png, .bmp), e.g. {src / 'person_y' / 'notes.txt'}")
    assert RecordIO(tmp_path / "rec").num_classes == 2


def test_size_pads_non_square_images(tmp_path, capsys):
    wide = _identity_image(3, 0, 40)[:20]   # 20x40
    np.testing.assert_array_equal(fit_image(wide, (28, 56)), resize_image(wide, (28, 56)))  # same aspect: resized
    fitted = fit_image(wide, 28)
    assert fitted.shape == (28, 28, 3)
    np.testing.assert_array_equal(fitted[:7], 0)
    np.testing.assert_array_equal(fitted[21:], 0)
    np.testing.assert_array_equal(fitted[7:21], resize_image(wide, (14, 28)))
    tall = fit_image(np.full((30, 10, 3), 200, np.uint8), (30, 30))
    assert (tall[:, :10] == 0).all() and (tall[:, 10:20] == 200).all() and (tall[:, 20:] == 0).all()

    src = tmp_path / "src" / "anna"
    src.mkdir(parents=True)
    Image.fromarray(wide).save(src / "wide.png")
    assert main(["pack", str(tmp_path / "src"), "--out", str(tmp_path / "rec"), "--size", "28", "--quiet"]) == 0
    assert "(28x28)" in capsys.readouterr().out
    ds = RecordIO(tmp_path / "rec")
    assert ds.record(0)[1] == encode_image(fitted, "jpeg", 95)   # the padded image, not a squashed one
    img = ds.image(0)
    assert img.shape == (28, 28, 3) and img[:6].mean() < 4 and img[22:].mean() < 4
    with pytest.raises(SystemExit):
        main(["pack", "--help"])
    assert "padded, never squashed" in " ".join(capsys.readouterr().out.split())
    # without --size, images of several sizes are refused, naming one and pointing at --size
    Image.fromarray(_identity_image(3, 1)).save(src / "square.png")
    assert main(["pack", str(tmp_path / "src"), "--out", str(tmp_path / "mixed"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"facemargin pack: error: {src / 'wide.png'} is 20x40 (HxW) but the expected size is 28x28 (all images of "
        "a RecordIO set share one size); give --size H [W] to bring every image to one size")


def test_pack_pairs_missing_image_and_one_kind_of_pairs(tmp_path, capsys):
    src = _folder(tmp_path / "src", 2, 2)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("src/person_z/000.jpg src/person_z/001.jpg 1\n# a comment\n"
                     "src/person_z/000.jpg src/nobody.jpg 0\n")
    assert main(["pack-pairs", str(pairs), "--out", str(tmp_path / "p.bin"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (f"facemargin pack-pairs: error: {pairs}, line 3: image not found: "
                                               f"{tmp_path / 'src' / 'nobody.jpg'}")
    (src / "person_y" / "junk.jpg").write_text("not a photo")
    pairs.write_text("src/person_z/000.jpg src/person_z/001.jpg 1\nsrc/person_y/junk.jpg src/person_z/000.jpg 0\n")
    assert main(["pack-pairs", str(pairs), "--out", str(tmp_path / "p.bin"), "--quiet", "--workers", "2"]) == 2
    assert capsys.readouterr().err.strip() == (f"facemargin pack-pairs: error: {pairs}, line 2: "
                                               f"{src / 'person_y' / 'junk.jpg'}: not an image file "
                                               "(no image format recognised)")
    assert not (tmp_path / "p.bin").exists()

    pairs.write_text("src/person_z/000.jpg src/person_z/001.jpg 1\nsrc/person_y/000.jpg src/person_y/001.jpg true\n")
    assert main(["pack-pairs", str(pairs), "--out", str(tmp_path / "p.bin"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"wrote 2 pairs (2 same, 0 different) to {tmp_path / 'p.bin'}"
    assert err.strip() == (f"facemargin pack-pairs: warning: {pairs} holds only genuine (same-person) pairs; "
                           "a pack without impostor pairs cannot measure verification accuracy")
    assert read_bin_raw(tmp_path / "p.bin")[1].tolist() == [True, True]
    pairs.write_text("src/person_z/000.jpg src/person_y/001.jpg 0\n")
    assert main(["pack-pairs", str(pairs), "--out", str(tmp_path / "q.bin"), "--quiet"]) == 0
    assert "holds only impostor (different-person) pairs; a pack without genuine pairs" in capsys.readouterr().err
    pairs.write_text("src/person_z/000.jpg src/person_y/001.jpg 0\nsrc/person_z/000.jpg src/person_z/001.jpg 1\n")
    assert main(["pack-pairs", str(pairs), "--out", str(tmp_path / "r.bin"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("command", ["pack", "pack-pairs"])
def test_progress_bar_only_on_a_terminal_and_not_with_quiet(tmp_path, monkeypatch, capsys, command):
    _folder(tmp_path / "src", 2, 2)
    if command == "pack":
        argv, label = ["pack", str(tmp_path / "src"), "--out", str(tmp_path / "rec")], "packing "
    else:
        (tmp_path / "pairs.txt").write_text("src/person_z/000.jpg src/person_z/001.jpg 1\n"
                                            "src/person_z/000.jpg src/person_y/000.jpg 0\n")
        argv, label = ["pack-pairs", str(tmp_path / "pairs.txt"), "--out", str(tmp_path / "p.bin")], "packing p.bin"
    assert main(argv) == 0   # stderr is pytest's capture, not a terminal: no bar
    assert capsys.readouterr().err == ""
    for extra, drawn in (([], True), (["--quiet"], False)):
        term = _Terminal()
        monkeypatch.setattr(sys, "stderr", term)
        assert main(argv + extra) == 0
        monkeypatch.undo()
        assert (label in term.getvalue() and "4/4" in term.getvalue()) is drawn
