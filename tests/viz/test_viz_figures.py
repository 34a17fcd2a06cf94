"""facemargin.viz figures: every plot writes a real PNG; numeric helpers against hand-worked values."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from facemargin import losses, viz
from facemargin.viz.figures.common import _moving_average
from vizutil import assert_png, clustered, points_at


# ------------------------------------------------------------------ angle statistics


def test_angle_stats_hand_built():
    # class 0 at 0°, 10°, 30° (norms differ: angles ignore them); class 1 at 100°, 120°
    x = points_at([0, 10, 30, 100, 120], norms=[1, 5, 0.3, 2, 7])
    y = np.array([0, 0, 0, 1, 1])
    st = viz.angle_stats(x, y)
    # intra: 10, 30, 20 (class 0) and 20 (class 1); inter: 100, 120, 90, 110, 70, 90
    assert st["max_intra_deg"] == pytest.approx(30.0)
    assert st["mean_intra_deg"] == pytest.approx(20.0)
    assert st["min_inter_deg"] == pytest.approx(70.0)
    assert st["mean_inter_deg"] == pytest.approx(580.0 / 6)
    assert st["gap_deg"] == pytest.approx(40.0)
    # linear-interpolated percentiles of [10, 20, 20, 30] and [70, 90, 90, 100, 110, 120]
    assert st["p95_intra_deg"] == pytest.approx(28.5)
    assert st["p5_inter_deg"] == pytest.approx(75.0)
    assert st["gap_p_deg"] == pytest.approx(46.5)
    assert (st["n_intra_pairs"], st["n_inter_pairs"]) == (4, 6)


def test_angle_stats_overlap_gives_negative_gap_and_accepts_tensors():
    x = torch.tensor(points_at([0, 50, 40, 90]))
    st = viz.angle_stats(x, torch.tensor([0, 0, 1, 1]))
    assert st["max_intra_deg"] == pytest.approx(50.0)
    assert st["min_inter_deg"] == pytest.approx(10.0)
    assert st["gap_deg"] == pytest.approx(-40.0)


def test_angle_stats_subsample_is_seeded_and_bounded():
    x, y = clustered(n_per_class=100, classes=5, dim=8)
    a = viz.angle_stats(x, y, max_points=150, seed=3)
    b = viz.angle_stats(x, y, max_points=150, seed=3)
    assert a == b
    assert a["n_intra_pairs"] + a["n_inter_pairs"] == 150 * 149 // 2
    full = viz.angle_stats(x, y, max_points=10_000)
    assert full["n_intra_pairs"] == 5 * 100 * 99 // 2


@pytest.mark.parametrize("x,y,msg", [
    (points_at([0, 10, 20]), [0, 0, 0], "two classes"),
    (points_at([0, 10, 20]), [0, 1, 2], "two samples"),
    (np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), [0, 0, 1], "all-zero"),
    (points_at([0, 10]), [0, 0, 1], "labels has 3"),
    (np.array([[np.nan, 1.0], [1.0, 0.0]]), [0, 1], "NaN"),
])
def test_angle_stats_bad_input(x, y, msg):
    with pytest.raises(ValueError, match=msg):
        viz.angle_stats(x, y)


# ------------------------------------------------------------------ decision boundaries

THETA2 = np.linspace(0.0, math.pi, 181)


def test_boundary_softmax_is_diagonal():
    np.testing.assert_allclose(viz.decision_boundary("softmax", THETA2), THETA2, atol=1e-9)


@pytest.mark.parametrize("m", [0.5, 0.3])
def test_boundary_arcface(m):
    b = viz.decision_boundary("arcface", THETA2, m=m)
    inside = THETA2 > m + 1e-3
    np.testing.assert_allclose(b[inside], THETA2[inside] - m, atol=1e-9)  # θ1 + m = θ2
    assert np.all(np.isnan(b[THETA2 < m - 1e-3]))  # too close to ŵ2: class 1 can never satisfy it


def test_boundary_cosface():
    m = 0.35
    b = viz.decision_boundary("cosface", THETA2)  # default m = 0.35
    rhs = np.cos(THETA2) + m  # cos θ1 − m = cos θ2
    ok = rhs < 1 - 1e-6
    np.testing.assert_allclose(b[ok], np.arccos(rhs[ok]), atol=1e-8)
    assert np.all(np.isnan(b[rhs > 1 + 1e-6]))


def test_boundary_combined():
    b = viz.decision_boundary("combined", THETA2)  # m1=1, m2=0.3, m3=0.2
    rhs = np.cos(THETA2) + 0.2
    expect = np.full_like(THETA2, np.nan)
    ok = rhs < 1
    expect[ok] = np.arccos(rhs[ok]) - 0.3
    expect[expect < -1e-12] = np.nan
    sel = ~np.isnan(expect) & (expect > 1e-4)
    np.testing.assert_allclose(b[sel], expect[sel], atol=1e-8)
    assert np.all(np.isnan(b[np.isnan(expect)]))


@pytest.mark.parametrize("m", [2, 3, 4])
def test_boundary_sphereface_pure_margin(m):
    # λ = 0: ψ_m(θ1) = cos θ2 has θ1 = θ2 / m (ψ_m(θ) = cos θ' exactly when mθ = θ' on [0, π])
    b = viz.decision_boundary("sphereface", THETA2, lambda_=0.0, m=m)
    np.testing.assert_allclose(b, THETA2 / m, atol=1e-9)


def _psi_by_hand(theta, m):
    k = min(int(math.floor(theta * m / math.pi)), m - 1)
    return (-1) ** k * math.cos(m * theta) - 2 * k


def test_boundary_sphereface_with_lambda_solves_the_blend():
    lam = 5.0
    b = viz.decision_boundary("sphereface", THETA2[1:-1], lambda_=lam)  # m = 4
    for t2, t1 in zip(THETA2[1:-1], b):
        lhs = (lam * math.cos(t1) + _psi_by_hand(t1, 4)) / (1 + lam)
        assert lhs == pytest.approx(math.cos(t2), abs=1e-9)
        assert t1 < t2  # a real margin: stricter than softmax


@pytest.mark.parametrize("name", ["softmax", "sphereface", "cosface", "arcface", "combined"])
def test_boundary_agrees_with_the_heads_logits(name):
    """A 2-D class-1 feature beats class 2 in head.logits(x, y) exactly on its side of the boundary."""
    torch.manual_seed(0)
    head = losses.build(name, embedding_size=2, num_classes=2).eval()
    delta = 1.7
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [math.cos(delta), math.sin(delta)]]))
        if head.bias is not None:
            head.bias.zero_()
    a = np.linspace(-math.pi, math.pi, 721)[:-1]
    x = torch.tensor(points_at(np.degrees(a), norms=np.full(a.shape, 3.0)), dtype=torch.float64)
    logits = head.logits(x, torch.zeros(len(a), dtype=torch.long)).double()
    wins = (logits[:, 0] > logits[:, 1]).numpy()
    th1 = np.abs(a)
    th2 = np.arccos(np.clip(np.cos(a - delta), -1, 1))
    lam = head.lambda_ if head.lambda_ is not None else 0.0
    bound = viz.decision_boundary(name, th2, lambda_=lam)
    predicted = np.where(np.isnan(bound), False, th1 < bound)
    clear = np.isnan(bound) | (np.abs(th1 - np.nan_to_num(bound)) > 1e-6)
    assert clear.sum() > 600
    np.testing.assert_array_equal(wins[clear], predicted[clear])
    assert wins.any() and (name == "softmax" or not wins.all())


def test_boundary_bad_input():
    with pytest.raises(ValueError, match="within"):
        viz.decision_boundary("arcface", [4.0])
    with pytest.raises(ValueError, match="not a classification head"):
        viz.decision_boundary("center", [1.0])
    with pytest.raises(ValueError, match="unknown"):
        viz.decision_boundary("nosuchhead", [1.0])


# ------------------------------------------------------------------ ROC


def test_moving_average_hand_worked():
    np.testing.assert_allclose(_moving_average(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1, 2, 4, 6])
    np.testing.assert_allclose(_moving_average(np.array([1.0, 3.0]), 1), [1, 3])


# ------------------------------------------------------------------ the figures


def test_plot_features_2d_and_grid(tmp_path):
    x, y = clustered(dim=2)
    p = viz.plot_features_2d(x, y, tmp_path / "f.png", title="t", class_names=list("abcd"))
    assert assert_png(p) == (600, 600)
    p = viz.plot_feature_grid({"a": (x, y), "b": (x * 2, y), "c": (torch.tensor(x), torch.tensor(y))},
                              tmp_path / "grid.png")
    assert assert_png(p) == (720, 720)  # 3 panels: 2 columns x 2 rows of 3.6 in at 100 dpi
    with pytest.raises(ValueError, match="2 columns"):
        viz.plot_features_2d(np.zeros((4, 3)), [0, 1, 0, 1], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_plot_features_sphere_and_grid(tmp_path):
    x, y = clustered(dim=3)
    assert_png(viz.plot_features_sphere(x, y, tmp_path / "s.png", title="sphere"))
    assert_png(viz.plot_sphere_grid({"a": (x, y), "b": (-x, y)}, tmp_path / "sg.png"))
    with pytest.raises(ValueError, match="3 columns"):
        viz.plot_features_sphere(x[:, :2], y, tmp_path / "bad.png")


def test_plot_roc(tmp_path):
    rng = np.random.default_rng(0)
    same = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    s = np.where(same, 0.5, 0.0) + rng.normal(0, 0.3, 400)
    fpr, tpr, _ = viz.roc_curve(s, same)
    curves = {"arcface": (fpr, tpr), "softmax": {"fpr": [0, 0.5, 1], "tpr": [0, 0.5, 1], "auc": 0.5}}
    assert_png(viz.plot_roc(curves, tmp_path / "roc.png"))
    assert_png(viz.plot_roc(curves, tmp_path / "roc_lin.png", log_x=False))
    with pytest.raises(ValueError, match="'fpr' and 'tpr'"):
        viz.plot_roc({"x": {"fpr": [0, 1]}}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="same length"):
        viz.plot_roc({"x": ([0, 1], [0, 0.5, 1])}, tmp_path / "bad.png")


def _history(n, scale, lam=False, shares=False):
    recs = []
    for s in range(n):
        r = {"step": s, "loss": scale * math.exp(-s / 20) + 0.01 * scale, "train_acc": 1 - math.exp(-s / 15)}
        if lam:
            r["lambda"] = max(5.0, 1000 / (1 + 0.12 * s))
        if shares:
            e = min(0.9, s / n)
            r.update(easy=e, semihard=0.95 - e, hard=0.05)
        recs.append(r)
    return recs


def test_plot_training_curves(tmp_path):
    hist = {"sphereface": _history(60, 30.0, lam=True), "contrastive": _history(60, 0.3)}
    hist["contrastive"].insert(10, {"event": "eval", "step": 10, "accuracy": 0.9})  # skipped: no loss
    w, h = assert_png(viz.plot_training_curves(hist, tmp_path / "t.png"))
    assert w > 2 * h  # loss, accuracy and λ panels side by side
    w2, _ = assert_png(viz.plot_training_curves({"c": _history(30, 1.0)}, tmp_path / "t2.png", normalize=False))
    assert w2 < w
    with pytest.raises(ValueError, match="no record with a 'loss'"):
        viz.plot_training_curves({"x": [{"step": 1, "acc": 0.5}]}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="list of dicts"):
        viz.plot_training_curves({"x": "not a history"}, tmp_path / "bad.png")


def test_plot_angle_histograms_and_grid(tmp_path):
    x, y = clustered(dim=5)
    assert_png(viz.plot_angle_histograms(x, y, tmp_path / "a.png"))
    assert_png(viz.plot_angle_grid({"a": (x, y), "b": (x + 1, y)}, tmp_path / "ag.png"))
    with pytest.raises(ValueError, match="b: .*two classes"):
        viz.plot_angle_grid({"a": (x, y), "b": (x, np.zeros_like(y))}, tmp_path / "bad.png")


def test_plot_norm_vs_correctness(tmp_path):
    rng = np.random.default_rng(1)
    norms = rng.gamma(3, 2, 500)
    correct = rng.random(500) < norms / norms.max() + 0.2
    assert_png(viz.plot_norm_vs_correctness(norms, correct, tmp_path / "n.png"))
    # all correct (no error): still a figure
    assert_png(viz.plot_norm_vs_correctness(norms, np.ones(500, bool), tmp_path / "n2.png"))
    assert_png(viz.plot_norm_grid({"a": (norms, correct), "b": (norms * 10, correct)}, tmp_path / "ng.png"))
    with pytest.raises(ValueError, match="correct has 3"):
        viz.plot_norm_vs_correctness(norms, [True, False, True], tmp_path / "bad.png")


def test_plot_decision_boundaries(tmp_path):
    w, h = assert_png(viz.plot_decision_boundaries(tmp_path / "db.png"))
    assert w > 2 * h  # five columns, two rows
    assert_png(viz.plot_decision_boundaries(tmp_path / "db2.png", heads=("arcface", "atl"), angle_deg=60, lambda_=2,
                                                resolution=91))
    with pytest.raises(ValueError, match="angle_deg"):
        viz.plot_decision_boundaries(tmp_path / "bad.png", angle_deg=180)


def test_plot_sample_shares(tmp_path):
    h = _history(80, 1.0, shares=True)
    assert_png(viz.plot_sample_shares(h, tmp_path / "sh.png", title="ATL"))
    w1, _ = assert_png(viz.plot_sample_shares({"atl": h, "semihard": h}, tmp_path / "sh2.png"))
    with pytest.raises(ValueError, match="no record with all of easy"):
        viz.plot_sample_shares([{"step": 0, "loss": 1.0}], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="fractions"):
        viz.plot_sample_shares([{"step": 0, "easy": 2.0, "semihard": 0, "hard": 0}], tmp_path / "bad.png")


def test_png_is_written_atomically(tmp_path):
    x, y = clustered(dim=2)
    target = tmp_path / "f.png"
    target.write_bytes(b"old")
    viz.plot_features_2d(x, y, target)
    assert_png(target)
    assert os.listdir(tmp_path) == ["f.png"]  # no temporary file left behind


def test_pyplot_is_never_imported(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "import facemargin.viz as v\n"
        "v.plot_features_2d(np.random.rand(20, 2), np.arange(20) % 2, sys.argv[1])\n"
        "v.plot_features_sphere(np.random.rand(20, 3), np.arange(20) % 2, sys.argv[1])\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'viz imported pyplot'\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "p.png")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert_png(tmp_path / "p.png")


def test_roc_curve_matches_the_evaluation_roc():
    from facemargin.eval import roc as eval_roc

    rng = np.random.default_rng(1)
    same = rng.random(600) < 0.4
    s = np.round(np.where(same, 0.4, 0.0) + rng.normal(0, 0.3, 600), 2)  # rounded: many ties
    for thin in (False, True):
        got, want = viz.roc_curve(s, same, thin=thin), eval_roc.roc_curve(s, same, thin=thin)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    fpr, tpr, _ = viz.roc_curve(torch.tensor(s, dtype=torch.float32), torch.tensor(same))
    wfpr, wtpr, _ = eval_roc.roc_curve(torch.tensor(s, dtype=torch.float32), torch.tensor(same))
    np.testing.assert_array_equal(fpr, wfpr)
    np.testing.assert_array_equal(tpr, wtpr)
    from facemargin.viz.figures.roc import auc

    assert auc(fpr, tpr) == eval_roc.auc(fpr, tpr)
    for bad_s, bad_y in (([0.1, np.nan], [1, 0]), ([0.1, 0.2], [1, 1]), ([0.1, 0.2], [1, 2])):
        with pytest.raises(ValueError) as got_err:
            viz.roc_curve(bad_s, bad_y)
        with pytest.raises(ValueError) as want_err:
            eval_roc.roc_curve(bad_s, bad_y)
        assert str(got_err.value) == str(want_err.value)


def test_viz_draws_what_it_is_handed_and_imports_no_higher_layer():
    import ast
    from pathlib import Path

    import facemargin.viz as v

    root = Path(v.__file__).parent
    files = sorted(root.glob("figures/*.py")) + [root / "report.py", root / "__init__.py"]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                package = ["facemargin", "viz", *path.relative_to(root).parts[:-1]]
                base = package[:len(package) - node.level + 1] if node.level else []
                names = [".".join(base + ([node.module] if node.module else []))]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(("facemargin.experiments", "facemargin.eval")), f"{path.name} imports {name}"
