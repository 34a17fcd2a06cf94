"""The figures of facemargin: embedding spaces, ROC and training curves, angle and norm
analyses, decision boundaries of the margin heads, and ATL's sample shares.

Every ``plot_*`` function draws on a fresh :class:`matplotlib.figure.Figure` rendered by the Agg
canvas directly (``pyplot`` is never imported, so the caller's pyplot backend and state are left
alone) and writes one PNG atomically (:func:`facemargin.io.atomic_open`). Each returns the path
it wrote.

The numeric helpers (:func:`angle_stats`, :func:`decision_boundary`, :func:`roc_curve`) are public
too: the report and the tests use them without drawing anything.

One module per kind of figure:

* :mod:`.common` - the blank figure, the atomic PNG write, input checks and series colours;
* :mod:`.embedding` - 2-D feature scatters and 3-D features on the unit sphere;
* :mod:`.roc` - ROC points and area from raw scores, and the ROC figure;
* :mod:`.training` - loss, accuracy and lambda over training;
* :mod:`.angles` - intra- against inter-class angles;
* :mod:`.norms` - feature norm against closed-set correctness;
* :mod:`.boundaries` - the margin heads' decision boundaries;
* :mod:`.shares` - easy / semi-hard / hard shares over training.
"""
from __future__ import annotations

from .angles import angle_stats, plot_angle_grid, plot_angle_histograms
from .boundaries import decision_boundary, head_margin, plot_decision_boundaries
from .common import series_colors
from .embedding import plot_feature_grid, plot_features_2d, plot_features_sphere, plot_sphere_grid
from .norms import plot_norm_grid, plot_norm_vs_correctness
from .quality import plot_error_vs_reject, plot_stratified_tar
from .roc import plot_roc, roc_curve
from .shares import plot_sample_shares
from .training import plot_training_curves

__all__ = [
    "angle_stats",
    "decision_boundary",
    "head_margin",
    "roc_curve",
    "plot_features_2d",
    "plot_feature_grid",
    "plot_features_sphere",
    "plot_sphere_grid",
    "plot_roc",
    "plot_training_curves",
    "plot_angle_histograms",
    "plot_angle_grid",
    "plot_norm_vs_correctness",
    "plot_norm_grid",
    "plot_decision_boundaries",
    "plot_sample_shares",
    "series_colors",
    "plot_stratified_tar", "plot_error_vs_reject",
]
