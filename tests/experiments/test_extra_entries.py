"""The bench entries outside the default lists: each head at its paper's settings, the CurricularFace
warm-up diagnosis and the ATL ablation grid; their groups on the command line, and their report
tables. Nothing here trains."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from facemargin.experiments import glyphs as B
from facemargin.experiments import protocol as P
from facemargin.experiments import sections as SEC
from facemargin.experiments.report import write_main_report


def _config(name: str, steps: int = 1500) -> dict:
    spec = B.head_spec(name)
    cfg = B.run_config(name, spec, Path("set"), Path("out"), steps, 256, 0, 150, "cpu")
    return B.row_config(spec, cfg)


# ---------------------------------------------------------------------------------------------
# the entries


def test_paper_entries_train_at_the_constructor_defaults():
    assert B.head_spec("arcface@paper") == {"loss": {"name": "arcface", "params": {"s": 64.0, "m": 0.5}}}
    assert B.head_spec("cosface@paper") == {"loss": {"name": "cosface", "params": {"s": 64.0, "m": 0.35}}}
    assert B.head_spec("combined@paper") == {"loss": {"name": "combined", "params": {"s": 64.0}}}
    assert B.head_spec("adaface@paper") == {"loss": {"name": "adaface", "params": {"s": 64.0}}}
    assert B.head_spec("subcenter_arcface@paper") == {"loss": {"name": "subcenter_arcface", "params": {"s": 64.0}}}
    # the shared entries stay as they were
    assert B.head_spec("arcface")["loss"]["params"] == {"s": P.S, "m": 0.5}
    assert B.head_spec("adaface")["loss"]["params"] == {"s": P.S}


def test_paper_entries_are_derived_from_the_registry_and_every_one_has_a_source():
    derived = B.paper_heads()
    # NormFace's default s=16 has no published source to cite, so it gets no paper row
    assert set(derived) - set(P.PAPER_SOURCES) == {"normface"}
    assert set(P.PAPER_SOURCES) <= set(derived)
    assert B.paper_entries() == [h + P.PAPER_TAG for h in derived if h != "normface"]
    for entry in B.paper_entries():
        base = entry[:-len(P.PAPER_TAG)]
        spec, shared = B.head_spec(entry), B.head_spec(base)
        defaults = B._defaults(spec["loss"]["name"])
        assert spec["loss"]["params"] != shared["loss"]["params"]
        assert all(defaults[k] == v for k, v in spec["loss"]["params"].items())
        assert defaults["s"] != P.S


def test_every_cited_setting_is_the_constructors_default():
    from facemargin import losses

    for head, source in P.PAPER_SOURCES.items():
        cls = losses.LOSSES.get(head)
        defaults = B._defaults(head)
        settings = dict(kv.split("=") for kv in source.rsplit(": ", 1)[1].split(", "))
        assert "s" in settings, head
        for k, v in settings.items():
            got = defaults[k] if defaults[k] is not None else cls.STD[0]  # ElasticFace: std None is STD[0]
            assert math.isclose(float(got), float(v)), (head, k, got, v)


def test_the_warmup_diagnosis_is_curricularface_shared_with_optimiser_overrides():
    spec = B.head_spec("curricularface@warmup")
    assert spec["loss"] == B.head_spec("curricularface")["loss"] == {"name": "curricularface", "params": {"s": P.S}}
    assert spec["optim"] == {"warmup_steps": 100, "clip_grad_norm": 5.0}
    assert B._defaults("curricularface")["m"] == 0.5


def test_run_config_passes_an_entrys_optimiser_overrides(tmp_path):
    spec = B.head_spec("curricularface@warmup")
    cfg = B.run_config("curricularface@warmup", spec, tmp_path, tmp_path / "o", 1500, 256, 0, 150, "cpu")
    assert cfg["optim"]["warmup_steps"] == 100 and cfg["optim"]["clip_grad_norm"] == 5.0
    assert cfg["optim"]["lr"] == P.LR and cfg["optim"]["momentum"] == 0.9
    plain = B.run_config("curricularface", B.head_spec("curricularface"), tmp_path, tmp_path / "o", 1500, 256, 0, 150,
                         "cpu")
    assert plain["optim"]["warmup_steps"] == 0 and plain["optim"]["clip_grad_norm"] == 0.0
    # the result row records the overrides, and only for the entry that has them
    assert B.row_config(spec, cfg)["optim"] == {"warmup_steps": 100, "clip_grad_norm": 5.0}
    assert "optim" not in B.row_config(B.head_spec("curricularface"), plain)
    with pytest.raises(ValueError, match="unknown optimiser setting.*warmup"):
        B.run_config("x", {**spec, "optim": {"warmup": 5}}, tmp_path, tmp_path / "o", 10, 8, 0, 5, "cpu")


def test_reused_rows_must_match_the_optimiser_overrides(tmp_path):
    name, spec = "curricularface@warmup", B.head_spec("curricularface@warmup")
    budget, counts = {"steps": 1500, "batch": 256}, {"images": 10}

    def config_of(n, s):
        return B.run_config(n, spec, tmp_path, tmp_path / "o", 1500, 256, s, 150, "cpu")

    def reuse(config, out):
        other = tmp_path / f"{out}.json"
        other.write_text(json.dumps({"budget": budget, "manifest_counts": counts,
                                     "rows": [{"head": name, "seed": 0, "config": config}]}))
        return B._reuse_rows(str(other), [(name, 0)], {name: spec}, tmp_path / out, budget, counts, config_of)

    cfg = config_of(name, 0)
    assert reuse(B.row_config(spec, cfg), "same") == 1
    changed = B.row_config(spec, cfg)
    changed["optim"]["warmup_steps"] = 50
    assert reuse(changed, "other") == 0


def test_the_atl_grid_has_sixteen_points_and_maps_the_default_entries():
    grid = P.ATL_ABLATION
    assert len(grid) == 16 and len(set(grid)) == 16
    assert {(p["recipe"], p["m"], p["lambda_min"], p["semihard"]) for p in grid.values()} == {
        (r, m, lam, semi) for r in ("direct", "step") for m in (2, 4) for lam in (3, 5) for semi in (True, False)}
    assert grid["atl-direct"] == {"recipe": "direct", "m": 4, "lambda_min": 5, "semihard": True}
    assert grid["atl-step"] == {"recipe": "step", "m": 4, "lambda_min": 5, "semihard": True}
    atl_defaults = B._defaults("atl")
    for name, p in grid.items():
        spec = B.head_spec(name)
        params = {**atl_defaults, **spec["loss"]["params"]}
        assert spec["loss"]["name"] == "atl" and params["triplet"] is True
        assert (params["m"], params["lambda_min"], params["semihard"]) == (p["m"], p["lambda_min"], p["semihard"])
        assert spec.get("recipe", "direct") == p["recipe"]
    assert not (set(grid) - {"atl-direct", "atl-step"}) & set(P.HEADS)
    assert B.head_spec("atl-step/m2-l3-nosemi") == {
        "loss": {"name": "atl", "params": {"m": 2, "lambda_min": 3, "triplet": True, "semihard": False}},
        "recipe": "step"}
    assert B.head_spec("atl-direct/m4-l3") == {
        "loss": {"name": "atl", "params": {"m": 4, "lambda_min": 3, "triplet": True, "semihard": True}}}


def test_the_lambda_schedule_reaches_each_grid_points_floor_at_its_share_of_the_steps():
    for name, p in P.ATL_ABLATION.items():
        g = _config(name)["loss"]["params"]["gamma"]
        assert 1000.0 / (1.0 + g * P.LAMBDA_AT * 1500) == pytest.approx(p["lambda_min"]), name


def test_the_extra_entries_are_not_in_the_default_lists():
    extra = set(P.EXTRA_HEADS) | set(B.paper_entries())
    assert not extra & set(P.available_heads(True)) and not extra & set(P.available_heads(False))


# ---------------------------------------------------------------------------------------------
# the groups of --heads


def test_groups_are_expanded_in_place_without_repeats():
    paper = B.paper_entries() + ["curricularface@warmup", "sphereface2@warmup"]
    assert B.head_groups() == {"paper": paper, "atl-ablation": list(P.ATL_ABLATION)}
    assert len(paper) == 12 and "arcface@paper" in paper and "uniface@paper" in paper
    got = B.expand_heads(["softmax", "paper", "atl-direct", "atl-ablation", "softmax"])
    assert got == ["softmax"] + paper + ["atl-direct"] + [n for n in P.ATL_ABLATION if n != "atl-direct"]
    assert B.expand_heads(["arcface", "cosface"]) == ["arcface", "cosface"]


def test_an_unknown_name_is_rejected_with_the_entries_and_groups(tmp_path):
    with pytest.raises(ValueError) as e:
        B.run_main_bench(out=str(tmp_path), heads=["paper", "nosuchhead"], set_dir=str(tmp_path / "none"))
    msg = str(e.value)
    assert "'nosuchhead'" in msg and "groups: paper, atl-ablation" in msg
    assert "arcface@paper" in msg and "atl-step/m2-l3-nosemi" in msg and "curricularface@warmup" in msg
    assert not (tmp_path / "none").exists()  # rejected before any work
    with pytest.raises(ValueError, match="unknown bench head 'normface@paper'"):
        B.head_spec("normface@paper")


# ---------------------------------------------------------------------------------------------
# the report tables


def _row(head, seed, t3, t4, eer=0.1):
    roc = {"far": [1e-4, 1e-3, 1.0], "tar": [t4, t3, 1.0]}
    return {"head": head, "seed": seed, "tar_at_far": {"0.001": t3, "0.0001": t4}, "eer": eer, "auc": 0.99,
            "rank1": 0.9, "pair_accuracy": 0.95, "pair_accuracy_std": 0.01, "train_seconds": 1.0,
            "num_genuine": 100, "num_impostor": 10000, "roc": roc, "steps": 1500, "config": _config(head)}


PAPER_ROWS = [
    _row("arcface", 0, 0.80, 0.60), _row("arcface", 1, 0.90, 0.70),
    _row("arcface@paper", 0, 0.70, 0.50), _row("arcface@paper", 1, 0.74, 0.52),
    _row("curricularface", 0, 0.50, 0.30), _row("curricularface@warmup", 0, 0.60, 0.45),
    _row("magface@paper", 0, 0.65, 0.40),
]


def test_paper_table_by_hand():
    src = P.PAPER_SOURCES
    assert SEC.paper_table(PAPER_ROWS) == [
        "| head | row | settings | source | seeds | TAR@1e-03 | TAR@1e-04 | Δ TAR@1e-03 | Δ TAR@1e-04 |",
        "|---|---|---|---|---|---|---|---|---|",
        # arcface: (0.80, 0.90) -> 0.850 ± 0.071; paper (0.70, 0.74) -> 0.720 ± 0.028, Δ -0.130
        "| arcface | shared s=30 | s=30, m=0.5 | the bench's shared scale | 2 | 0.850 ± 0.071 | 0.650 ± 0.071 | "
        "(baseline) | (baseline) |",
        f"| arcface | paper settings | s=64, m=0.5 | {src['arcface']} | 2 | 0.720 ± 0.028 | 0.510 ± 0.014 | "
        "-0.130 | -0.140 |",
        "| magface | shared s=30 | not run | | 0 | n/a | n/a | n/a | n/a |",
        f"| magface | paper settings | s=64 | {src['magface']} | 1 | 0.650 | 0.400 | n/a | n/a |",
        "| curricularface | shared s=30 | s=30 | the bench's shared scale | 1 | 0.500 | 0.300 | (baseline) | "
        "(baseline) |",
        "| curricularface | shared s=30, warmup | s=30; warmup_steps=100, clip_grad_norm=5 | diagnosis | 1 | 0.600 | "
        "0.450 | +0.100 | +0.150 |",
    ]
    # the warm-up row alone is not a paper row: no table
    assert SEC.paper_table([r for r in PAPER_ROWS if "paper" not in r["head"]]) == []


SPH = [_row("sphereface", s, t3, t4, eer) for s, t3, t4, eer in
       ((0, 0.80, 0.68, 0.05), (1, 0.82, 0.70, 0.06), (2, 0.84, 0.72, 0.07))]
ATL_ROWS = SPH + [_row("atl-step/m2-l3-nosemi", 0, 0.85, 0.75, 0.04), _row("atl-direct", 0, 0.40, 0.27, 0.2),
                  _row("atl-direct/m2-l3", 0, 0.81, 0.71, 0.05), _row("atl-direct/m2-l3", 1, 0.83, 0.71, 0.07)]


def test_atl_ablation_table_by_hand():
    assert SEC.atl_ablation_table(ATL_ROWS) == [
        "| entry | recipe | m | λ_min | semi-hard | TAR@1e-03 | TAR@1e-04 | EER | seeds | reaches SphereFace at "
        "FAR 1e-04 |",
        "|---|---|---|---|---|---|---|---|---|---|",
        # SphereFace at 1e-4: (0.68, 0.70, 0.72) -> 0.700 ± 0.020; 0.710 is 0.010 above, within 0.020
        "| atl-direct/m2-l3 | direct | 2 | 3 | on | 0.820 ± 0.014 | 0.710 ± 0.000 | 0.060 ± 0.014 | 2 | "
        "yes: within its spread (+0.010) |",
        "| atl-direct | direct | 4 | 5 | on | 0.400 | 0.270 | 0.200 | 1 | no: below (-0.430) |",
        "| atl-step/m2-l3-nosemi | step | 2 | 3 | off | 0.850 | 0.750 | 0.040 | 1 | yes: above (+0.050) |",
        "| sphereface | SphereFace | 4 | 5 | n/a | 0.820 ± 0.020 | 0.700 ± 0.020 | 0.060 ± 0.010 | 3 | "
        "(the reference) |",
    ]
    no_sph = SEC.atl_ablation_table([r for r in ATL_ROWS if r["head"] != "sphereface"])
    assert no_sph[2].endswith("| n/a (SphereFace not run) |") and len(no_sph) == 5
    assert SEC.atl_ablation_table(SPH) == []


def test_reaches_sphereface():
    ref = {"mean": 0.70, "std": 0.02, "n": 3}
    assert SEC.reaches({"mean": 0.75, "std": 0.0, "n": 1}, ref) == "yes: above (+0.050)"
    assert SEC.reaches({"mean": 0.69, "std": 0.0, "n": 1}, ref) == "yes: within its spread (-0.010)"
    assert SEC.reaches({"mean": 0.60, "std": 0.0, "n": 1}, ref) == "no: below (-0.100)"
    assert SEC.reaches(None, ref) == "n/a"


def test_the_report_holds_the_sections_only_when_their_entries_ran(tmp_path):
    def report(rows):
        result = {"budget": dict(P.BUDGETS["full"], seeds=[0, 1, 2]), "curve_far": 1e-3, "set": "set", "rows": rows,
                  "summary": B.aggregate(rows), "manifest_counts": {"identities": 1, "faces": 1, "images": 1,
                                                                    "duplicates_dropped": 0, "train_images": 1,
                                                                    "test_images": 1},
                  "pixels": {"tar_at_far": {"0.001": 0.1, "0.0001": 0.05}, "pair_accuracy": 0.6, "eer": 0.4,
                             "rank1": 0.1, "auc": 0.6, "roc": {"far": [0.0, 1.0], "tar": [0.0, 1.0]}},
                  "quality": {}, "not_run": []}
        write_main_report(tmp_path, result, {}, args_line="facemargin bench --test", wall_seconds=1.0, draw=False)
        return (tmp_path / "report.md").read_text()

    text = report(PAPER_ROWS + ATL_ROWS)
    assert "## Paper hyper-parameters" in text and "## ATL ablation" in text
    assert "| arcface | paper settings | s=64, m=0.5 |" in text and "| atl-direct/m2-l3 | direct | 2 | 3 | on |" in text
    # the default entries alone (SphereFace, ATL direct and step) add neither section
    text = report(SPH + [_row("atl-direct", 0, 0.4, 0.27), _row("atl-step", 0, 0.4, 0.27)])
    assert "## Paper hyper-parameters" not in text and "## ATL ablation" not in text
