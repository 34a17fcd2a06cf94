"""Open-set evaluation on Fashion-MNIST: what a model trained on some classes makes of the others.

:class:`FashionEval` holds, for a split of the ten classes into training and evaluation classes,

* pairs of test images of the evaluation classes (never trained on), scored with the LFW
  protocol (10 folds: accuracy, AUC, EER, TAR@FAR);
* the closed-set test split of the training classes, classified by the nearest class mean of
  (a seeded share of) the training images' embeddings.

``facemargin train`` on Fashion-MNIST scores its runs with it, and so does the Fashion-MNIST bench.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ..data.arrays import select_classes, to_tensor_images
from ..data.fashion import load_fashion_mnist
from ..data.openset import OpenSetProtocol
from .embed import embed_images
from .identification import closed_set_accuracy
from .verification import verify


class FashionEval:
    """Open-set pairs of the eval classes and the closed-set split of the training classes."""

    def __init__(self, data_root: Optional[str], train_classes, eval_classes, num_pairs: int, seed: int,
                 gallery_size: int = 12000):
        tr_images, tr_labels = load_fashion_mnist("train", root=data_root)
        te_images, te_labels = load_fashion_mnist("test", root=data_root)
        self.protocol = OpenSetProtocol(train_classes=tuple(train_classes), eval_classes=tuple(eval_classes),
                                        num_pairs=num_pairs, folds=10, seed=seed)
        # open-set: images of the unseen classes only
        ev_idx = np.flatnonzero(np.isin(te_labels, list(eval_classes)))
        self.open_images = to_tensor_images(te_images[ev_idx])
        self.open_labels = te_labels[ev_idx]
        self.pairs = self.protocol.pairs(self.open_labels)
        # closed-set: class means from (a seeded share of) training images, tested on the test split
        idx, y = select_classes(tr_labels, train_classes)
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(idx.size, size=min(idx.size, int(gallery_size)), replace=False))
        self.gallery_images, self.gallery_labels = to_tensor_images(tr_images[idx[keep]]), y[keep]
        cidx, cy = select_classes(te_labels, train_classes)
        self.closed_images, self.closed_labels = to_tensor_images(te_images[cidx]), cy
        self.leak_check()

    def leak_check(self) -> None:
        trained = set(map(int, self.protocol.train_classes))
        seen = set(map(int, np.unique(self.open_labels)))
        if trained & seen:
            raise RuntimeError(f"open-set leak: training classes {sorted(trained & seen)} among evaluation images")

    def raw_pixel_baseline(self) -> Dict:
        """Open-set verification with the pixels themselves as embeddings: what training must beat.

        Two no-training references: the network's input (centred to [-1, 1]) and the 0-255
        intensities (all positive, so their cosine also compares brightness and silhouette)."""
        flat = self.open_images.reshape(self.open_images.shape[0], -1).numpy()
        i1, i2, same = self.pairs
        out = {}
        for name, x in (("centred pixels", flat), ("0-255 intensities", (flat + 1.0) * 127.5)):
            v = verify(x[i1], x[i2], issame=same, folds=10)
            out[name] = {"accuracy": float(v["accuracy"]), "accuracy_std": float(v["accuracy_std"]), "auc": float(v["auc"])}
        return out

    def embed(self, model, images) -> np.ndarray:
        return embed_images(model, images, batch_size=1000)

    def __call__(self, model, full: bool = False) -> Dict:
        emb = self.embed(model, self.open_images)
        i1, i2, same = self.pairs
        v = verify(emb[i1], emb[i2], issame=same, folds=10)
        out = {"accuracy": v["accuracy"], "accuracy_std": v["accuracy_std"], "auc": v["auc"], "eer": v["eer"]}
        if not full:
            return out
        gal = self.embed(model, self.gallery_images)
        test = self.embed(model, self.closed_images)
        out["closed_set_accuracy"] = closed_set_accuracy(gal, self.gallery_labels, test, self.closed_labels)
        out["verify"] = v
        out["open_embeddings"], out["closed_embeddings"], out["gallery_embeddings"] = emb, test, gal
        return out
