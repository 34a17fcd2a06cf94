"""``facemargin bench-heads``: the speed and memory benchmark of the margin heads.

See :mod:`facemargin.bench.heads` for what is measured and how.
"""
from __future__ import annotations


def register(sub) -> None:
    """Add the ``bench-heads`` sub-command to ``sub`` (an ``argparse`` sub-parsers object)."""
    from . import heads as bench_heads

    p = sub.add_parser(
        "bench-heads",
        help="time and measure every margin head: fused vs plain vs bare GEMM vs pytorch-metric-learning",
        description=(
            "Forward+backward of every classification head at B x D x C: the fused path, the plain "
            "reference path, the bare F.linear + cross-entropy path and pytorch-metric-learning's "
            "equivalents, timed interleaved in one process (medians, ratios to bare), with the peak "
            "memory of each measured in its own process. Prints a table; --json writes the report."
        ),
    )
    bench_heads.add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Run the benchmark for the parsed arguments."""
    from . import heads as bench_heads

    return bench_heads.run(args)
