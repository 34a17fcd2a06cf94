"""The ``facemargin`` command line: one sub-command per job.

Each module in ``_COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its
sub-command(s) and sets ``func`` on the parser to the function that runs it.

Out-of-tree heads, losses and backbones (see :mod:`facemargin.plugins`) are loaded right before
the command's function runs, never while parsing, so ``--help`` imports no torch:
``facemargin --import MODULE_OR_FILE.py COMMAND ...`` (repeatable), the comma-separated
``FACEMARGIN_IMPORT`` environment variable, and installed packages' entry points in the groups
``facemargin.losses`` and ``facemargin.models``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

_COMMAND_MODULES = [
    "facemargin.train.cli",     # train
    "facemargin.train.clean_cli",  # clean
    "facemargin.experiments.cli",     # bench (the main job), glyphs
    "facemargin.eval.cli",      # eval, embed, verify
    "facemargin.align.cli",     # align
    "facemargin.models.cli",    # export
    "facemargin.viz.cli",       # plot
    "facemargin.experiments.heads_cli",  # bench-heads
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
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE (a dotted module name or a path to a .py file) before the command "
                             "runs, so that the heads, losses and backbones it registers can be named, e.g. "
                             "--set loss.name=...; repeatable. FACEMARGIN_IMPORT=mod1,mod2 does the same "
                             "(every torchrun rank inherits it). Installed plugins (entry-point groups "
                             "facemargin.losses, facemargin.models) load by themselves")
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
    from . import plugins

    try:
        plugins.load(args.imports)
    except plugins.PluginError as e:
        print(f"facemargin: error: {e}", file=sys.stderr)
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
