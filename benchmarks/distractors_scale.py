"""Time and memory of the MegaFace-style search with a million 512-D distractors.

Writes ``--n`` synthetic distractor embeddings (float32, default 1,000,000 x 512 = 2 GB) to a
``.npy`` file in a temporary folder, builds a probe set of ``--identities`` identities with
``--per-identity`` images each, and runs :func:`facemargin.eval.distractors.identify_with_distractors`
on the file read a chunk at a time.  Reports the wall time, the peak resident memory of the
process (which stays far below the file's size) and rank-1 at each distractor count.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/distractors_scale.py [--n 1000000] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from facemargin.eval.distractors import NpyRows, identify_with_distractors


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="distractors")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--identities", type=int, default=80)
    ap.add_argument("--per-identity", type=int, default=12)
    ap.add_argument("--memory-mb", type=int, default=256, help="score block budget")
    ap.add_argument("--json", help="write the measurements here")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "distractors.npy"
        with open(path, "wb") as f:  # plain writes: no mapped pages counted in this process
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f4", "fortran_order": False, "shape": (args.n, args.dim)})
            for a in range(0, args.n, 50_000):
                rng.standard_normal((min(50_000, args.n - a), args.dim), dtype=np.float32).tofile(f)
        centres = rng.standard_normal((args.identities, args.dim), dtype=np.float32)
        labels = np.repeat(np.arange(args.identities), args.per_identity)
        probes = centres[labels] + 2.5 * rng.standard_normal((len(labels), args.dim), dtype=np.float32)
        rss0 = peak_rss_mb()
        load = os.getloadavg()
        t0 = time.perf_counter()
        r = identify_with_distractors(probes, labels, NpyRows(path), memory_mb=args.memory_mb, progress=True)
        dt = time.perf_counter() - t0
        res = {"distractors": args.n, "dim": args.dim, "probes": int(len(labels)), "searches": r["num_searches"],
               "seconds": round(dt, 1), "peak_rss_mb_before": round(rss0), "peak_rss_mb": round(peak_rss_mb()),
               "file_mb": round(path.stat().st_size / 2**20), "memory_mb_budget": args.memory_mb,
               "threads": torch.get_num_threads(), "load_before": [round(v, 2) for v in load],
               "load_after": [round(v, 2) for v in os.getloadavg()],
               "rank1": {str(k): round(v, 4) for k, v in r["rank1"].items()}}
    print(f"{args.n} distractors x {len(labels)} probes ({r['num_searches']} searches): {dt:.1f} s; "
          f"peak RSS {res['peak_rss_mb']} MB, {res['peak_rss_mb_before']} MB before the search "
          f"(file {res['file_mb']} MB); load {load[0]:.2f} -> {os.getloadavg()[0]:.2f}")
    print("rank-1 by distractor count:", ", ".join(f"{k}: {v:.4f}" for k, v in r["rank1"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
