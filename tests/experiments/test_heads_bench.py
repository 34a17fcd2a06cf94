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




def test_subcenter_heads_are_held_against_the_bare_path_with_their_rows(tmp_path):
    """A head with K rows per class is compared with the bare path over K·C rows; the minimum of
    the repetitions is the statistic, and the load average is recorded."""
    from facemargin.experiments import heads as bench_heads

    size = bench_heads.Size(8, 16, 40)
    names = bench_heads.methods_for(size, ["arcface", "subcenter_arcface"], ["bare", "fused"])
    assert names == ["bare", "bare:K=3", "fused:arcface", "fused:subcenter_arcface"]
    x, y, W = bench_heads.make_inputs(size)
    m = bench_heads.make_method("bare:K=3", size, x, y, W)
    m.step()
    assert m._params[1].shape == (120, 16) and m._params[1].grad is not None
    report = bench_heads.run_benchmark([size], ["arcface", "subcenter_arcface"], ["bare", "fused"], repeats=2,
                                       memory=False, progress=False)
    rows = {r["method"]: r for r in report["sizes"][0]["rows"]}
    assert rows["fused:subcenter_arcface"]["reference"] == "bare:K=3"
    assert rows["fused:arcface"]["reference"] == "bare"
    for r in rows.values():
        assert r["min_s"] == min(r["times_s"]) and r["min_s"] <= r["median_s"]
    sub = rows["fused:subcenter_arcface"]
    assert sub["time_vs_bare"] == sub["min_s"] / rows["bare:K=3"]["min_s"]
    assert report["statistic"] == "min" and "load_before" in report and "load_after" in report
    assert "load average" in bench_heads.format_table(report) or report["load_before"] is None


def test_verdict_checks_the_chunked_targets():
    from facemargin.experiments import heads as bench_heads

    def row(time, step_memory):
        return {"kind": "fused", "head": "arcface", "time_vs_bare": time, "time_vs_pml": None,
                "memory_vs_bare": step_memory, "peak_vs_bare": 0.8}
    report = {"sizes": [{"size": "256x512x1000000@65536", "chunk": 65536,
                         "rows": [row(1.30, 0.69), row(1.40, 0.5), row(1.0, 0.75)]}]}
    met = [(c["check"], c["met"]) for c in bench_heads.verdict(report)]
    assert met == [("time_vs_bare", True), ("memory_vs_bare", True), ("time_vs_bare", False),
                   ("memory_vs_bare", True), ("time_vs_bare", True), ("memory_vs_bare", False)]
