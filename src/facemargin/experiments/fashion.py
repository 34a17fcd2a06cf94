"""Every loss of the zoo on Fashion-MNIST (``facemargin bench --dataset fashion-mnist``), and the
2-D/3-D feature runs whose scatter plots are the papers' MNIST figures.

Each loss trains LeNet++ on the Fashion-MNIST classes ``0-5`` and is evaluated on

* open-set pairs of the unseen classes ``6-9`` (LFW protocol, 10 folds: accuracy, AUC, EER, TAR@FAR),
* the closed-set test split of the training classes (nearest class mean of training features).

It writes ``DIR/results.json``, ``DIR/report.md`` and PNG figures in ``DIR/figures/``; per-loss
metrics, features and scores stay in ``DIR/runs/<loss>/``.
"""
from __future__ import annotations

import copy
import datetime
import json
import platform
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from ..eval.fashion import FashionEval  # noqa: F401  (also importable from here)
from ..eval.identification import nearest_class_mean
from ..io import atomic_open, write_json
from ..train.config import load_config
from ..train.data import InMemorySet, build_train_set
from ..train.loop import Trainer
from ..viz import figures as F
from ..viz.report import report_figures

# Every run shares backbone, budget and seed. Scale-based heads share s=16: with 6 classes and a
# 64-D feature the face defaults (s=64) saturate the softmax from the first step.
S = 16.0
RUNS: Dict[str, Dict] = {
    "softmax": {"loss": {"name": "softmax"}},
    "center": {"loss": {"name": "softmax"}, "aux": {"name": "center", "weight": 0.01, "params": {"alpha": 0.5}}},
    "contrastive": {"loss": {"name": "softmax"}, "aux": {"name": "contrastive", "weight": 0.5, "params": {"margin": 1.0}}},
    "triplet": {"loss": {"name": "triplet", "params": {"margin": 0.2, "mining": "semihard"}}},
    "l2softmax": {"loss": {"name": "l2softmax", "params": {"alpha": S}}},
    "normface": {"loss": {"name": "normface", "params": {"s": S}}},
    "coco": {"loss": {"name": "coco"}},
    "range": {"loss": {"name": "softmax"}, "aux": {"name": "range", "weight": 0.01}},
    "marginal": {"loss": {"name": "softmax"}, "aux": {"name": "marginal", "weight": 0.1}},
    "lsoftmax": {"loss": {"name": "lsoftmax", "params": {"m": 2}}},
    "sphereface": {"loss": {"name": "sphereface", "params": {"m": 4}}},
    "cosface": {"loss": {"name": "cosface", "params": {"s": S, "m": 0.35}}},
    "arcface": {"loss": {"name": "arcface", "params": {"s": S, "m": 0.5}}},
    "combined": {"loss": {"name": "combined", "params": {"s": S}}},
    # the ATL write-up's small-set defaults (m=2, lambda_min=3), triplet and semihard from the start
    "atl": {"loss": {"name": "atl", "params": {"m": 2, "lambda_min": 3, "triplet": True, "semihard": True}}},
}
# the shared backbone and solver of every run (the report's protocol line is written from these)
WIDTH, EMBEDDING, BATCH = 0.5, 64, 128
LR = 0.01  # LeNet++ has no batch norm: the ATL write-up's 0.1 diverges

FIGURE_RUNS_2D = ["softmax", "center", "sphereface", "cosface", "arcface", "atl"]
FIGURE_RUNS_3D = ["normface", "sphereface", "arcface"]

BUDGETS = {
    # steps of batch 128 for each loss; the figure runs (2-D/3-D features) use a fraction
    "full": {"steps": 600, "figure_steps": 200, "eval_every": 100, "num_pairs": 6000, "gallery": 12000,
             "figures3d": True},
    "quick": {"steps": 120, "figure_steps": 60, "eval_every": 40, "num_pairs": 2000, "gallery": 3000,
              "figures3d": False},
}


def run_config(name: str, base: Dict, budget: Dict, out: Path, data_root: Optional[str], embedding_size: int,
               steps: int, seed: int, device: str) -> Dict:
    cfg = copy.deepcopy(base)
    spec = RUNS[name]
    cfg["loss"] = {"name": spec["loss"]["name"], "params": dict(spec["loss"].get("params", {}))}
    aux = spec.get("aux", {})
    cfg["aux"] = {"name": aux.get("name", ""), "weight": float(aux.get("weight", 0.0)), "params": dict(aux.get("params", {}))}
    cfg["model"]["embedding_size"] = embedding_size
    cfg["data"]["root"] = data_root or ""
    cfg["data"]["num_pairs"] = budget["num_pairs"]
    t = cfg["train"]
    t.update(steps=steps, seed=seed, device=device, out=str(out), eval_every=budget["eval_every"],
             checkpoint_every=0, log_every=10)
    return cfg


def train_one(name: str, cfg: Dict, train_set: InMemorySet, evaluator: FashionEval, out: Path,
              features_file: str = "features.npz") -> Dict:
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    if metrics.exists():
        metrics.unlink()
    figure_run = features_file != "features.npz"
    trainer = Trainer(cfg, train_set, evaluate=None if figure_run else (lambda m: evaluator(m, full=False)))
    trainer.fit()
    model = trainer.model.eval()
    if figure_run:  # only the 2-D/3-D test features for the scatter figures
        emb = evaluator.embed(model, evaluator.closed_images)
        with atomic_open(out / features_file, "wb") as f:
            np.savez_compressed(f, embeddings=emb.astype(np.float32), labels=evaluator.closed_labels)
        return {}
    res = evaluator(model, full=True)
    v = res["verify"]
    pred = nearest_class_mean(res["gallery_embeddings"], evaluator.gallery_labels, res["closed_embeddings"])
    with atomic_open(out / "features.npz", "wb") as f:
        np.savez_compressed(f, embeddings=res["closed_embeddings"].astype(np.float32),
                            labels=evaluator.closed_labels, norms=np.linalg.norm(res["closed_embeddings"], axis=1),
                            correct=pred == evaluator.closed_labels)
    i1, i2, same = evaluator.pairs
    e = res["open_embeddings"]
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    with atomic_open(out / "scores.npz", "wb") as f:
        np.savez_compressed(f, scores=(e[i1] * e[i2]).sum(1), issame=np.asarray(same, dtype=bool))
    return {
        "loss": name,
        "accuracy": float(v["accuracy"]),
        "accuracy_std": float(v["accuracy_std"]),
        "auc": float(v["auc"]),
        "eer": float(v["eer"]),
        "tar_at_far": {str(k): float(val) for k, val in v["tar_at_far"].items()},
        "closed_set_accuracy": float(res["closed_set_accuracy"]),
        "train_seconds": round(trainer.train_seconds, 2),
        "steps": trainer.step,
        "config": {"loss": cfg["loss"], "aux": cfg["aux"]},
    }


def convergence(metrics_path: Path) -> List[Dict]:
    rows = []
    if metrics_path.exists():
        for line in metrics_path.read_text().splitlines():
            r = json.loads(line)
            if r.get("event") == "eval":
                rows.append(r)
    return rows


def steps_to_reach(curve: List[Dict], level: float) -> Optional[int]:
    for r in curve:
        if r["accuracy"] >= level:
            return int(r["step"])
    return None


def convergence_verdict(atl: List[Dict], sph: List[Dict]) -> str:
    """Did ATL converge faster than SphereFace (the ATL write-up's claim)? Read off the two eval curves."""
    curve = lambda c: ", ".join(f"{r['step']}: {r['accuracy']:.3f}" for r in c)
    pairs = [(a["accuracy"], s["accuracy"]) for a, s in zip(atl, sph)]
    ahead = sum(a > s for a, s in pairs)
    level = 0.95 * max(atl[-1]["accuracy"], sph[-1]["accuracy"])  # near the better final accuracy
    sa, ss = steps_to_reach(atl, level), steps_to_reach(sph, level)
    faster = ahead > len(pairs) / 2 and sa is not None and (ss is None or sa <= ss)
    verdict = ("ATL converged faster, as the ATL write-up claims" if faster else
               "ATL did not converge faster than SphereFace here: the ATL write-up's claim is not confirmed")
    return (f"Convergence, open-set accuracy at each evaluation (step: accuracy): ATL {curve(atl)}; SphereFace "
            f"{curve(sph)}. ATL was ahead at {ahead} of {len(pairs)} evaluations; steps to reach {level:.3f} (95% of the "
            f"better final accuracy): ATL {sa if sa is not None else 'never'}, SphereFace {ss if ss is not None else 'never'}. "
            f"{verdict}. One seed on a small set: an indication, not a proof.")


def machine_line() -> str:
    import os

    return (f"{platform.machine()} {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}, threads {torch.get_num_threads()}")


def write_report(out: Path, rows: List[Dict], figures: Dict[str, str], args_line: str, total_s: float,
                 baseline: Optional[Dict] = None) -> str:
    rows = sorted(rows, key=lambda r: -r["accuracy"])
    soft = next((r for r in rows if r["loss"] == "softmax"), None)
    lines = [
        "# facemargin bench: every loss on Fashion-MNIST, open-set",
        "",
        f"Date: {datetime.date.today().isoformat()}. Machine: {machine_line()}. "
        f"Command: `{args_line}`. Total wall time: {total_s / 60:.1f} min.",
        "",
        f"Protocol: LeNet++ (width {WIDTH}, {EMBEDDING}-D features), trained on Fashion-MNIST classes 0-5 with the same "
        f"steps, batch ({BATCH}), learning-rate schedule (SGD {LR}, momentum 0.9, wd 5e-4, ×0.1 at 50% and 75%) and "
        "seed for every loss. *Open-set*: pairs of test images of the unseen classes 6-9, LFW 10-fold protocol "
        "(accuracy ± std over folds, ROC AUC, EER, TAR@FAR). *Closed-set*: nearest class mean of training features "
        "on the test split of classes 0-5.",
        "",
        "| loss | open-set accuracy | ± std | AUC | EER | TAR@FAR=1e-2 | closed-set acc | train s | steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        tar = r["tar_at_far"].get("0.01", float("nan"))
        lines.append(f"| {r['loss']} | {r['accuracy']:.4f} | {r['accuracy_std']:.4f} | {r['auc']:.4f} | {r['eer']:.4f} | "
                     f"{tar:.4f} | {r['closed_set_accuracy']:.4f} | {r['train_seconds']:.0f} | {r['steps']} |")
    if baseline:
        refs = "; ".join(f"{name}: {b['accuracy']:.4f} ± {b['accuracy_std']:.4f} (AUC {b['auc']:.4f})" for name, b in baseline.items())
        lines += ["", f"References without any training, the pixels of the 28×28 images as embeddings, same pairs: {refs}."]
    lines += ["", "## What the numbers show", ""]
    for paragraph in analysis(rows, soft, out, baseline):
        lines += [paragraph, ""]
    if figures:
        lines += ["", "## Figures", ""]
        for name, rel in figures.items():
            lines += [f"### {name}", "", f"![{name}]({rel})", ""]
    text = "\n".join(lines) + "\n"
    with atomic_open(out / "report.md", "w", encoding="utf-8") as f:
        f.write(text)
    return text


def analysis(rows: List[Dict], soft: Optional[Dict], out: Path, baseline: Optional[Dict] = None) -> List[str]:
    """An honest paragraph computed from the numbers (no pre-written conclusions)."""
    par = []
    if baseline:
        name, ref = max(baseline.items(), key=lambda kv: kv[1]["accuracy"])  # the stronger reference is the bar
        above = [r["loss"] for r in rows if r["accuracy"] - ref["accuracy"] > max(r["accuracy_std"], ref["accuracy_std"])]
        below = [r["loss"] for r in rows if ref["accuracy"] - r["accuracy"] > max(r["accuracy_std"], ref["accuracy_std"])]
        par.append(f"Against the stronger untrained reference ({name}, {ref['accuracy']:.4f}): clearly above it: "
                   f"{', '.join(above) or 'none'}; clearly below it: {', '.join(below) or 'none'}; the rest within one fold-std. "
                   "Features learnt on classes 0-5 transfer only partly to the unseen classes 6-9 (shirt, sneaker, bag, "
                   "ankle boot) at this budget.")
    best = rows[0]
    par.append(f"Best open-set accuracy: **{best['loss']}** ({best['accuracy']:.4f} ± {best['accuracy_std']:.4f}); "
               f"worst: {rows[-1]['loss']} ({rows[-1]['accuracy']:.4f}).")
    if soft is not None:
        margin_names = ["sphereface", "cosface", "arcface", "combined", "lsoftmax", "atl"]
        better, worse = [], []
        for r in rows:
            if r["loss"] in margin_names:
                # differences inside one fold-std are not called wins
                d = r["accuracy"] - soft["accuracy"]
                noise = max(r["accuracy_std"], soft["accuracy_std"])
                (better if d > noise else worse if d < -noise else []).append(f"{r['loss']} ({d:+.4f})")
        ties = [r["loss"] for r in rows if r["loss"] in margin_names
                and abs(r["accuracy"] - soft["accuracy"]) <= max(r["accuracy_std"], soft["accuracy_std"])]
        par.append(f"Against softmax ({soft['accuracy']:.4f}) on open-set pairs, margin heads clearly better "
                   f"(by more than one fold-std): {', '.join(better) or 'none'}; clearly worse: {', '.join(worse) or 'none'}; "
                   f"within noise: {', '.join(ties) or 'none'}.")
        cs = sorted(rows, key=lambda r: -r["closed_set_accuracy"])
        par.append(f"Closed-set accuracy ranges from {cs[-1]['closed_set_accuracy']:.4f} ({cs[-1]['loss']}) to "
                   f"{cs[0]['closed_set_accuracy']:.4f} ({cs[0]['loss']}); a high closed-set score does not by itself "
                   "predict the open-set ranking, which is the point of evaluating on unseen classes.")
    atl, sph = (next((r for r in rows if r["loss"] == n), None) for n in ("atl", "sphereface"))
    if atl and sph:
        ca, cs_ = convergence(out / "runs" / "atl" / "metrics.jsonl"), convergence(out / "runs" / "sphereface" / "metrics.jsonl")
        if ca and cs_:
            par.append(convergence_verdict(ca, cs_))
    par.append("All runs are one seed; fold std measures the spread over the 10 pair folds, not over training seeds.")
    return par


def run_bench(out: str = "runs/bench", quick: bool = False, data_root: Optional[str] = None,
              losses: Optional[List[str]] = None, steps: Optional[int] = None, seed: int = 0,
              device: str = "auto", figures: bool = True, args_line: str = "facemargin bench") -> Dict:
    budget = dict(BUDGETS["quick" if quick else "full"])
    if steps is not None:
        budget["steps"] = int(steps)
        budget["figure_steps"] = max(int(steps) // 3, 1)
        budget["eval_every"] = max(int(steps) // 5, 1)
    names = losses or list(RUNS)
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise ValueError(f"unknown bench losses {unknown}; available: {', '.join(RUNS)}")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = load_config(None)
    base["model"] = {"name": "lenetpp", "embedding_size": EMBEDDING, "params": {"width": WIDTH}}
    base["train"]["batch_size"] = BATCH
    base["optim"]["lr"] = LR
    t0 = time.perf_counter()
    print(f"[bench] loading Fashion-MNIST and building the open-set protocol ({budget['num_pairs']} pairs)")
    evaluator = FashionEval(data_root, base["data"]["train_classes"], base["data"]["eval_classes"], budget["num_pairs"],
                            seed, gallery_size=budget["gallery"])
    train_set = build_train_set({**base["data"], "root": data_root or ""})
    rows = []
    for i, name in enumerate(names):
        print(f"[bench] ({i + 1}/{len(names)}) {name}: {budget['steps']} steps")
        cfg = run_config(name, base, budget, out_dir / "runs" / name, data_root, EMBEDDING, budget["steps"], seed, device)
        row = train_one(name, cfg, train_set, evaluator, out_dir / "runs" / name)
        print(f"[bench]   open-set acc {row['accuracy']:.4f} ± {row['accuracy_std']:.4f}, AUC {row['auc']:.4f}, "
              f"closed-set {row['closed_set_accuracy']:.4f}, {row['train_seconds']:.0f} s")
        rows.append(row)
        write_json(out_dir / "results.json", rows)
    if figures:
        dims = [(2, FIGURE_RUNS_2D, "features2d.npz")]
        if budget["figures3d"]:
            dims.append((3, FIGURE_RUNS_3D, "features3d.npz"))
        for dim, fnames, fname in dims:
            for name in [n for n in fnames if n in names]:
                print(f"[bench] {dim}-D feature run for the figures: {name}, {budget['figure_steps']} steps")
                cfg = run_config(name, base, budget, out_dir / "runs" / name / f"d{dim}", data_root, dim,
                                 budget["figure_steps"], seed, device)
                cfg["train"]["eval_every"] = 0
                cfg["train"]["progress"] = True
                train_one(name, cfg, train_set, evaluator, out_dir / "runs" / name / f"d{dim}", features_file="f.npz")
                src = out_dir / "runs" / name / f"d{dim}" / "f.npz"
                src.replace(out_dir / "runs" / name / fname)
    figs = {}
    if figures:
        try:
            figs = report_figures(out_dir)
        except Exception as e:  # figures must never lose the numbers
            print(f"[bench] warning: figures failed: {e}")
    write_json(out_dir / "results.json", rows)
    total = time.perf_counter() - t0
    write_report(out_dir, rows, figs, args_line, total, evaluator.raw_pixel_baseline())
    print(f"[bench] wrote {out_dir / 'results.json'} and {out_dir / 'report.md'} in {total / 60:.1f} min")
    return {"rows": rows, "figures": figs}


def feature_figure_runs(out: Path, data_root: Optional[str] = None, steps: int = 200, dims=(2, 3), seed: int = 0,
                        device: str = "auto") -> Dict[str, str]:
    """The papers' MNIST figures on Fashion-MNIST: LeNet++ with 2-D (and 3-D) features for a few heads.

    Trains each head of ``FIGURE_RUNS_2D`` (``FIGURE_RUNS_3D``) for ``steps`` steps on classes 0-5,
    embeds the test images of those classes, and draws the feature scatter grids into
    ``out/figures/``. Returns ``{figure name: png path}``. Raises ``FileNotFoundError`` when
    Fashion-MNIST is not found."""
    out = Path(out)
    base = load_config(None)
    base["model"] = {"name": "lenetpp", "embedding_size": EMBEDDING, "params": {"width": WIDTH}}
    base["train"]["batch_size"] = BATCH
    base["optim"]["lr"] = LR
    budget = dict(BUDGETS["quick"], num_pairs=200, eval_every=0)
    evaluator = FashionEval(data_root, base["data"]["train_classes"], base["data"]["eval_classes"], budget["num_pairs"],
                            seed, gallery_size=10)
    train_set = build_train_set({**base["data"], "root": data_root or ""})
    figs = {}
    for dim in dims:
        names = FIGURE_RUNS_2D if dim == 2 else FIGURE_RUNS_3D
        feats = {}
        for name in names:
            run = out / "runs" / name / f"d{dim}"
            path = run / "f.npz"
            if not path.is_file():  # finished feature runs are reused
                print(f"[bench] {dim}-D Fashion-MNIST feature run: {name}, {steps} steps")
                cfg = run_config(name, base, budget, run, data_root, dim, steps, seed, device)
                cfg["train"]["eval_every"] = 0
                cfg["train"]["progress"] = False
                train_one(name, cfg, train_set, evaluator, run, features_file="f.npz")
            d = np.load(path)
            feats[name] = (d["embeddings"], d["labels"])
        key = f"features_{dim}d"
        fig = out / "figures" / f"{key}.png"
        if dim == 2:
            F.plot_feature_grid(feats, fig, title="2-D features of Fashion-MNIST test images (LeNet++)")
        else:
            F.plot_sphere_grid(feats, fig, title="3-D features on the unit sphere (LeNet++)")
        figs[key] = str(fig)
    return figs
