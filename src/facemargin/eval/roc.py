"""The ROC family of the evaluation protocols; it lives in :mod:`facemargin.roc` (below every layer,
so the figures share it) and is re-exported here under its evaluation name."""
from ..roc import (IJB_FARS, _as_issame, _as_scores, _roc_counts, _thin_mask, _to_numpy, auc,  # noqa: F401
                   equal_error_rate, resolvable_fars, roc_auc, roc_curve, roc_for_plot, tar_at_far,
                   tar_at_far_nearest, tar_at_fars, thin_roc)

__all__ = ["roc_curve", "thin_roc", "auc", "roc_auc", "equal_error_rate", "tar_at_far", "tar_at_far_nearest",
           "tar_at_fars", "resolvable_fars", "roc_for_plot", "IJB_FARS"]
