"""The main job on a tiny glyph set: results, report, resume, the λ budget and the spread rule."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from facemargin.experiments import glyphs as B
from facemargin.experiments.report import compare
from facemargin.data.glyphs import build_glyph_set

MPL_FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
         "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "DejaVuSans-Oblique.ttf"]
HEADS = ["softmax", "sphereface", "atl-step"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mainbench")
    fonts = tmp / "fonts"
    fonts.mkdir()
    for f in FONTS:
        shutil.copy(MPL_FONTS / f, fonts / f)
    build_glyph_set(tmp / "set", chars="ABCDEFGHJKLMNPRT", font_dirs=[fonts], size=16, seed=1, test_fraction=0.25,
                    min_fonts=4, max_test_per_identity=6, num_pairs=40, progress=False)
    kw = dict(out=str(tmp / "out"), set_dir=str(tmp / "set"), heads=HEADS, seeds=[0, 1], steps=4, batch=16,
              device="cpu", feature_figures=False, args_line="facemargin bench --test")
    result = B.run_main_bench(**kw)
    return {"tmp": tmp, "kw": kw, "result": result}


def test_every_run_is_scored_on_unseen_identities(bench):
    out = bench["tmp"] / "out"
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert sorted((r["head"], r["seed"]) for r in rows) == sorted((h, s) for h in HEADS for s in (0, 1))
    man = json.loads((bench["tmp"] / "set" / "manifest.json").read_text())
    n_test = man["counts"]["test_images"]
    for r in rows:
        assert r["num_genuine"] + r["num_impostor"] == n_test * (n_test - 1) // 2
        assert 0 <= r["pair_accuracy"] <= 1 and 0 <= r["rank1"] <= 1 and 0 <= r["eer"] <= 1
        for far, tar in r["tar_at_far"].items():
            assert float(far) * r["num_impostor"] >= 1 and 0 <= tar <= 1
        assert r["steps"] == 4
    step = next(r for r in rows if r["head"] == "atl-step")
    assert step["config"]["recipe"] == "step"
    # both stages ran, and the recipe's curve spans the whole budget
    d = out / "runs" / "atl-step" / "seed0"
    assert (d / "stage1" / "checkpoint.pt").is_file() and (d / "stage2" / "checkpoint.pt").is_file()
    evals = [json.loads(ln)["step"] for ln in (d / "metrics.jsonl").read_text().splitlines()
             if json.loads(ln).get("event") == "eval"]
    assert max(evals) == 4


def test_summary_is_mean_and_sample_std_over_seeds(bench):
    res = bench["result"]
    for h in HEADS:
        rs = [r for r in res["rows"] if r["head"] == h]
        v = [r["tar_at_far"]["0.01"] for r in rs]
        s = res["summary"][h]["tar_at_far"]["0.01"]
        assert s["mean"] == pytest.approx(np.mean(v)) and s["std"] == pytest.approx(np.std(v, ddof=1))


def test_report_table_figures_and_reference(bench):
    out = bench["tmp"] / "out"
    text = (out / "report.md").read_text()
    assert "`facemargin bench --test`" in text and "Machine:" in text
    for h in HEADS:
        assert f"| {h} | " in text
    assert "| raw pixels (no training) |" in text and "## What the numbers show" in text
    assert "λ schedule" in text  # the compressed λ schedule is stated
    assert "**Scope**: a reduced run" in text  # 4 steps of 2 seeds is not the documented budget
    for name in ("roc", "tar_curves", "convergence"):
        p = out / "figures" / f"{name}.png"
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"({Path('figures') / (name + '.png')})" in text


def test_every_run_is_read_by_image_quality(bench):
    """Each run's unseen embeddings are kept, and every run gets the quality strata and the
    error-versus-reject curves (own norm, softmax's norm, known quality, random); the report and the
    figures show them."""
    out, result = bench["tmp"] / "out", bench["result"]
    quality = result["quality"]
    assert set(quality) == set(HEADS) and all(set(q) == {"0", "1"} for q in quality.values())
    n = len(B.UnseenEval(bench["kw"]["set_dir"]).labels)
    for head in HEADS:
        for seed in (0, 1):
            run = out / "runs" / head / f"seed{seed}"
            assert np.load(run / "unseen_embeddings.npy").shape == (n, 128)
            a = quality[head][str(seed)]
            assert a["far"] == result["curve_far"]
            assert len(a["strata"]["bins"]) == 3
            assert sum(b["num_genuine"] for b in a["strata"]["bins"]) == a["strata"]["num_genuine"]
            assert set(a["erc"]) == {"own norm", "softmax norm", "known quality", "random"}
            assert a["erc"]["own norm"]["fractions"][0] == 0.0
    # softmax ranked by its own norm is the same curve as "softmax norm"
    sm = quality["softmax"]["0"]["erc"]
    assert sm["own norm"]["fnmr"] == sm["softmax norm"]["fnmr"]
    text = (out / "report.md").read_text()
    assert "## By image quality" in text and "| own norm | softmax norm | known quality | random |" in text
    for name in ("quality_strata", "error_vs_reject"):
        assert (out / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_a_run_without_kept_embeddings_is_embedded_again_from_its_checkpoint(bench, tmp_path):
    from facemargin.experiments import quality as Q

    src = bench["tmp"] / "out" / "runs" / "sphereface" / "seed0"
    run = tmp_path / "runs" / "sphereface" / "seed0"
    shutil.copytree(src, run)
    kept = np.load(run / "unseen_embeddings.npy")
    (run / "unseen_embeddings.npy").unlink()
    (run / "quality.json").unlink()
    evaluator = B.UnseenEval(bench["kw"]["set_dir"])
    again = Q.run_embeddings(run, evaluator)
    np.testing.assert_allclose(again, kept, rtol=1e-5, atol=1e-5)
    got = Q.analyse(tmp_path, [("sphereface", 0)], evaluator, size=16, far=bench["result"]["curve_far"])
    assert got["sphereface"]["0"]["strata"] == bench["result"]["quality"]["sphereface"]["0"]["strata"]
    assert "softmax norm" not in got["sphereface"]["0"]["erc"]  # no softmax run in that folder


def test_runs_of_committed_results_are_reused_when_they_match_exactly(bench, tmp_path, monkeypatch):
    def no_training(*a, **k):
        raise AssertionError("a matching run was trained again")

    kw = dict(bench["kw"], out=str(tmp_path / "again"), reuse=str(bench["tmp"] / "out" / "results.json"))
    monkeypatch.setattr(B, "train_run", no_training)
    result = B.run_main_bench(**kw)
    strip = lambda rows: sorted((json.dumps({k: v for k, v in r.items() if k != "reused_from"}, sort_keys=True)  # noqa: E731
                                 for r in rows))
    assert strip(result["rows"]) == strip(bench["result"]["rows"])
    assert all(r["reused_from"].endswith("results.json") for r in result["rows"])
    assert result["quality"] == {}  # reused runs have no embeddings or checkpoint to read by quality
    monkeypatch.undo()
    # another budget: nothing matches, so the runs are trained
    other = dict(bench["kw"], out=str(tmp_path / "other"), reuse=kw["reuse"], steps=3, heads=["softmax"], seeds=[0])
    assert B.run_main_bench(**other)["rows"][0].get("reused_from") is None


def test_finished_only_reports_what_is_there_and_names_the_rest(bench, tmp_path, monkeypatch):
    def no_training(*a, **k):
        raise AssertionError("--finished-only trained a run")

    out = tmp_path / "out"
    shutil.copytree(bench["tmp"] / "out", out)
    monkeypatch.setattr(B, "train_run", no_training)
    kw = dict(bench["kw"], out=str(out), heads=HEADS + ["cosface"], finished_only=True)
    result = B.run_main_bench(**kw)
    assert result["not_run"] == ["cosface seed 0", "cosface seed 1"]
    assert sorted({r["head"] for r in result["rows"]}) == sorted(HEADS) and len(result["rows"]) == 2 * len(HEADS)
    assert "Still to run (2): cosface seed 0, cosface seed 1;" in (out / "report.md").read_text()
    with pytest.raises(ValueError, match="no finished run to report"):
        B.run_main_bench(**dict(kw, out=str(tmp_path / "empty"), heads=["cosface"]))


def test_plot_redraws_the_main_job_figures(bench, tmp_path):
    from facemargin.experiments.report import report_figures

    written = report_figures(bench["tmp"] / "out", tmp_path / "figs")
    assert {"roc", "tar_curves", "convergence"} <= set(written)
    for name in ("roc", "tar_curves", "convergence"):
        assert (tmp_path / "figs" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_scope_names_the_heads_a_full_budget_run_left_out(bench, tmp_path):
    import copy
    import json

    from facemargin.experiments.glyphs import BUDGETS
    from facemargin.experiments.report import write_main_report

    result = json.loads((bench["tmp"] / "out" / "results.json").read_text())
    res = copy.deepcopy(result)
    res["budget"].update(steps=BUDGETS["full"]["steps"], batch=BUDGETS["full"]["batch"])
    for seed in (2,):  # a third seed
        res["rows"] += [{**r, "seed": seed} for r in result["rows"] if r["seed"] == 0]
    write_main_report(tmp_path, res, {}, args_line="facemargin bench --full", wall_seconds=1.0, draw=False)
    text = (tmp_path / "report.md").read_text()
    assert "**Scope**: the documented full budget (1500 steps of batch 256, 3 seeds)" in text
    assert "Not run: " in text and "arcface" in text.split("Not run: ")[1].split(";")[0]


def test_rerun_skips_finished_runs_and_completes_an_interrupted_one(bench, monkeypatch):
    out = bench["tmp"] / "out"
    victim = out / "runs" / "softmax" / "seed1" / "result.json"
    victim.unlink()  # the interrupted run: its checkpoint is there, its result is not
    others = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/result.json")}
    trained = []
    real = B.train_run
    monkeypatch.setattr(B, "train_run", lambda name, spec, cfg, *a, **k: trained.append((name, cfg["train"]["seed"]))
                        or real(name, spec, cfg, *a, **k))
    B.run_main_bench(**bench["kw"])
    assert trained == [("softmax", 1)] and victim.is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in others.items())


def test_lambda_schedule_is_compressed_to_the_budget():
    # default SphereFace λ: 1000/(1+0.12 t) reaches 5 at t = 199/0.12 ≈ 1658
    assert B.lambda_gamma({"lambda_min": 5}, 10000) == 0.12  # 40% of 10000 > 1658: unchanged
    g = B.lambda_gamma({"lambda_min": 5}, 1000)  # must reach 5 at step 400
    assert g == pytest.approx(199 / 400)
    assert 1000 / (1 + g * 400) == pytest.approx(5.0)
    assert B.lambda_gamma({"lambda_min": 3, "base": 1000}, 1500) == pytest.approx((1000 / 3 - 1) / 600)


def test_spread_rule():
    a = {"mean": 0.70, "std": 0.02, "n": 3}
    assert compare(a, {"mean": 0.60, "std": 0.03, "n": 3}) == "better"
    assert compare(a, {"mean": 0.66, "std": 0.03, "n": 3}) == "within spread"
    assert compare({"mean": 0.5, "std": 0.01, "n": 3}, a) == "worse"
    assert compare({"mean": 0.9, "std": 0.0, "n": 1}, a).startswith("not called")


def test_unknown_head_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="nosuchhead"):
        B.run_main_bench(out=str(tmp_path), heads=["softmax", "nosuchhead"], set_dir=str(tmp_path / "none"))


def test_a_run_of_another_configuration_is_not_continued(bench, tmp_path):
    kw = dict(bench["kw"], steps=6, heads=["softmax"], seeds=[0], out=str(tmp_path / "o"))
    B.run_main_bench(**kw)
    (tmp_path / "o" / "runs" / "softmax" / "seed0" / "result.json").unlink()
    with pytest.raises(ValueError, match="another configuration"):
        B.run_main_bench(**dict(kw, steps=8))
