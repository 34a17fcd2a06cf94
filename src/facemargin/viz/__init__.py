"""Figures of facemargin (matplotlib, PNG, Agg canvas; ``pyplot`` is never touched).

Embedding spaces (:func:`plot_features_2d`, :func:`plot_feature_grid`,
:func:`plot_features_sphere`, :func:`plot_sphere_grid`), ROC curves (:func:`plot_roc`,
:func:`roc_curve`), training curves (:func:`plot_training_curves`), the intra/inter-class angle
criterion (:func:`angle_stats`, :func:`plot_angle_histograms`, :func:`plot_angle_grid`), feature
norm vs correctness (:func:`plot_norm_vs_correctness`, :func:`plot_norm_grid`), the heads'
decision boundaries (:func:`decision_boundary`, :func:`plot_decision_boundaries`), ATL's
easy/semi-hard/hard shares (:func:`plot_sample_shares`), and every figure of a bench folder in
the per-loss layout (:func:`report_figures`).

The figures draw what they are handed: nothing here imports the benchmarks or the evaluation
code. ``facemargin plot`` (:mod:`.cli`, the command line above both) picks the layout of a bench
folder and calls the right drawer.
"""
from .._lazy import lazy_package


def _public():
    """The public names, imported on first use (``facemargin --help`` needs no torch)."""
    from .figures import (angle_stats, decision_boundary, head_margin, plot_angle_grid, plot_angle_histograms,
                          plot_decision_boundaries, plot_feature_grid, plot_features_2d, plot_features_sphere,
                          plot_norm_grid, plot_norm_vs_correctness, plot_roc, plot_sample_shares, plot_sphere_grid,
                          plot_training_curves, roc_curve, series_colors)
    from .figures import plot_error_vs_reject, plot_stratified_tar
    from .report import ReportWarning, read_metrics, read_npz, report_angle_stats, report_figures
    return locals()


__getattr__ = lazy_package(__name__, _public)

__all__ = [
    "angle_stats", "decision_boundary", "head_margin", "plot_angle_grid", "plot_angle_histograms",
    "plot_decision_boundaries", "plot_feature_grid", "plot_features_2d", "plot_features_sphere",
    "plot_norm_grid", "plot_norm_vs_correctness", "plot_roc", "plot_sample_shares", "plot_sphere_grid",
    "plot_training_curves", "roc_curve", "series_colors", "ReportWarning", "read_metrics", "read_npz",
    "report_angle_stats", "report_figures",
    "plot_stratified_tar", "plot_error_vs_reject",
]
