"""Open-set protocol on a labelled set: train on some classes, verify pairs of the others.

Face recognition is tested on identities never seen in training.  On a classification set such as
Fashion-MNIST we mimic this by training on ``train_classes`` and drawing LFW-style verification
pairs only from the *test* images of the disjoint ``eval_classes``.

Pair layout (like LFW's ``pairs.txt``): ``folds`` contiguous folds of ``num_pairs / folds`` pairs;
each fold holds ``num_pairs / (2 * folds)`` same pairs followed by as many different pairs.
Same pairs are spread over the eval classes in turn (their counts differ by at most one), and
different pairs over every unordered pair of eval classes in turn; images are drawn uniformly at
random within the class(es), the two members of a pair are distinct images, the order inside a
pair is random, and no unordered pair occurs twice in the whole set.  Everything is a function
of ``seed`` and the labels.
"""
from __future__ import annotations

from itertools import combinations
from typing import Dict, Sequence, Tuple

import numpy as np

__all__ = ["OpenSetProtocol"]


def _labels_1d(labels, name: str = "labels") -> np.ndarray:
    try:
        import torch

        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class labels, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must be integer class labels, got dtype {y.dtype}")
    return y.astype(np.int64)


def _class_tuple(classes, name: str) -> Tuple[int, ...]:
    try:
        out = tuple(int(c) for c in classes)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of integer labels, got {classes!r}") from None
    if not out:
        raise ValueError(f"{name} is empty")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has duplicate classes: {out}")
    return out


def _sample_unique_pairs(rng, k: int, a: np.ndarray, b: np.ndarray = None) -> np.ndarray:
    """``k`` distinct unordered pairs of indices: within ``a`` (b None) or across ``a`` x ``b``.

    Returns a ``(k, 2)`` array of dataset indices.
    """
    if k == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if b is None:
        n = len(a)
        total = n * (n - 1) // 2
    else:
        total = len(a) * len(b)
    if k > total:
        raise ValueError(f"need {k} distinct pairs but only {total} exist")
    if 2 * k > total:  # dense: enumerate every pair and choose without replacement
        if b is None:
            i, j = np.triu_indices(len(a), k=1)
            pairs = np.stack([a[i], a[j]], axis=1)
        else:
            i, j = np.meshgrid(np.arange(len(a)), np.arange(len(b)), indexing="ij")
            pairs = np.stack([a[i.ravel()], b[j.ravel()]], axis=1)
        return pairs[rng.choice(len(pairs), size=k, replace=False)]
    seen, out = set(), []
    while len(out) < k:  # sparse: rejection sampling, expected < 2 draws per pair
        if b is None:
            i, j = rng.choice(len(a), size=2, replace=False)
            p = (int(a[i]), int(a[j]))
        else:
            p = (int(a[rng.integers(len(a))]), int(b[rng.integers(len(b))]))
        key = (min(p), max(p))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return np.asarray(out, dtype=np.int64)


class OpenSetProtocol:
    """Train on ``train_classes``; verify ``num_pairs`` pairs of ``eval_classes`` test images.

    Defaults match Fashion-MNIST: train on labels 0-5, evaluate on 6-9 with 6000 pairs in 10
    folds (300 same + 300 different per fold), seed 0.  ``ValueError`` when the class sets overlap,
    when ``num_pairs`` is not divisible by ``2 * folds``, or when the labels cannot supply the
    pairs.  Usage::

        proto = OpenSetProtocol()
        tr = proto.train_indices(train_labels)        # rows of the training set to use
        y = proto.map_train_labels(train_labels[tr])  # contiguous 0..K-1 for the head
        i1, i2, same = proto.pairs(test_labels)       # rows of the test set
        facemargin.eval.verify(emb[i1], emb[i2], same, folds=proto.folds)
    """

    def __init__(
        self,
        train_classes: Sequence[int] = (0, 1, 2, 3, 4, 5),
        eval_classes: Sequence[int] = (6, 7, 8, 9),
        num_pairs: int = 6000,
        folds: int = 10,
        seed: int = 0,
    ):
        self.train_classes = _class_tuple(train_classes, "train_classes")
        self.eval_classes = _class_tuple(eval_classes, "eval_classes")
        overlap = sorted(set(self.train_classes) & set(self.eval_classes))
        if overlap:
            raise ValueError(
                f"train_classes and eval_classes overlap on {overlap}: an open-set protocol "
                f"needs disjoint classes"
            )
        if len(self.eval_classes) < 2:
            raise ValueError(
                f"eval_classes needs at least 2 classes to form different pairs, got "
                f"{self.eval_classes}"
            )
        if isinstance(folds, bool) or int(folds) != folds or folds < 2:
            raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
        if isinstance(num_pairs, bool) or int(num_pairs) != num_pairs or num_pairs <= 0:
            raise ValueError(f"num_pairs must be a positive integer, got {num_pairs!r}")
        if num_pairs % (2 * folds):
            raise ValueError(
                f"num_pairs={num_pairs} must be divisible by 2*folds={2 * folds} so that every "
                f"fold has as many same as different pairs"
            )
        self.num_pairs = int(num_pairs)
        self.folds = int(folds)
        self.seed = seed

    # --------------------------------------------------------------------------- properties
    @property
    def fold_size(self) -> int:
        """Pairs per fold (``num_pairs / folds``)."""
        return self.num_pairs // self.folds

    @property
    def num_train_classes(self) -> int:
        """Number of training classes (the head's ``num_classes``)."""
        return len(self.train_classes)

    def fold_slices(self):
        """The ``folds`` contiguous slices of the pair arrays returned by :meth:`pairs`."""
        fs = self.fold_size
        return [slice(f * fs, (f + 1) * fs) for f in range(self.folds)]

    def __repr__(self) -> str:
        return (
            f"OpenSetProtocol(train_classes={self.train_classes}, eval_classes={self.eval_classes}"
            f", num_pairs={self.num_pairs}, folds={self.folds}, seed={self.seed})"
        )

    # --------------------------------------------------------------------------- selections
    def train_indices(self, labels) -> np.ndarray:
        """Sorted indices of the samples whose label is a training class."""
        y = _labels_1d(labels)
        idx = np.flatnonzero(np.isin(y, self.train_classes))
        if idx.size == 0:
            raise ValueError(f"no sample has a training class {self.train_classes}")
        return idx.astype(np.int64)

    closed_set_indices = train_indices  # test images of the training classes (closed-set eval)

    def eval_indices(self, labels) -> np.ndarray:
        """Sorted indices of the samples whose label is an evaluation class."""
        y = _labels_1d(labels)
        return np.flatnonzero(np.isin(y, self.eval_classes)).astype(np.int64)

    def map_train_labels(self, labels) -> np.ndarray:
        """Map training-class labels to ``0..K-1`` in ``train_classes`` order."""
        y = _labels_1d(labels)
        lut: Dict[int, int] = {c: i for i, c in enumerate(self.train_classes)}
        bad = ~np.isin(y, self.train_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"label {int(y[i])} at index {i} is not a training class")
        return np.array([lut[int(c)] for c in y], dtype=np.int64)

    # --------------------------------------------------------------------------- pairs
    def pairs(self, test_labels) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Verification pairs ``(idx1, idx2, issame)`` over the eval classes of ``test_labels``.

        ``idx1``/``idx2`` are int64 row indices into the test set, ``issame`` is bool; layout in
        the module docstring.  ``ValueError`` when an eval class has too few images.
        """
        y = _labels_1d(test_labels, "test_labels")
        rng = np.random.default_rng(self.seed)
        members = {}
        for c in self.eval_classes:
            idx = np.flatnonzero(y == c)
            if len(idx) < 2:
                raise ValueError(
                    f"eval class {c} has {len(idx)} image(s) in test_labels; need at least 2"
                )
            members[c] = idx
        half = self.fold_size // 2
        n_same = n_diff = self.num_pairs // 2
        K = len(self.eval_classes)
        class_pairs = list(combinations(self.eval_classes, 2))
        # global order: fold-major, so every fold cycles over the classes / class pairs
        same_cls = np.array([self.eval_classes[t % K] for t in range(n_same)])
        diff_cp = np.array([t % len(class_pairs) for t in range(n_diff)])

        same = np.empty((n_same, 2), dtype=np.int64)
        for c in self.eval_classes:
            where = np.flatnonzero(same_cls == c)
            try:
                same[where] = _sample_unique_pairs(rng, len(where), members[c])
            except ValueError as e:
                raise ValueError(f"eval class {c}: cannot draw same pairs: {e}") from None
        diff = np.empty((n_diff, 2), dtype=np.int64)
        for k, (a, b) in enumerate(class_pairs):
            where = np.flatnonzero(diff_cp == k)
            try:
                diff[where] = _sample_unique_pairs(rng, len(where), members[a], members[b])
            except ValueError as e:
                raise ValueError(f"eval classes {a}, {b}: cannot draw different pairs: {e}") from None
        # random order inside each pair
        for arr in (same, diff):
            swap = rng.random(len(arr)) < 0.5
            arr[swap] = arr[swap][:, ::-1]

        idx1 = np.empty(self.num_pairs, dtype=np.int64)
        idx2 = np.empty(self.num_pairs, dtype=np.int64)
        issame = np.zeros(self.num_pairs, dtype=bool)
        for f in range(self.folds):
            s0 = f * self.fold_size
            part = slice(f * half, (f + 1) * half)
            idx1[s0 : s0 + half], idx2[s0 : s0 + half] = same[part, 0], same[part, 1]
            issame[s0 : s0 + half] = True
            idx1[s0 + half : s0 + 2 * half] = diff[part, 0]
            idx2[s0 + half : s0 + 2 * half] = diff[part, 1]
        return idx1, idx2, issame
