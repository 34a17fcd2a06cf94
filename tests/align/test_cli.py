"""``facemargin align`` over a folder with CSV and JSON landmark files."""
import argparse
import csv
import io
import json
import sys

import numpy as np
import pytest
from PIL import Image

from facemargin.align import ARCFACE_112, estimate_transform, norm_crop, transform_points
from facemargin.align.cli import register
from facemargin.align.folder import read_landmarks


def parse(argv):
    parser = argparse.ArgumentParser(prog="facemargin")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.fixture()
def folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "img" / "sub").mkdir(parents=True)
    lms = {}
    for k, rel in enumerate(["a.png", "sub/b.png"]):
        img = rng.integers(0, 256, (90 + 10 * k, 120, 3), dtype=np.uint8)
        Image.fromarray(img).save(tmp_path / "img" / rel)
        ang = np.deg2rad(10 + 20 * k)
        m = np.array([[np.cos(ang), -np.sin(ang), 10.0], [np.sin(ang), np.cos(ang), 5.0]]) * 0.7
        lms[rel] = transform_points(m, ARCFACE_112)
    return tmp_path, lms


def test_align_csv_and_json(folder):
    root, lms = folder
    csv = root / "lm.csv"
    csv.write_text("path,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5\n"
                   + "".join(f"{p}," + ",".join(f"{v:.6f}" for v in pts.ravel()) + "\n" for p, pts in lms.items()))
    args = parse(["align", "--images", str(root / "img"), "--landmarks", str(csv), "--out", str(root / "out"),
                  "--quiet"])
    assert args.func(args) == 0
    for rel, pts in lms.items():
        got = np.asarray(Image.open(root / "out" / rel))
        expected = norm_crop(np.asarray(Image.open(root / "img" / rel)), np.round(pts, 6))
        assert got.shape == (112, 112, 3)
        np.testing.assert_array_equal(got, expected)  # PNG keeps the crop exactly

    js = root / "lm.json"
    js.write_text(json.dumps({p: pts.tolist() for p, pts in lms.items()}))
    args = parse(["align", "--images", str(root / "img"), "--landmarks", str(js), "--out", str(root / "out2"),
                  "--template", "sphereface", "--size", "56", "--quiet"])
    assert args.func(args) == 0
    assert np.asarray(Image.open(root / "out2" / "sub" / "b.png")).shape == (56, 48, 3)


def test_bad_rows_are_named(folder):
    root, lms = folder
    csv = root / "lm.csv"
    good = "a.png," + ",".join(str(v) for v in lms["a.png"].ravel())
    csv.write_text(good + "\n" + "sub/b.png,1,2,3\n")
    with pytest.raises(ValueError, match=r"lm\.csv, line 2: expected 11 columns"):
        read_landmarks(csv)
    csv.write_text(good + "\n" + good.replace("a.png", "missing.png") + "\n")
    args = parse(["align", "--images", str(root / "img"), "--landmarks", str(csv), "--out", str(root / "o"),
                  "--quiet"])
    with pytest.raises(FileNotFoundError, match=r"line 2: image not found: .*missing\.png"):
        args.func(args)
    args = parse(["align", "--images", str(root / "img"), "--landmarks", str(csv), "--out", str(root / "o"),
                  "--quiet", "--skip-bad"])
    assert args.func(args) == 0 and (root / "o" / "a.png").is_file()
    js = root / "lm.json"
    js.write_text(json.dumps({"a.png": [[1, 2]] * 4}))
    with pytest.raises(ValueError, match=r"entry 'a.png'.*five"):
        read_landmarks(js)
    args = parse(["align", "--images", str(root / "img"), "--landmarks", str(csv), "--out", str(root / "o"),
                  "--ec-y", "40"])
    with pytest.raises(ValueError, match="ec_mc"):
        args.func(args)


def _broken_rows(root, lms):
    """A CSV with one good row and one bad row of each kind; (line number, reason) of the bad ones."""
    good = lambda p: f"{p}," + ",".join(f"{v:.6f}" for v in lms["a.png"].ravel())  # noqa: E731
    (root / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "img" / "notes.png").write_text("text, not a picture")
    lines = ["path,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5", good("a.png"), "sub/b.png,1,2,3",
             good("sub/b.png").replace(",", ",x", 1), good("missing.png"), good("broken.png"),
             good("notes.png"), "," + good("")[1:]]
    (root / "lm.csv").write_text("\n".join(lines) + "\n")
    return [(3, "expected 11 columns path,x1,y1,...,x5,y5, got 4"),
            (4, "coordinates must be numbers, got ['x"),
            (5, "image not found: "),
            (6, "cannot read image "),
            (7, "not an image file (no image format recognised)"),
            (8, "image path must be a non-empty string")]


def test_malformed_rows_name_file_and_line_or_are_skipped(folder, capsys):
    from facemargin.cli import main

    root, lms = folder
    bad = _broken_rows(root, lms)
    argv = ["align", "--images", str(root / "img"), "--landmarks", str(root / "lm.csv"), "--quiet"]
    # without --skip-bad the first bad row stops the run, naming the file and the line
    assert main(argv + ["--out", str(root / "strict")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"facemargin align: error: {root / 'lm.csv'}, line 3: expected 11 columns path,x1,y1,...,x5,y5, got 4"
    assert not (root / "strict" / "a.png").exists()

    assert main(argv + ["--out", str(root / "o"), "--skip-bad"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == (f"aligned 1 image(s) into {root / 'o'} (template arcface, size 112); "
                           f"skipped 6, listed in {root / 'o' / 'skipped.csv'}")
    assert (root / "o" / "a.png").is_file() and not (root / "o" / "sub").exists()
    skipped = [line for line in err.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 6
    with open(root / "o" / "skipped.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["where"] for r in rows] == [f"{root / 'lm.csv'}, line {n}" for n, _ in bad]
    assert [r["path"] for r in rows] == ["sub/b.png", "sub/b.png", "missing.png", "broken.png", "notes.png", ""]
    for r, (n, reason) in zip(rows, bad):
        assert reason in r["reason"]
    assert "truncated" in rows[3]["reason"] and str(root / "img" / "broken.png") in rows[3]["reason"]
    assert any(line == f"skipped: {rows[1]['where']}: {rows[1]['reason']}" for line in skipped)

    # JSON entries are skipped alike; a file where nothing is usable aligns nothing and fails
    js = root / "lm.json"
    js.write_text(json.dumps([{"path": "a.png", "landmarks": [[1, 2]] * 4}, {"landmarks": []}, 7]))
    assert main(["align", "--images", str(root / "img"), "--landmarks", str(js), "--out", str(root / "j"),
                 "--quiet", "--skip-bad"]) == 1
    out, err = capsys.readouterr()
    assert "aligned 0 image(s)" in out and "skipped 3" in out
    with open(root / "j" / "skipped.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["where"] for r in rows] == [f"{js}, item 0 ('a.png')", f"{js}, item 1", f"{js}, item 2"]
    assert "expected five (x, y) points" in rows[0]["reason"]
    assert main(["align", "--images", str(root / "img"), "--landmarks", str(js), "--out", str(root / "j"),
                 "--quiet"]) == 2
    assert f"{js}, item 0 ('a.png'): expected five (x, y) points" in capsys.readouterr().err


def test_size_help_and_non_square_photos(folder, capsys):
    """The crop comes from the landmark warp: a wide photo gives an undistorted crop of the asked height."""
    from facemargin.cli import main

    root, lms = folder
    with pytest.raises(SystemExit):
        main(["align", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "photos of any shape are accepted and none is squashed or padded" in help_text
    assert "OUT/skipped.csv" in help_text
    rng = np.random.default_rng(3)
    wide = rng.integers(0, 256, (60, 200, 3), dtype=np.uint8)
    Image.fromarray(wide).save(root / "img" / "wide.png")
    m = np.array([[0.4, 0.0, 60.0], [0.0, 0.4, 5.0]])   # a pure scale and shift: no rotation, no shear
    pts = transform_points(m, ARCFACE_112)
    (root / "wide.csv").write_text("wide.png," + ",".join(f"{v:.6f}" for v in pts.ravel()) + "\n")
    assert main(["align", "--images", str(root / "img"), "--landmarks", str(root / "wide.csv"), "--out",
                 str(root / "w"), "--size", "56", "--quiet"]) == 0
    crop = np.asarray(Image.open(root / "w" / "wide.png"))
    assert crop.shape == (56, 56, 3)
    np.testing.assert_array_equal(crop, norm_crop(wide, np.round(pts, 6), size=56))
    # the crop's pixel (x, y) samples the photo at (60 + 0.8 x, 5 + 0.8 y): the same scale on both axes
    np.testing.assert_allclose(estimate_transform(np.round(pts, 6), size=56), [[1.25, 0, -75], [0, 1.25, -6.25]],
                               atol=1e-4)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal_and_not_with_quiet(folder, monkeypatch, capsys):
    from facemargin.cli import main

    root, lms = folder
    csv_file = root / "lm.csv"
    csv_file.write_text("".join(f"{p}," + ",".join(str(v) for v in pts.ravel()) + "\n" for p, pts in lms.items()))
    argv = ["align", "--images", str(root / "img"), "--landmarks", str(csv_file), "--out", str(root / "o")]
    assert main(argv) == 0   # stderr captured by pytest: not a terminal, no bar
    assert "aligning" not in capsys.readouterr().err
    for extra, drawn in (([], True), (["--quiet"], False)):
        term = _Terminal()
        monkeypatch.setattr(sys, "stderr", term)
        assert main(argv + extra) == 0
        monkeypatch.undo()
        assert ("aligning (arcface, 112)" in term.getvalue()) is drawn
