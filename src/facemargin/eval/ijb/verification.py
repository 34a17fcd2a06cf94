"""IJB 1:1 metrics: TAR at FAR in the two readings, AUC and the ROC of template-pair scores."""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch

from ...roc import (IJB_FARS, _as_issame, _as_scores, _roc_counts, _thin_mask, auc, resolvable_fars, tar_at_far,
                   tar_at_far_nearest)

__all__ = ["verification_1to1"]


def verification_1to1(scores, labels, fars: Sequence[float] = IJB_FARS) -> Dict:
    """TAR at each FAR level (two readings), AUC and the ROC of template-pair scores.

    ``tar_at_far``: the nearest-FAR reading on the thinned ROC (how the published IJB tables are
    computed); ``tar_at_far_at_most``: the largest TAR whose FAR does not exceed the level.
    Levels finer than ``1/#impostor pairs`` are omitted.
    """
    raw = scores.numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    s = _as_scores(raw)
    y = _as_issame(labels, len(s))
    key = raw.reshape(-1) if raw.dtype == np.float32 else None  # same order, faster to sort
    fps, tps, thr, n_pos, n_neg = _roc_counts(s, y, key)  # one sort serves both readings
    keep = _thin_mask(fps, tps) if len(fps) > 2 else np.ones(len(fps), bool)
    fpr = np.concatenate([[0.0], fps / n_neg])
    tpr = np.concatenate([[0.0], tps / n_pos])
    thr = np.concatenate([[np.inf], thr])
    keep = np.concatenate([[True], keep])
    tfpr, ttpr = fpr[keep], tpr[keep]
    levels = resolvable_fars(n_neg, fars)
    return {
        "tar_at_far": {far: tar_at_far_nearest(tfpr, ttpr, far) for far in levels},
        "tar_at_far_at_most": {far: tar_at_far(fpr, tpr, far) for far in levels},
        "auc": auc(fpr, tpr),
        "num_pairs": int(len(s)),
        "num_genuine": int(y.sum()),
        "num_impostor": n_neg,
        "roc": {"fpr": fpr, "tpr": tpr, "thresholds": thr},
    }
