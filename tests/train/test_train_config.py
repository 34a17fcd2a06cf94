"""Training config: defaults, TOML files, --set overrides, unknown keys, TOML round trip."""
from __future__ import annotations

import copy
import tomllib

import pytest

from facemargin.train.config import DEFAULTS, ConfigError, apply_override, dump_toml, load_config, parse_value


def test_defaults_are_the_seed_solver_and_a_copy():
    cfg = load_config()
    assert cfg == DEFAULTS
    o = cfg["optim"]
    # the seed's Caffe solver (gamma 0.1, momentum 0.9, weight decay 5e-4, multistep) with a base lr of
    # 0.01 instead of 0.1: LeNet++ has no batch norm and diverges at 0.1 (see test_train_defaults)
    assert (o["lr"], o["gamma"], o["momentum"], o["weight_decay"], o["schedule"]) == (0.01, 0.1, 0.9, 5e-4, "multistep")
    assert cfg["data"]["train_classes"] == [0, 1, 2, 3, 4, 5] and cfg["data"]["eval_classes"] == [6, 7, 8, 9]
    cfg["loss"]["params"]["m"] = 3
    cfg["data"]["train_classes"].append(6)
    assert DEFAULTS["loss"]["params"] == {} and DEFAULTS["data"]["train_classes"] == [0, 1, 2, 3, 4, 5]


def test_toml_file_then_overrides(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text(
        '[loss]\nname = "arcface"\n[loss.params]\ns = 16.0\nm = 0.5\neasy_margin = true\n'
        '[model]\nname = "lenetpp"\nembedding_size = 32\n[model.params]\nwidth = 0.5\nin_channels = 3\n'
        '[train]\nsteps = 50\n'
    )
    cfg = load_config(str(f), ["train.steps=70", "loss.params.m=0.3"])
    assert cfg["loss"] == {"name": "arcface", "params": {"s": 16.0, "m": 0.3, "easy_margin": True}}
    assert cfg["model"] == {"name": "lenetpp", "embedding_size": 32, "params": {"width": 0.5, "in_channels": 3}}
    assert cfg["train"]["steps"] == 70
    # untouched keys keep their defaults
    assert cfg["train"]["batch_size"] == DEFAULTS["train"]["batch_size"]
    assert cfg["optim"] == DEFAULTS["optim"]


@pytest.mark.parametrize("text,value", [
    ("train.steps=7", 7),
    ("optim.lr=0.05", 0.05),
    ("optim.weight_decay=1e-4", 1e-4),
    ("data.flip=true", True),
    ("data.flip=False", False),
    ("data.train_classes=[0, 2,4]", [0, 2, 4]),
    ("optim.milestones=[0.3,0.9]", [0.3, 0.9]),
    ("loss.name=arcface", "arcface"),
    ("train.out=runs/a b/c", "runs/a b/c"),
    ("loss.params.m=2", 2),
    ("model.params.width=0.25", 0.25),
    ("loss.params.mining=semihard", "semihard"),
    ("loss.params.triplet=true", True),
])
def test_override_types(text, value):
    cfg = load_config(None, [text])
    key, _ = text.split("=", 1)
    node = cfg
    for part in key.split("."):
        node = node[part]
    assert node == value and type(node) is type(value)


def test_parse_value():
    assert parse_value("3") == 3 and parse_value("-2.5") == -2.5
    assert parse_value("TRUE") is True and parse_value("false") is False
    assert parse_value("[1, [2, 3]]") == [1, [2, 3]]
    assert parse_value("'quoted'") == "quoted"
    assert parse_value("cosine") == "cosine"


@pytest.mark.parametrize("override,named", [
    ("optim.lrr=0.1", "optim.lrr"),
    ("trian.steps=3", "trian"),
    ("train.steps.x=3", "train.steps"),
    ("model.width=0.5", "model.width"),
])
def test_unknown_override_keys_are_rejected(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(None, [override])


def test_override_needs_an_equals_sign():
    with pytest.raises(ValueError, match="train.steps"):
        apply_override(copy.deepcopy(DEFAULTS), "train.steps")


def test_unknown_file_keys_are_rejected_naming_the_key(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[train]\nstepz = 3\n")
    with pytest.raises(ConfigError, match=r"train\.stepz"):
        load_config(str(f))
    f.write_text("[optimizer]\nlr = 3\n")
    with pytest.raises(ConfigError, match="optimizer"):
        load_config(str(f))
    f.write_text("[train\nsteps = 3\n")
    with pytest.raises(ValueError, match="bad.toml"):
        load_config(str(f))
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_config(str(tmp_path / "nope.toml"))


def test_params_tables_are_free_form(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[loss]\nname = "atl"\n[loss.params]\nanything_goes = 1\n[loss.params.nested]\na = [1, 2]\n'
                 '[aux]\nname = "center"\nweight = 0.01\n[aux.params]\nalpha = 0.3\n')
    cfg = load_config(str(f))
    assert cfg["loss"]["params"] == {"anything_goes": 1, "nested": {"a": [1, 2]}}
    assert cfg["aux"] == {"name": "center", "weight": 0.01, "params": {"alpha": 0.3}}


def test_dump_toml_round_trip():
    cfg = load_config(None, ["loss.name=atl", "loss.params.m=2", "loss.params.triplet=true",
                             "model.params.width=0.25", "optim.weight_decay=1e-05", "data.root=/tmp/with \"quotes\"\\x"])
    cfg["loss"]["params"]["nested"] = {"a": [1.5, "b"], "c": False}
    cfg["train"]["out"] = "runs/line\nbreak\ttab"
    cfg["model"]["params"]["odd key.x"] = 1
    back = tomllib.loads(dump_toml(cfg))
    assert back == cfg
    assert tomllib.loads(dump_toml(DEFAULTS)) == DEFAULTS


@pytest.mark.parametrize("override,message", [
    ("optim.lr=abc", "'optim.lr' must be a number, got 'abc'"),
    ("optim.lr=[0.1, 0.2]", "'optim.lr' must be a number, got [0.1, 0.2]"),
    ("train.steps=1.5", "'train.steps' must be an integer, got 1.5"),
    ("train.steps=true", "'train.steps' must be an integer, got True"),
    ("data.flip=1", "'data.flip' must be true or false, got 1"),
    ("data.train_classes=[0, 'x']", "'data.train_classes' must be a list of integers"),
    ("optim.milestones=0.5", "'optim.milestones' must be a list of numbers, got 0.5"),
    ("model.params=3", "'model.params' must be a table, got 3"),
])
def test_override_values_are_type_checked_naming_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert message in str(e.value)


def test_type_checks_keep_numbers_and_text_settings_usable(tmp_path):
    cfg = load_config(None, ["optim.lr=1", "data.root=2024", "optim.milestones=[1, 300]"])
    assert cfg["optim"]["lr"] == 1.0 and type(cfg["optim"]["lr"]) is float  # an int widens to a float
    assert cfg["data"]["root"] == "2024"  # a text setting keeps the text as typed
    assert cfg["optim"]["milestones"] == [1.0, 300.0]
    f = tmp_path / "t.toml"
    f.write_text('[optim]\nlr = "fast"\n')
    with pytest.raises(ConfigError, match=r"'optim\.lr' must be a number, got 'fast'"):
        load_config(str(f))
    f.write_text('[loss]\nname = "arcface"\n[loss.params]\ns = "free-form"\n')
    assert load_config(str(f))["loss"]["params"] == {"s": "free-form"}  # hyper-parameters: the head checks them


def test_cli_reports_a_bad_value_naming_the_key(capsys):
    from facemargin.cli import main

    assert main(["train", "--set", "optim.lr=abc", "--print-config"]) == 2
    assert "config key 'optim.lr' must be a number, got 'abc'" in capsys.readouterr().err
