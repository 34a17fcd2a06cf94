"""The main job's quality questions, asked of every finished run.

Each unseen test image of the glyph set was degraded by a known draw, so its quality is known
(:func:`facemargin.eval.quality.image_quality`, the effective resolution). For every (head, seed)
run this module reads:

* TAR at FAR ``far`` (1e-3 on the main job's set) per quality stratum: all-vs-all pairs in three
  strata of about equal size by the quality of the pair's lower-quality image, at the threshold
  of the whole set;
* the error-versus-reject curve: FNMR at FMR ``far`` (threshold fixed on the full set) as the
  lowest-ranked share of images is rejected, ranking by the run's own feature norm, by softmax's
  feature norm (same seed), by the known quality (the best a quality score could do) and at random.

A run keeps its final unseen embeddings (``unseen_embeddings.npy``); a run finished before they
were kept is embedded again from its checkpoint. Each run's analysis is cached in its
``quality.json``, so a re-run of the bench only analyses new runs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..eval.quality import error_vs_reject, image_quality, random_scores, stratified_tar
from ..io import atomic_open, write_json
from ..models.checkpoint import load_backbone

EMBEDDINGS = "unseen_embeddings.npy"
VERSION = 1


def save_embeddings(run_dir: Path, emb: np.ndarray) -> None:
    """Keep a run's final embeddings of the unseen images (float32)."""
    with atomic_open(Path(run_dir) / EMBEDDINGS, "wb") as f:
        np.save(f, np.asarray(emb, dtype=np.float32))


def _final_checkpoint(run_dir: Path) -> Path:
    for p in (run_dir / "checkpoint.pt", run_dir / "stage2" / "checkpoint.pt"):
        if p.is_file():
            return p
    raise FileNotFoundError(f"{run_dir}: no {EMBEDDINGS} and no checkpoint to embed the unseen images with")


def run_embeddings(run_dir: Path, evaluator) -> np.ndarray:
    """The run's final embeddings of the unseen images, kept or computed again from its checkpoint."""
    path = Path(run_dir) / EMBEDDINGS
    if path.is_file():
        emb = np.load(path)
        if emb.shape[0] == len(evaluator.labels):
            return emb
    model, _ = load_backbone(_final_checkpoint(Path(run_dir)))
    emb = evaluator.embed(model, evaluator.images)
    save_embeddings(run_dir, emb)
    return emb


def _jsonable(x):
    if isinstance(x, dict):
        return {(f"{k:g}" if isinstance(k, float) else str(k)): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if np.isnan(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    return x


def analyse_run(run_dir: Path, evaluator, quality: np.ndarray, softmax_norms: Optional[np.ndarray],
                seed: int, far: float) -> Dict:
    """The strata and the error-versus-reject curves of one run (cached in ``quality.json``)."""
    cache = Path(run_dir) / "quality.json"
    if cache.is_file():
        got = json.loads(cache.read_text(encoding="utf-8"))
        if (got.get("version") == VERSION and got.get("with_softmax") == (softmax_norms is not None)
                and got.get("far") == far):
            return got
    emb = run_embeddings(run_dir, evaluator)
    norms = np.linalg.norm(emb, axis=1)
    rankings = {"own norm": norms, "known quality": quality, "random": random_scores(len(norms), seed)}
    if softmax_norms is not None:
        rankings["softmax norm"] = softmax_norms
    out = {"version": VERSION, "with_softmax": softmax_norms is not None, "far": far,
           "strata": _jsonable(stratified_tar(emb, evaluator.labels, quality, fars=(far,), bins=3)),
           "erc": _jsonable(error_vs_reject(emb, evaluator.labels, rankings, fmr=far))}
    write_json(cache, out)
    return out


def analyse(out_dir: Path, jobs: List[Tuple[str, int]], evaluator, size: int, far: float = 1e-3) -> Dict[str, Dict[str, Dict]]:
    """``{head: {seed: analysis}}`` of every finished run of ``jobs`` under ``out_dir/runs``, read at
    FAR (and FMR) ``far``: the set needs at least ``1/far`` impostor pairs."""
    quality = image_quality(evaluator.quality, size=size)
    result: Dict[str, Dict[str, Dict]] = {}
    softmax: Dict[int, np.ndarray] = {}
    for head, seed in sorted(jobs, key=lambda j: j[0] != "softmax"):  # softmax first: its norms rank the others
        run_dir = Path(out_dir) / "runs" / head / f"seed{seed}"
        if not (run_dir / "result.json").is_file():
            continue
        try:
            if head == "softmax":
                softmax[seed] = np.linalg.norm(run_embeddings(run_dir, evaluator), axis=1)
            result.setdefault(head, {})[str(seed)] = analyse_run(run_dir, evaluator, quality, softmax.get(seed), seed, far)
        except FileNotFoundError as e:  # a run reused from another machine's results has neither
            print(f"[bench] {head} seed {seed} is not read by quality: {e}")
    return result
