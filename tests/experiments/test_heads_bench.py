"""The head benchmark (``facemargin bench-heads``): sizes and a tiny end-to-end run."""
import json

import pytest


def test_parse_size():
    from facemargin.experiments.heads import Size, parse_size

    assert parse_size("100000") == Size(256, 512, 100000, None)
    assert parse_size("8x16x50@7") == Size(8, 16, 50, 7)
    with pytest.raises(ValueError, match="bad size"):
        parse_size("8x16")


def test_bench_heads_smoke(tmp_path, capsys):
    """A tiny end-to-end run of the CLI benchmark (no timing assertions)."""
    import argparse

    from facemargin.experiments import heads as bench_heads, heads_cli as cli

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli.register(sub)
    out = tmp_path / "bench.json"
    args = parser.parse_args(["bench-heads", "--sizes", "8x16x50", "8x16x60@16", "--repeats", "1",
                              "--large-repeats", "1", "--heads", "arcface", "softmax", "--no-memory",
                              "--no-progress", "--json", str(out)])
    assert args.func(args) == 0
    report = json.loads(out.read_text())
    assert [s["size"] for s in report["sizes"]] == ["8x16x50", "8x16x60@16"]
    methods = [r["method"] for r in report["sizes"][0]["rows"]]
    assert methods[0] == "bare" and "fused:arcface" in methods and "plain:softmax" in methods
    assert "pml:arcface" in methods  # pytorch-metric-learning is a dev dependency
    assert [r["method"] for r in report["sizes"][1]["rows"]] == ["bare", "fused:arcface", "fused:softmax"]
    for s in report["sizes"]:
        for r in s["rows"]:
            assert r["median_s"] > 0 and len(r["times_s"]) == 1
    text = capsys.readouterr().out
    assert "fused:arcface" in text and "B=8 D=16 C=50" in text
    # peak memory in a child process
    mem = bench_heads.measure_memory("fused:arcface", bench_heads.Size(8, 16, 50), "cpu")
    assert "error" not in mem and mem["peak_mb"] > 0 and mem["delta_mb"] >= 0


