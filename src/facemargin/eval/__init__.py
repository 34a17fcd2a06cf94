"""Evaluation: LFW-protocol pair verification, flip-test embedding, closed-set identification.

* :func:`verify` - k-fold accuracy/threshold, ROC AUC, EER and TAR@FAR (LFW protocol);
* :mod:`.roc` - the ROC family (ROC, AUC, EER, both TAR@FAR readings);
* :func:`embed_images` - batched embeddings with optional flip-test fusion;
* :func:`all_vs_all` - every pair of a labelled set in bounded memory: TAR@FAR, EER, rank-1;
* :func:`identify`, :func:`gallery_probe_split`, :func:`closed_set_accuracy` - identification;
* :mod:`.ijb` - IJB-B/IJB-C 1:1 and 1:N template protocols; :mod:`.distractors` - MegaFace-style
  identification among distractors; :mod:`.summary` - several targets, one table.
"""
from .._lazy import lazy_package


def _public():
    """The public names, imported on first use (``facemargin --help`` needs no torch)."""
    from .allvsall import all_vs_all
    from .embed import embed_images
    from .identification import closed_set_accuracy, gallery_probe_split, identify, nearest_class_mean
    from .quality import error_vs_reject, image_quality, quality_cuts, random_scores, stratified_tar
    from ..roc import IJB_FARS, roc_for_plot, tar_at_far_nearest, tar_at_fars, thin_roc
    from .verification import (
        auc,
        best_threshold,
        cosine_scores,
        equal_error_rate,
        fold_slices,
        roc_auc,
        roc_curve,
        tar_at_far,
        verify,
    )
    return locals()


__getattr__ = lazy_package(__name__, _public)

__all__ = [
    "verify",
    "roc_curve",
    "auc",
    "roc_auc",
    "equal_error_rate",
    "tar_at_far",
    "best_threshold",
    "fold_slices",
    "cosine_scores",
    "embed_images",
    "all_vs_all",
    "identify",
    "gallery_probe_split",
    "closed_set_accuracy",
    "nearest_class_mean",
    "thin_roc",
    "tar_at_far_nearest",
    "tar_at_fars",
    "roc_for_plot",
    "IJB_FARS",
    "image_quality", "quality_cuts", "stratified_tar", "error_vs_reject", "random_scores",
]
