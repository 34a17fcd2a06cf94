"""Fuzz the readers of files that strangers hand us, for a bounded time (hypothesis).

Targets: RecordIO ``train.rec``/``train.idx``/``property``, ``.bin`` verification packs, LFW
``pairs.txt``, landmark CSV and JSON files, and config TOML files. Each input is either a valid file
with random byte edits (flips, overwrites, truncation, insertions) or a file generated from random
structure or text. A reader passes an input when it either reads it (returning values of the right
types) or raises a ``ValueError`` whose message names the file (the record or line is named where
there is one). Anything else fails: another exception type, an error that does not say which file,
a read that takes longer than ``--hang`` seconds (reported as a hang), or a crash of the process.

    python benchmarks/fuzz_readers.py --seconds 300           # all targets, 300 s in all
    python benchmarks/fuzz_readers.py --seconds 60 --only pairs,config --out runs/fuzz

The run prints one row per target (inputs tried, seconds, distinct failures) and writes each
distinct failure's smallest input (hypothesis shrinks it) under ``--out``. Exit status 1 when any
target failed.
"""
from __future__ import annotations

import argparse
import json
import pickle
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings, strategies as st


class Hang(Exception):
    pass


class Failure(Exception):
    """A reader broke the contract; ``key`` identifies the bug (exception type and raising line)."""

    def __init__(self, key: str, detail: str):
        super().__init__(f"{key}: {detail}")
        self.key, self.detail = key, detail


def _alarm(signum, frame):
    raise Hang()


def _raising_line(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    frames = [f for f in tb if "facemargin" in f.filename] or tb
    f = frames[-1]
    return f"{Path(f.filename).name}:{f.lineno}"


def check(read, path: Path, known: set, hang_s: float):
    """Run ``read()``; raise :class:`Failure` unless it returns or raises a ValueError naming ``path``."""
    signal.setitimer(signal.ITIMER_REAL, hang_s)
    try:
        return read()
    except Hang:
        key = "hang"
    except ValueError as e:
        msg = str(e)
        if (str(path) in msg or path.name in msg) and not isinstance(e, UnicodeError):
            return None
        key = f"{type(e).__name__} without the file name at {_raising_line(e)}"
        detail = msg[:300]
    except Exception as e:  # noqa: BLE001 - this is what we look for
        key = f"{type(e).__name__} at {_raising_line(e)}"
        detail = str(e)[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if key == "hang":
        detail = f"no answer within {hang_s} s"
    if key in known:  # already reported: keep exploring for other bugs
        return None
    raise Failure(key, detail)


# -- input builders -----------------------------------------------------------------------------
edits = st.lists(st.tuples(st.sampled_from(["flip", "set", "cut", "insert"]), st.floats(0, 1, exclude_max=True),
                           st.integers(0, 255), st.binary(max_size=16)), min_size=1, max_size=4)


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op, where, value, extra in ops:
        i = int(where * max(len(b), 1))
        if op == "flip" and b:
            b[min(i, len(b) - 1)] ^= 1 << (value % 8)
        elif op == "set" and b:
            b[min(i, len(b) - 1)] = value
        elif op == "cut":
            del b[i:]
        elif op == "insert":
            b[i:i] = extra
    return bytes(b)


plain = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats() | st.text(max_size=8) | st.binary(max_size=16),
    lambda kids: st.lists(kids, max_size=4) | st.tuples(kids, kids) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
    max_leaves=12)


def _tiny_images(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, size=(n, 8, 8, 3), dtype=np.uint8)


# -- targets ------------------------------------------------------------------------------------
def target_recordio(work: Path):
    from facemargin.data.recordio import RecordIO, write_record

    base = work / "rec_base"
    write_record(base, _tiny_images(4), [0, 1, 1, 2])
    files = {name: (base / name).read_bytes() for name in ("train.rec", "train.idx", "property")}

    def read(root: Path):
        ds = RecordIO(root)
        n = len(ds)
        for i in range(n):
            img = ds.image(i)
            assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3
            assert int(ds.label(i)) >= 0
        _ = ds.labels, ds.num_classes
        ds.close()

    strategy = st.tuples(st.sampled_from(sorted(files)), edits, st.sampled_from(sorted(files)), edits)

    def run(example, known, hang_s):
        (f1, ops1, f2, ops2) = example
        root = work / "rec"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        data = dict(files)
        data[f1] = mutate(data[f1], ops1)
        if f2 != f1:
            data[f2] = mutate(data[f2], ops2)
        for name, b in data.items():
            (root / name).write_bytes(b)
        # any of the three files may be the one named
        check(lambda: read(root), root, known, hang_s)
        return data

    return strategy, run


def target_bin(work: Path):
    from facemargin.data.binpack import load_bin, write_bin

    base = work / "base.bin"
    write_bin(base, _tiny_images(4), [True, False], format="png")
    valid = base.read_bytes()

    def structured(obj, protocol):
        try:
            return pickle.dumps(obj, protocol=protocol)
        except Exception:  # noqa: BLE001 - unpicklable draws are skipped
            return b""

    strategy = st.one_of(
        edits.map(lambda ops: ("edit", ops)),
        st.tuples(plain, st.integers(0, 5)).map(lambda t: ("pickle", t)),
        st.tuples(st.lists(st.binary(max_size=24), max_size=4), st.lists(plain, max_size=3)).map(lambda t: ("pair", t)),
    )

    def run(example, known, hang_s):
        kind, payload = example
        if kind == "edit":
            data = mutate(valid, payload)
        elif kind == "pickle":
            data = structured(*payload)
        else:
            data = structured(tuple(payload), 4)
        path = work / "pack.bin"
        path.write_bytes(data)

        def read():
            images, issame = load_bin(path)
            assert images.dtype == np.uint8 and len(images) == 2 * len(issame) and issame.dtype == bool

        check(read, path, known, hang_s)
        return data

    return strategy, run


_PAIR_ALPHABET = st.sampled_from(list("0123456789 \t\nAbc_-.") + ["Aaron_Peirsol", "10", "300", "\r", "²", "٣", "\x00"])


def target_pairs(work: Path):
    from facemargin.data.lfw import read_pairs_file

    valid = "2\t2\nA\t1\t2\nB\t1\t3\nA\t1\tB\t2\nB\t2\tA\t3\nC\t1\t2\nC\t2\t3\nA\t2\tC\t1\nB\t1\tC\t3\n".encode()
    strategy = st.one_of(
        st.lists(_PAIR_ALPHABET, max_size=60).map(lambda t: "".join(t).encode("utf-8")),
        edits.map(lambda ops: mutate(valid, ops)),
        st.binary(max_size=64),
    )

    def run(data, known, hang_s):
        path = work / "pairs.txt"
        path.write_bytes(data)
        check(lambda: read_pairs_file(path), path, known, hang_s)
        return data

    return strategy, run


def target_landmarks(work: Path):
    from facemargin.align.folder import read_landmarks

    row = "a.jpg," + ",".join(str(v) for v in range(10))
    valid_csv = ("path,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5\n" + row + "\n").encode()
    valid_json = json.dumps({"a.jpg": [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]]}).encode()
    strategy = st.one_of(
        st.tuples(st.just(".csv"), edits.map(lambda ops: mutate(valid_csv, ops))),
        st.tuples(st.just(".json"), edits.map(lambda ops: mutate(valid_json, ops))),
        st.tuples(st.just(".json"), plain.map(lambda o: json.dumps(o, default=repr).encode())),
        st.tuples(st.sampled_from([".csv", ".json", ".tsv"]), st.binary(max_size=64)),
        st.tuples(st.just(".json"), st.integers(1, 5000).map(lambda n: b"[" * n)),
    )

    def run(example, known, hang_s):
        suffix, data = example
        path = work / f"landmarks{suffix}"
        path.write_bytes(data)
        check(lambda: read_landmarks(path), path, known, hang_s)
        return data

    return strategy, run


def target_config(work: Path):
    from facemargin.train.config import DEFAULTS, dump_toml, load_config

    valid = dump_toml(DEFAULTS).encode()
    sections = sorted(DEFAULTS)
    keys = sorted({k for s in DEFAULTS.values() for k in s})
    value = st.one_of(st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=6),
                      st.lists(st.integers(-2, 9) | st.floats(0, 2) | st.text(max_size=2), max_size=3))
    table = st.dictionaries(st.sampled_from(sections + ["bogus"]),
                            st.dictionaries(st.sampled_from(keys + ["params", "zzz"]), value | st.dictionaries(
                                st.text(max_size=3), value, max_size=2), max_size=4), max_size=3)

    def as_toml(t):
        try:
            return dump_toml(t).encode()
        except Exception:  # noqa: BLE001
            return b""

    strategy = st.one_of(edits.map(lambda ops: mutate(valid, ops)), table.map(as_toml), st.binary(max_size=64),
                         st.integers(1, 5000).map(lambda n: b"[train]\nsteps = " + b"[" * n))

    def run(data, known, hang_s):
        path = work / "config.toml"
        path.write_bytes(data)

        def read():
            cfg = load_config(str(path))
            assert set(cfg) == set(DEFAULTS)

        check(read, path, known, hang_s)
        return data

    return strategy, run


TARGETS = {"recordio": target_recordio, "bin": target_bin, "pairs": target_pairs, "landmarks": target_landmarks,
           "config": target_config}


def fuzz(name: str, seconds: float, hang_s: float, out: Path, work: Path) -> dict:
    strategy, run = TARGETS[name](work)
    known, failures, count = set(), [], [0]
    last = {}
    deadline = time.monotonic() + seconds

    @settings(max_examples=100, deadline=None, database=None, derandomize=False, print_blob=False,
              phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(example):
        count[0] += 1
        last["data"] = run(example, known, hang_s)

    t0 = time.perf_counter()
    while time.monotonic() < deadline:
        try:
            one()
        except Failure as f:  # the shrunk (smallest) failing input is the last one run
            known.add(f.key)
            failures.append({"key": f.key, "detail": f.detail})
            data = last.get("data")
            if isinstance(data, dict):  # recordio: the three files
                data = {k: v.hex() for k, v in data.items()}
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                (out / f"{name}_{len(failures)}.json").write_text(json.dumps(
                    {"target": name, **failures[-1], "input": data.hex() if isinstance(data, bytes) else data}, indent=1))
            print(f"  {name}: FAILURE {f.key}: {f.detail}", flush=True)
    return {"target": name, "inputs": count[0], "seconds": time.perf_counter() - t0, "failures": failures}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=300.0, help="total fuzzing time, split evenly over the targets")
    p.add_argument("--only", help=f"comma-separated targets (default all: {', '.join(TARGETS)})")
    p.add_argument("--hang", type=float, default=10.0, help="seconds after which one read counts as a hang")
    p.add_argument("--out", help="folder for the smallest failing inputs (JSON)")
    a = p.parse_args(argv)
    names = [n.strip() for n in a.only.split(",")] if a.only else list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        p.error(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}")
    signal.signal(signal.SIGALRM, _alarm)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        for name in names:
            work = Path(tmp, name)
            work.mkdir()
            print(f"[fuzz] {name}: {a.seconds / len(names):.0f} s", flush=True)
            rows.append(fuzz(name, a.seconds / len(names), a.hang, Path(a.out) if a.out else None, work))
    print("\n| target | inputs | seconds | failures |\n|---|---:|---:|---|")
    for r in rows:
        fails = "; ".join(f["key"] for f in r["failures"]) or "none"
        print(f"| {r['target']} | {r['inputs']} | {r['seconds']:.0f} | {fails} |")
    print(f"\n{sum(r['inputs'] for r in rows)} inputs in {sum(r['seconds'] for r in rows):.0f} s, "
          f"{sum(len(r['failures']) for r in rows)} distinct failures")
    return 1 if any(r["failures"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
