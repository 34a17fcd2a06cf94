"""``facemargin detect`` and ``facemargin align --detect`` on a small folder of real and made-up photos."""
import csv
import io
import json
import sys

import numpy as np
import pytest
from PIL import Image

from facemargin.align import ARCFACE_112, estimate_transform, norm_crop, transform_points
from facemargin.align.folder import read_landmarks
from facemargin.cli import main


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut):
    root = tmp_path_factory.mktemp("photos")
    (root / "crew").mkdir()
    Image.fromarray(astronaut).save(root / "crew" / "astronaut.png")
    Image.fromarray(np.full((100, 140, 3), 90, np.uint8)).save(root / "wall.jpg")
    face = Image.fromarray(astronaut[40:200, 160:290])
    canvas = np.full((360, 640, 3), 210, np.uint8)
    canvas[116:244, 268:372] = np.asarray(face.resize((104, 128)))
    canvas[150:342, 470:626] = np.asarray(face.resize((156, 192)))
    Image.fromarray(canvas).save(root / "two.png")
    (root / "notes.txt").write_text("not an image")
    (root / "crew" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    return root


def test_align_detect_astronaut(tmp_path, astronaut, astronaut_points, detector):
    (tmp_path / "in").mkdir()
    Image.fromarray(astronaut).save(tmp_path / "in" / "astronaut.png")
    out = tmp_path / "aligned"
    assert main(["align", "--images", str(tmp_path / "in"), "--detect", "--out", str(out), "--quiet"]) == 0
    crops = sorted(p.name for p in out.glob("*.png"))
    assert crops == ["astronaut.png"]
    crop = np.asarray(Image.open(out / "astronaut.png"))
    assert crop.shape == (112, 112, 3)
    lm = detector(astronaut).landmarks[0]
    np.testing.assert_array_equal(crop, norm_crop(astronaut, lm))  # PNG keeps the crop exactly
    m = estimate_transform(lm)
    # the eyes as the detector sees them, carried into the crop: within 3 px of the template's eyes
    assert np.all(np.linalg.norm(transform_points(m, lm[:2]) - ARCFACE_112[:2], axis=1) < 3.0)
    # the eyes as read by hand: within 4 px (the broad smile pulls the 5-point fit up by about a pixel)
    assert np.all(np.linalg.norm(transform_points(m, astronaut_points[:2]) - ARCFACE_112[:2], axis=1) < 4.0)
    # the JSON it wrote is a landmarks file for the plain align command
    rows = read_landmarks(out / "detections.json")
    assert [r[1] for r in rows] == ["astronaut.png"]
    np.testing.assert_allclose(rows[0][2], lm, atol=0.01)


def test_detect_json_csv_log_and_workers(tmp_path, photos):
    out = tmp_path / "det.json"
    assert main(["detect", "--images", str(photos), "--out", str(out), "--aligned", str(tmp_path / "al"),
                 "--quiet"]) == 0
    items = json.loads(out.read_text())
    assert [it["path"] for it in items] == ["crew/astronaut.png", "two.png"]
    two = items[1]
    assert len(two["faces"]) == 2
    areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in two["faces"]]
    assert two["box"] == two["faces"][int(np.argmax(areas))]["box"]   # policy largest
    for t, shape in (("arcface", (112, 112, 3)), ("sphereface", (112, 96, 3)), ("ec_mc", (112, 112, 3))):
        assert np.asarray(Image.open(tmp_path / "al" / t / "crew" / "astronaut.png")).shape == shape
        assert (tmp_path / "al" / t / "two.png").is_file()
    with open(tmp_path / "det.log.csv") as f:
        log = {r["path"]: r for r in csv.DictReader(f)}
    assert log["wall.jpg"]["status"] == "no_face"
    assert log["two.png"]["status"] == "several_faces" and log["two.png"]["faces"] == "2"
    # a file that is no photo by its extension, and one that is but does not decode, each get a line
    assert log["notes.txt"]["status"] == "not_image"
    assert log["notes.txt"]["kept"] == "not an image: extension '.txt' is not one of .jpg, .jpeg, .png, .bmp"
    assert log["crew/broken.jpg"]["status"] == "unreadable"
    assert log["crew/broken.jpg"]["kept"].startswith("cannot read: corrupt or truncated image")
    assert list(log) == ["crew/broken.jpg", "notes.txt", "two.png", "wall.jpg"]   # sorted by path

    # the most central face, a CSV with one row per face, and two worker processes: same detections
    out_csv = tmp_path / "det.csv"
    assert main(["detect", "--images", str(photos), "--out", str(out_csv), "--policy", "central", "--workers", "2",
                 "--quiet"]) == 0
    with open(out_csv) as f:
        rows = list(csv.DictReader(f))
    assert [(r["path"], r["face"]) for r in rows] == [("crew/astronaut.png", "0"), ("two.png", "0"), ("two.png", "1")]
    kept = [r for r in rows if r["path"] == "two.png" and r["kept"] == "1"]
    assert len(kept) == 1 and 268 < (float(kept[0]["x1"]) + float(kept[0]["x2"])) / 2 < 372
    for r in rows:
        face = [f for it in items if it["path"] == r["path"] for f in it["faces"]][int(r["face"])]
        assert [float(r[k]) for k in ("x1", "y1", "x2", "y2")] == pytest.approx(face["box"], abs=0.02)


def test_errors_are_clear(tmp_path, photos, capsys):
    assert main(["detect", "--images", str(tmp_path / "missing"), "--out", str(tmp_path / "d.json")]) == 2
    assert "image folder not found" in capsys.readouterr().err
    assert main(["detect", "--images", str(photos), "--out", str(tmp_path / "d.txt")]) == 2
    assert "must end in .json or .csv" in capsys.readouterr().err
    assert main(["align", "--images", str(photos), "--out", str(tmp_path / "o")]) == 2
    assert "give --landmarks FILE, or --detect" in capsys.readouterr().err


def test_missing_weights_message(monkeypatch, tmp_path, photos, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mtcnn" else real(name, *a))
    assert main(["detect", "--images", str(photos), "--out", str(tmp_path / "d.json"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "mtcnn==1.0.0" in err and "facemargin[detect]" in err


def test_log_name_matches_help_and_summary(tmp_path, photos, capsys):
    with pytest.raises(SystemExit):
        main(["detect", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "faces.json logs to faces.log.csv" in help_text
    assert "e.g. faces.json -> faces.log.csv" in help_text
    assert "none is squashed or padded" in help_text
    assert main(["detect", "--images", str(photos), "--out", str(tmp_path / "faces.json"), "--quiet"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces.json", "faces.log.csv"]
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("4 photo(s): 2 with a face, 1 without, 1 with several, 1 unreadable; "
                      f"1 other file(s) not images; log {tmp_path / 'faces.log.csv'}")
    # a folder holding no photo at all says what it holds instead
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.md").write_text("hello")
    assert main(["detect", "--images", str(tmp_path / "docs"), "--out", str(tmp_path / "d.json")]) == 2
    assert capsys.readouterr().err.strip() == (f"facemargin detect: error: {tmp_path / 'docs'}: no images "
                                               "(.jpg, .jpeg, .png, .bmp) found; 1 other file(s), e.g. readme.md")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal_and_not_with_quiet(tmp_path, monkeypatch, capsys, detector):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((60, 80, 3), 90, np.uint8)).save(tmp_path / "in" / "wall.jpg")
    argv = ["detect", "--images", str(tmp_path / "in"), "--out", str(tmp_path / "d.json")]
    assert main(argv) == 1   # no face; stderr is pytest's capture, not a terminal: no bar
    assert "detecting faces" not in capsys.readouterr().err
    for extra, drawn in (([], True), (["--quiet"], False)):
        term = _Terminal()
        monkeypatch.setattr(sys, "stderr", term)
        assert main(argv + extra) == 1
        monkeypatch.undo()
        assert ("detecting faces" in term.getvalue()) is drawn
