#!/usr/bin/env python
"""Gather the evidence for diagnosing bench heads that end at or below softmax, as Markdown.

``facemargin bench`` leaves a ``results.json`` (one row per head and seed) and, per run, a folder
``OUT/runs/<head>/seed<k>/`` with the training log ``metrics.jsonl``, the last ``checkpoint.pt``,
``run_config.json``, ``unseen_norms.npz`` and ``result.json``. This script only reads them (no
training, checkpoints loaded with ``weights_only=True``) and writes, per head:

1. a table per seed: TAR at FAR 1e-3 and 1e-4, EER, and the distance to softmax's mean TAR at
   ``--far``;
2. the convergence where a run folder has ``metrics.jsonl``: TAR@1e-3/TAR@1e-4 at every eval step,
   the peak against the final value, and the training loss and accuracy at ``--steps``;
3. the head's own state from the last checkpoint: every scalar buffer or parameter (with its value
   when the head is freshly built, to see whether it moved), the class-row norms, per-class biases,
   the loss hyper-parameters, and for the ElasticFace heads the distribution of the margins the
   head draws in a training-mode call;
4. the mean feature norm of the unseen images per quality stratum (``unseen_norms.npz``).

Rows of the same (head, seed) in several sources: the first wins, the ``--results`` files in the
order given, then the ``result.json`` of each run folder under ``--runs`` (so runs that finished
after the last ``results.json`` was written still count). Heads by default: those whose mean TAR
at ``--far`` is at or below softmax's mean plus its sample standard deviation, and those with a
seed whose TAR at ``--far`` is below ``--chance`` (0.05, near chance).

    python benchmarks/bench_evidence.py --results OUT/results.json --runs OUT --out evidence.md
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

#: heads whose margin is drawn at random at every training-mode call
RANDOM_MARGIN_HEADS = ("elasticarcface", "elasticcosface")
#: training-row keys not repeated in the "other logged values"
PLAIN_TRAIN_KEYS = {"step", "loss", "lr", "img_per_s", "train_acc", "easy", "semihard", "hard"}
SEED_DIR = re.compile(r"^seed(\d+)$")


class EvidenceError(ValueError):
    """A problem with an input the script cannot work around (named in the message)."""


# ------------------------------------------------------------------ small helpers


def fmt(x, digits: int = 4) -> str:
    """A number for the tables (``n/a`` for None or NaN)."""
    if x is None:
        return "n/a"
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(x):
        return "n/a"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 10 ** -digits):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}f}"


def signed(x, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:+.{digits}f}"


def far_label(far: float) -> str:
    return f"{far:g}"


def tar_at(table: Optional[Dict], far: float) -> Optional[float]:
    """The value of ``table`` (keys like ``"0.0001"`` or ``"tar@1e-05"``) at ``far``, or None."""
    if not isinstance(table, dict):
        return None
    for key, value in table.items():
        text = str(key).split("@", 1)[-1]
        try:
            k = float(text)
        except ValueError:
            continue
        if math.isclose(k, far, rel_tol=1e-9) and value is not None:
            return float(value)
    return None


def eval_tar(event: Dict, far: float) -> Optional[float]:
    """TAR at ``far`` of one eval event of ``metrics.jsonl`` (keys ``tar@<far>``)."""
    return tar_at({k: v for k, v in event.items() if str(k).startswith("tar@")}, far)


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for one value), as the bench reports them."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else 0.0)


def read_json(path: Path, what: str):
    if not path.is_file():
        raise EvidenceError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EvidenceError(f"{path}: {what} is not readable JSON ({e})") from None


# ------------------------------------------------------------------ rows


class Rows:
    """Every (head, seed) row, first source wins, with the order in which heads were met."""

    def __init__(self):
        self.rows: Dict[Tuple[str, int], Dict] = {}
        self.source: Dict[Tuple[str, int], str] = {}
        self.heads: List[str] = []
        self.counts: Dict[str, Tuple[int, int]] = {}  # source -> (rows read, rows used)
        self.sets: Dict[str, str] = {}  # results file -> the identity set it was run on

    def _meet(self, head: str) -> None:
        if head not in self.heads:
            self.heads.append(head)

    def add(self, row: Dict, source: str) -> bool:
        head, seed = row.get("head"), row.get("seed")
        if not isinstance(head, str) or isinstance(seed, bool) or not isinstance(seed, int):
            return False
        self._meet(head)
        key = (head, seed)
        if key in self.rows:
            return False
        self.rows[key] = row
        self.source[key] = source
        return True

    def add_results_file(self, path: Path) -> None:
        data = read_json(path, "results file")
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
            raise EvidenceError(f"{path}: not a bench results file (no 'rows' list)")
        for head in data.get("heads") or []:
            if isinstance(head, str):
                self._meet(head)
        used = sum(self.add(row, str(path)) for row in data["rows"] if isinstance(row, dict))
        self.counts[str(path)] = (len(data["rows"]), used)
        if isinstance(data.get("set"), str):
            self.sets[str(path)] = data["set"]

    def add_run_folders(self, out: Path) -> None:
        read = used = 0
        for result in sorted((out / "runs").rglob("result.json")):
            seed_dir = result.parent
            if not SEED_DIR.match(seed_dir.name):
                continue
            try:
                row = json.loads(result.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue  # a run being written; its folder is still described below
            if not isinstance(row, dict):
                continue
            read += 1
            used += self.add(row, str(result))
        self.counts[f"{out}/runs/*/seed*/result.json"] = (read, used)

    def seeds(self, head: str) -> List[int]:
        return sorted(s for h, s in self.rows if h == head)

    def tars(self, head: str, far: float) -> Dict[int, float]:
        out = {}
        for seed in self.seeds(head):
            v = tar_at(self.rows[(head, seed)].get("tar_at_far"), far)
            if v is not None:
                out[seed] = v
        return out


def softmax_reference(rows: Rows, far: float) -> Optional[Tuple[float, float, int]]:
    tars = rows.tars("softmax", far)
    if not tars:
        return None
    mean, std = mean_std(list(tars.values()))
    return mean, std, len(tars)


def select_heads(rows: Rows, far: float, chance: float) -> List[Tuple[str, str]]:
    """``(head, reason)`` for every head at or below softmax's mean + std, or with a seed below
    ``chance``; softmax itself is the reference and is not selected."""
    ref = softmax_reference(rows, far)
    chosen = []
    for head in rows.heads:
        if head == "softmax":
            continue
        tars = rows.tars(head, far)
        if not tars:
            continue
        mean, _ = mean_std(list(tars.values()))
        reasons = []
        if ref is not None and mean <= ref[0] + ref[1]:
            reasons.append(f"mean {fmt(mean)} <= softmax mean + std {fmt(ref[0] + ref[1])}")
        low = [s for s, v in tars.items() if v < chance]
        if low:
            reasons.append("near chance (TAR < " + f"{chance:g}) at seed " + ", ".join(str(s) for s in low))
        if reasons:
            chosen.append((head, "; ".join(reasons)))
    return chosen


# ------------------------------------------------------------------ run folders


def run_dirs(runs: Sequence[Path], head: str) -> Dict[int, Path]:
    """``{seed: folder}`` of ``head`` over the ``--runs`` folders; for a seed present in several,
    the first folder holding more than a bare ``result.json`` wins, else the first."""
    found: Dict[int, Path] = {}
    for out in runs:
        base = out / "runs" / head
        if not base.is_dir():
            continue
        for d in sorted(base.iterdir()):
            m = SEED_DIR.match(d.name)
            if not m or not d.is_dir():
                continue
            seed = int(m.group(1))
            rich = any((d / f).is_file() for f in ("metrics.jsonl", "checkpoint.pt"))
            if seed not in found or (rich and not _rich(found[seed])):
                found[seed] = d
    return found


def _rich(d: Path) -> bool:
    return any((d / f).is_file() for f in ("metrics.jsonl", "checkpoint.pt"))


def read_metrics(path: Path) -> Tuple[List[Dict], List[Dict]]:
    """Training rows and eval events of a ``metrics.jsonl`` (lines that do not parse are skipped:
    the last one may be half written)."""
    train, evals = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(rec, dict) or "step" not in rec:
                continue
            if rec.get("event") == "eval":
                evals.append(rec)
            elif "event" not in rec:
                train.append(rec)
    train.sort(key=lambda r: r["step"])
    return train, evals


def curve_text(evals: List[Dict], fars: Sequence[float] = (1e-3, 1e-4)) -> str:
    """``"150: 0.410/0.120, 300: ..."``: TAR at each of ``fars`` per eval step."""
    parts = []
    for ev in sorted(evals, key=lambda e: e["step"]):
        vals = [eval_tar(ev, f) for f in fars]
        parts.append(f"{ev['step']}: " + "/".join("n/a" if v is None else f"{v:.3f}" for v in vals))
    return ", ".join(parts)


def nearest(rows: List[Dict], step: int) -> Optional[Dict]:
    return min(rows, key=lambda r: (abs(r["step"] - step), r["step"])) if rows else None


def convergence_lines(seed: int, d: Path, steps: Sequence[int], far: float, final: Optional[float]) -> List[str]:
    train, evals = read_metrics(d / "metrics.jsonl")
    lines = []
    if evals:
        lines.append(f"- seed {seed}, TAR@1e-3/TAR@1e-4 by eval step: {curve_text(evals)}")
        pts = [(ev["step"], eval_tar(ev, far)) for ev in evals if eval_tar(ev, far) is not None]
        if pts:
            best = max(pts, key=lambda p: p[1])
            last = max(pts, key=lambda p: p[0])
            note = f"  - peak TAR@{far_label(far)} {fmt(best[1], 3)} at step {best[0]}, last eval {fmt(last[1], 3)} at step {last[0]}"
            if final is not None and abs(final - last[1]) > 1e-6:
                note += f" (final result {fmt(final, 3)})"
            lines.append(note)
    else:
        lines.append(f"- seed {seed}: metrics.jsonl has no eval events")
    if train:
        parts = []
        for step in steps:
            if step > train[-1]["step"] + (train[-1]["step"] - train[-2]["step"] if len(train) > 1 else 0):
                parts.append(f"step {step}: not reached")
                continue
            r = nearest(train, step)
            at = f"{step}" if r["step"] == step else f"{step} (logged {r['step']})"
            bits = [f"loss {fmt(r.get('loss'), 3)}"]
            if "train_acc" in r:
                bits.append(f"train_acc {fmt(r.get('train_acc'), 3)}")
            extra = {k: v for k, v in r.items() if k not in PLAIN_TRAIN_KEYS and isinstance(v, (int, float))}
            bits += [f"{k} {fmt(v, 3)}" for k, v in extra.items()]
            parts.append(f"step {at}: " + ", ".join(bits))
        lines.append(f"  - training ({len(train)} rows, last step {train[-1]['step']}): " + "; ".join(parts))
    else:
        lines.append(f"  - seed {seed}: metrics.jsonl has no training rows")
    return lines


# ------------------------------------------------------------------ checkpoints


def _tensor_stats(v) -> str:
    v = v.detach().double().reshape(-1)
    std = v.std().item() if v.numel() > 1 else 0.0
    return f"{fmt(v.mean().item())} ± {fmt(std)} [min {fmt(v.min().item())}, max {fmt(v.max().item())}]"


def fresh_head(loss_table: Dict, embedding_size: int, num_classes: int):
    """The head as the trainer builds it before training (its initial scalars), or an error text."""
    try:
        from facemargin import losses

        return losses.build_from_config(loss_table, embedding_size, num_classes), None
    except Exception as e:  # noqa: BLE001 - any failure is reported, never fatal
        return None, f"{type(e).__name__}: {e}"


def draw_margins(head, n: int = 4096, seed: int = 0) -> Dict[str, float]:
    """Margins the head's random margin draws for a batch of ``n`` in a training-mode call.

    Calls ``prepare`` of the head's margin on a :class:`~facemargin.losses.MarginContext` with
    ``training=True`` (unit norms, one class, target cosines spread over ``[-1, 1]`` for the
    rank-matching variant) and reads the per-sample margins it leaves in the context's values.
    The head's generator advances; call it on a copy if that matters.
    """
    import torch

    from facemargin.losses import MarginContext

    gen = torch.Generator().manual_seed(seed)
    cos = torch.rand(n, generator=gen, dtype=torch.float32) * 2 - 1
    ctx = MarginContext(labels=torch.zeros(n, dtype=torch.long), norm=torch.ones(n), cos_target=cos, training=True)
    head.margin.prepare(ctx)
    values = [v for v in ctx.values.values() if torch.is_tensor(v) and v.numel() == n]
    if not values:
        raise ValueError("the margin left no per-sample values")
    m = values[0].detach().double()
    q = torch.quantile(m, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64))
    return {"n": n, "mean": m.mean().item(), "std": m.std().item(), "min": m.min().item(), "max": m.max().item(),
            "p5": q[0].item(), "p50": q[1].item(), "p95": q[2].item(), "negative": (m < 0).double().mean().item()}


def hyper_text(config: Dict) -> str:
    loss = config.get("loss") or {}
    aux = config.get("aux") or {}
    text = f"loss `{loss.get('name', '?')}` params `{json.dumps(loss.get('params', {}), sort_keys=True)}`"
    if aux.get("name"):
        text += f"; aux `{aux['name']}` weight {aux.get('weight')} params `{json.dumps(aux.get('params', {}), sort_keys=True)}`"
    else:
        text += "; no aux loss"
    if config.get("recipe"):
        text += f"; recipe `{config['recipe']}`"
    return text


def checkpoint_lines(seed: int, d: Path, draws: int) -> List[str]:
    import torch

    path = d / "checkpoint.pt"
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a checkpoint being written or of another format
        return [f"- seed {seed}: checkpoint unreadable ({type(e).__name__}: {e})"]
    if not isinstance(ck, dict):
        return [f"- seed {seed}: checkpoint is not a facemargin checkpoint (a {type(ck).__name__})"]
    config = ck.get("config") if isinstance(ck.get("config"), dict) else {}
    if (d / "run_config.json").is_file():
        try:
            config = json.loads((d / "run_config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            pass
    total = (config.get("train") or {}).get("steps")
    step = ck.get("step")
    state = f"step {step}" + (f" of {total}" if total else "")
    if total and step != total:
        state += ", unfinished"
    lines = [f"- seed {seed} (checkpoint at {state}): {hyper_text(config)}"]
    num_classes = ck.get("num_classes")
    emb = (config.get("model") or {}).get("embedding_size")
    head, err = (None, "no loss config") if not config.get("loss") else fresh_head(config["loss"], emb, num_classes)
    init = {} if head is None else {k: v for k, v in head.state_dict().items()}
    for part in ("loss", "aux"):
        sd = ck.get(part)
        if not sd:
            if part == "loss":
                lines.append("  - the loss holds no parameters or buffers")
            continue
        for key, v in sd.items():
            if not torch.is_tensor(v):
                continue
            where = f"{part}.{key}" if part == "aux" else key
            if v.numel() == 1 and v.dtype != torch.uint8:
                text = f"  - `{where}` = {fmt(v.item())}"
                if part == "loss" and key in init and init[key].numel() == 1:
                    start = init[key].item()
                    text += f" (freshly built: {fmt(start)}; moved {signed(v.item() - start)})"
                lines.append(text)
            elif v.dim() == 2 and v.is_floating_point():
                norms = v.double().norm(dim=1)
                per = ""
                if num_classes and v.shape[0] != num_classes and v.shape[0] % num_classes == 0:
                    per = f", {v.shape[0] // num_classes} rows per class"
                text = f"  - `{where}` {tuple(v.shape)}{per}: row norms {_tensor_stats(norms)}"
                big = int((norms > 2 * norms.median()).sum())
                if big:
                    text += f", {big} row(s) above twice the median {fmt(norms.median().item())}"
                if part == "loss" and key in init and tuple(init[key].shape) == tuple(v.shape):
                    start = init[key].double().norm(dim=1)
                    text += f" (freshly built: {fmt(start.mean().item())} ± {fmt(start.std().item())})"
                lines.append(text)
            elif v.dim() == 1 and v.is_floating_point():
                lines.append(f"  - `{where}` {tuple(v.shape)}: {_tensor_stats(v)}")
    if err:
        lines.append(f"  - freshly built head not available ({err})")
    name = ((config.get("loss") or {}).get("name") or "").lower()
    if name in RANDOM_MARGIN_HEADS:
        margin = getattr(head, "margin", None) if head is not None else None
        if margin is None:
            lines.append("  - margin draws: the head could not be built; configured "
                         f"params {json.dumps((config.get('loss') or {}).get('params', {}))}")
        else:
            try:
                head.load_state_dict(ck["loss"])  # continue from the run's saved generator
                loaded = "from the checkpoint's generator"
            except Exception:  # noqa: BLE001
                loaded = "from a fresh generator"
            try:
                d1 = draw_margins(head, draws)
                d2 = draw_margins(head, draws)
                lines.append(f"  - margins drawn in a training-mode call ({loaded}, configured m={margin.m}, "
                             f"std={margin.std}, plus={margin.plus}): n={d1['n']} mean {fmt(d1['mean'])} std {fmt(d1['std'])} "
                             f"[min {fmt(d1['min'])}, p5 {fmt(d1['p5'])}, median {fmt(d1['p50'])}, p95 {fmt(d1['p95'])}, "
                             f"max {fmt(d1['max'])}], negative {fmt(100 * d1['negative'], 2)}%; a second call "
                             f"{'draws anew' if d2['mean'] != d1['mean'] else 'repeats the same margins'} (mean {fmt(d2['mean'])})")
            except Exception as e:  # noqa: BLE001
                lines.append(f"  - margin draws failed ({type(e).__name__}: {e}); configured m={getattr(margin, 'm', '?')}, "
                             f"std={getattr(margin, 'std', '?')}")
    return lines


# ------------------------------------------------------------------ feature norms


def norm_lines(seed: int, d: Path, image_size: Optional[float]) -> List[str]:
    z = np.load(d / "unseen_norms.npz", allow_pickle=False)
    if "norms" not in z.files:
        return [f"- seed {seed}: unseen_norms.npz has no 'norms' array (has {', '.join(z.files)})"]
    norms = np.asarray(z["norms"], dtype=np.float64)
    degradation = {k: z[k] for k in ("resolution", "blur", "noise") if k in z.files}
    if "resolution" not in degradation:
        return [f"- seed {seed}: mean norm {fmt(norms.mean(), 3)} ± {fmt(norms.std(), 3)} over {norms.size} images (no quality arrays)"]
    from facemargin.eval.quality import image_quality, quality_cuts

    size = float(image_size or np.max(degradation["resolution"]))
    method = "effective" if "blur" in degradation else "resolution"
    q = image_quality(degradation, size=size, method=method)
    cuts = quality_cuts(q, 3)
    stratum = np.searchsorted(cuts, q, side="left")
    parts = []
    for b in range(len(cuts) + 1):
        sel = stratum == b
        if b == 0:
            label = f"q <= {cuts[0]:.1f}" if len(cuts) else "all"
        elif b == len(cuts):
            label = f"q > {cuts[-1]:.1f}"
        else:
            label = f"{cuts[b - 1]:.1f} < q <= {cuts[b]:.1f}"
        parts.append(f"{label}: {fmt(norms[sel].mean(), 3)} ± {fmt(norms[sel].std(), 3)} (n={int(sel.sum())})")
    rho = _spearman(norms, q)
    low = norms[stratum == 0].mean()
    high = norms[stratum == len(cuts)].mean()
    return [f"- seed {seed} ({method} resolution in px, strata of equal pair counts): " + "; ".join(parts)
            + f"; high/low ratio {fmt(high / low, 3)}; rank correlation norm–quality {fmt(rho, 3)}"]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(np.float64)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(np.float64)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


# ------------------------------------------------------------------ the report


def head_section(head: str, reason: str, rows: Rows, runs: Sequence[Path], ref, far: float,
                 steps: Sequence[int], draws: int) -> List[str]:
    out = [f"## {head}", ""]
    if reason:
        out += [f"Selected: {reason}.", ""]
    seeds = rows.seeds(head)
    folders = run_dirs(runs, head)
    configs = {json.dumps(rows.rows[(head, s)].get("config"), sort_keys=True) for s in seeds if rows.rows[(head, s)].get("config")}
    if len(configs) == 1:
        out += [f"Configuration: {hyper_text(json.loads(next(iter(configs))))}.", ""]
    elif configs:
        out += ["Configuration differs between seeds: " + "; ".join(
            f"seed {s}: {hyper_text(rows.rows[(head, s)].get('config') or {})}" for s in seeds) + ".", ""]

    # 1. results
    lf = far_label(far)
    out += [f"| seed | TAR@1e-3 | TAR@1e-4 | EER | TAR@{lf} − softmax mean | source |", "|---|---|---|---|---|---|"]
    for s in seeds:
        r = rows.rows[(head, s)]
        t = r.get("tar_at_far")
        v = tar_at(t, far)
        delta = None if (v is None or ref is None) else v - ref[0]
        src = rows.source[(head, s)]
        if r.get("reused_from"):
            src += f" (reused from {r['reused_from']})"
        out.append(f"| {s} | {fmt(tar_at(t, 1e-3))} | {fmt(tar_at(t, 1e-4))} | {fmt(r.get('eer'))} | {signed(delta)} | {src} |")
    tars = rows.tars(head, far)
    if tars:
        mean, std = mean_std(list(tars.values()))
        delta = "n/a" if ref is None else signed(mean - ref[0])
        out.append(f"| mean ± std | | | | {delta} (TAR@{lf} {fmt(mean)} ± {fmt(std)}) | {len(tars)} seed(s) |")
    if not seeds:
        out.append("| – | | | | | no result row in any source |")
    unfinished = sorted(s for s in folders if s not in seeds)
    for s in unfinished:
        out.append(f"| {s} | | | | | run folder {folders[s]} has no result yet |")
    out.append("")

    # 2. convergence, 3. head state, 4. norms
    conv, stats, norms, missing = [], [], [], []
    for s in sorted(set(seeds) | set(folders)):
        d = folders.get(s)
        row = rows.rows.get((head, s))
        reused_from = (row or {}).get("reused_from") or _reused_from(d)
        reused = f"; reused from {reused_from}" if reused_from else ""
        if d is None:
            where = f"no run folder under {', '.join(str(o) for o in runs)}" if runs else "no --runs folder given"
            missing.append(f"- seed {s}: no curve, no checkpoint, no unseen norms ({where}{reused})")
            continue
        if not any((d / f).is_file() for f in ("metrics.jsonl", "checkpoint.pt", "unseen_norms.npz")):
            what = "a reused run" if reused_from else "a run"
            missing.append(f"- seed {s}: no curve, no checkpoint, no unseen norms ({what}: only result.json in {d}{reused})")
            continue
        final = tar_at(row.get("tar_at_far"), far) if row else None
        own = _own_tar(d, far)
        if own is not None and final is not None and not reused_from and abs(own - final) > 1e-9:
            conv.append(f"- seed {s}: the run in {d} ended at TAR@{far_label(far)} {fmt(own)}, not the table's "
                        f"{fmt(final)} (from {rows.source[(head, s)]}): its curve and checkpoint are of another run")
        if (d / "metrics.jsonl").is_file():
            try:
                conv += convergence_lines(s, d, steps, far, final)
            except OSError as e:
                conv.append(f"- seed {s}: metrics.jsonl unreadable ({e})")
        else:
            conv.append(f"- seed {s}: no curve (no metrics.jsonl in {d}{reused})")
        if (d / "checkpoint.pt").is_file():
            stats += checkpoint_lines(s, d, draws)
        else:
            stats.append(f"- seed {s}: no checkpoint (none in {d}{reused})")
        if (d / "unseen_norms.npz").is_file():
            size = None
            try:
                cfg = json.loads((d / "run_config.json").read_text(encoding="utf-8"))
                size = ((cfg.get("model") or {}).get("params") or {}).get("image_size")
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                pass
            try:
                norms += norm_lines(s, d, size)
            except Exception as e:  # noqa: BLE001
                norms.append(f"- seed {s}: unseen_norms.npz unreadable ({type(e).__name__}: {e})")
        else:
            norms.append(f"- seed {s}: no unseen_norms.npz (none in {d}{reused})")
    if missing:
        out += ["### Not available here", "", *missing, ""]
    out += ["### Convergence", "", *(conv or ["- no seed has a training log here"]), "",
            "### Head state (last checkpoint)", "", *(stats or ["- no seed has a checkpoint here"]), "",
            "### Feature norms of the unseen images by quality", "", *(norms or ["- no seed has unseen_norms.npz here"]), ""]
    return out


def _own_tar(d: Path, far: float) -> Optional[float]:
    """TAR at ``far`` of a run folder's own ``result.json``, if any."""
    try:
        got = json.loads((d / "result.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return tar_at(got.get("tar_at_far"), far) if isinstance(got, dict) else None


def _reused_from(d: Optional[Path]) -> Optional[str]:
    """``reused_from`` of a run folder's own ``result.json``, if any."""
    if d is None or not (d / "result.json").is_file():
        return None
    try:
        got = json.loads((d / "result.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return got.get("reused_from") if isinstance(got, dict) else None


def build_report(results: Sequence[Path], runs: Sequence[Path], heads: Optional[Sequence[str]] = None,
                 also: Sequence[str] = (), far: float = 1e-4, chance: float = 0.05, steps: Sequence[int] = (150, 750, 1500),
                 draws: int = 4096, command: str = "") -> str:
    """The Markdown report (see the module docstring). Raises :class:`EvidenceError` for a results
    file or runs folder that is missing or unreadable."""
    rows = Rows()
    for path in results:
        rows.add_results_file(Path(path))
    for out in runs:
        if not Path(out).is_dir():
            raise EvidenceError(f"{out}: runs folder not found")
    for out in runs:
        rows.add_run_folders(Path(out))
    runs = [Path(o) for o in runs]
    ref = softmax_reference(rows, far)
    lf = far_label(far)
    if heads:
        selected = [(h, "") for h in heads]
        how = "the heads named on the command line"
    else:
        selected = select_heads(rows, far, chance)
        how = (f"every head whose mean TAR@{lf} is at or below softmax's mean + std, or with a seed below "
               f"{chance:g} (near chance)")
    extra = [h for h in also if h not in {name for name, _ in selected}]
    if extra:
        selected += [(h, "named with --also") for h in extra]
        how += "; and " + ", ".join(extra) + " (named with --also)"
    lines = ["# Evidence on the bench heads at or below softmax", ""]
    if command:
        lines += [f"Generated by `{command}`; it only reads the results and run folders.", ""]
    lines += ["Sources, first wins for a (head, seed):", ""]
    lines += [f"- {src}: {used} of {read} rows used" + (f" (set {rows.sets[src]})" if src in rows.sets else "")
              for src, (read, used) in rows.counts.items()]
    lines.append("")
    if ref is None:
        lines += [f"No softmax rows: the TAR@{lf} differences are n/a and only near-chance heads are selected.", ""]
    else:
        sm = rows.tars("softmax", far)
        lines += [f"Softmax reference at FAR {lf}: mean {fmt(ref[0])} ± {fmt(ref[1])} (sample std, seeds "
                  f"{', '.join(str(s) for s in sm)}: {', '.join(fmt(v) for v in sm.values())}); "
                  f"threshold mean + std = {fmt(ref[0] + ref[1])}.", ""]
    lines += [f"Heads: {how}.", ""]
    if selected:
        lines += [f"| head | seeds | TAR@{lf} mean ± std | − softmax mean | why |", "|---|---|---|---|---|"]
        for h, reason in selected:
            t = rows.tars(h, far)
            if t:
                mean, std = mean_std(list(t.values()))
                d = "n/a" if ref is None else signed(mean - ref[0])
                lines.append(f"| {h} | {', '.join(str(s) for s in t)} | {fmt(mean)} ± {fmt(std)} | {d} | {reason or 'named'} |")
            else:
                lines.append(f"| {h} | – | n/a | n/a | no result row |")
        lines.append("")
    else:
        lines += ["No head qualifies.", ""]
    for h, reason in selected:
        lines += head_section(h, reason, rows, runs, ref, far, steps, draws)
    return "\n".join(lines).rstrip() + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def parse_args(argv: Optional[Iterable[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Gather, as Markdown, the evidence for diagnosing bench heads that end at or below "
                    "softmax: per-seed results, convergence curves, the head's state in its last "
                    "checkpoint and the feature norms of the unseen images by quality. Reads only.",
        epilog="Example: python benchmarks/bench_evidence.py --results OUT/results.json --runs OUT --out evidence.md")
    p.add_argument("--results", action="append", type=Path, default=[], metavar="FILE",
                   help="a bench results.json (repeatable; for a (head, seed) in several, the first wins)")
    p.add_argument("--runs", action="append", type=Path, default=[], metavar="DIR",
                   help="a bench output folder holding runs/<head>/seed<k>/ (repeatable); its runs' "
                        "result.json count as rows after every --results file")
    p.add_argument("--heads", nargs="+", default=None, metavar="HEAD",
                   help="the heads to describe (default: those at or below softmax's mean + std at --far, "
                        "or with a seed below --chance)")
    p.add_argument("--also", nargs="+", default=[], metavar="HEAD",
                   help="heads to describe as well as the selected ones (e.g. a head just above the threshold)")
    p.add_argument("--far", type=float, default=1e-4, help="the FAR of the selection and the differences (default 1e-4)")
    p.add_argument("--chance", type=float, default=0.05,
                   help="a head with a seed whose TAR at --far is below this is selected too (default 0.05)")
    p.add_argument("--steps", type=int, nargs="+", default=[150, 750, 1500],
                   help="training steps at which loss and train_acc are shown (nearest logged; default 150 750 1500)")
    p.add_argument("--draws", type=int, default=4096, help="batch size of the random-margin draw (default 4096)")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown here (atomically) instead of stdout")
    args = p.parse_args(None if argv is None else list(argv))
    if not args.results and not args.runs:
        p.error("give at least one --results file or --runs folder")
    if not 0 < args.far <= 1:
        p.error("--far must be in (0, 1]")
    if args.draws < 2:
        p.error("--draws must be at least 2")
    return args


def main(argv: Optional[Iterable[str]] = None) -> int:
    args = parse_args(argv)
    argv_list = sys.argv[1:] if argv is None else list(argv)
    command = "python benchmarks/bench_evidence.py " + " ".join(shlex.quote(a) for a in argv_list)
    try:
        text = build_report(args.results, args.runs, heads=args.heads, also=args.also, far=args.far, chance=args.chance,
                            steps=args.steps, draws=args.draws, command=command.strip())
    except EvidenceError as e:
        print(f"bench_evidence: error: {e}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_atomic(args.out, text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
