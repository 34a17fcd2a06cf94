"""Out-of-tree heads and backbones reach the CLI and torchrun without a wrapper script:
``facemargin --import MODULE``, ``FACEMARGIN_IMPORT`` and the entry-point groups
``facemargin.losses`` / ``facemargin.models``."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "train"))
from trainutil import write_fashion  # noqa: E402

from facemargin import losses, plugins  # noqa: E402
from facemargin.cli import main  # noqa: E402

# the per-sample margin of docs/extending.md, written against public names only; it also reports
# its mean margin, so the metrics show that it is what trained
MARGIN_MODULE = '''
from facemargin import losses


class NormMargin(losses.Margin):
    """phi(c) = c - m_i, with m_i growing with the (detached) feature norm."""

    def __init__(self, m_low=0.2, m_high=0.5, slope=0.01, n0=10.0):
        super().__init__()
        self.m_low, self.m_high, self.slope, self.n0 = m_low, m_high, slope, n0
        self.last = float("nan")

    def prepare(self, ctx):
        m = self.m_low + self.slope * (ctx.norm_detached - self.n0)
        ctx.values["m"] = m.clamp(self.m_low, self.m_high)
        self.last = float(ctx.values["m"].mean())

    def phi(self, c, ctx):
        return c - ctx.values["m"].to(c.dtype)

    def stats(self):
        return {"m_mean": self.last}


@losses.LOSSES.register("{name}")
class NormCosFace(losses.MarginHead):
    """CosFace with a norm-dependent, per-sample margin."""

    def __init__(self, embedding_size, num_classes, s=30.0, m_low=0.2, m_high=0.5, slope=0.01,
                 n0=10.0, **kw):
        spec = losses.MarginSpec("scale", True, NormMargin(m_low, m_high, slope, n0))
        super().__init__(embedding_size, num_classes, spec, scale=s, **kw)
'''

BACKBONE_MODULE = '''
import torch.nn as nn

from facemargin import models


@models.BACKBONES.register("{name}")
class Tiny(models.Backbone):
    INPUT_SIZE = (1, 28, 28)

    def __init__(self, embedding_size=8):
        super().__init__(embedding_size)
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(4, embedding_size))

    def forward(self, x):
        self.check_input(x)
        return self.body(x)
'''

TINY = ["--set", "model.name=lenetpp", "--set", "model.embedding_size=8", "--set", "model.params.width=0.25",
        "--set", "optim.lr=0.01", "--set", "train.batch_size=12", "--set", "train.log_every=1",
        "--set", "train.progress=false", "--set", "train.device=cpu", "--set", "data.num_pairs=40",
        "--set", "loss.params.s=8.0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fashion(tmp_path_factory.mktemp("fm"), train_per_class=8, test_per_class=8)


def _write(folder: Path, module: str, source: str, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module}.py"
    path.write_text(textwrap.dedent(source).replace("{name}", name), encoding="utf-8")
    return path


def _env(**extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(plugins.ENV_IMPORT, None)
    env.update(extra)
    return env


def _cli(args, env, timeout=120):
    return subprocess.run([sys.executable, "-m", "facemargin.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _check_run(out: Path, loss_name: str, steps: int):
    from facemargin.train.checkpoint import load_checkpoint

    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == steps and state["config"]["loss"]["name"] == loss_name
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    margins = [r["margin.m_mean"] for r in rows if "margin.m_mean" in r]
    assert len(margins) == steps and all(0.2 <= m <= 0.5 for m in margins)  # the plugin's margin trained
    return state


@pytest.fixture
def in_process(tmp_path):
    """A plugin file imported into this process; its names and module are removed afterwards."""
    path = _write(tmp_path / "plug", "fm_plugin_inproc", MARGIN_MODULE, "plugin_inproc_normcos")
    yield path
    if "plugin_inproc_normcos" in losses.LOSSES:
        losses.LOSSES.unregister("plugin_inproc_normcos")
    sys.modules.pop("fm_plugin_inproc", None)
    plugins._FILES.pop(path.resolve(), None)


def test_import_a_file_then_train_with_its_head(data, tmp_path, in_process, capsys):
    out = tmp_path / "run"
    assert main(["--import", str(in_process), "train", "--data", str(data), *TINY,
                 "--set", "loss.name=plugin_inproc_normcos", "--steps", "3", "--out", str(out)]) == 0
    _check_run(out, "plugin_inproc_normcos", 3)
    # a second command in the same process does not run the file again (no "registered twice")
    assert main(["--import", str(in_process), "train", "--set", "loss.name=plugin_inproc_normcos",
                 "--print-config"]) == 0
    assert 'name = "plugin_inproc_normcos"' in capsys.readouterr().out


def test_dotted_module_via_pythonpath_and_the_environment(data, tmp_path):
    folder = tmp_path / "mods"
    _write(folder, "fm_plugin_dotted", MARGIN_MODULE, "plugin_dotted_normcos")
    pythonpath = os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])
    # --import with a dotted name found on PYTHONPATH: trains and writes a checkpoint
    out = tmp_path / "dotted"
    proc = _cli(["--import", "fm_plugin_dotted", "train", "--data", str(data), *TINY,
                 "--set", "loss.name=plugin_dotted_normcos", "--steps", "2", "--out", str(out)],
                _env(PYTHONPATH=pythonpath))
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_run(out, "plugin_dotted_normcos", 2)
    # FACEMARGIN_IMPORT, no option: the same head (a second, unused entry is fine)
    out = tmp_path / "env"
    proc = _cli(["train", "--data", str(data), *TINY, "--set", "loss.name=plugin_dotted_normcos", "--steps", "2",
                 "--out", str(out)], _env(PYTHONPATH=pythonpath, FACEMARGIN_IMPORT=" fm_plugin_dotted, json ,"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_run(out, "plugin_dotted_normcos", 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_ranks_with_import(data, tmp_path):
    path = _write(tmp_path / "plug", "fm_plugin_dist", MARGIN_MODULE, "plugin_dist_normcos")
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "facemargin.cli", "--import", str(path), "train",
           "--data", str(data), *TINY, "--set", "loss.name=plugin_dist_normcos", "--steps", "3", "--out", str(out)]
    proc = subprocess.run(cmd, env=_env(FACEMARGIN_DIST_TIMEOUT="60"), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = _check_run(out, "plugin_dist_normcos", 3)
    assert state["loss"]["weight"].shape == (6, 8)  # the full class weights of both ranks


def _dist_info(site: Path, project: str, entry_points: str) -> None:
    info = site / f"{project}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project}\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points), encoding="utf-8")


def test_entry_points_load_without_any_option(data, tmp_path):
    site = tmp_path / "site"
    _write(site, "fm_ep_margins", MARGIN_MODULE, "plugin_ep_normcos")
    _write(site, "fm_ep_backbones", BACKBONE_MODULE, "plugin_ep_tiny")
    _dist_info(site, "fm_ep_demo", """
        [facemargin.losses]
        normcos = fm_ep_margins
        [facemargin.models]
        tiny = fm_ep_backbones:Tiny
    """)
    env = _env(PYTHONPATH=os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]))
    out = tmp_path / "ep"
    proc = _cli(["train", "--data", str(data), *TINY, "--set", "loss.name=plugin_ep_normcos",
                 "--set", "model.name=plugin_ep_tiny", "--set", "model.params={}", "--steps", "2",
                 "--out", str(out)], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = _check_run(out, "plugin_ep_normcos", 2)
    assert state["config"]["model"]["name"] == "plugin_ep_tiny"


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_error_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(plugins.ENV_IMPORT, raising=False)
    # --help never imports anything: a bad module does not matter there
    with pytest.raises(SystemExit) as e:
        main(["--import", "fm_no_such_module", "--help"])
    assert e.value.code == 0
    capsys.readouterr()

    assert main(["--import", "fm_no_such_module", "train", "--print-config"]) == 2
    assert _error_line(capsys) == "facemargin: error: cannot import fm_no_such_module: No module named 'fm_no_such_module'"

    missing = tmp_path / "nowhere" / "my_margins.py"
    assert main(["--import", str(missing), "train", "--print-config"]) == 2
    assert _error_line(capsys) == f"facemargin: error: cannot import {missing}: no such file"
    monkeypatch.chdir(tmp_path)  # a relative path: the line also says where it looked
    assert main(["--import", "nowhere/my_margins.py", "train", "--print-config"]) == 2
    assert _error_line(capsys) == f"facemargin: error: cannot import nowhere/my_margins.py: no such file ({missing})"

    broken = tmp_path / "fm_broken.py"
    broken.write_text("import fm_missing_dependency\n", encoding="utf-8")
    monkeypatch.setenv(plugins.ENV_IMPORT, str(broken))
    assert main(["train", "--print-config"]) == 2
    assert _error_line(capsys) == f"facemargin: error: cannot import {broken}: No module named 'fm_missing_dependency'"
    monkeypatch.delenv(plugins.ENV_IMPORT)

    raising = tmp_path / "fm_raising.py"
    raising.write_text("raise RuntimeError('no GPU here')\n", encoding="utf-8")
    assert main(["--import", str(raising), "train", "--print-config"]) == 2
    assert _error_line(capsys) == f"facemargin: error: cannot import {raising}: RuntimeError: no GPU here"
    assert "fm_raising" not in sys.modules


def test_a_broken_entry_point_names_the_plugin(tmp_path, capsys, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "fm_ep_broken.py").write_text("import fm_missing_dependency\n", encoding="utf-8")
    _dist_info(site, "fm_ep_broken_pkg", """
        [facemargin.losses]
        broken = fm_ep_broken
    """)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv(plugins.ENV_NO_PLUGINS, raising=False)
    assert main(["train", "--print-config"]) == 2
    line = _error_line(capsys)
    assert line.startswith("facemargin: error: plugin 'broken' (facemargin.losses = 'fm_ep_broken', "
                           "package fm_ep_broken_pkg 1.0) failed to load: No module named 'fm_missing_dependency'"), line
    # the way past it, without uninstalling
    monkeypatch.setenv(plugins.ENV_NO_PLUGINS, "1")
    assert main(["train", "--print-config"]) == 0
    capsys.readouterr()
