"""The ``facemargin`` command line: one sub-command per job.

Each module in ``_COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its
sub-command(s) and sets ``func`` on the parser to the function that runs it.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

_COMMAND_MODULES = [
    "facemargin.train.cli",     # train
    "facemargin.train.clean_cli",  # clean
    "facemargin.bench.cli",     # bench (the main job), glyphs
    "facemargin.eval.cli",      # eval, embed, verify
    "facemargin.align.cli",     # align
    "facemargin.models.cli",    # export
    "facemargin.viz.cli",       # plot
    "facemargin.bench.heads_cli",  # bench-heads
    "facemargin.detect.cli",    # detect
    "facemargin.data.cli",      # pack, pack-pairs
]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="facemargin",
        description="Train, compare and deploy face-embedding models with every margin loss.",
    )
    parser.add_argument("--version", action="version", version=f"facemargin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        print(f"facemargin {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a lost rank in a distributed run: a clear line, not a traceback
        from .distributed.utils import DistributedError

        if not isinstance(e, DistributedError):
            raise
        print(f"facemargin {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
