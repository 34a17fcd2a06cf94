"""Verification while training: ``data.val`` packs scored every ``train.eval_every`` steps.

Each pack is a ``.bin`` verification file (insightface's ``lfw.bin``, ``cfp_fp.bin``,
``agedb_30.bin``, or one written by ``facemargin pack-pairs``). Its images are kept in memory as
uint8 and normalised a batch at a time. Every image is embedded with its mirror image added
(flip-test fusion), and the pairs are scored with the LFW protocol (10 folds, each threshold chosen
on the other nine).

For each pack ``NAME`` (the file's stem) an evaluation row holds ``val.NAME.acc``,
``val.NAME.acc_std`` and ``val.NAME.tar@far=F`` for the FAR levels the pack can resolve;
``val.mean_acc`` is the mean accuracy over the packs, the figure by which the trainer keeps
``best.pt``.

In a distributed run every rank embeds a contiguous share of the images and the shares are
gathered, so no image is embedded twice and every rank holds the same scores (and so takes the
same decision about ``best.pt``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data.binpack import load_bin
from ..distributed import utils as dist_utils
from ..eval.embed import embed_images
from ..eval.verification import one_class_folds, verify

#: the metrics key by which the best checkpoint is chosen
BEST_KEY = "val.mean_acc"


def pack_names(paths: Sequence[str]) -> List[str]:
    """The metric name of each pack: its file stem, numbered when two packs share a stem."""
    stems = [Path(p).stem for p in paths]
    return [s if stems.count(s) == 1 else f"{s}{i}" for i, s in enumerate(stems)]


class ValPack:
    """One verification pack in memory: uint8 images ``(2N, H, W, C)`` and ``issame`` ``(N,)``."""

    def __init__(self, path: str, name: str, input_size: Tuple[int, int, int], folds: int = 10):
        c, h, w = input_size
        self.path, self.name = str(path), name
        if not Path(path).is_file():
            raise FileNotFoundError(f"data.val: verification pack not found: {path}")
        images, issame = load_bin(path)
        if images.shape[1:3] != (h, w):
            raise ValueError(f"data.val: {path} holds {images.shape[1]}x{images.shape[2]} images but the model "
                             f"takes {h}x{w} ({c}x{h}x{w}); write the pack at the model's size")
        if c not in (1, 3):
            raise ValueError(f"data.val: the model takes {c} channels; packs hold RGB (3) or grey (1) images")
        n_same = int(np.sum(issame))
        if n_same == 0 or n_same == len(issame):
            raise ValueError(f"data.val: {path} holds only {'genuine' if n_same else 'impostor'} pairs "
                             f"({len(issame)}); verification needs both")
        if len(issame) < folds:
            raise ValueError(f"data.val: {path} holds {len(issame)} pairs, fewer than the {folds} folds of the "
                             f"LFW protocol")
        self.images, self.issame, self.channels, self.folds = images, issame.astype(bool), c, folds
        self.one_class = one_class_folds(self.issame, folds)
        if self.one_class:
            import warnings

            warnings.warn(f"data.val: {path}: {len(self.one_class)} of {folds} folds hold pairs of one class only "
                          "(folds follow the file order), so its accuracy is not meaningful; list the pairs "
                          "shuffled or with genuine and impostor pairs interleaved", UserWarning, stacklevel=2)

    def tensor(self, start: int, stop: int) -> torch.Tensor:
        """Images ``[start, stop)`` as float ``(n, C, H, W)`` normalised as ``(x/255 − 0.5)/0.5``."""
        x = torch.from_numpy(np.ascontiguousarray(self.images[start:stop])).permute(0, 3, 1, 2).float()
        if self.channels == 1:
            x = x.mean(dim=1, keepdim=True)
        return (x / 255.0 - 0.5) / 0.5


class Validator:
    """Score a backbone on every pack of ``paths``; ``dist`` (a distributed context or ``None``)
    splits the embedding work over the ranks."""

    def __init__(self, paths: Sequence[str], input_size: Tuple[int, int, int], dist=None,
                 batch_size: int = 128, folds: int = 10):
        if isinstance(paths, str) or not all(isinstance(p, str) and p for p in paths):
            raise ValueError(f"data.val must be a list of .bin file paths, got {paths!r}")
        self.packs = [ValPack(p, n, input_size, folds) for p, n in zip(paths, pack_names(paths))]
        self.dist, self.batch_size = dist, int(batch_size)

    def __bool__(self) -> bool:
        return bool(self.packs)

    def _embed(self, model: torch.nn.Module, pack: ValPack) -> np.ndarray:
        n = len(pack.images)
        rank, world = (self.dist.rank, self.dist.world) if self.dist is not None else (0, 1)
        bounds = np.linspace(0, n, world + 1).astype(int)  # contiguous shares, in rank order
        start, stop = int(bounds[rank]), int(bounds[rank + 1])
        device = next(model.parameters()).device
        d = model.embedding_size if hasattr(model, "embedding_size") else None
        if stop > start:
            mine = torch.from_numpy(embed_images(model, pack.tensor(start, stop), batch_size=self.batch_size,
                                                 flip=True, device=device))
        else:
            mine = torch.zeros((0, d or 1))
        if world == 1:
            return mine.numpy()
        sizes = [int(bounds[r + 1] - bounds[r]) for r in range(world)]
        gathered = dist_utils.all_gather_rows(mine.to(device), sizes, what="all_gather(validation embeddings)")
        return gathered.cpu().numpy()

    def __call__(self, model: torch.nn.Module) -> Dict[str, float]:
        row: Dict[str, float] = {}
        accs = []
        for pack in self.packs:
            emb = self._embed(model, pack)
            r = verify(emb[0::2], emb[1::2], pack.issame, folds=pack.folds)
            key = f"val.{pack.name}"
            row[f"{key}.acc"], row[f"{key}.acc_std"] = r["accuracy"], r["accuracy_std"]
            for far, tar in r["tar_at_far"].items():
                row[f"{key}.tar@far={far:g}"] = float(tar)
            accs.append(r["accuracy"])
        row[BEST_KEY] = float(np.mean(accs))
        return row


def summary(row: Dict[str, float], best: Optional[Dict] = None) -> str:
    """``lfw 0.9850 ± 0.0050, cfp_fp 0.9100 ± 0.0120 (best 0.9475 at step 200)`` for the log."""
    parts = [f"{k[4:-4]} {v:.4f} ± {row[k + '_std']:.4f}" for k, v in row.items()
             if k.startswith("val.") and k.endswith(".acc")]
    text = ", ".join(parts)
    if best:
        text += f" (best mean {best['score']:.4f} at step {best['step']})"
    return text
