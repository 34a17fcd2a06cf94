"""The README cannot drift: every shell command of its examples is run here, on tiny data.

What is collected from README.md (``readme_commands``):

* every command of a fenced ```` ```bash ```` block, and the lines of an unmarked ```` ``` ```` block that
  start with ``facemargin``, ``torchrun``, ``make`` or ``python``; backslash-continued lines are joined
  and a ``#`` comment is dropped (``shlex``, so a ``#`` inside quotes stays);
* the inline commands of the prose: single-backquoted spans that start with ``facemargin `` or
  ``torchrun ``. A span that is only ``facemargin SUBCOMMAND`` is a *mention*: it is checked to name
  a real sub-command, nothing is run.

Every collected command must be in ``RUNS`` (it is run) or in ``EXEMPT`` (with the reason), and every
key of both must still be in README, so a new, changed or removed README command fails
``test_every_readme_command_is_run_or_exempted`` until this file follows.

How a command runs (``test_readme_command``): each in a ``subprocess`` with the venv's
``facemargin`` / ``torchrun`` scripts, its working directory one folder filled once by
``readme_fixtures.build_workspace``. Commands are grouped in lanes (``Run.lane``) that write
nothing another lane reads; within a lane they run in README order, so later commands use what
earlier ones wrote (``runs/arc`` of the first ``train`` is the checkpoint every ``eval`` reads), and
two lanes run at once to keep the file near a minute on 2 cores. Before a command runs:

1. README placeholders are replaced by ``SUBSTITUTIONS`` (one table, applied to whole words), and,
   for the one command named in ``CONTEXT_SUBSTITUTIONS``, by that command's own entries. Relative
   README paths (``lfw.bin``, ``my.toml``, ``photos/``, ``faces_rec``, ``OUT``, ``PAIRS``, ...) are
   files of the work folder under README's own names and are not substituted.
2. Heavy budgets get overrides APPENDED (``RUNS[cmd].append``, e.g. ``--set train.steps=3
   --set train.batch_size=8``); nothing of the README command is removed, so the command as written
   is what runs, with a later ``--set``/``--steps`` winning over README's value.
3. The default Fashion-MNIST data of the ``train`` commands is the tiny set of ``readme_fixtures``,
   found through ``$FACEMARGIN_DATA`` (the README commands name no data folder).

Each run must exit 0 and leave the file it promises (checkpoint, ``.npy``, ``.json``, ``.onnx``,
``.rec``, ``.bin``, figures), checked by ``RUNS[cmd].outputs`` and ``RUNS[cmd].check``. A failure
shows the command as run, its exit status and the tail of its output.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import tomllib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # the venv's scripts: facemargin, torchrun

# ---------------------------------------------------------------------------------------------
# README parsing

FENCE = re.compile(r"^\s*```(\w*)\s*$")
PLAIN_BLOCK_STARTS = ("facemargin", "torchrun", "make", "python")
INLINE = re.compile(r"(?<!`)`((?:facemargin|torchrun) [^`]+)`(?!`)")


@dataclass(frozen=True)
class ReadmeCommand:
    line: int      # README line where the command starts
    kind: str      # "block" or "inline"
    text: str      # canonical form: shlex.join of its words


def _canonical(text: str) -> str:
    return shlex.join(shlex.split(text, comments=True))


def _inline(prose: List[str], first_line: int) -> List[ReadmeCommand]:
    """Inline command spans of consecutive prose lines (a span may wrap onto the next line)."""
    chunk = "\n".join(prose)
    return [ReadmeCommand(first_line + chunk[:m.start()].count("\n"), "inline", _canonical(m.group(1)))
            for m in INLINE.finditer(chunk)]


def readme_commands(text: str) -> List[ReadmeCommand]:
    """Commands of the README's shell blocks and inline ``facemargin``/``torchrun`` spans, in README order."""
    out: List[ReadmeCommand] = []
    lang: Optional[str] = None  # None: outside a fence
    pending: List[str] = []
    prose: List[str] = []
    prose_start = start = 1
    for no, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if m:
            if lang is None:
                out += _inline(prose, prose_start)
                prose = []
            else:
                prose_start = no + 1
            lang = m.group(1) if lang is None else None
            pending = []
            continue
        if lang is None:
            prose.append(line)
            continue
        if lang not in ("bash", "sh", "shell", ""):
            continue
        if not pending:
            start = no
        stripped = line.strip()
        if stripped.endswith("\\"):
            pending.append(stripped[:-1])
            continue
        pending.append(stripped)
        joined = " ".join(pending)
        pending = []
        if not shlex.split(joined, comments=True):
            continue  # blank or comment line
        if lang == "" and shlex.split(joined, comments=True)[0] not in PLAIN_BLOCK_STARTS:
            continue
        out.append(ReadmeCommand(start, "block", _canonical(joined)))
    return out + _inline(prose, prose_start)


def is_mention(cmd: ReadmeCommand) -> bool:
    """``facemargin SUBCOMMAND`` alone, in prose: a name, not a command to run."""
    words = shlex.split(cmd.text)
    return cmd.kind == "inline" and len(words) == 2 and words[0] == "facemargin"


# ---------------------------------------------------------------------------------------------
# the tables

#: README placeholder -> what the test puts there (whole words; relative to the work folder)
SUBSTITUTIONS: Dict[str, str] = {
    "/data/lfw": "data/lfw",                                # LFW folder (Name/Name_0001.jpg) + pairs.txt, 28x28
    "/data/IJB_release": "data/IJB_release",                # IJBB/ and IJBC/, meta/ + loose_crop/ (insightface)
    "/data/facescrub_aligned": "data/facescrub_aligned",    # MegaFace probes: <identity>/<image>, 28x28
    "/data/megaface_aligned": "data/megaface_aligned",      # MegaFace distractor faces, 28x28
    "/shared/runs/arc": "shared/runs/arc",                  # "storage every machine sees"
    "node0.example:29400": "127.0.0.1:{port}",              # the rendezvous: loopback, a free port
    "--nproc_per_node 8": "--nproc_per_node 1",             # 8 GPUs per machine -> 1 CPU process per launcher
    "MODEL": "runs/faces/checkpoint.pt",                    # the face model trained on faces_rec (32x32 RGB)
    "DIR": "faces",                                         # faces/<identity>/<image>, 32x32 aligned crops
}

#: substitutions of one command only (key: a substring that names the command). The face run's
#: data.val packs must be at its backbone's size (32x32), while the lfw.bin/cfp_fp.bin that README
#: evaluates runs/arc (LeNet++, 28x28) on are 28x28: two packs of one README name.
CONTEXT_SUBSTITUTIONS: Dict[str, Dict[str, str]] = {
    "--data faces_rec": {"lfw.bin": "val32/lfw.bin", "cfp_fp.bin": "val32/cfp_fp.bin"},
}

TINY = ("--set", "train.steps=3", "--set", "train.batch_size=8")


def _load_ckpt(path):
    from facemargin.train.checkpoint import load_checkpoint

    return load_checkpoint(path)


def _metrics(path) -> List[dict]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def check_arc(ws, out):
    state = _load_ckpt(ws / "runs/arc/checkpoint.pt")
    assert state["step"] == 3
    assert state["config"]["loss"] == {"name": "arcface", "params": {"s": 16}}
    assert state["config"]["model"]["name"] == "lenetpp"  # auto: 28x28 grey Fashion-MNIST


def check_my_toml(ws, out):
    state = _load_ckpt(ws / "runs/my/checkpoint.pt")
    assert state["config"]["optim"]["lr"] == 0.05 and state["step"] == 3


def check_resume(ws, out):
    assert _load_ckpt(ws / "runs/arc/checkpoint.pt")["step"] == 6
    steps = [r["step"] for r in _metrics(ws / "runs/arc/metrics.jsonl") if "loss" in r and "event" not in r]
    assert steps[-1] == 6 and steps == sorted(steps), steps  # the resumed run appended to the same file


def check_faces(ws, out):
    state = _load_ckpt(ws / "runs/faces/checkpoint.pt")
    assert state["config"]["model"]["name"] == "smallcnn"  # auto: 32x32 RGB
    rows = _metrics(ws / "runs/faces/metrics.jsonl")
    assert any("val.lfw.acc" in r and "val.cfp_fp.acc" in r for r in rows), rows[-1]


def check_print_config(ws, out):
    cfg = tomllib.loads(out)
    assert {"data", "model", "loss", "aux", "optim", "dist", "train"} <= set(cfg)


def check_eval_packs(ws, out):
    sets = json.loads((ws / "eval.json").read_text())["sets"]
    assert {"lfw", "cfp_fp"} <= set(sets), list(sets)
    assert (ws / "eval_roc.png").is_file()


def check_eval_lfw(ws, out):
    assert "lfw" in out


def check_eval_all(ws, out):
    sets = json.loads((ws / "eval.json").read_text())["sets"]
    assert {"lfw", "cfp_fp", "agedb_30", "IJBC 1:1", "IJBC 1:N", "distractors"} <= set(sets), list(sets)


def check_eval_ijbb(ws, out):
    assert "IJBB 1:1" in out and "faceness weighting off" in out


def check_embed_megaface(ws, out):
    import numpy as np

    e = np.load(ws / "megaface_1m.npy")
    assert e.shape == (12, 64) and e.dtype == np.float32  # 6 identities x 2 images, runs/arc's width
    assert len((ws / "megaface_1m.csv").read_text().splitlines()) == 13


def check_embed_model(ws, out):
    import numpy as np

    assert np.load(ws / "e.npy").shape[0] == 16  # faces/: 4 identities x 4 crops


def check_verify(ws, out):
    assert "cosine similarity" in out


def check_detect(ws, out):
    found = json.loads((ws / "faces.json").read_text())
    assert len(found) == 2, found
    assert list((ws / "crops").rglob("*.*")), "no aligned crops"


def check_align(ws, out):
    assert (ws / "aligned" / "detections.json").is_file()
    crops = [p for p in (ws / "aligned").rglob("*") if p.suffix in (".jpg", ".png")]
    assert len(crops) == 2, crops


def check_pack_pairs(ws, out):
    from facemargin.data import load_bin

    images, same = load_bin(ws / "FILE.bin")
    assert images.shape == (16, 32, 32, 3) and same.tolist() == [True, False] * 4


def check_torchrun(ws, out):
    state = _load_ckpt(ws / "shared/runs/arc/checkpoint.pt")
    assert state["step"] == 3


@dataclass
class Run:
    outputs: Tuple[str, ...] = ()                     # files (or folders) the command must leave
    append: Tuple[str, ...] = ()                      # overrides appended to the README command
    check: Optional[Callable] = None                  # check(workspace, stdout+stderr)
    launchers: int = 1                                # torchrun multi-node: this many launchers at once
    lane: str = ""                                    # commands of a lane run in README order


#: Lanes share nothing they write, so two run at once (2 cores): "arc" (runs/arc and what
#: evaluates it), "faces" (the face model, its deployment, packing), "configs" (other train runs),
#: "photos" (detection, alignment, plot) and the multi-node torchrun run.
LANES_AT_ONCE = 2

RUNS: Dict[str, Run] = {
    "facemargin train --set loss.name=arcface --set loss.params.s=16 --set train.steps=2000 --out runs/arc":
        Run(("runs/arc/checkpoint.pt", "runs/arc/metrics.jsonl", "runs/arc/config.toml"), TINY, check_arc, lane="arc"),
    "facemargin train --config my.toml --set optim.lr=0.05":  # my.toml holds the tiny budget and out=runs/my
        Run(("runs/my/checkpoint.pt",), (), check_my_toml, lane="configs"),
    "facemargin train --resume runs/arc/checkpoint.pt --steps 3000":
        Run(("runs/arc/checkpoint.pt",), ("--steps", "6"), check_resume, lane="arc"),
    "facemargin train --set data.name=recordio --data faces_rec --out runs/faces "
    "--set 'data.val=[\"lfw.bin\", \"cfp_fp.bin\"]' --set train.eval_every=500":
        Run(("runs/faces/checkpoint.pt", "runs/faces/best.pt"), TINY, check_faces, lane="faces"),
    "facemargin train --recipe atl-direct --out runs/atl":
        Run(("runs/atl/checkpoint.pt",), TINY, lane="configs"),
    "facemargin train --recipe atl-step --out runs/atl-step":
        Run(("runs/atl-step/stage1/checkpoint.pt", "runs/atl-step/stage2/checkpoint.pt"),
            ("--set", "train.steps=4", "--set", "train.batch_size=8"), lane="configs"),
    "facemargin train --print-config":
        Run((), (), check_print_config, lane="configs"),
    "facemargin eval runs/arc/checkpoint.pt --pairs lfw.bin --pairs cfp_fp.bin --flip --json eval.json":
        Run(("eval.json", "eval_roc.png"), (), check_eval_packs, lane="arc"),
    "facemargin eval runs/arc/checkpoint.pt --pairs /data/lfw":
        Run((), (), check_eval_lfw, lane="arc"),
    "facemargin plot runs/bench":
        Run(("runs/bench/figures/roc.png",), lane="photos"),
    "facemargin eval runs/arc/checkpoint.pt --pairs lfw.bin --pairs cfp_fp.bin --pairs agedb_30.bin "
    "--ijb /data/IJB_release --dataset IJBC --ijb-1n --megaface /data/facescrub_aligned "
    "--distractors megaface_1m.npy --json eval.json":
        Run(("eval.json",), (), check_eval_all, lane="arc"),
    "facemargin eval runs/arc/checkpoint.pt --ijb /data/IJB_release/IJBB --dataset IJBB --no-ijb-faceness":
        Run((), (), check_eval_ijbb, lane="arc"),
    "facemargin embed runs/arc/checkpoint.pt --images /data/megaface_aligned --out megaface_1m.npy --flip":
        Run(("megaface_1m.npy", "megaface_1m.csv"), (), check_embed_megaface, lane="arc"),
    # inline commands of the prose
    "facemargin embed MODEL --images DIR --out e.npy":
        Run(("e.npy", "e.csv"), (), check_embed_model, lane="faces"),
    "facemargin verify MODEL a.jpg b.jpg":
        Run((), (), check_verify, lane="faces"),
    "facemargin export MODEL --out m.onnx":
        Run(("m.onnx",), lane="faces"),
    "facemargin detect --images photos/ --out faces.json --aligned crops/ --workers 2":
        Run(("faces.json", "crops"), (), check_detect, lane="photos"),
    "facemargin align --images photos/ --detect --out aligned/ --policy central":
        Run(("aligned",), (), check_align, lane="photos"),
    "facemargin pack DIR --out OUT":
        Run(("OUT/train.rec", "OUT/train.idx", "OUT/property"), lane="faces"),
    "facemargin pack-pairs PAIRS --out FILE.bin":
        Run(("FILE.bin",), (), check_pack_pairs, lane="faces"),
    "facemargin train --set data.name=recordio --data OUT":  # no --out: the default runs/train
        Run(("runs/train/checkpoint.pt",), TINY, lane="faces"),
    # two launchers on loopback, one process each: the same command on both "machines"
    "torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint node0.example:29400 "
    "--rdzv_id arc-run-1 -m facemargin.cli train --config my.toml --out /shared/runs/arc":
        Run(("shared/runs/arc/checkpoint.pt",), (), check_torchrun, launchers=2, lane="torchrun"),
}

EXEMPT: Dict[str, str] = {
    "make demo": "the main job: set-up (pip, apt) and 13.6 minutes of training, timed by hand for the README",
    "make test": "runs this test suite (pytest), this file included: it is what CI runs",
    "facemargin bench-heads --sizes 100000 --methods bare fused pml": "the head benchmark at 100k classes (minutes "
                                                                      "of timing); the same command runs at a tiny "
                                                                      "size in tests/experiments/test_heads_bench.py",
    "facemargin bench --full": "the full budget of the main job (hours); the same code runs at a tiny budget in "
                               "tests/bench/test_main_bench.py",
    "facemargin align --landmarks": "a fragment naming an option (it needs --images and --out); the option is "
                                    "checked to exist by test_fragments_name_real_options",
    "torchrun --nproc_per_node N -m facemargin.cli train ...": "a schematic (N and '...'); the multi-node torchrun "
                                                                 "command of the README runs here",
}

#: exempted fragments whose sub-command and options are checked against the parser
FRAGMENT_OPTIONS = {"facemargin align --landmarks": ("align", ["--landmarks"]),
                    "facemargin bench --full": ("bench", ["--full"])}


# ---------------------------------------------------------------------------------------------
# substitution and running


def _word(key: str) -> re.Pattern:
    return re.compile(r"(?<![\w.-])" + re.escape(key) + r"(?![\w.-])")


def substitute(command: str, port: int = 0) -> str:
    """The README command with the placeholders of the tables replaced (one pass per table)."""
    table = dict(SUBSTITUTIONS)
    for marker, extra in CONTEXT_SUBSTITUTIONS.items():
        if marker in command:
            table.update(extra)
    keys = sorted(table, key=len, reverse=True)
    pattern = re.compile("|".join(_word(k).pattern for k in keys))
    return pattern.sub(lambda m: table[m.group(0)].format(port=port), command)


def to_argv(command: str, append=()) -> List[str]:
    words = shlex.split(command) + list(append)
    if words[0] in ("facemargin", "torchrun") and (BIN / words[0]).exists():
        words[0] = str(BIN / words[0])
    elif words[0] == "facemargin":
        words[:1] = [sys.executable, "-m", "facemargin.cli"]
    elif words[0] == "torchrun":
        words[:1] = [sys.executable, "-m", "torch.distributed.run"]
    return words


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_command(command: str, spec: Run, ws: Path, env: dict, timeout: float = 300) -> Tuple[str, str]:
    """Run one README command in ``ws``; returns (the command as run, its stdout+stderr)."""
    shown = substitute(command, free_port())
    argv = to_argv(shown, spec.append)
    shown_full = shlex.join(shlex.split(shown) + list(spec.append))
    # each in its own session, so that a timeout ends a launcher's workers too
    procs = [subprocess.Popen(argv, cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True) for _ in range(spec.launchers)]
    outs, codes = [], []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            outs.append(out)
            codes.append(p.returncode)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()
    text = "\n".join(outs)
    assert codes == [0] * len(procs), f"README command failed (exit {codes}):\n  {shown_full}\n{text[-4000:]}"
    return shown_full, text


# ---------------------------------------------------------------------------------------------
# tests


def _commands() -> List[ReadmeCommand]:
    return readme_commands(README.read_text(encoding="utf-8"))


def test_parser_on_a_sample():
    sample = "\n".join([
        "Run `facemargin eval` or `facemargin pack DIR",
        "--out OUT`.",
        "```bash",
        "make demo   # a comment with `facemargin bench`",
        "facemargin train --set 'a=[\"x\", \"y\"]' \\",
        "    --out r   # joined",
        "```",
        "```python",
        "facemargin = 1",
        "```",
        "```",
        "facemargin embed M --images D --out e.npy",
        "some output line",
        "```",
        "",
        "and `facemargin verify X`.",
    ])
    got = [(c.line, c.kind, c.text) for c in readme_commands(sample)]
    assert got == [(1, "inline", "facemargin eval"), (1, "inline", "facemargin pack DIR --out OUT"),
                   (4, "block", "make demo"), (5, "block", "facemargin train --set 'a=[\"x\", \"y\"]' --out r"),
                   (12, "block", "facemargin embed M --images D --out e.npy"), (16, "inline", "facemargin verify X")]
    assert substitute("facemargin eval MODEL --pairs /data/lfw --x MODELS") == \
        "facemargin eval runs/faces/checkpoint.pt --pairs data/lfw --x MODELS"
    assert substitute("torchrun --rdzv_endpoint node0.example:29400", port=5) == "torchrun --rdzv_endpoint 127.0.0.1:5"


def test_every_readme_command_is_run_or_exempted():
    cmds = _commands()
    texts = {c.text for c in cmds}
    missing = [f"README.md:{c.line}: {c.text}" for c in cmds
               if not is_mention(c) and c.text not in RUNS and c.text not in EXEMPT]
    assert not missing, "README commands that no test runs or exempts (add them to RUNS or EXEMPT in " \
                        "tests/test_readme.py):\n" + "\n".join(missing)
    gone = [t for t in [*RUNS, *EXEMPT] if t not in texts]
    assert not gone, "commands of tests/test_readme.py that README no longer has:\n" + "\n".join(gone)
    assert not set(RUNS) & set(EXEMPT)


def test_mentions_name_real_subcommands():
    from facemargin.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    options = {o for a in parser._actions for o in a.option_strings}  # `facemargin --help` names an option
    names = {shlex.split(c.text)[1] for c in _commands() if is_mention(c)}
    unknown = sorted(names - set(sub.choices) - options)
    assert not unknown, f"README names sub-commands that facemargin does not have: {unknown}"


def test_fragments_name_real_options():
    from facemargin.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for text, (name, options) in FRAGMENT_OPTIONS.items():
        known = {o for a in sub.choices[name]._actions for o in a.option_strings}
        assert set(options) <= known, (text, sorted(known))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from readme_fixtures import build_workspace

    ws = tmp_path_factory.mktemp("readme")
    extra = build_workspace(ws)
    env = {**os.environ, **extra, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "FACEMARGIN_DIST_TIMEOUT": "60"}
    return ws, env


def _to_run() -> List[ReadmeCommand]:
    seen, out = set(), []
    for c in _commands():
        if c.text in RUNS and c.text not in seen:
            seen.add(c.text)
            out.append(c)
    return out


def execute(cmd: ReadmeCommand, ws: Path, env: dict) -> str:
    """Run one README command and check what it left; returns a line for the log."""
    spec = RUNS[cmd.text]
    t0 = time.monotonic()
    shown, out = run_command(cmd.text, spec, ws, env)
    missing = [p for p in spec.outputs if not (ws / p).exists()]
    assert not missing, f"README.md:{cmd.line}: {shown} exited 0 but did not write {missing}\n{out[-3000:]}"
    if spec.check is not None:
        try:
            spec.check(ws, out)
        except AssertionError as e:
            raise AssertionError(f"README.md:{cmd.line}: {shown}: {e}\n{out[-3000:]}") from e
    return f"README.md:{cmd.line}: {time.monotonic() - t0:.1f} s: {shown}"


@pytest.fixture(scope="module")
def runs(workspace, request):
    """Start every selected README command: each lane in README order, two lanes at a time.

    A command's check runs right after it, in its lane, before a later command of the lane can
    change the files it checks. Returns ``{command: Future}``; a future holds the log line or the
    failure."""
    ws, env = workspace
    selected = {item.callspec.params["cmd"].text for item in request.session.items
                if item.module is request.module and getattr(item, "originalname", "") == "test_readme_command"}
    lanes: Dict[str, List[ReadmeCommand]] = {}
    for c in _to_run():
        lanes.setdefault(RUNS[c.text].lane, []).append(c)
    futures: Dict[str, Future] = {}
    jobs = []
    for lane, cmds in lanes.items():
        # a lane runs up to its last selected command (earlier ones make that one's inputs)
        keep = [i for i, c in enumerate(cmds) if c.text in selected]
        if keep:
            cmds = cmds[:keep[-1] + 1]
            jobs.append(cmds)
            futures.update({c.text: Future() for c in cmds})

    def run_lane(cmds):
        for c in cmds:
            fut = futures[c.text]
            try:
                fut.set_result(execute(c, ws, env))
            except BaseException as e:  # noqa: BLE001  (handed to the test of that command)
                fut.set_exception(e)

    pool = ThreadPoolExecutor(max_workers=LANES_AT_ONCE)
    for cmds in jobs:
        pool.submit(run_lane, cmds)
    yield futures
    pool.shutdown(wait=True)


@pytest.mark.parametrize("cmd", _to_run(), ids=lambda c: f"L{c.line}:{c.text[:60]}")
def test_readme_command(cmd: ReadmeCommand, runs):
    print(runs[cmd.text].result(timeout=900))
