"""The benchmarks: the main job on the glyph identity set, and Fashion-MNIST for the feature figures.

* :func:`run_main_bench` (``facemargin bench``): every head with one backbone, budget and seed
  protocol on thousands of font-rendered identities; TAR@FAR all-vs-all on unseen identities,
  pair accuracy, EER, rank-1; mean ± std over seeds; resumable.
* :func:`run_fashion_bench` (``facemargin bench --dataset fashion-mnist``): every loss on
  Fashion-MNIST classes 0-5, open-set pairs of classes 6-9; and the 2-D/3-D feature runs.
"""
from .._lazy import lazy_package


def _public():
    """The public names, imported on first use (``facemargin --help`` needs no torch)."""
    from .glyphs import BUDGETS, HEADS, available_heads, run_main_bench
    from .fashion import run_bench as run_fashion_bench
    return locals()


__getattr__ = lazy_package(__name__, _public)

__all__ = ["run_main_bench", "run_fashion_bench", "BUDGETS", "HEADS", "available_heads"]
