"""``facemargin train``."""
from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

RECIPES = {
    # the ATL write-up's two ATL recipes, with its small-set defaults (m=2, lambda_min=3)
    "atl-direct": "triplet and semihard on from the first step",
    "atl-step": "SphereFace first (stage1), then resume its weights and λ counter with triplet and semihard on (stage2)",
}
ATL_SMALL = {"m": 2, "lambda_min": 3}


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
    p.add_argument("--resume", metavar="CKPT", help="continue a run exactly (weights, optimizer, λ, RNG, step)")
    p.add_argument("--init-from", metavar="CKPT", help="start from a checkpoint's weights (and head/λ state) at step 0")
    p.add_argument("--recipe", choices=sorted(RECIPES), help="ATL recipes of the ATL write-up: " +
                   "; ".join(f"{k}: {v}" for k, v in RECIPES.items()))
    p.add_argument("--stage1-fraction", type=float, default=0.5, help="atl-step: share of the steps spent in stage 1")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as TOML and exit")
    p.set_defaults(func=run_train)


def resolve(args):
    from .config import dump_toml, load_config

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"train.out={args.out}")
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.data:
        overrides.append(f"data.root={args.data}")
    cfg = load_config(args.config, overrides)
    if args.recipe:
        params = cfg["loss"]["params"] if cfg["loss"]["name"] in ("atl", "sphereface") else {}
        cfg["loss"] = {"name": "atl", "params": {**ATL_SMALL, **params, "triplet": True, "semihard": True}}
    return cfg


def _evaluator(cfg):
    """Open-set evaluation during and after training, for Fashion-MNIST runs."""
    if cfg["data"]["name"] != "fashion-mnist":
        return None
    from ..bench.fashion import FashionEval

    d = cfg["data"]
    ev = FashionEval(d["root"] or None, d["train_classes"], d["eval_classes"], int(d["num_pairs"]), int(cfg["train"]["seed"]))
    return lambda model: ev(model, full=False)


def _train(cfg, resume=None, init_from=None, init_loss=True):
    from ..io import atomic_open
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
        if trainer.is_main:
            out = Path(cfg["train"]["out"])
            with atomic_open(out / "config.toml", "w", encoding="utf-8") as f:
                f.write(dump_toml(cfg))
        if resume:
            trainer.resume(resume)
            print(f"[train] resumed {resume} at step {trainer.step}")
        elif init_from:
            trainer.init_from(init_from, load_loss=init_loss)
            print(f"[train] initialised from {init_from}")
        result = trainer.fit()
        if trainer.is_main:
            print(f"[train] done: {trainer.step} steps in {trainer.train_seconds:.1f} s; checkpoint {Path(cfg['train']['out']) / 'checkpoint.pt'}")
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

    cfg = resolve(args)
    if args.print_config:
        sys.stdout.write(dump_toml(cfg))
        return 0
    if args.resume and args.init_from:
        raise ValueError("--resume and --init-from are exclusive")
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
        _train(stage1)
        stage2 = copy.deepcopy(cfg)
        stage2["train"].update(steps=max(total - s1, 1), out=str(out / "stage2"))
        print(f"[train] atl-step stage 2: triplet + semihard on, from stage 1's weights and λ counter, {total - s1} steps")
        _train(stage2, init_from=str(out / "stage1" / "checkpoint.pt"))
        return 0
    _train(cfg, resume=args.resume, init_from=args.init_from)
    return 0
