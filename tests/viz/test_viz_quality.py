"""The quality figures: TAR per quality stratum and error-versus-reject curves write a PNG, refuse bad input."""
import json

import pytest

from facemargin import viz
from vizutil import assert_png


def _table(tars, own=None, lows=(10, 15, 21), highs=(14, 20, 32)):
    return {"bins": [{"quality_low": lo, "quality_high": hi, "num_genuine": 100 + i,
                      "tar": {1e-3: t, 1e-4: t / 2}, "tar_own": {1e-3: (own or tars)[i]}}
                     for i, (lo, hi, t) in enumerate(zip(lows, highs, tars))]}


def _curve(fnmr, area=None):
    c = {"fractions": [0.0, 0.1, 0.2, 0.3][:len(fnmr)], "fnmr": fnmr}
    if area is not None:
        c["area"] = area
    return c


def test_stratified_tar_figure(tmp_path):
    table = {"arcface": _table([0.4, 0.7, 0.9]),
             "adaface": [_table([0.5, 0.75, 0.9]), _table([0.55, 0.8, 0.92])],  # two seeds: mean and spread
             "softmax": _table([0.1, float("nan"), 0.6])}                        # a stratum without a reading
    p = viz.plot_stratified_tar(table, tmp_path / "strata.png", far=1e-3)
    assert p == tmp_path / "strata.png"
    assert_png(p)
    assert_png(viz.plot_stratified_tar(table, tmp_path / "own.png", far=1e-3, threshold="own"))


def test_stratified_tar_figure_takes_json_keys(tmp_path):
    table = json.loads(json.dumps({"arcface": _table([0.4, 0.7, 0.9])}))  # FAR keys become text
    assert_png(viz.plot_stratified_tar(table, tmp_path / "strata.png", far=1e-4))


@pytest.mark.parametrize("table, kw, msg", [
    ({}, {}, "at least one series"),
    ({"a": _table([0.1, 0.2, 0.3])}, {"threshold": "best"}, "threshold must be 'global' or 'own'"),
    ({"a": _table([0.1, 0.2, 0.3])}, {"far": 1e-5}, "no tar at FAR 1e-05"),
    ({"a": {"rows": []}}, {}, "needs 'bins'"),
    ({"a": []}, {}, "non-empty list"),
    ({"a": 0.5}, {}, "a stratified table"),
    ({"a": _table([0.1, 0.2, 0.3]), "b": _table([0.1, 0.2], lows=(1, 2), highs=(1, 2))}, {}, "2 quality strata"),
    ({"a": {"bins": [{"quality_low": 1, "quality_high": 2}]}}, {}, "without 'tar'"),
])
def test_stratified_tar_figure_refuses_bad_input(tmp_path, table, kw, msg):
    with pytest.raises(ValueError, match=msg):
        viz.plot_stratified_tar(table, tmp_path / "x.png", **kw)
    assert not (tmp_path / "x.png").exists()


def test_error_vs_reject_figure(tmp_path):
    curves = {"arcface / own norm": _curve([0.3, 0.2, 0.15, 0.1], area=0.054),
              "arcface / softmax norm": [_curve([0.3, 0.25, 0.2, 0.18]), _curve([0.31, 0.24, 0.22, 0.17])],
              "arcface / random": _curve([0.3, 0.3, 0.29, None], area=0.06)}  # None: no genuine pair left
    p = viz.plot_error_vs_reject(curves, tmp_path / "erc.png")
    assert p == tmp_path / "erc.png"
    assert_png(p)


@pytest.mark.parametrize("curves, msg", [
    ({}, "at least one curve"),
    ({"a": {"fnmr": [0.1, 0.2]}}, "needs 'fractions' and 'fnmr'"),
    ({"a": _curve([0.1])}, "at least 2"),
    ({"a": {"fractions": [0.0, 0.1, 0.2], "fnmr": [0.1, 0.2]}}, "same length"),
    ({"a": {"fractions": [0.1, 0.0], "fnmr": [0.1, 0.2]}}, "strictly increasing"),
    ({"a": [_curve([0.1, 0.2]), {"fractions": [0.0, 0.5], "fnmr": [0.1, 0.2]}]}, "different fractions"),
    ({"a": "curve"}, "an error-versus-reject curve"),
])
def test_error_vs_reject_figure_refuses_bad_input(tmp_path, curves, msg):
    with pytest.raises(ValueError, match=msg):
        viz.plot_error_vs_reject(curves, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
