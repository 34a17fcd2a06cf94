"""``facemargin train``."""
from __future__ import annotations

import copy
import os
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional

from ..io import atomic_open, load_torch

RECIPES = {
    # the ATL write-up's two ATL recipes, with its small-set defaults (m=2, lambda_min=3)
    "atl-direct": "triplet and semihard on from the first step",
    "atl-step": "SphereFace first (stage1), then resume its weights and λ counter with triplet and semihard on (stage2)",
}
ATL_SMALL = {"m": 2, "lambda_min": 3}
#: what a run leaves in its folder; a folder holding any of them holds a run
RUN_FILES = ("checkpoint.pt", "best.pt", "metrics.jsonl", "config.toml", "tensorboard")
#: settings a resumed run keeps: they decide the shapes and meaning of the saved weights
FROZEN = (("loss", "name"), ("loss", "params"), ("aux", "name"), ("aux", "weight"), ("aux", "params"),
          ("model", "name"), ("model", "embedding_size"), ("model", "params"))


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a backbone with any loss (config file + overrides)",
        description="Train a backbone with any loss of the registry. Settings come from the defaults, then "
                    "--config FILE.toml, then --set section.key=value overrides (e.g. --set loss.name=arcface "
                    "--set loss.params.m=0.5). Under torchrun the run is distributed (DDP + class-sharded head).",
    )
    p.add_argument("--config", help="TOML config file (sections data, model, loss, aux, optim, train)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, repeatable (e.g. train.steps=2000)")
    p.add_argument("--out", help="output folder (checkpoint.pt, metrics.jsonl, config.toml); = train.out")
    p.add_argument("--steps", type=int, help="= train.steps")
    p.add_argument("--data", help="dataset folder; = data.root")
    p.add_argument("--resume", metavar="CKPT",
                   help="continue a run exactly (weights, optimizer, λ, RNG, step). Its settings come from the "
                        "checkpoint; --config/--set may change the steps, schedule and logging, not the loss, "
                        "model or classes. The run goes on in the checkpoint's folder unless --out is given")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run that --out already holds (without it such a folder is refused)")
    p.add_argument("--init-from", metavar="CKPT", help="start from a checkpoint's weights (and head/λ state) at step 0")
    p.add_argument("--recipe", choices=sorted(RECIPES), help="ATL recipes of the ATL write-up: " +
                   "; ".join(f"{k}: {v}" for k, v in RECIPES.items()))
    p.add_argument("--stage1-fraction", type=float, default=0.5, help="atl-step: share of the steps spent in stage 1")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as TOML and exit")
    p.set_defaults(func=run_train)


def _run_base(ckpt: str) -> Dict:
    """The defaults, overlaid with the settings a checkpoint was trained with."""
    from .checkpoint import check_checkpoint
    from .config import DEFAULTS

    saved = check_checkpoint(load_torch(ckpt, mmap=True), ckpt)["config"]  # the settings only: tensors mapped
    base = copy.deepcopy(DEFAULTS)
    for section, table in saved.items():
        if section in base and isinstance(table, dict):
            base[section].update(copy.deepcopy(table))
    return base


def check_unchanged(saved: Dict, cfg: Dict, ckpt: str) -> None:
    """Refuse a resume whose settings change the loss, its hyper-parameters or the model."""
    changed = []
    for section, key in FROZEN:
        was, now = saved[section].get(key), cfg[section].get(key)
        if key == "name" and section == "model" and now == "auto":
            continue
        if was != now:
            changed.append(f"{section}.{key} ({was!r} -> {now!r})")
    if changed:
        raise ValueError(f"--resume {ckpt}: a resumed run keeps its loss and model, but this changes "
                         f"{', '.join(changed)}; start a new run with another --out (or --init-from {ckpt})")


def check_settings(cfg: Dict) -> None:
    """Check the loss, auxiliary loss and backbone settings without building anything (before any
    data loads): unknown arguments, wrong types and values out of range name their key."""
    from .. import losses, models
    from ..models.base import check_embedding_size
    from .config import ConfigError

    for section in ("loss", "aux"):
        spec = cfg[section]
        if section == "aux" and not spec.get("name"):
            continue
        try:
            losses.check_params(spec["name"], dict(spec.get("params", {})))
        except ValueError as e:
            raise ConfigError(f"{section}.params: {e}") from None
    m = cfg["model"]
    try:
        check_embedding_size(m["embedding_size"])
    except ValueError as e:
        raise ConfigError(f"model.{e}") from None
    if m["name"] != "auto":
        try:
            models.check_params(m["name"], dict(m.get("params", {})))
        except ValueError as e:
            raise ConfigError(f"model.params: {e}") from None


def resolve(args):
    from .config import load_config

    overrides = list(args.overrides)
    base = _run_base(args.resume) if getattr(args, "resume", None) else None
    if args.out:
        overrides.append(f"train.out={args.out}")
    elif base is not None:  # the run goes on where its checkpoint is
        overrides.append(f"train.out={Path(args.resume).parent}")
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.data:
        overrides.append(f"data.root={args.data}")
    cfg = load_config(args.config, overrides, base=base)
    if args.recipe:
        params = cfg["loss"]["params"] if cfg["loss"]["name"] in ("atl", "sphereface") else {}
        cfg["loss"] = {"name": "atl", "params": {**ATL_SMALL, **params, "triplet": True, "semihard": True}}
    if base is not None:
        check_unchanged(base, cfg, args.resume)
    check_settings(cfg)
    return cfg


def run_contents(folder: Path) -> List[str]:
    """What a run left in ``folder``: ``checkpoint.pt (step 20)``, ``metrics.jsonl (3 rows)``, ..."""
    found = []
    for name in RUN_FILES:
        path = folder / name
        if not path.exists():
            continue
        text = name
        if name == "checkpoint.pt":
            try:
                text += f" (step {int(load_torch(path, mmap=True)['step'])})"
            except Exception:  # noqa: BLE001  (unreadable: still a run's file)
                text += " (unreadable)"
        elif name == "metrics.jsonl":
            with open(path, "rb") as f:
                text += f" ({sum(1 for ln in f if ln.strip())} rows)"
        found.append(text)
    return found


def guard_out(folders: List[Path], resume: Optional[str], overwrite: bool) -> List[Path]:
    """Refuse output folders that hold a run, unless it is the run being resumed or ``overwrite``
    is given; return the folders whose run is to be replaced (once every check has passed)."""
    replace = []
    for folder in folders:
        if resume and Path(resume).resolve().parent == folder.resolve():
            continue  # the run being resumed
        found = run_contents(folder)
        if not found:
            continue
        if not overwrite:
            hint = f"continue it with --resume {folder / 'checkpoint.pt'}, " if (folder / "checkpoint.pt").exists() else ""
            raise ValueError(f"{folder} already holds a run ({', '.join(found)}); {hint}pass --overwrite to replace "
                             f"it, or choose another --out")
        print(f"[train] --overwrite: the run in {folder} will be replaced: {', '.join(found)}")
        replace.append(folder)
    return replace


def clear_run(folder: Path) -> None:
    """Remove a run's files from ``folder`` (``--overwrite``); other files stay."""
    for name in RUN_FILES:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _evaluator(cfg):
    """Open-set evaluation during and after training, for Fashion-MNIST runs."""
    if cfg["data"]["name"] != "fashion-mnist":
        return None
    from ..eval.fashion import FashionEval

    d = cfg["data"]
    ev = FashionEval(d["root"] or None, d["train_classes"], d["eval_classes"], int(d["num_pairs"]), int(cfg["train"]["seed"]))
    return lambda model: ev(model, full=False)


def _train(cfg, resume=None, init_from=None, init_loss=True, replace=()):
    from .config import dump_toml
    from .data import build_train_set
    from .loop import Trainer

    dist = trainer = None
    try:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from ..distributed.trainer import DistributedContext

            dist = DistributedContext.from_env(cfg)
        train_set = build_train_set(cfg["data"])
        # distributed runs skip in-loop evaluation: it would run on one rank while the others wait
        evaluate = _evaluator(cfg) if dist is None else None
        trainer = Trainer(cfg, train_set, evaluate=evaluate, distributed=dist)
        out = Path(cfg["train"]["out"])
        if resume:
            trainer.resume(resume)
            print(f"[train] resumed {resume} at step {trainer.step}")
        elif init_from:
            trainer.init_from(init_from, load_loss=init_loss)
            print(f"[train] initialised from {init_from}")
        if trainer.is_main:  # every check has passed: only now is anything written
            if out in replace:
                clear_run(out)
            with atomic_open(out / "config.toml", "w", encoding="utf-8") as f:
                f.write(dump_toml(cfg))
        result = trainer.fit()
        if trainer.is_main:
            ran = trainer.step - trainer.start_step
            span = f" (steps {trainer.start_step + 1}-{trainer.step})" if ran else ""
            print(f"[train] done: {ran} steps in this call{span}, {trainer.step} of {trainer.steps} in all, "
                  f"{trainer.train_seconds:.1f} s; checkpoint {out / 'checkpoint.pt'}")
            if trainer.best:
                print(f"[train] best.pt: mean verification accuracy {trainer.best['score']:.4f} at step "
                      f"{trainer.best['step']}")
            if result:
                print("[train] evaluation: " + ", ".join(f"{k}={v:.4f}" for k, v in result.items() if isinstance(v, float)))
    finally:  # normal end, error or Ctrl-C: the DDP wrapper goes before the process group
        if trainer is not None:
            trainer.close()
        if dist is not None:
            dist.close()
    return trainer


def run_train(args) -> int:
    from .config import dump_toml

    if args.resume and args.init_from:
        raise ValueError("--resume and --init-from are exclusive")
    cfg = resolve(args)
    if args.print_config:
        sys.stdout.write(dump_toml(cfg))
        return 0
    out = Path(cfg["train"]["out"])
    stages = [out / "stage1", out / "stage2"] if args.recipe == "atl-step" else [out]
    replace = guard_out(stages, args.resume, args.overwrite)
    if args.recipe == "atl-step":
        if args.resume or args.init_from:
            raise ValueError("--recipe atl-step runs both stages itself; resume a stage with --resume and no --recipe")
        total = int(cfg["train"]["steps"])
        s1 = max(1, int(round(total * args.stage1_fraction)))
        out = Path(cfg["train"]["out"])
        stage1 = copy.deepcopy(cfg)
        stage1["loss"]["params"].update(triplet=False, semihard=False)
        stage1["train"].update(steps=s1, out=str(out / "stage1"))
        print(f"[train] atl-step stage 1: SphereFace margin layer (triplet/semihard off), {s1} steps")
        _train(stage1, replace=replace)
        stage2 = copy.deepcopy(cfg)
        stage2["train"].update(steps=max(total - s1, 1), out=str(out / "stage2"))
        print(f"[train] atl-step stage 2: triplet + semihard on, from stage 1's weights and λ counter, {total - s1} steps")
        _train(stage2, init_from=str(out / "stage1" / "checkpoint.pt"), replace=replace)
        return 0
    _train(cfg, resume=args.resume, init_from=args.init_from, replace=replace)
    return 0
