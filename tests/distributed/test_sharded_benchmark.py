"""Smoke test of benchmarks/sharded.py on a tiny size: runs, writes its JSON, shard memory ∝ 1/W."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sharded.py"


def test_benchmark_runs_and_class_weight_memory_falls_as_one_over_w(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--classes", "600", "--dim", "8", "--batch", "4", "--worlds", "1", "2",
         "--steps", "1", "--warmup", "0", "--no-single", "--timeout", "60", "--json", str(out)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())
    assert [(r["world"], r["rows_per_rank"]) for r in rows] == [(1, 600), (2, 300)]
    assert rows[0]["weight_mb_per_rank"] == 2 * rows[1]["weight_mb_per_rank"] == 600 * 8 * 4 / 2**20
    assert all(r["step_s"] > 0 and r["peak_rss_mb"] > 0 for r in rows)
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)
    assert "| 600 | sharded_head | 2 | 300 |" in proc.stdout
