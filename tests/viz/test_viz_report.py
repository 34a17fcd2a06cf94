"""report_figures on a small synthetic bench folder, and the `facemargin plot` command."""
import argparse
import json
import math
import warnings

import numpy as np
import pytest

from facemargin import viz
from facemargin.viz import cli as viz_cli
from vizutil import assert_png, clustered


def _write_metrics(path, n=40, shares=False, lam=False, eval_every=10):
    lines = []
    for s in range(n):
        r = {"step": s, "loss": 3.0 * math.exp(-s / 10) + 0.1, "train_acc": 1 - math.exp(-s / 8)}
        if shares:
            e = s / n
            r.update(easy=e, semihard=0.9 - e if e < 0.9 else 0.0, hard=0.1 if e < 0.9 else 1 - e)
        if lam:
            r["lambda"] = max(5.0, 1000 / (1 + 0.12 * s))
        lines.append(json.dumps(r))
        if s % eval_every == 0:
            lines.append(json.dumps({"event": "eval", "step": s, "accuracy": 0.8}))
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")


def _write_features(path, dim=8, seed=0):
    x, y = clustered(n_per_class=25, classes=4, dim=dim, seed=seed)
    norms = np.linalg.norm(x, axis=1)
    correct = norms > np.median(norms) * 0.8
    np.savez(path, embeddings=x.astype(np.float32), labels=y, norms=norms, correct=correct)


def _write_scores(path, seed=0):
    rng = np.random.default_rng(seed)
    issame = np.r_[np.ones(60, bool), np.zeros(60, bool)]
    np.savez(path, scores=np.where(issame, 0.6, 0.1) + rng.normal(0, 0.2, 120), issame=issame)


@pytest.fixture
def bench(tmp_path):
    runs = tmp_path / "runs"
    # arcface: everything, including the optional 2-D / 3-D feature files
    d = runs / "arcface"
    d.mkdir(parents=True)
    _write_metrics(d / "metrics.jsonl")
    _write_features(d / "features.npz")
    _write_scores(d / "scores.npz")
    x2, y2 = clustered(dim=2)
    np.savez(d / "features2d.npz", embeddings=x2, labels=y2)
    x3, y3 = clustered(dim=3)
    np.savez(d / "features3d.npz", embeddings=x3, labels=y3)
    # atl: shares and λ, but no scores.npz (missing file case)
    d = runs / "atl"
    d.mkdir()
    _write_metrics(d / "metrics.jsonl", shares=True, lam=True)
    _write_features(d / "features.npz", seed=1)
    # softmax: a run with 2-D embeddings in features.npz, no metrics
    d = runs / "softmax"
    d.mkdir()
    _write_features(d / "features.npz", dim=2, seed=2)
    _write_scores(d / "scores.npz", seed=2)
    return tmp_path


def test_report_figures_full_layout_with_missing_files(bench):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = viz.report_figures(bench)
    assert set(out) == {"training", "sample_shares", "roc", "angles", "norms", "features_2d", "features_3d",
                        "decision_boundaries"}
    for key, rel in out.items():
        assert rel == f"figures/{key}.png"
        assert_png(bench / rel)
    msgs = [str(w.message) for w in caught if issubclass(w.category, viz.ReportWarning)]
    # the missing files of atl (scores) and softmax (metrics) are named in warnings
    assert any("atl" in m and "scores.npz" in m and "missing" in m for m in msgs), msgs
    assert any("softmax" in m and "metrics.jsonl" in m and "missing" in m for m in msgs), msgs
    # optional 2-D/3-D files are not warned about
    assert not any("features2d" in m or "features3d" in m for m in msgs), msgs


def test_report_figures_skips_unreadable_files_and_keeps_the_rest(bench):
    (bench / "runs" / "arcface" / "metrics.jsonl").write_text('{"step": 0, "loss": 1.0}\nnot json\n')
    np.savez(bench / "runs" / "atl" / "features.npz", embeddings=np.zeros((3, 4)))  # keys missing
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = viz.report_figures(bench, out_dir=bench / "figs")
    msgs = [str(w.message) for w in caught]
    assert any("metrics.jsonl:2" in m for m in msgs), msgs
    assert any("atl" in m and "labels" in m for m in msgs), msgs
    assert out["training"] == "figs/training.png"  # atl's metrics still make the figure
    assert "sample_shares" in out and "angles" in out
    for rel in out.values():
        assert_png(bench / rel)


def test_report_figures_minimal_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="bench directory"):
        viz.report_figures(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="runs"):
        viz.report_figures(tmp_path)
    (tmp_path / "runs" / "cosface").mkdir(parents=True)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        out = viz.report_figures(tmp_path)
    assert set(out) == {"decision_boundaries"}
    assert_png(tmp_path / out["decision_boundaries"])


def test_read_metrics_skips_events_and_names_bad_lines(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"step": 0, "loss": 2.0, "train_acc": 0.1}\n{"event": "eval", "step": 0}\n\n'
                 '{"step": 1, "loss": 1.0}\n')
    assert viz.read_metrics(p) == [{"step": 0, "loss": 2.0, "train_acc": 0.1}, {"step": 1, "loss": 1.0}]
    p.write_text('{"step": 0, "loss": 2.0}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2: expected a JSON object"):
        viz.read_metrics(p)
    with pytest.raises(FileNotFoundError, match="nothere"):
        viz.read_metrics(tmp_path / "nothere.jsonl")


def test_read_npz_refuses_pickles_and_names_missing_keys(tmp_path):
    p = tmp_path / "o.npz"
    np.savez(p, scores=np.array([{"a": 1}], dtype=object), issame=np.array([True]))
    with pytest.raises(ValueError, match="o.npz"):
        viz.read_npz(p, ("scores", "issame"))
    np.savez(p, scores=np.zeros(3))
    with pytest.raises(ValueError, match="missing array.*issame"):
        viz.read_npz(p, ("scores", "issame"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        viz.read_npz(tmp_path / "junk.npz", ("scores",))


def test_report_angle_stats_matches_angle_stats(bench):
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        stats = viz.report_angle_stats(bench)
    assert set(stats) == {"arcface", "atl", "softmax"}
    d = np.load(bench / "runs" / "atl" / "features.npz")
    assert stats["atl"] == viz.angle_stats(d["embeddings"], d["labels"])


def _parse(argv):
    parser = argparse.ArgumentParser(prog="facemargin")
    sub = parser.add_subparsers(dest="command")
    viz_cli.register(sub)
    return parser.parse_args(argv)


def test_cli_plot_bench_and_boundaries(tmp_path, capsys):
    bench = tmp_path / "bench"
    (bench / "runs" / "cosface").mkdir(parents=True)
    _write_scores(bench / "runs" / "cosface" / "scores.npz")
    args = _parse(["plot", str(bench)])
    assert args.func(args) == 0
    out = capsys.readouterr()
    assert "roc:" in out.out and str(bench / "figures" / "roc.png") in out.out
    assert_png(bench / "figures" / "roc.png")
    assert "metrics.jsonl is missing" in out.err
    target = tmp_path / "b.png"
    args = _parse(["plot", "--boundaries", str(target), "--heads", "softmax", "arcface", "--angle", "60"])
    assert args.func(args) == 0
    assert_png(target)
    assert str(target) in capsys.readouterr().out


def test_cli_plot_hands_a_main_job_folder_to_its_own_drawer(tmp_path, capsys):
    # the glyph-set main job keeps its numbers in results.json; `facemargin plot` draws its figures from them
    bench = tmp_path / "main"
    bench.mkdir()
    summary = {"arcface": {"roc": {"far": [0.0, 0.01, 0.5, 1.0], "tar": [0.0, 0.6, 0.9, 1.0]}, "auc": {"mean": 0.9},
                           "seeds": [0]}}
    result = {"summary": summary, "rows": [], "manifest_counts": {},
              "pixels": {"roc": {"far": [0.0, 1.0], "tar": [0.0, 1.0]}, "auc": 0.5}}
    (bench / "results.json").write_text(json.dumps(result))
    args = _parse(["plot", str(bench)])
    assert args.func(args) == 0
    out = capsys.readouterr()
    assert f"roc: {bench / 'figures' / 'roc.png'}" in out.out
    assert "decision_boundaries" not in out.out and "runs/" not in out.err  # not read as a per-loss folder
    assert_png(bench / "figures" / "roc.png")


def test_cli_plot_errors_and_help(capsys):
    args = _parse(["plot"])
    with pytest.raises(ValueError, match="BENCH_DIR and/or --boundaries"):
        args.func(args)
    args = _parse(["plot", "--boundaries", "x.jpg"])
    with pytest.raises(ValueError, match=r"\.png"):
        args.func(args)
    with pytest.raises(SystemExit):
        _parse(["plot", "--help"])
    helptext = capsys.readouterr().out
    assert "--boundaries" in helptext and "BENCH_DIR" in helptext
