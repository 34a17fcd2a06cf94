"""``facemargin align`` over a folder with CSV and JSON landmark files."""
import argparse
import json

import numpy as np
import pytest
from PIL import Image

from facemargin.align import ARCFACE_112, norm_crop, transform_points
from facemargin.align.cli import read_landmarks, register


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
