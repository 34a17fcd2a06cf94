"""Training configuration: a nested dict of plain values, read from TOML, overridden from the CLI.

The defaults below are the whole schema: an unknown key in a file or an override is an error
(a typo must not silently train with a default). Sections:

``data``     which dataset and which classes to train on, how batches are drawn (``sampler``),
             and verification packs (``val``);
``model``    the backbone (``facemargin.models.build`` name and kwargs; ``auto`` follows the data);
``loss``     the loss or head (``facemargin.losses.build`` name and kwargs in ``params``);
``aux``      an optional second loss added with a weight (softmax + λ·center, + contrastive);
``optim``    SGD settings, the schedule, and separate settings for the class weights;
``dist``     distributed runs (torchrun): Partial FC sample rate, backend, collective timeout;
``train``    steps, batch, seed, checkpoints, logging, bf16 autocast.
"""
from __future__ import annotations

import ast
import copy
import json
import math
import tomllib
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from ..io import read_text

DEFAULTS: Dict[str, Any] = {
    "data": {
        "name": "fashion-mnist",      # fashion-mnist | folder | recordio
        "root": "",                   # dataset folder ("" = the dataset's default location)
        "train_classes": [0, 1, 2, 3, 4, 5],  # fashion-mnist: classes trained on (open-set protocol)
        "eval_classes": [6, 7, 8, 9],         # fashion-mnist: classes of the open-set pairs
        "num_pairs": 6000,
        "workers": 0,
        "flip": False,                # random horizontal flip augmentation
        "degrade": False,             # recordio: random low-quality versions of each image (glyph sets)
        "sampler": "random",          # random: uniform batches | pk: P identities x pk_images images each
        "pk_images": 4,               # pk: images per identity in a batch (K; P = train.batch_size / K)
        "val": [],                    # verification packs (.bin) scored every train.eval_every steps
    },
    # "auto": the backbone made for the data's images (LeNet++ for 28x28 grey, MobileFaceNet for 112x112 faces)
    "model": {"name": "auto", "embedding_size": 64, "params": {}},
    "loss": {"name": "softmax", "params": {}},
    "aux": {"name": "", "weight": 0.0, "params": {}},
    "optim": {
        "lr": 0.01,                  # suits the default LeNet++ (no batch norm: 0.1 diverges within ~15 steps)
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "multistep",     # multistep | cosine | poly | constant
        "milestones": [0.5, 0.75],   # multistep: fractions of train.steps (or absolute steps if > 1)
        "gamma": 0.1,
        "power": 2.0,                # poly
        "warmup_steps": 0,
        "head_lr_mult": 1.0,          # class weights: lr multiplier
        "head_weight_decay": -1.0,    # class weights: weight decay (-1 = same as weight_decay)
        "clip_grad_norm": 0.0,        # 0 = off
    },
    "dist": {                          # used under torchrun (WORLD_SIZE > 1)
        "sample_rate": 1.0,            # Partial FC: share of negative classes kept per step (< 1 to enable)
        "backend": "",                 # "" = nccl with CUDA, else gloo
        "timeout_s": 600.0,            # a dead or hung rank fails the others after this long
    },
    "train": {
        "steps": 1000,
        "batch_size": 128,
        "seed": 0,
        "device": "auto",            # auto | cpu | cuda
        "bf16": False,               # bfloat16 autocast (CPU or CUDA)
        "checkpoint_every": 0,        # 0 = only at the end
        "log_every": 20,
        "eval_every": 0,              # 0 = no evaluation during training
        "out": "runs/train",
        "progress": True,
        "tensorboard": False,         # also write TensorBoard events in <out>/tensorboard (facemargin[tb])
        "max_consecutive_skips": 10,  # steps with NaN/Inf are skipped; this many in a row stop the run
    },
}


#: the batch orders ``data.sampler`` chooses from (:func:`facemargin.train.schedule.make_batch_order`)
SAMPLERS = ("random", "pk")
#: settings with a fixed set of values, checked when a file or an override sets them
CHOICES: Dict[str, tuple] = {"data.sampler": SAMPLERS}
#: integer settings with a lower bound
MINIMUM: Dict[str, int] = {"data.pk_images": 2}


class ConfigError(ValueError):
    pass


def _merge(base: Dict[str, Any], update: Dict[str, Any], where: str, free: bool = False) -> None:
    for key, value in update.items():
        path = f"{where}.{key}" if where else key
        if key not in base and not free:
            known = ", ".join(sorted(base))
            raise ConfigError(f"unknown config key {path!r}; known keys here: {known}")
        if isinstance(base.get(key), dict) and isinstance(value, dict):
            # free-form tables: hyper-parameters passed through to constructors
            _merge(base[key], value, path, free=free or key == "params")
        else:
            base[key] = value if free or key not in base else checked(path, base[key], value)


def load_config(path: Optional[str] = None, overrides: Iterable[str] = (), base: Optional[Dict] = None) -> Dict[str, Any]:
    """Defaults, then the TOML file ``path``, then ``overrides`` like ``"loss.params.m=0.5"``."""
    cfg = copy.deepcopy(base if base is not None else DEFAULTS)
    if path:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        try:
            data = tomllib.loads(read_text(p))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: invalid TOML: {e}") from e
        except RecursionError:
            raise ConfigError(f"{p}: invalid TOML: nested too deeply") from None
        except ValueError as e:  # not UTF-8
            raise ConfigError(str(e)) from None
        try:
            _merge(cfg, data, "")
        except ConfigError as e:  # name the file as well as the key
            raise ConfigError(f"{p}: {e}") from None
    for item in overrides:
        apply_override(cfg, item)
    return cfg


def parse_value(text: str) -> Any:
    """``"0.5"`` -> 0.5, ``"true"`` -> True, ``"[1,2]"`` -> [1, 2], anything else stays a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_override(cfg: Dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node = cfg
    for i, part in enumerate(parts[:-1]):
        if part not in node or not isinstance(node[part], dict):
            raise ConfigError(f"unknown config section {'.'.join(parts[:i + 1])!r} in override {item!r}")
        node = node[part]
    free = "params" in parts[:-1]
    if parts[-1] not in node and not free:
        raise ConfigError(f"unknown config key {key!r} in override {item!r}; known: {', '.join(sorted(node))}")
    parsed = parse_value(value)
    if not free:
        if isinstance(node[parts[-1]], str) and not isinstance(parsed, str):
            parsed = value  # a text setting keeps the text as typed (data.root=2024 is a folder name)
        parsed = checked(key.strip(), node[parts[-1]], parsed)
    node[parts[-1]] = parsed


def _kind(default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, str):
        return "a string"
    if isinstance(default, dict):
        return "a table"
    return "a list"


def checked(key: str, default: Any, value: Any) -> Any:
    """``value`` for the setting ``key`` if it has the type of its default (ints widen to floats,
    list items are checked against the default's items) and, for the settings of ``CHOICES`` and
    ``MINIMUM``, an allowed value; else a :class:`ConfigError` naming the key."""
    def fits(d, v):
        if isinstance(d, bool):
            return isinstance(v, bool)
        if isinstance(d, int):
            return isinstance(v, int) and not isinstance(v, bool)
        if isinstance(d, float):
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if isinstance(d, (list, tuple)):
            return isinstance(v, (list, tuple)) and (not d or all(fits(d[0], x) for x in v))
        return isinstance(v, type(d))

    if not fits(default, value):
        what = _kind(default)
        if isinstance(default, (list, tuple)) and default:
            what += f" of {_kind(default[0]).replace('an ', '').replace('a ', '')}s"
        raise ConfigError(f"config key {key!r} must be {what}, got {value!r}")
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"config key {key!r} must be one of {', '.join(CHOICES[key])}, got {value!r}")
    if key in MINIMUM and value < MINIMUM[key]:
        raise ConfigError(f"config key {key!r} must be at least {MINIMUM[key]}, got {value!r}")
    if isinstance(default, float):
        return float(value)
    if isinstance(default, (list, tuple)) and default and isinstance(default[0], float):
        return [float(x) for x in value]
    return value


def dump_toml(cfg: Dict[str, Any]) -> str:
    """A TOML text of ``cfg`` (plain values, lists and nested tables)."""

    def quote(text: str) -> str:
        # a JSON string is a valid TOML basic string (its escapes are a subset of TOML's)
        return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")

    def key(k) -> str:
        k = str(k)
        return k if k and all(c.isascii() and (c.isalnum() or c in "_-") for c in k) else quote(k)

    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return quote(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{key(k)} = {fmt(x)}" for k, x in v.items()) + " }"
        raise ConfigError(f"cannot write {type(v).__name__} to TOML")

    lines = []
    for section, table in cfg.items():
        lines.append(f"[{key(section)}]")
        for k, v in table.items():
            lines.append(f"{key(k)} = {fmt(v)}")
        lines.append("")
    return "\n".join(lines)
