"""The main job, ``facemargin bench``: every head on the glyph identity set, several seeds, TAR at low FAR.

Protocol (the same for every head):

* data: a glyph set (:mod:`facemargin.data.glyphs`): the training identities' clean renderings in
  ``train.rec``, degraded at random while training; the unseen identities' renderings degraded
  once (fixed by the set's seed);
* backbone ``smallcnn`` (128-D), SGD lr 0.1, momentum 0.9, weight decay 5e-4, ×0.1 at 50% and 75%
  of the steps; the same steps, batch and seeds for every head;
* evaluation on the unseen identities only: all-vs-all TAR@FAR (1e-2 .. 1e-5, and 1e-6 where the
  impostor count allows), EER, leave-one-out rank-1, and LFW-protocol pair accuracy on the
  ``unseen.bin`` pack; the raw pixels are scored the same way as a no-training reference;
* during training, TAR@FAR every ``eval_every`` steps: the convergence curves.

Each (head, seed) run lives in ``OUT/runs/<head>/seed<k>/`` and is finished when its
``result.json`` exists. A run that was interrupted continues from its last checkpoint; finished
runs are skipped, so re-running the same command completes an interrupted bench.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .. import losses
from ..data.glyphs import GlyphSet, build_glyph_set, normalize_grey
from ..eval.allvsall import all_vs_all, pair_counts
from ..eval.embed import embed_images
from ..eval.verification import verify
from ..io import atomic_open, write_json
from ..train.config import ConfigError, checked, load_config
from ..train.loop import Trainer
from .quality import analyse as analyse_quality
from .quality import save_embeddings
from .protocol import (ATL_ABLATION, BUDGETS, CURVE_FAR, DEMO_HEADS, EMBEDDING, EXTRA_HEADS, FARS,  # noqa: F401
                       HEAD_GROUPS, HEADS, LAMBDA_AT, LR, MODEL, NEWER_HEADS, PAPER_EXTRAS, PAPER_SOURCES, PAPER_TAG,
                       QUALITY_AWARE, S, available_heads)


def _defaults(loss: str) -> Dict:
    """The keyword defaults of a registered loss's constructor (empty when it has no signature)."""
    try:
        sig = inspect.signature(losses.LOSSES.get(loss))
    except (TypeError, ValueError):
        return {}
    return {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}


def paper_heads() -> List[str]:
    """The entries of the full list that have a scale ``s`` and train at settings other than their
    loss's constructor defaults (the shared scale, most often), in the full list's order."""
    out = []
    for name in available_heads(True):
        spec = head_spec(name)
        if spec.get("aux") or spec.get("recipe") or spec.get("optim"):
            continue
        params, defaults = spec["loss"].get("params", {}), _defaults(spec["loss"]["name"])
        if "s" in defaults and any(k in defaults and defaults[k] != v for k, v in params.items()):
            out.append(name)
    return out


def paper_entries() -> List[str]:
    """The ``<head>@paper`` entries: each derived head that has a source in ``PAPER_SOURCES``."""
    return [h + PAPER_TAG for h in paper_heads() if h in PAPER_SOURCES]


def head_groups() -> Dict[str, List[str]]:
    """What each group name of ``--heads`` stands for."""
    return {"paper": paper_entries() + list(PAPER_EXTRAS), "atl-ablation": list(ATL_ABLATION)}


def expand_heads(names: Sequence[str]) -> List[str]:
    """``names`` with every group name replaced in place by its entries; repeats dropped."""
    groups = head_groups() if any(n in HEAD_GROUPS for n in names) else {}
    out: List[str] = []
    for n in names:
        for entry in groups.get(n, [n]):
            if entry not in out:
                out.append(entry)
    return out


def head_spec(name: str) -> Dict:
    """The loss spec (and recipe, and optimiser overrides) of a bench entry; a newer head uses its
    defaults, with ``s`` set to the bench's scale when it has one; ``<head>@paper`` is the shared
    entry's loss with the parameters it sets put back to the constructor's defaults."""
    if name in HEADS:
        return copy.deepcopy(HEADS[name])
    if name in EXTRA_HEADS:
        return copy.deepcopy(EXTRA_HEADS[name])
    if name.endswith(PAPER_TAG) and name in paper_entries():
        loss = head_spec(name[:-len(PAPER_TAG)])["loss"]
        defaults = _defaults(loss["name"])
        params = {k: (defaults[k] if k in defaults else v) for k, v in loss.get("params", {}).items()}
        return {"loss": {"name": loss["name"], "params": params}}
    if name not in losses.available():
        known = sorted(set(HEADS) | set(EXTRA_HEADS) | set(paper_entries()) | set(losses.available()))
        raise ValueError(f"unknown bench head {name!r}; available: {', '.join(known)}; "
                         f"groups: {', '.join(HEAD_GROUPS)}")
    params = {"s": S} if "s" in _defaults(name) else {}
    return {"loss": {"name": name, "params": params}}


def lambda_gamma(params: Dict, steps: int) -> Optional[float]:
    """The λ-schedule ``gamma`` that brings λ to ``lambda_min`` at ``LAMBDA_AT`` of ``steps``
    (the default gamma when it already gets there in time); ``None`` for heads without λ."""
    base, power = float(params.get("base", 1000.0)), float(params.get("power", 1.0))
    lam_min, gamma = float(params.get("lambda_min", 5.0)), float(params.get("gamma", 0.12))
    reach = ((base / lam_min) ** (1.0 / power) - 1.0) / gamma  # iteration where λ hits λ_min
    want = LAMBDA_AT * steps
    if reach <= want:
        return gamma
    return ((base / lam_min) ** (1.0 / power) - 1.0) / want


def run_config(name: str, spec: Dict, set_dir: Path, out: Path, steps: int, batch: int, seed: int,
               eval_every: int, device: str, image_size: int = 32) -> Dict:
    """The trainer config of one (head, seed) run."""
    cfg = load_config(None)
    # a glyph set trains from memory, degraded a batch at a time: no DataLoader workers
    cfg["data"].update(name="recordio", root=str(set_dir), degrade=True, workers=0, flip=False)
    cfg["model"] = copy.deepcopy(MODEL)
    cfg["model"]["params"]["image_size"] = int(image_size)
    loss = copy.deepcopy(spec["loss"])
    loss.setdefault("params", {})
    if loss["name"] in ("sphereface", "lsoftmax", "atl"):
        loss["params"]["gamma"] = lambda_gamma(loss["params"], steps)
    cfg["loss"] = loss
    aux = spec.get("aux", {})
    cfg["aux"] = {"name": aux.get("name", ""), "weight": float(aux.get("weight", 0.0)), "params": dict(aux.get("params", {}))}
    cfg["optim"]["lr"] = LR
    # an entry's own optimiser settings (warm-up, clipping) and batch sampling (data.sampler, ...)
    for section, what in (("optim", "optimiser"), ("data", "data")):
        values = spec.get(section) or {}
        unknown = sorted(set(values) - set(cfg[section]))
        if unknown:
            raise ValueError(f"bench entry {name!r}: unknown {what} setting(s) {', '.join(unknown)}")
        for key, value in values.items():
            try:
                cfg[section][key] = checked(f"{section}.{key}", cfg[section][key], copy.deepcopy(value))
            except ConfigError as e:
                raise ValueError(f"bench entry {name!r}: {e}") from None
    cfg["train"].update(steps=int(steps), batch_size=int(batch), seed=int(seed), device=device, out=str(out),
                        eval_every=int(eval_every), checkpoint_every=int(eval_every), log_every=10, progress=False)
    return cfg


class UnseenEval:
    """Embeds the unseen identities and scores them: all-vs-all, the pair pack, norms vs quality."""

    def __init__(self, set_dir: Path, fars: Sequence[float] = FARS):
        gs = GlyphSet(set_dir)
        imgs, self.labels, self.quality = gs.unseen()
        self.images = self._tensor(imgs)
        pimgs, self.issame = gs.pairs()
        self.pair_images = self._tensor(pimgs)
        self.fars = tuple(fars)
        trained = set(gs.manifest["train_identities"])
        if trained & set(gs.manifest["test_identities"]):
            raise RuntimeError(f"{set_dir}: identities {sorted(trained & set(gs.manifest['test_identities']))[:5]} "
                               "are both trained on and held out")

    @staticmethod
    def _tensor(imgs: np.ndarray):
        return normalize_grey(torch.from_numpy(imgs))

    def embed(self, model, images) -> np.ndarray:
        return embed_images(model, images, batch_size=1000)

    def curve_point(self, model) -> Dict:
        """The cheap evaluation run during training: all-vs-all TAR@FAR and rank-1."""
        r = all_vs_all(self.embed(model, self.images), self.labels, fars=self.fars)
        out = {f"tar@{far:g}": v for far, v in r["tar_at_far"].items()}
        out.update(eer=r["eer"], rank1=r["rank1"])
        return out

    def score(self, emb: np.ndarray, pair_emb: np.ndarray) -> Dict:
        r = all_vs_all(emb, self.labels, fars=self.fars)
        v = verify(pair_emb[0::2], pair_emb[1::2], issame=self.issame, folds=10)
        return {
            "tar_at_far": {f"{far:g}": float(t) for far, t in r["tar_at_far"].items()},
            "eer": float(r["eer"]), "auc": float(r["auc"]), "rank1": float(r["rank1"]),
            "pair_accuracy": float(v["accuracy"]), "pair_accuracy_std": float(v["accuracy_std"]),
            "num_genuine": r["num_genuine"], "num_impostor": r["num_impostor"],
            "roc": {"far": [float(x) for x in r["roc"]["far"]], "tar": [float(x) for x in r["roc"]["tar"]]},
        }

    def final(self, model) -> Dict:
        emb = self.embed(model, self.images)
        res = self.score(emb, self.embed(model, self.pair_images))
        res["norms"] = np.linalg.norm(emb, axis=1)
        res["embeddings"] = emb
        return res

    def pixels(self) -> Dict:
        """The no-training reference: centred pixels as embeddings."""
        flat = self.images[:, 0].reshape(self.images.shape[0], -1).numpy()
        pflat = self.pair_images[:, 0].reshape(self.pair_images.shape[0], -1).numpy()
        return self.score(flat, pflat)


def _with_new_defaults(saved: Dict) -> Dict:
    """A run's saved config with the settings added to the trainer since it was written filled
    in at their defaults (which keep the old behaviour), so an interrupted run still continues."""
    defaults = json.loads(json.dumps(load_config(None)))
    out = dict(saved)
    for section, values in defaults.items():
        if isinstance(values, dict) and isinstance(out.get(section), dict):
            out[section] = {**{k: v for k, v in values.items() if k not in out[section]}, **out[section]}
    return out


def _train_stage(cfg: Dict, train_set, evaluate: Optional[Callable], init_from: Optional[Path] = None):
    """Train one stage, resuming from its own checkpoint when an earlier attempt was interrupted."""
    out = Path(cfg["train"]["out"])
    stamp = out / "run_config.json"
    if stamp.is_file():
        before = _with_new_defaults(json.loads(stamp.read_text(encoding="utf-8")))
        if before != json.loads(json.dumps(cfg)):
            raise ValueError(f"{out} holds a run with another configuration (steps, batch, head or data differ); "
                             "continue it with the command that started it, or choose another --out")
    else:
        write_json(stamp, cfg)
    trainer = Trainer(cfg, train_set, evaluate=evaluate, log=lambda *a, **k: None)
    ckpt = out / "checkpoint.pt"
    if ckpt.is_file():
        trainer.resume(ckpt)
    else:
        metrics = out / "metrics.jsonl"
        if metrics.exists():
            metrics.unlink()
        if init_from is not None:
            trainer.init_from(init_from)
    trainer.fit()
    return trainer


def train_run(name: str, spec: Dict, cfg: Dict, train_set, evaluator: UnseenEval, progress: Callable[[int], None]) -> Dict:
    """Train one (head, seed) run (both stages for the ATL step recipe) and evaluate it."""
    out = Path(cfg["train"]["out"])
    out.mkdir(parents=True, exist_ok=True)
    steps = int(cfg["train"]["steps"])
    eval_every = int(cfg["train"]["eval_every"])

    counted = [0]

    def evaluate(model):  # called every eval_every steps and at the end of each stage
        inc = min(eval_every, steps - counted[0])
        counted[0] += inc
        progress(inc)
        return evaluator.curve_point(model)

    t0 = time.perf_counter()
    if spec.get("recipe") == "step":
        s1 = max(1, steps // 2)
        c1 = copy.deepcopy(cfg)
        c1["loss"]["params"].update(triplet=False, semihard=False)
        c1["train"].update(steps=s1, out=str(out / "stage1"))  # same gamma: λ_min reached inside stage 1
        if not (out / "stage1" / "done").exists():
            _train_stage(c1, train_set, evaluate)
            with atomic_open(out / "stage1" / "done", "w") as f:
                f.write("stage 1 finished\n")
        c2 = copy.deepcopy(cfg)
        c2["train"].update(steps=steps - s1, out=str(out / "stage2"))
        trainer = _train_stage(c2, train_set, evaluate, init_from=out / "stage1" / "checkpoint.pt")
        # one curve for the whole recipe: stage 2's steps continue stage 1's
        rows = _read_jsonl(out / "stage1" / "metrics.jsonl") + [
            {**r, "step": r["step"] + s1} for r in _read_jsonl(out / "stage2" / "metrics.jsonl")]
        with atomic_open(out / "metrics.jsonl", "w", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
    else:
        trainer = _train_stage(cfg, train_set, evaluate)
    seconds = time.perf_counter() - t0
    model = trainer.model.eval()
    res = evaluator.final(model)
    norms = res.pop("norms")
    save_embeddings(out, res.pop("embeddings"))
    with atomic_open(out / "unseen_norms.npz", "wb") as f:
        np.savez_compressed(f, norms=norms.astype(np.float32), labels=evaluator.labels,
                            **{k: np.asarray(v, dtype=np.float32) for k, v in evaluator.quality.items()})
    res.update(head=name, seed=int(cfg["train"]["seed"]), steps=steps, train_seconds=round(seconds, 1),
               config=row_config(spec, cfg))
    return res


def row_config(spec: Dict, cfg: Dict) -> Dict:
    """What a result row records of its settings (and what a reused row must match): the loss, the
    auxiliary loss, the recipe and, for an entry that overrides them, those optimiser and data
    settings (so a row trained on uniform batches never stands for a PK-batch entry)."""
    out = {"loss": cfg["loss"], "aux": cfg["aux"], "recipe": spec.get("recipe", "")}
    if spec.get("optim"):
        out["optim"] = {k: cfg["optim"][k] for k in spec["optim"]}
    if spec.get("data"):
        out["data"] = {k: cfg["data"][k] for k in spec["data"]}
    return out


def _read_jsonl(path: Path) -> List[Dict]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def aggregate(rows: List[Dict]) -> Dict[str, Dict]:
    """Per head: mean and sample std (ddof=1; 0 with one seed) of each metric over its seeds."""
    by: Dict[str, List[Dict]] = {}
    for r in rows:
        by.setdefault(r["head"], []).append(r)
    out = {}
    for head, rs in by.items():
        def stat(values):
            v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
            if not len(v):
                return None
            return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}

        agg = {"seeds": sorted(r["seed"] for r in rs), "tar_at_far": {}}
        fars = sorted({k for r in rs for k in r["tar_at_far"]}, key=float, reverse=True)
        for far in fars:
            agg["tar_at_far"][far] = stat([r["tar_at_far"].get(far) for r in rs])
        for k in ("eer", "auc", "rank1", "pair_accuracy", "train_seconds"):
            agg[k] = stat([r[k] for r in rs])
        grids = [np.asarray(r["roc"]["tar"]) for r in rs]
        agg["roc"] = {"far": rs[0]["roc"]["far"], "tar": np.mean(grids, axis=0).tolist()}
        out[head] = agg
    return out


def _default_set_dir(manifest: Optional[str]) -> str:
    """``runs/glyphs-hangul``; for a set built from a manifest a folder named by the manifest's
    digest, so that a set built from other fonts is never taken for it."""
    if not manifest:
        return "runs/glyphs-hangul"
    path = Path(manifest)
    if not path.is_file():
        raise FileNotFoundError(f"glyph-set manifest not found: {path}")
    return f"runs/glyphs-{hashlib.sha256(path.read_bytes()).hexdigest()[:10]}"


def _reference_summary(path: str, names: List[str]) -> Dict:
    """The per-head TAR@FAR statistics of a reference ``results.json`` (mean, std, seeds)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"reference results not found: {p}")
    try:
        summary = json.loads(p.read_text(encoding="utf-8"))["summary"]
        return {h: {"tar_at_far": summary[h]["tar_at_far"], "seeds": summary[h]["seeds"]} for h in names if h in summary}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{p}: not a bench results.json ({type(e).__name__}: {e})") from None


def _reuse_rows(path: str, jobs, specs: Dict, out_dir: Path, budget: Dict, counts: Dict, config_of) -> int:
    """Write the rows of another bench's ``results.json`` as finished runs where they match a job
    exactly: the same set (its counts), steps, batch, seed, loss, auxiliary loss and recipe."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"results to reuse not found: {p}")
    try:
        other = json.loads(p.read_text(encoding="utf-8"))
        same_budget = (other["budget"]["steps"], other["budget"]["batch"]) == (budget["steps"], budget["batch"])
        rows = {(r["head"], int(r["seed"])): r for r in other["rows"]} if same_budget else {}
        same_set = other.get("manifest_counts") == counts
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{p}: not a bench results.json ({type(e).__name__}: {e})") from None
    if not same_set:
        print(f"[bench] {p} was run on another glyph set; none of its runs is reused")
        return 0
    reused = 0
    for head, seed in jobs:
        run_dir = out_dir / "runs" / head / f"seed{seed}"
        row = rows.get((head, seed))
        if row is None or (run_dir / "result.json").is_file():
            continue
        cfg = config_of(head, seed)
        want = row_config(specs[head], cfg)
        if json.loads(json.dumps(want)) != row.get("config"):
            continue
        write_json(run_dir / "result.json", {**row, "reused_from": str(p)})
        reused += 1
    print(f"[bench] {reused} finished run(s) reused from {p}")
    return reused


def check_finished(out_dir: Path, finished, specs: Dict, config_of) -> None:
    """Refuse finished runs whose settings are no longer those of their bench entry (an entry whose
    protocol changed since they ran): counting them would report old settings under the entry's
    name, and replacing them would lose them. The error names every such run folder."""
    stale = []
    for head, seed in finished:
        run_dir = out_dir / "runs" / head / f"seed{seed}"
        try:
            row = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{run_dir / 'result.json'}: unreadable finished run ({e}); delete it to rerun the run")
        want = json.loads(json.dumps(row_config(specs[head], config_of(head, seed))))
        if row.get("config") != want:
            stale.append(str(run_dir))
    if stale:
        raise ValueError(f"{len(stale)} finished run(s) were trained with settings their bench entry no longer has "
                         f"(the protocol changed since): {', '.join(stale)}; move them away to rerun them "
                         f"(their results stay in their result.json), or choose another --out")


def run_main_bench(out: str = "runs/bench", full: bool = False, set_dir: Optional[str] = None,
                   heads: Optional[List[str]] = None, seeds: Optional[List[int]] = None, steps: Optional[int] = None,
                   batch: Optional[int] = None, device: str = "auto", figures: bool = True,
                   fashion_root: Optional[str] = None, feature_figures: bool = True,
                   args_line: str = "facemargin bench", manifest: Optional[str] = None,
                   reference: Optional[str] = None, reuse: Union[None, str, Sequence[str]] = None,
                   finished_only: bool = False) -> Dict:
    """Run (or continue) the main job; writes ``OUT/results.json``, ``OUT/report.md`` and ``OUT/figures/``.

    Args:
        out: output folder; re-running with the same folder continues an interrupted bench.
        full: every head and loss, three seeds, 1500 steps (else the demo budget).
        set_dir: the glyph set (built there when absent; default ``runs/glyphs-hangul``, or with
            ``manifest`` ``runs/glyphs-<digest of the manifest>``).
        manifest: build the set from this ``manifest.json`` (the committed report's set), leaving out
            the faces whose fonts this machine lacks; the report names them.
        reference: a ``results.json`` of a bench over several seeds (the committed full report):
            the report then marks each difference to softmax as within or beyond its seed spread.
        reuse: one or more ``results.json`` whose runs count as finished here when they match a job
            exactly (same set, steps, batch, seed and head settings), so a bench continues from
            committed results on another machine or checkout.
        finished_only: train nothing: report the finished runs and name the ones still to run.
        heads, seeds, steps, batch: override the budget's; ``heads`` may hold the group names of
            :func:`head_groups` (``paper``, ``atl-ablation``), expanded in place.
        fashion_root: Fashion-MNIST folder for the 2-D/3-D feature figures.
        feature_figures: train the Fashion-MNIST feature runs for those figures.
    """
    from tqdm.auto import tqdm

    budget = dict(BUDGETS["full" if full else "demo"])
    if steps is not None:
        budget["steps"] = int(steps)
        budget["eval_every"] = max(int(steps) // 4, 1)
        budget["figure_steps"] = min(budget["figure_steps"], max(int(steps) // 2, 1))
    if batch is not None:
        budget["batch"] = int(batch)
    if seeds is not None:
        budget["seeds"] = [int(s) for s in seeds]
    names = expand_heads(heads) if heads else available_heads(budget["full_heads"])
    specs = {n: head_spec(n) for n in names}  # unknown names fail before any work
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    reference_summary = _reference_summary(reference, names) if reference else None
    set_path = Path(set_dir or _default_set_dir(manifest))
    if not (set_path / "manifest.json").is_file():
        source = f" from {manifest}" if manifest else ""
        print(f"[bench] building the glyph identity set in {set_path}{source} (once; reused by later runs)")
        build_glyph_set(set_path, manifest=manifest, allow_missing_fonts=True) if manifest else build_glyph_set(set_path)
    gs = GlyphSet(set_path)
    missing_fonts = gs.manifest.get("missing_fonts") or []
    if missing_fonts:
        print(f"[bench] {len(missing_fonts)} font face(s) of {manifest or 'the manifest'} are not on this machine and were "
              f"left out: {', '.join(f['name'] for f in missing_fonts)}")
    train_set = gs.train_set(augment=True)
    evaluator = UnseenEval(set_path)
    n_imp = pair_counts(evaluator.labels)[1]
    # the convergence curves use the lowest FAR with at least 100 impostor pairs above threshold
    curve_far = next((f for f in (CURVE_FAR, 1e-2) if f * n_imp >= 100), 1e-1)
    if curve_far not in evaluator.fars:
        evaluator.fars = tuple(sorted(set(evaluator.fars) | {curve_far}, reverse=True))
    c = gs.manifest["counts"]
    print(f"[bench] glyph set {set_path}: {len(gs.manifest['train_identities'])} training identities "
          f"({c['train_images']} images), {len(gs.manifest['test_identities'])} unseen ({c['test_images']} images), "
          f"{c['faces']} font faces")
    pix_path = out_dir / "pixels.json"
    if pix_path.is_file():
        pixels = json.loads(pix_path.read_text())
    else:
        pixels = evaluator.pixels()
        write_json(pix_path, pixels)

    jobs = [(n, s) for s in budget["seeds"] for n in names]

    def config_of(n, s):
        return run_config(n, specs[n], set_path, out_dir / "runs" / n / f"seed{s}", budget["steps"], budget["batch"], s,
                          budget["eval_every"], device, image_size=int(gs.manifest["size"]))
    for path in ([reuse] if isinstance(reuse, str) else list(reuse or [])):
        _reuse_rows(path, jobs, specs, out_dir, budget, c, config_of)
    done = {(n, s) for n, s in jobs if (out_dir / "runs" / n / f"seed{s}" / "result.json").is_file()}
    check_finished(out_dir, sorted(done), specs, config_of)
    todo = [j for j in jobs if j not in done]
    not_run = []
    if finished_only:  # report what is there; the rest is named, not trained
        not_run = [f"{n} seed {s}" for n, s in todo]
        jobs, todo = [j for j in jobs if j in done], []
        if not jobs:
            raise ValueError(f"{out_dir}: no finished run to report")
    print(f"[bench] {len(jobs)} runs ({len(names)} heads x {len(budget['seeds'])} seeds, {budget['steps']} steps of "
          f"batch {budget['batch']}); {len(done)} already finished, {len(todo)} to run")
    bar = tqdm(total=len(todo) * budget["steps"], unit="step", desc="bench", dynamic_ncols=True, mininterval=5)
    for name, seed in todo:
        run_dir = out_dir / "runs" / name / f"seed{seed}"
        if (run_dir / "result.json").is_file():  # finished meanwhile by another call on the same folder
            bar.update(budget["steps"])
            continue
        bar.set_postfix_str(f"{name} seed {seed}")
        cfg = run_config(name, specs[name], set_path, run_dir, budget["steps"], budget["batch"], seed,
                         budget["eval_every"], device, image_size=int(gs.manifest["size"]))
        before = bar.n
        row = train_run(name, specs[name], cfg, train_set, evaluator, progress=bar.update)
        bar.update(max(0, before + budget["steps"] - bar.n))
        write_json(run_dir / "result.json", row)
        tars = ", ".join(f"{k}: {v:.3f}" for k, v in row["tar_at_far"].items())
        tqdm.write(f"[bench] {name} seed {seed}: TAR@FAR {tars}; pair acc {row['pair_accuracy']:.4f}, "
                   f"rank-1 {row['rank1']:.4f}, {row['train_seconds']:.0f} s")
    bar.close()

    rows = [json.loads((out_dir / "runs" / n / f"seed{s}" / "result.json").read_text()) for n, s in jobs]
    summary = aggregate(rows)
    feature_figs = {}
    if figures and feature_figures:
        from .fashion import feature_figure_runs

        try:
            feature_figs = feature_figure_runs(out_dir / "fashion", data_root=fashion_root, steps=budget["figure_steps"],
                                               dims=(2, 3) if budget["figures3d"] else (2,), device=device)
        except FileNotFoundError as e:
            print(f"[bench] no Fashion-MNIST feature figures: {e}")
    from .report import write_main_report

    total = time.perf_counter() - t_start
    result = {"budget": budget, "curve_far": curve_far, "heads": names, "set": str(set_path), "manifest_counts": c, "rows": rows,
              "summary": summary, "pixels": pixels, "set_manifest": manifest, "missing_fonts": missing_fonts,
              "reference": {"path": reference, "summary": reference_summary} if reference else None,
              "quality": analyse_quality(out_dir, jobs, evaluator, size=int(gs.manifest["size"]), far=curve_far),
              "not_run": not_run}
    write_json(out_dir / "results.json", result)
    figs = write_main_report(out_dir, result, feature_figs, args_line=args_line, wall_seconds=total,
                             draw=figures)
    print(f"[bench] wrote {out_dir / 'results.json'} and {out_dir / 'report.md'} ({total / 60:.1f} min this call)")
    return {**result, "figures": figs}
