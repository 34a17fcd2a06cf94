"""``facemargin --help`` and every ``facemargin CMD --help`` start without importing torch."""
from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import contextlib, io, json, sys
from facemargin.cli import build_parser, main
commands = sorted(build_parser()._subparsers._group_actions[0].choices)
loaded = {}
for cmd in [None] + commands:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(["--help"] if cmd is None else [cmd, "--help"])
        except SystemExit:
            pass
    loaded[cmd or "facemargin"] = [m for m in ("torch", "matplotlib", "onnxruntime") if m in sys.modules]
print(json.dumps({"commands": commands, "loaded": loaded}))
"""


def test_help_imports_no_torch():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"train", "eval", "embed", "verify", "export", "align", "detect", "pack", "pack-pairs", "bench",
            "bench-heads", "plot"} <= set(report["commands"])
    assert report["loaded"] == {cmd: [] for cmd in report["loaded"]}, report["loaded"]


def test_a_command_still_runs_after_the_lazy_start(tmp_path):
    """The library loads on first use: a real command works from a fresh process."""
    out = subprocess.run([sys.executable, "-m", "facemargin.cli", "train", "--set", "loss.name=arcface",
                          "--print-config"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'name = "arcface"' in out.stdout
