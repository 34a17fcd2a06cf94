"""``facemargin plot``: draw the figures of a bench run, or the decision-boundary diagram."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path


def register(sub) -> argparse.ArgumentParser:
    """Add the ``plot`` sub-command to ``sub`` (an ``argparse`` sub-parsers object)."""
    p = sub.add_parser(
        "plot",
        help="draw the figures of a bench run (PNG) or the heads' decision boundaries",
        description=(
            "Draw every figure of a bench run. A main-job folder ('facemargin bench' on a glyph set) gets its "
            "ROC, training and TAR curves, ATL convergence and norm-vs-quality figures, from its results.json "
            "and runs/<head>/seed<k>/. A Fashion-MNIST bench folder gets its figures "
            "from BENCH_DIR/runs/<loss>/{metrics.jsonl, features.npz, "
            "scores.npz, features2d.npz, features3d.npz} into BENCH_DIR/figures/*.png (training curves, "
            "ROC of all losses, 2-D/3-D features, intra- vs inter-class angles, norm vs correctness, "
            "easy/semi-hard/hard shares, decision boundaries). Missing files of a loss are skipped with "
            "a warning. With --boundaries OUT.png, draw only the decision-boundary diagram."
        ),
    )
    p.add_argument("bench_dir", nargs="?", metavar="BENCH_DIR",
                   help="output folder of 'facemargin bench' (contains runs/)")
    p.add_argument("--boundaries", metavar="OUT.png", default=None,
                   help="write the decision-boundary diagram of softmax, SphereFace, CosFace, ArcFace and "
                        "the combined margin to this PNG")
    p.add_argument("--heads", nargs="+", metavar="HEAD", default=None,
                   help="heads of the boundary diagram (default: softmax sphereface cosface arcface combined)")
    p.add_argument("--angle", type=float, default=90.0, metavar="DEG",
                   help="angle between the two class directions on the unit-circle row (default 90)")
    p.add_argument("--lambda", dest="lambda_", type=float, default=0.0, metavar="L",
                   help="λ blend of multiplicative margins in the boundary diagram (default 0: pure margin)")
    p.add_argument("--out-dir", metavar="DIR", default=None,
                   help="where the bench figures go (default BENCH_DIR/figures)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Run ``facemargin plot``; returns the exit status."""
    from ..experiments.report import report_figures  # the main job's folder or the per-loss layout
    from .figures import plot_decision_boundaries

    if args.bench_dir is None and args.boundaries is None:
        raise ValueError("give BENCH_DIR and/or --boundaries OUT.png (see 'facemargin plot --help')")
    if args.boundaries is not None:
        out = Path(args.boundaries)
        if out.suffix.lower() != ".png":
            raise ValueError(f"--boundaries must name a .png file, got {out}")
        heads = tuple(args.heads) if args.heads else ("softmax", "sphereface", "cosface", "arcface", "combined")
        print(plot_decision_boundaries(out, heads=heads, angle_deg=args.angle, lambda_=args.lambda_))
    if args.bench_dir is not None:
        bench = Path(args.bench_dir)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            written = report_figures(bench, args.out_dir)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        for name, rel in written.items():
            print(f"{name}: {bench / rel}")
    return 0
