"""The main job's report: a table of mean ± std over seeds, figures, and a reading computed from the numbers.

Nothing here is pre-written: every sentence of the reading is chosen by comparing the measured
means and their seed spread. A difference is *called* only when it exceeds the spread: the two
heads' intervals ``mean ± std`` (sample std over seeds) must not overlap. With one seed there is
no spread, and no difference is called.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..io import atomic_open
from ..viz import figures as F
from ..viz.figures.common import new_figure, save_png
from ..viz.report import read_metrics
from ..viz.report import report_figures as report_run_figures
from .protocol import BUDGETS, QUALITY_AWARE, available_heads
from .sections import (KEY_FAR, atl_ablation_lines, erc_curves, paper_lines, quality_far, quality_lines,
                       reference_lines, set_line)


def machine_line() -> str:
    import torch

    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def _fmt(stat: Optional[Dict], digits: int = 3) -> str:
    if not stat:
        return "n/a"
    if stat["n"] > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def _far_key(far: float) -> str:
    return f"{far:g}"


def compare(a: Optional[Dict], b: Optional[Dict]) -> str:
    """``"better"``, ``"worse"`` or ``"within spread"`` for ``a`` against ``b`` (or ``"not called"``
    when either has a single seed)."""
    if not a or not b:
        return "n/a"
    if a["n"] < 2 or b["n"] < 2:
        return "not called (one seed)"
    d = a["mean"] - b["mean"]
    spread = a["std"] + b["std"]
    if d > spread:
        return "better"
    if d < -spread:
        return "worse"
    return "within spread"


def curves(out: Path, head: str, seeds: List[int], key: str) -> List[List[tuple]]:
    """``[(step, value), ...]`` of an evaluation metric for each seed of a head."""
    res = []
    for s in seeds:
        p = out / "runs" / head / f"seed{s}" / "metrics.jsonl"
        if not p.is_file():
            continue
        pts = []
        for ln in p.read_text(encoding="utf-8").splitlines():
            if not ln.strip():
                continue
            r = json.loads(ln)
            if r.get("event") == "eval" and key in r:
                pts.append((int(r["step"]), float(r[key])))
        if pts:
            res.append(pts)
    return res


def steps_to(pts: List[tuple], level: float) -> Optional[int]:
    for s, v in pts:
        if v >= level:
            return s
    return None


def convergence_reading(out: Path, summary: Dict, key: str) -> Optional[str]:
    """Did ATL (each recipe) reach a given TAR sooner than SphereFace? Read off the evaluation curves."""
    if "sphereface" not in summary:
        return None
    sph = curves(out, "sphereface", summary["sphereface"]["seeds"], key)
    if not sph:
        return None
    parts = []
    for atl in ("atl-direct", "atl-step"):
        if atl not in summary:
            continue
        a = curves(out, atl, summary[atl]["seeds"], key)
        if not a:
            continue
        finals = [c[-1][1] for c in a + sph]
        level = 0.9 * max(finals)
        sa = [steps_to(c, level) for c in a]
        ss = [steps_to(c, level) for c in sph]
        ahead, total = 0, 0
        for ca, cs in zip(a, sph):
            for (st, va), (_, vs) in zip(ca, cs):
                total += 1
                ahead += va > vs
        fmt = lambda xs: ", ".join("never" if x is None else str(x) for x in xs)
        reach = lambda xs: [x if x is not None else float("inf") for x in xs]
        faster = max(reach(sa)) < min(reach(ss))
        slower = min(reach(sa)) > max(reach(ss))
        verdict = ("faster than SphereFace in every seed" if faster else
                   "slower than SphereFace in every seed" if slower else
                   "behind SphereFace at every evaluation, so not faster" if total and ahead == 0 else
                   "ahead of SphereFace at every evaluation" if total and ahead == total else
                   "neither consistently faster nor slower than SphereFace")
        parts.append(f"**{atl}** reached {key} ≥ {level:.3f} (90% of the best final value) at steps {fmt(sa)} "
                     f"against SphereFace's {fmt(ss)} (per seed), and was ahead at {ahead} of {total} evaluations: "
                     f"{verdict}.")
    if not parts:
        return None
    return ("The claim that ATL trained directly converges faster than SphereFace, read off the "
            f"{key} curves of the same steps and seeds: " + " ".join(parts))


def reading(out: Path, result: Dict) -> List[str]:
    """Paragraphs computed from the numbers."""
    summary, pixels = result["summary"], result["pixels"]
    par = []
    ranked = sorted(summary, key=lambda h: -(summary[h]["tar_at_far"].get(KEY_FAR) or {"mean": -1})["mean"])
    if ranked and summary[ranked[0]]["tar_at_far"].get(KEY_FAR):
        best, worst = ranked[0], ranked[-1]
        par.append(f"At FAR = 1e-4 the best head is **{best}** ({_fmt(summary[best]['tar_at_far'][KEY_FAR])}) and "
                   f"the weakest {worst} ({_fmt(summary[worst]['tar_at_far'].get(KEY_FAR))}); the raw pixels reach "
                   f"{pixels['tar_at_far'].get(KEY_FAR, float('nan')):.3f} (pair accuracy "
                   f"{pixels['pair_accuracy']:.3f}), so every number above that is learnt.")
    soft = summary.get("softmax")
    if soft and soft["tar_at_far"].get(KEY_FAR):
        groups: Dict[str, List[str]] = {}
        for h in summary:
            if h == "softmax":
                continue
            a, b = summary[h]["tar_at_far"].get(KEY_FAR), soft["tar_at_far"][KEY_FAR]
            verdict = compare(a, b)
            d = (a["mean"] - b["mean"]) if a else float("nan")
            groups.setdefault(verdict, []).append(f"{h} ({d:+.3f})")
        order = ["better", "within spread", "worse", "not called (one seed)", "n/a"]
        text = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(groups.items(), key=lambda kv: order.index(kv[0])))
        par.append(f"Against softmax at FAR = 1e-4 ({_fmt(soft['tar_at_far'][KEY_FAR])}), difference of the means, "
                   f"called only beyond the seed spread (mean ± std intervals apart): {text}.")
        key = [h for h in ("arcface", "cosface", "sphereface") if h in summary]
        if key:
            calls = {h: compare(summary[h]["tar_at_far"].get(KEY_FAR), soft["tar_at_far"][KEY_FAR]) for h in key}
            par.append("The papers' question, whether ArcFace, CosFace and SphereFace beat softmax at low FAR: "
                       + "; ".join(f"{h}: {c}" for h, c in calls.items()) + ".")
    conv = convergence_reading(out, summary, f"tar@{result.get('curve_far', 1e-3):g}")
    if conv:
        par.append(conv)
    lam = [r for r in result["rows"] if r["config"]["loss"]["params"].get("gamma") is not None]
    if lam:
        g = {r["head"]: r["config"]["loss"]["params"]["gamma"] for r in lam}
        gammas = sorted(set(g.values()))
        if gammas == [0.12]:
            par.append("λ schedule: the λ-annealed heads (" + ", ".join(sorted(g)) + ") kept the default gamma = 0.12, "
                       "which brings λ to λ_min before 40% of the steps.")
        else:
            par.append("λ schedule: the λ-annealed heads (" + ", ".join(sorted(g)) + ") used gamma = "
                       + ", ".join(f"{v:.3g}" for v in gammas)
                       + " so that λ reaches λ_min at 40% of the steps: with the default gamma = 0.12, λ = 1000/(1 + 0.12 t) "
                       "reaches λ_min = 5 only at t ≈ 1658, later than this budget allows. The schedule is compressed to "
                       "the budget, so these heads train their last 60% of the steps at λ_min, as in the papers.")
    seeds = sorted({r["seed"] for r in result["rows"]})
    if len(seeds) < 2:
        if (result.get("reference") or {}).get("summary"):
            par.append("One seed only: the table has no spread of its own, so its differences are held against the "
                       "committed report's three-seed spread above; run --full for three seeds.")
        else:
            par.append("One seed only: the table has no spread and no difference is called; run --full for three seeds.")
    return par


def _metric_curve_figure(path: Path, out: Path, summary: Dict, heads: List[str], key: str, title: str, colors):
    fig = new_figure(7.5, 5)
    ax = fig.add_subplot(1, 1, 1)
    drew = False
    for h in heads:
        cs = curves(out, h, summary[h]["seeds"], key)
        if not cs:
            continue
        for c in cs:
            ax.plot([p[0] for p in c], [p[1] for p in c], color=colors[h], alpha=0.35, lw=1)
        n = min(len(c) for c in cs)
        mean = np.mean([[p[1] for p in c[:n]] for c in cs], axis=0)
        ax.plot([p[0] for p in cs[0][:n]], mean, color=colors[h], lw=2.2, marker="o", ms=3, label=h)
        drew = True
    if not drew:
        raise ValueError(f"no evaluation curve holds {key}")
    ax.set_xlabel("training step")
    ax.set_ylabel(key.replace("tar@", "TAR @ FAR = "))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return save_png(fig, path)


def _norm_quality_figure(path: Path, out: Path, summary: Dict, heads: List[str], colors):
    fig = new_figure(7.5, 5)
    ax = fig.add_subplot(1, 1, 1)
    drew = False
    for h in heads:
        p = out / "runs" / h / f"seed{summary[h]['seeds'][0]}" / "unseen_norms.npz"
        if not p.is_file():
            continue
        d = np.load(p)
        res, norms = d["resolution"], d["norms"]
        norms = norms / np.median(norms)
        levels = np.unique(res)
        means = [norms[res == r].mean() for r in levels]
        ax.plot(levels, means, color=colors[h], lw=2, marker="o", ms=3, label=h)
        drew = True
    if not drew:
        raise ValueError("no run left unseen_norms.npz")
    ax.set_xlabel("resolution the test image was degraded to (pixels; 32 = full)")
    ax.set_ylabel("mean feature norm / median norm of the head")
    ax.set_title("feature norm against image quality (unseen identities)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def draw_figures(out: Path, result: Dict, fig_dir: Optional[Path] = None) -> Dict[str, str]:
    """Every figure of the main job (into ``fig_dir``, default ``out/figures``); a figure whose data
    is missing is skipped with a message. Returns ``{figure: path relative to out}``."""
    summary = result["summary"]
    heads = list(summary)
    colors = F.series_colors(heads + ["pixels"])
    out = Path(out)
    fig_dir = Path(fig_dir) if fig_dir is not None else out / "figures"
    figs: Dict[str, Path] = {}

    def draw(key, fn):
        try:
            figs[key] = fn(fig_dir / f"{key}.png")
        except (ValueError, FileNotFoundError, KeyError) as e:
            print(f"[bench] figure {key} not drawn: {e}")

    roc = {h: {"fpr": summary[h]["roc"]["far"], "tpr": summary[h]["roc"]["tar"],
               "auc": (summary[h]["auc"] or {}).get("mean")} for h in heads}
    roc["pixels"] = {"fpr": result["pixels"]["roc"]["far"], "tpr": result["pixels"]["roc"]["tar"],
                     "auc": result["pixels"]["auc"]}
    draw("roc", lambda p: F.plot_roc(roc, p, log_x=True, colors=colors,
                                     title="TAR against FAR, all-vs-all on the unseen identities (mean over seeds)"))
    hist = {}
    for h in heads:
        mp = out / "runs" / h / f"seed{summary[h]['seeds'][0]}" / "metrics.jsonl"
        try:
            recs = read_metrics(mp)
        except (FileNotFoundError, ValueError):
            continue
        if recs:
            hist[h] = recs
    if hist:
        draw("training", lambda p: F.plot_training_curves(hist, p, colors=colors, title="training curves (first seed)"))
    key = f"tar@{result.get('curve_far', 1e-3):g}"
    draw("tar_curves", lambda p: _metric_curve_figure(p, out, summary, heads, key, f"{key} on the unseen identities "
                                                      "during training (thin: seeds, thick: mean)", colors))
    conv = [h for h in ("sphereface", "atl-direct", "atl-step") if h in summary]
    if len(conv) > 1:
        draw("convergence", lambda p: _metric_curve_figure(p, out, summary, conv, key, "ATL (both recipes) against "
                                                           "SphereFace, same steps and seeds", colors))

    qa = [h for h in QUALITY_AWARE if h in summary] + [h for h in ("softmax", "arcface") if h in summary]
    if qa:
        draw("norm_quality", lambda p: _norm_quality_figure(p, out, summary, qa, colors))
    quality = result.get("quality") or {}
    if quality:
        strata = {h: list(seeds.values()) for h, seeds in quality.items()}
        far = quality_far(quality)
        draw("quality_strata", lambda p: F.plot_stratified_tar(
            {h: [a["strata"] for a in runs] for h, runs in strata.items()}, p, far=far,
            title=f"TAR at FAR {far:g} by the quality of the pair's lower image (one threshold for all pairs)"))
        curves = erc_curves(quality)
        if curves:
            draw("error_vs_reject", lambda p: F.plot_error_vs_reject(
                curves, p, title=f"FNMR at FMR {far:g} as the lowest-ranked images are rejected"))
    return {k: os.path.relpath(v, out) for k, v in figs.items()}


def main_job_result(bench_dir: Path) -> Optional[Dict]:
    """The ``results.json`` of a glyph-set main-job folder (it holds per-seed rows and a summary),
    else ``None``."""
    try:
        result = json.loads((Path(bench_dir) / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(result, dict) and {"summary", "rows", "manifest_counts"} <= set(result):
        return result
    return None


def report_figures(bench_dir: Path, out_dir: Optional[Path] = None) -> Dict[str, str]:
    """Every figure of a bench folder, whichever bench wrote it (``facemargin plot``).

    A main-job folder (``facemargin bench`` on a glyph set) gets that job's figures (ROC, training
    and TAR curves, ATL convergence, norm against quality; :func:`draw_figures`); any other folder
    is read in the per-loss layout of :func:`facemargin.viz.report.report_figures` (the
    Fashion-MNIST bench). Returns ``{figure name: png path relative to bench_dir}``.
    """
    bench_dir = Path(bench_dir)
    if not bench_dir.is_dir():
        raise FileNotFoundError(f"bench directory not found: {bench_dir}")
    main = main_job_result(bench_dir)
    if main is not None:
        return draw_figures(bench_dir, main, fig_dir=out_dir)
    return report_run_figures(bench_dir, out_dir)


def write_main_report(out: Path, result: Dict, feature_figs: Dict[str, str], args_line: str, wall_seconds: float,
                      draw: bool = True) -> Dict[str, str]:
    """Write ``out/report.md`` (and the figures); returns ``{figure: relative path}``."""
    out = Path(out)
    figs = draw_figures(out, result) if draw else {}
    for k, p in feature_figs.items():
        figs[k] = os.path.relpath(p, out)
    summary, b, pixels = result["summary"], result["budget"], result["pixels"]
    c = result["manifest_counts"]
    seeds = sorted({r["seed"] for r in result["rows"]})
    train_s = sum(r["train_seconds"] for r in result["rows"])
    fars = [k for k in ("0.01", "0.001", "0.0001", "1e-05", "1e-06")
            if any(k in summary[h]["tar_at_far"] for h in summary)]

    full = BUDGETS["full"]
    missing = [h for h in available_heads(True) if h not in summary]
    full_budget = b["steps"] == full["steps"] and b["batch"] == full["batch"] and len(seeds) >= 3
    demo = BUDGETS["demo"]
    if (b["steps"], b["batch"]) == (demo["steps"], demo["batch"]) and seeds == demo["seeds"] \
            and list(summary) == available_heads(False):
        scope = (f"the demo (`make demo`): the core heads ({', '.join(summary)}) at the full budget's {b['steps']} "
                 f"steps of batch {b['batch']}, seed {seeds[0]} only. The committed report runs every head over "
                 "seeds 0-2; the section below holds this run against it.")
    elif full_budget and not missing:
        scope = "the documented full budget: every head and loss, seeds 0-2, {} steps of batch {}.".format(
            full["steps"], full["batch"])
    elif full_budget:
        scope = (f"the documented full budget ({full['steps']} steps of batch {full['batch']}, {len(seeds)} seeds) for "
                 f"the {len(summary)} heads in the table. Not run: {', '.join(missing)}; re-running the command "
                 "without `--heads` adds them and reuses the finished runs.")
    else:
        scope = (f"a reduced run: the documented `--full` budget is every head and loss, seeds 0-2, {full['steps']} "
                 f"steps of batch {full['batch']}; this report covers the heads, seeds and steps named here, which is "
                 "what the machine allowed. Re-running its command with more heads or seeds reuses the finished runs.")
    if result.get("not_run"):
        scope += (f" Still to run ({len(result['not_run'])}): {', '.join(result['not_run'])}; the same command "
                  "without `--finished-only` runs them and reuses every finished run.")
    lines = [
        "# facemargin bench: margin heads on a thousands-of-identities glyph set, TAR at low FAR",
        "",
        f"**Scope**: {scope}",
        "",
        f"**This run**: {len(summary)} heads × {len(seeds)} seed(s) ({', '.join(map(str, seeds))}), {b['steps']} steps "
        f"of batch {b['batch']} each. Date: {datetime.date.today().isoformat()}. Machine: {machine_line()}. "
        f"Command: `{args_line}`. Training time summed over runs: {train_s / 60:.1f} min; wall time of the "
        f"call that wrote this report: {wall_seconds / 60:.1f} min (finished runs of earlier calls are reused).",
        "",
        f"**Data**: the glyph identity set in `{result['set']}`: {c['identities']} characters (identities) rendered in "
        f"{c['faces']} distinct font faces ({c['images']} images after dropping {c['duplicates_dropped']} duplicate "
        f"renderings); {c['train_images']} images of the training identities, degraded at random while training "
        f"(affine jitter, down-sampling to 10-32 px, blur, noise); {c['test_images']} images of the unseen "
        "identities, degraded once with a fixed seed." + set_line(result),
        "",
        "**Protocol**: backbone smallcnn (128-D), SGD lr 0.1, momentum 0.9, weight decay 5e-4, ×0.1 at 50% and 75% "
        "of the steps; same steps, batch and seeds for every head; scale-based heads at s = 30"
        + (" except the `head@...` rows, whose settings the section *Paper hyper-parameters* gives"
           if any("@" in h for h in summary) else "") + ". Evaluation on the "
        f"unseen identities only: all-vs-all verification ({result['rows'][0]['num_genuine']} "
        f"genuine and {result['rows'][0]['num_impostor']} impostor pairs), TAR at FAR 1e-2..1e-6 where the impostor "
        "count allows, EER, leave-one-out rank-1 identification, and LFW-protocol pair accuracy (10 folds) on "
        "the `unseen.bin` pack. Values are mean ± sample std over seeds.",
        "",
        "| head | " + " | ".join(f"TAR@{float(f):.0e}" for f in fars) + " | pair acc | EER | rank-1 | train s |",
        "|---|" + "---|" * (len(fars) + 4),
    ]
    order = sorted(summary, key=lambda h: -(summary[h]["tar_at_far"].get(KEY_FAR) or {"mean": -1})["mean"])
    for h in order:
        s = summary[h]
        lines.append(f"| {h} | " + " | ".join(_fmt(s["tar_at_far"].get(f)) for f in fars)
                     + f" | {_fmt(s['pair_accuracy'])} | {_fmt(s['eer'])} | {_fmt(s['rank1'])} | "
                     f"{(s['train_seconds'] or {'mean': 0})['mean']:.0f} |")
    lines.append("| raw pixels (no training) | " + " | ".join(
        f"{pixels['tar_at_far'][f]:.3f}" if f in pixels["tar_at_far"] else "n/a" for f in fars)
        + f" | {pixels['pair_accuracy']:.3f} | {pixels['eer']:.3f} | {pixels['rank1']:.3f} | 0 |")
    lines += [""] + reference_lines(result) + paper_lines(result) + atl_ablation_lines(result) + quality_lines(result)
    lines += ["## What the numbers show", ""]
    for p in reading(out, result):
        lines += [p, ""]
    if figs:
        lines += ["## Figures", ""]
        captions = {
            "roc": "TAR against FAR (log axis), all-vs-all on the unseen identities, mean over seeds",
            "tar_curves": "TAR during training, every head",
            "training": "training loss and accuracy (first seed)",
            "convergence": "ATL direct and step against SphereFace",
            "norm_quality": "feature norm against the resolution of the test image",
            "quality_strata": "TAR by the quality of the pair's lower image (one threshold for all pairs)",
            "error_vs_reject": "error versus reject: FNMR as the lowest-ranked images are rejected",
            "features_2d": "2-D features (LeNet++ on Fashion-MNIST, the papers' MNIST figure)",
            "features_3d": "3-D features on the unit sphere (LeNet++ on Fashion-MNIST)",
        }
        for k, rel in figs.items():
            lines += [f"### {captions.get(k, k)}", "", f"![{k}]({rel})", ""]
    with atomic_open(out / "report.md", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return figs
