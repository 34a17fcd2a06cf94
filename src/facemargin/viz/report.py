"""All figures of a bench run, from the files the trainer leaves behind.

Layout read (one folder per loss under ``runs/``)::

    bench_dir/runs/<loss>/metrics.jsonl    one JSON object a line: step, loss, train_acc
                                           (+ lambda; + easy, semihard, hard for ATL/semi-hard runs);
                                           lines without "loss" (e.g. {"event": "eval", ...}) are skipped
    bench_dir/runs/<loss>/features.npz     embeddings (N, D), labels (N,), norms (N,), correct (N,) bool
    bench_dir/runs/<loss>/scores.npz       scores (P,), issame (P,)   (open-set verification pairs)
    bench_dir/runs/<loss>/features2d.npz   optional: embeddings (N, 2), labels (from a 2-D model)
    bench_dir/runs/<loss>/features3d.npz   optional: embeddings (N, 3), labels (from a 3-D model)

Figures are written to ``bench_dir/figures/*.png``. A missing or unreadable file of one loss is
skipped with a warning; the other figures are still drawn.

Only this layout is read here. A folder laid out otherwise (the glyph-set main job keeps one
folder per seed and a summary in its ``results.json``) is drawn by the code that wrote it, which
hands the figure functions its numbers.
"""
from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

from . import figures as F

PathLike = Union[str, os.PathLike]

#: file names inside ``runs/<loss>/``
METRICS, FEATURES, SCORES, FEATURES_2D, FEATURES_3D = (
    "metrics.jsonl", "features.npz", "scores.npz", "features2d.npz", "features3d.npz")


class ReportWarning(UserWarning):
    """A run's file was missing or unreadable and its part of a figure was skipped."""


def read_metrics(path: PathLike) -> List[dict]:
    """The training records of a ``metrics.jsonl``: lines that hold a ``loss`` (blank lines and
    event lines without ``loss`` are skipped). A line that is not JSON raises ValueError naming
    the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    records = []
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not a JSON object ({e.msg})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            if rec.get("loss") is None:
                continue
            records.append(rec)
    return records


def read_npz(path: PathLike, keys) -> Dict[str, np.ndarray]:
    """The arrays ``keys`` of an ``.npz`` (no pickled objects); ValueError naming the file and the
    missing key when one is absent, FileNotFoundError when the file is."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("a single array, not an archive of named arrays")
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise ValueError(f"{path}: missing array(s) {', '.join(missing)} (has {', '.join(z.files) or 'none'})")
            try:
                return {k: z[k] for k in keys}
            except ValueError as e:  # object arrays need pickle: refused
                raise ValueError(f"{path}: {e}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None
    except ValueError as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None


def _runs(bench_dir: Path) -> List[str]:
    runs = bench_dir / "runs"
    if not runs.is_dir():
        raise FileNotFoundError(f"no runs/ folder in {bench_dir} (expected {runs}/<loss>/metrics.jsonl, ...)")
    order = _result_order(bench_dir)
    names = sorted(p.name for p in runs.iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


def _result_order(bench_dir: Path) -> Dict[str, int]:
    # keep the order of results.json when there is one (the bench sorts it by accuracy)
    try:
        rows = json.loads((bench_dir / "results.json").read_text(encoding="utf-8"))
        return {str(r["loss"]): i for i, r in enumerate(rows)}
    except Exception:
        return {}


def _collect(bench_dir: Path, names: List[str], filename: str, reader, quiet_missing: bool = False) -> Dict[str, object]:
    out = {}
    for name in names:
        path = bench_dir / "runs" / name / filename
        try:
            out[name] = reader(path)
        except FileNotFoundError:
            if not quiet_missing:
                warnings.warn(f"{name}: {path} is missing; skipped in the figures", ReportWarning, stacklevel=3)
        except ValueError as e:
            warnings.warn(f"{name}: skipped ({e})", ReportWarning, stacklevel=3)
    return out


def _features_reader(path):
    d = read_npz(path, ("embeddings", "labels", "norms", "correct"))
    e = d["embeddings"]
    if e.ndim != 2 or e.shape[0] != d["labels"].reshape(-1).shape[0]:
        raise ValueError(f"{path}: embeddings {e.shape} and labels {d['labels'].shape} do not match")
    return d


def _low_dim_reader(dim):
    def read(path):
        d = read_npz(path, ("embeddings", "labels"))
        if d["embeddings"].ndim != 2 or d["embeddings"].shape[1] != dim:
            raise ValueError(f"{path}: embeddings must have shape (N, {dim}), got {d['embeddings'].shape}")
        return d
    return read


def report_angle_stats(bench_dir: PathLike, max_points: int = 2000, seed: int = 0) -> Dict[str, Dict[str, float]]:
    """:func:`facemargin.viz.angle_stats` of every run's ``features.npz``: ``{loss: stats}``."""
    bench_dir = Path(bench_dir)
    feats = _collect(bench_dir, _runs(bench_dir), FEATURES, _features_reader)
    out = {}
    for name, d in feats.items():
        try:
            out[name] = F.angle_stats(d["embeddings"], d["labels"], max_points, seed)
        except ValueError as e:
            warnings.warn(f"{name}: no angle statistics ({e})", ReportWarning, stacklevel=2)
    return out


def report_figures(bench_dir: PathLike, out_dir: Optional[PathLike] = None) -> Dict[str, str]:
    """Draw every figure of a bench folder in the layout above; returns ``{figure name: png path
    relative to bench_dir}``.

    The folder (a Fashion-MNIST bench run, or any run that leaves these files) gets:

    ``training`` (loss/accuracy/λ curves),
    ``roc`` (all losses), ``features_2d`` / ``features_3d`` (from ``features2d.npz`` /
    ``features3d.npz``, or ``features.npz`` when its embeddings are 2-/3-D), ``angles`` (intra- vs
    inter-class angle histograms), ``norms`` (norm vs closed-set correctness), ``sample_shares``
    (easy/semi-hard/hard shares of the runs that log them) and ``decision_boundaries`` (always).

    Args:
        bench_dir: the bench output folder (must contain ``runs/``).
        out_dir: where the PNGs go; default ``bench_dir/figures``.
    """
    bench_dir = Path(bench_dir)
    if not bench_dir.is_dir():
        raise FileNotFoundError(f"bench directory not found: {bench_dir}")
    names = _runs(bench_dir)
    out_dir = Path(out_dir) if out_dir is not None else bench_dir / "figures"
    colors = F.series_colors(names)
    written: Dict[str, Path] = {}

    def draw(key: str, fn, *args, **kw):
        path = out_dir / f"{key}.png"
        try:
            written[key] = fn(*args, path, **kw)
        except ValueError as e:  # e.g. a run whose data cannot make this figure
            warnings.warn(f"figure {key} not drawn: {e}", ReportWarning, stacklevel=3)

    if not names:
        warnings.warn(f"{bench_dir / 'runs'} holds no run folder", ReportWarning, stacklevel=2)

    metrics = _collect(bench_dir, names, METRICS, read_metrics)
    for n in [n for n, r in metrics.items() if not r]:
        warnings.warn(f"{n}: {bench_dir / 'runs' / n / METRICS} has no training record", ReportWarning, stacklevel=2)
        del metrics[n]
    if metrics:
        draw("training", F.plot_training_curves, metrics, colors=colors, title="training curves")
        shares = {n: r for n, r in metrics.items() if any(all(k in x for k in ("easy", "semihard", "hard")) for x in r)}
        if shares:
            draw("sample_shares", F.plot_sample_shares, shares,
                 title="easy / semi-hard / hard samples over training")

    scores = _collect(bench_dir, names, SCORES, lambda p: read_npz(p, ("scores", "issame")))
    curves = {}
    for n, d in scores.items():
        try:
            fpr, tpr, _ = F.roc_curve(d["scores"], d["issame"])
            curves[n] = (fpr, tpr)
        except ValueError as e:
            warnings.warn(f"{n}: no ROC ({bench_dir / 'runs' / n / SCORES}: {e})", ReportWarning, stacklevel=2)
    if curves:
        draw("roc", F.plot_roc, curves, colors=colors)

    feats = _collect(bench_dir, names, FEATURES, _features_reader)
    if feats:
        draw("angles", F.plot_angle_grid, {n: (d["embeddings"], d["labels"]) for n, d in feats.items()},
             title="angles between test embeddings: intra- vs inter-class")
        draw("norms", F.plot_norm_grid, {n: (d["norms"], d["correct"]) for n, d in feats.items()},
             title="feature norm of correctly vs wrongly classified test samples")

    for dim, fname, key, fn in ((2, FEATURES_2D, "features_2d", F.plot_feature_grid),
                                (3, FEATURES_3D, "features_3d", F.plot_sphere_grid)):
        low = _collect(bench_dir, names, fname, _low_dim_reader(dim), quiet_missing=True)
        for n, d in feats.items():  # a run trained with a 2-/3-D embedding serves directly
            if n not in low and d["embeddings"].shape[1] == dim:
                low[n] = d
        if low:
            title = "2-D features" if dim == 2 else "3-D features on the unit sphere"
            draw(key, fn, {n: (d["embeddings"], d["labels"]) for n, d in low.items()}, title=title)

    draw("decision_boundaries", lambda p: F.plot_decision_boundaries(p))
    return {k: os.path.relpath(p, bench_dir) for k, p in written.items()}
