"""``facemargin bench-heads``: the speed and memory benchmark of the margin heads.

See :mod:`facemargin.experiments.heads` for what is measured and how. The benchmark (and torch) is
imported only when it runs, so ``facemargin bench-heads --help`` starts without torch.
``python -m facemargin.experiments.heads_cli`` and ``benchmarks/heads.py`` run the same command.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .head_sizes import DEFAULT_SIZES, QUICK_SIZES


def register(sub) -> None:
    """Add the ``bench-heads`` sub-command to ``sub`` (an ``argparse`` sub-parsers object)."""
    p = sub.add_parser(
        "bench-heads",
        help="time and measure every margin head: fused vs plain vs bare GEMM vs pytorch-metric-learning",
        description=(
            "Forward+backward of every classification head at B x D x C: the fused path, the plain "
            "reference path, the bare F.linear + cross-entropy path and pytorch-metric-learning's "
            "equivalents, timed interleaved in one process (the minimum over the repeats, ratios to the bare "
            "path with as many rows), with the peak memory of each measured in its own process. Prints a table; --json writes the report."
        ),
    )
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``facemargin bench-heads`` / ``benchmarks/heads.py``."""
    p.add_argument("--sizes", nargs="+", metavar="SIZE",
                   help="cases as C, BxDxC, optionally @CHUNK for the fused path "
                        f"(default: {' '.join(DEFAULT_SIZES)})")
    p.add_argument("--batch", type=int, default=256, help="B for sizes given as C only (default 256)")
    p.add_argument("--dim", type=int, default=512, help="D for sizes given as C only (default 512)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per unchunked size (default 5)")
    p.add_argument("--large-repeats", type=int, default=2, help="timed rounds per chunked size (default 2)")
    p.add_argument("--heads", nargs="+", metavar="HEAD", help="heads to benchmark (default: all)")
    p.add_argument("--methods", nargs="+", default=["bare", "fused", "plain", "pml"],
                   choices=["bare", "fused", "plain", "pml"], help="method kinds (default: all)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-process peak-memory runs")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto: cuda when available)")
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_SIZES[0]} only, 2 rounds")
    p.add_argument("--json", metavar="PATH", help="write the full report as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    """Run the benchmark for the parsed arguments; print the table; write JSON when asked."""
    from .heads import run_sizes

    if args.quick:
        sizes = args.sizes or list(QUICK_SIZES)
        repeats, large = min(args.repeats, 2), min(args.large_repeats, 1)
    else:
        sizes = args.sizes or list(DEFAULT_SIZES)
        repeats, large = args.repeats, args.large_repeats
    run_sizes(sizes, batch=args.batch, dim=args.dim, heads=args.heads, methods=args.methods, repeats=repeats,
              large_repeats=large, memory=not args.no_memory, device=args.device, progress=not args.no_progress,
              json_path=args.json)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The benchmark as a program (``benchmarks/heads.py``); ``--child JSON`` runs one memory
    measurement, as the benchmark's own child processes do."""
    from .heads import __doc__ as about, child_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return child_main(argv)
    p = argparse.ArgumentParser(prog="bench-heads", description=about.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
