"""Helpers of the trainer tests: tiny synthetic Fashion-MNIST-like data and tiny configs."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from facemargin.data.fashion import write_idx
from facemargin.train.config import DEFAULTS


def class_images(labels: np.ndarray, seed: int, size: int = 28) -> np.ndarray:
    """uint8 ``(N, size, size)`` images: class ``c`` is a bright band at a class-dependent place, plus noise.

    Bands are left-right asymmetric (so a horizontal flip changes the image) and distinct per class,
    so a small network separates the classes in a few steps.
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    img = rng.integers(0, 60, size=(n, size, size)).astype(np.int32)
    for i, c in enumerate(labels):
        c = int(c)
        row = 2 + (c * 5) % (size - 6)
        img[i, row:row + 3, 2:size // 2 + (c % 3) * 3] += 180
        col = 3 + (c * 7) % (size - 6)
        img[i, 4:size - 4, col:col + 2] += 120 if c % 2 else 0
    return np.clip(img, 0, 255).astype(np.uint8)


def write_fashion(root, classes=range(10), train_per_class: int = 20, test_per_class: int = 20, seed: int = 0) -> Path:
    """Write train/t10k IDX files (real Fashion-MNIST names, gzip) with the given per-class counts."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split, per, s in (("train", train_per_class, seed), ("t10k", test_per_class, seed + 1)):
        labels = np.repeat(np.asarray(list(classes), dtype=np.uint8), per)
        labels = labels[np.random.default_rng(s).permutation(len(labels))]
        write_idx(root / f"{split}-images-idx3-ubyte.gz", class_images(labels, s))
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


def tiny_config(root, out, steps: int = 8, **sections) -> dict:
    """The defaults with a tiny LeNet++ (width 0.25, 8-D), batch 12, no progress bar, lr 0.01."""
    cfg = copy.deepcopy(DEFAULTS)
    cfg["data"].update(root=str(root), num_pairs=40)
    cfg["model"] = {"name": "lenetpp", "embedding_size": 8, "params": {"width": 0.25}}
    cfg["optim"]["lr"] = 0.01
    cfg["train"].update(steps=steps, batch_size=12, seed=0, device="cpu", out=str(out), progress=False,
                        log_every=1, checkpoint_every=0, eval_every=0)
    for section, values in sections.items():
        for k, v in values.items():
            if isinstance(v, dict) and isinstance(cfg[section].get(k), dict):
                cfg[section][k] = {**cfg[section][k], **v}
            else:
                cfg[section][k] = v
    return cfg


def write_val_pack(path, seed: int = 3) -> Path:
    """A verification pack of 28x28 images of the unseen classes 6-9: 20 pairs, genuine and
    impostor interleaved (so every one of 10 folds holds both kinds)."""
    from facemargin.data.binpack import write_bin

    classes, same = [], []
    for k in range(20):
        a = 6 + k % 4
        b = a if k % 2 == 0 else 6 + (k + 1) % 4
        classes += [a, b]
        same.append(a == b)
    grey = class_images(np.array(classes), seed=seed)
    write_bin(path, np.repeat(grey[..., None], 3, axis=-1), np.array(same), format="png")
    return Path(path)
