"""The main job's report against a reference over several seeds, and the set it was built from."""
from __future__ import annotations

import hashlib
import json

import pytest

from facemargin.experiments.glyphs import _default_set_dir, _reference_summary
from facemargin.experiments.sections import reference_lines, set_line


def _stat(mean, std=0.0):
    return {"mean": mean, "std": std, "n": 3}


RESULT = {
    "summary": {"softmax": {"tar_at_far": {"0.0001": _stat(0.55)}},
                "arcface": {"tar_at_far": {"0.0001": _stat(0.66)}},
                "cosface": {"tar_at_far": {"0.0001": _stat(0.57)}},
                "normface": {"tar_at_far": {"0.0001": _stat(0.45)}},
                "newhead": {"tar_at_far": {"0.0001": _stat(0.60)}}},
    "reference": {"path": "ref/results.json", "summary": {
        "softmax": {"tar_at_far": {"0.0001": _stat(0.549, 0.009)}, "seeds": [0, 1, 2]},
        "arcface": {"tar_at_far": {"0.0001": _stat(0.683, 0.016)}, "seeds": [0, 1, 2]},
        "cosface": {"tar_at_far": {"0.0001": _stat(0.591, 0.011)}, "seeds": [0, 1, 2]},
        "normface": {"tar_at_far": {"0.0001": _stat(0.444, 0.005)}, "seeds": [0, 1, 2]}}},
}


def test_each_difference_to_softmax_is_marked_against_the_seed_spread():
    rows = {ln.split(" | ")[0].strip("| "): ln for ln in reference_lines(RESULT) if ln.startswith("| ")}
    # arcface: +0.110 against a spread of 0.016 + 0.009 = 0.025: beyond
    assert rows["arcface"] == "| arcface | 0.660 | +0.110 | 0.683 ± 0.016 | +0.134 ± 0.025 | above softmax, beyond the spread |"
    # cosface: +0.020 against 0.011 + 0.009 = 0.020 (not more): within
    assert rows["cosface"].endswith("| +0.020 | 0.591 ± 0.011 | +0.042 ± 0.020 | above softmax, within the spread |")
    # normface: -0.100 against 0.005 + 0.009 = 0.014: beyond, below
    assert rows["normface"].endswith("below softmax, beyond the spread |")
    assert rows["newhead"].endswith("| n/a | n/a | no reference row |")
    assert rows["softmax"].endswith("(the baseline) |")
    assert [r for r in rows if r not in ("head", "---")] == ["arcface", "newhead", "cosface", "softmax", "normface"]


def test_no_reference_no_section():
    assert reference_lines({**RESULT, "reference": None}) == []


def test_the_set_line_names_missing_faces():
    assert set_line({"set_manifest": None}) == ""
    assert "every one of its font faces" in set_line({"set_manifest": "m.json", "missing_fonts": []})
    line = set_line({"set_manifest": "m.json", "missing_fonts": [{"name": "A"}, {"name": "B"}]})
    assert "2 of its font faces are not on this machine and were left out: A, B." in line


def test_a_set_from_a_manifest_lives_in_a_folder_named_by_its_digest(tmp_path):
    m = tmp_path / "manifest.json"
    m.write_text('{"fonts": []}')
    assert _default_set_dir(None) == "runs/glyphs-hangul"
    assert _default_set_dir(str(m)) == "runs/glyphs-" + hashlib.sha256(m.read_bytes()).hexdigest()[:10]
    with pytest.raises(FileNotFoundError, match="glyph-set manifest not found"):
        _default_set_dir(str(tmp_path / "nope.json"))


def test_the_reference_summary_keeps_the_named_heads(tmp_path):
    p = tmp_path / "results.json"
    p.write_text(json.dumps({"summary": {h: {"tar_at_far": {"0.0001": _stat(0.5)}, "seeds": [0, 1, 2]}
                                        for h in ("softmax", "arcface", "other")}}))
    assert set(_reference_summary(str(p), ["softmax", "arcface", "absent"])) == {"softmax", "arcface"}
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a bench results.json"):
        _reference_summary(str(tmp_path / "bad.json"), ["softmax"])
