"""The bench's pair-based metric losses train on PK batches: their specs, the trainer config the
runner builds from them, and the result rows they record (so old uniform-batch rows are not reused).
Nothing here trains."""
from __future__ import annotations

import json

import pytest

from facemargin.experiments import glyphs as B
from facemargin.experiments import protocol as P

PK = {"sampler": "pk", "pk_images": 4}


def test_pair_based_entries_draw_pk_batches_and_the_others_uniform_ones(tmp_path):
    for name in ("triplet", "contrastive", "range", "marginal"):
        assert P.HEADS[name]["data"] == PK
    for name in ("center", "coco", "softmax", "arcface"):
        assert "data" not in P.HEADS[name]

    def cfg_of(name, spec=None):
        spec = spec or B.head_spec(name)
        return B.run_config(name, spec, tmp_path, tmp_path / "o", 1500, 256, 0, 150, "cpu")

    cfg = cfg_of("triplet")
    assert (cfg["data"]["sampler"], cfg["data"]["pk_images"]) == ("pk", 4)
    assert cfg["data"]["name"] == "recordio" and cfg["data"]["degrade"] is True  # the set stays the glyph set
    assert 256 // cfg["data"]["pk_images"] == 64  # P at the bench's batch
    assert B.row_config(B.head_spec("triplet"), cfg)["data"] == PK
    plain = cfg_of("center")
    assert plain["data"]["sampler"] == "random" and "data" not in B.row_config(B.head_spec("center"), plain)

    # a row trained before the entry drew PK batches (no data settings recorded) is not reused
    spec, budget, counts = B.head_spec("triplet"), {"steps": 1500, "batch": 256}, {"images": 10}

    def reuse(config, out):
        other = tmp_path / f"{out}.json"
        other.write_text(json.dumps({"budget": budget, "manifest_counts": counts,
                                     "rows": [{"head": "triplet", "seed": 0, "config": config}]}))
        return B._reuse_rows(str(other), [("triplet", 0)], {"triplet": spec}, tmp_path / out, budget, counts,
                             lambda n, s: cfg_of(n))

    row = B.row_config(spec, cfg)
    assert reuse(row, "same") == 1
    assert reuse({k: v for k, v in row.items() if k != "data"}, "uniform") == 0

    with pytest.raises(ValueError, match="bench entry 'x': unknown data setting.*pk_size"):
        cfg_of("x", {**spec, "data": {"pk_size": 4}})
    with pytest.raises(ValueError, match="bench entry 'x'.*'data.sampler' must be one of random, pk"):
        cfg_of("x", {**spec, "data": {"sampler": "balanced"}})


def test_a_run_saved_before_new_trainer_settings_still_continues(tmp_path):
    """A run's saved config lacks the settings added since (the sampler): they are filled in at
    their defaults, which keep the old behaviour, so the interrupted run is recognised."""
    cfg = B.run_config("cosface", B.head_spec("cosface"), tmp_path, tmp_path / "o", 1500, 256, 0, 150, "cpu")
    saved = json.loads(json.dumps(cfg))
    del saved["data"]["sampler"], saved["data"]["pk_images"]
    assert B._with_new_defaults(saved) == json.loads(json.dumps(cfg))
    saved["data"]["sampler"] = "pk"  # a real difference still counts
    assert B._with_new_defaults(saved) != json.loads(json.dumps(cfg))


def test_finished_runs_of_an_entry_whose_settings_changed_are_refused(tmp_path):
    """A finished run trained before its entry changed (triplet on uniform batches) is not counted
    as the entry's run: the bench stops and names the folder, so nothing is reported under the
    wrong settings and nothing is overwritten."""
    specs = {n: B.head_spec(n) for n in ("triplet", "softmax")}

    def config_of(n, s):
        return B.run_config(n, specs[n], tmp_path, tmp_path / "runs" / n / f"seed{s}", 1500, 256, s, 150, "cpu")
    for n in specs:
        current = json.loads(json.dumps(B.row_config(specs[n], config_of(n, 0))))
        (tmp_path / "runs" / n / "seed0").mkdir(parents=True)
        (tmp_path / "runs" / n / "seed0" / "result.json").write_text(json.dumps({"head": n, "config": current}))
    B.check_finished(tmp_path, [("triplet", 0), ("softmax", 0)], specs, config_of)  # all current: fine
    old = json.loads((tmp_path / "runs" / "triplet" / "seed0" / "result.json").read_text())
    del old["config"]["data"]
    (tmp_path / "runs" / "triplet" / "seed0" / "result.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"1 finished run.*runs/triplet/seed0"):
        B.check_finished(tmp_path, [("triplet", 0), ("softmax", 0)], specs, config_of)
