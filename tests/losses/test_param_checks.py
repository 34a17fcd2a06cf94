"""Hyper-parameters are checked when a loss is built, and by check_params without building it."""
import math
import re

import pytest
import torch

from facemargin import losses as L
from facemargin.losses import checks

ANGLE = "0 <= m < 1.5708 (an additive angle in radians)"


def outcome(fn, *args, **kw):
    """The message of the ValueError ``fn`` raises, or None."""
    try:
        fn(*args, **kw)
    except ValueError as e:
        return str(e)
    return None


def build(name, **params):
    return L.build(name, embedding_size=2, num_classes=3, **params)


# ------------------------------------------------------------------------------------------------
# the messages
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params,message", [
    ({"s": -5}, "arcface: s=-5.0 is out of range: expected s > 0 (the scale multiplying the cosines)"),
    ({"s": 0}, "arcface: s=0.0 is out of range: expected s > 0 (the scale multiplying the cosines)"),
    ({"m": 7}, f"arcface: m=7.0 is out of range: expected {ANGLE}"),
    ({"m": -0.1}, f"arcface: m=-0.1 is out of range: expected {ANGLE}"),
    ({"m": "abc"}, f"arcface: m='abc' is not a number: expected {ANGLE}"),
    ({"m": "0.5"}, f"arcface: m='0.5' is not a number: expected {ANGLE}"),  # numeric text is not a number
    ({"m": None}, f"arcface: m=None is not a number: expected {ANGLE}"),
    ({"m": float("nan")}, f"arcface: m=nan is not a finite number: expected {ANGLE}"),
    ({"s": float("inf")}, "arcface: s=inf is not a finite number: expected s > 0 (the scale multiplying the cosines)"),
    ({"s": True}, "arcface: s=True is not a number: expected s > 0 (the scale multiplying the cosines)"),
    ({"easy_margin": "yes"}, "arcface: easy_margin='yes' is not true or false: expected true or false"),
    ({"replace_prob": 1.5}, "arcface: replace_prob=1.5 is out of range: expected 0 <= replace_prob <= 1"),
])
def test_arcface_messages_name_head_parameter_value_and_range(params, message):
    for call in (lambda: L.check_params("arcface", params), lambda: build("arcface", **params),
                 lambda: L.ArcFace(2, 3, **params)):
        with pytest.raises(ValueError) as e:
            call()
        assert str(e.value).startswith(message), str(e.value)


@pytest.mark.parametrize("name,params,message", [
    ("cosface", {"m": 1.0}, "cosface: m=1.0 is out of range: expected 0 <= m < 1 "),
    ("amsoftmax", {"m": 2}, "cosface: m=2.0 is out of range: expected 0 <= m < 1 "),  # an alias: the head's name
    ("normface", {"s": -1}, "normface: s=-1.0 is out of range: expected s > 0 "),
    ("l2softmax", {"alpha": 0}, "l2softmax: alpha=0.0 is out of range: expected alpha > 0 "),
    ("sphereface", {"m": 5}, "sphereface: m=5 is out of range: expected 1 <= m <= 4 "),
    ("sphereface", {"m": 0}, "sphereface: m=0 is out of range: expected 1 <= m <= 4 "),
    ("sphereface", {"m": 2.5}, "sphereface: m=2.5 is not an integer: expected an integer 1 <= m <= 4 "),
    ("lsoftmax", {"lambda_min": -1}, "lsoftmax: lambda_min=-1.0 is out of range: expected lambda_min >= 0 "),
    ("atl", {"gamma": -0.1}, "atl: gamma=-0.1 is out of range: expected gamma >= 0 "),
    ("lsoftmax", {"triplet": True}, "lsoftmax: triplet=True is not allowed: expected False (needs normalised class weights)"),
    ("combined", {"m1": 0}, "combined: m1=0.0 is out of range: expected m1 > 0 "),
    ("combined", {"m2": 1.6}, "combined: m2=1.6 is out of range: expected 0 <= m2 < 1.5708 "),
    ("combined", {"m3": -0.2}, "combined: m3=-0.2 is out of range: expected 0 <= m3 < 1 "),
    ("adaface", {"h": -1}, "adaface: h=-1.0 is out of range: expected h >= 0 "),
    ("adaface", {"m": 1}, "adaface: m=1.0 is out of range: expected 0 <= m < 1 "),
    ("adaface", {"t_alpha": 1.5}, "adaface: t_alpha=1.5 is out of range: expected 0 <= t_alpha <= 1 "),
    ("magface", {"l_a": 20, "u_a": 10}, "magface: u_a=10.0 is out of range: expected u_a > l_a (=20) "),
    ("magface", {"u_a": 5}, "magface: u_a=5.0 is out of range: expected u_a > l_a (=10) "),  # l_a's default
    ("magface", {"l_margin": 0.9}, "magface: l_margin=0.9 is out of range: expected 0 <= l_margin <= u_margin (=0.8) "),
    ("magface", {"u_margin": 1.6}, "magface: u_margin=1.6 is out of range: expected l_margin (=0.45) <= u_margin "
                                   "< 1.5708 (for additive='arc') "),
    ("magface", {"additive": "cos", "u_margin": 1.2}, "magface: u_margin=1.2 is out of range: expected "
                                                      "l_margin (=0.45) <= u_margin < 1 (for additive='cos') "),
    ("magface", {"additive": "sphere"}, "magface: additive='sphere' is not one of the choices: expected one of 'arc', 'cos'"),
    ("curricularface", {"m": 2}, "curricularface: m=2.0 is out of range: expected 0 <= m < 1.5708 "),
    ("elasticarcface", {"std": -0.1}, "elasticarcface: std=-0.1 is out of range: expected std >= 0 "),
    ("elasticcosface", {"m": 1.0}, "elasticcosface: m=1.0 is out of range: expected 0 <= m < 1 "),
    ("elasticcosface", {"rng_seed": 1.5}, "elasticcosface: rng_seed=1.5 is not an integer: expected an integer or None"),
    ("spherefacer", {"m": 0.5}, "spherefacer: m=0.5 is out of range: expected m >= 1 "),
    ("spherefacer", {"lw": 0}, "spherefacer: lw=0.0 is out of range: expected lw > 0 "),
    ("subcenter_arcface", {"K": 0}, "subcenter_arcface: K=0 is out of range: expected K >= 1 "),
    ("subcenter_arcface", {"K": 2.5}, "subcenter_arcface: K=2.5 is not an integer: expected an integer K >= 1 "),
    ("subcenter_arcface", {"triplet": True}, "subcenter_arcface: triplet=True is not allowed: expected False"),
    ("uniface", {"l": 0}, "uniface: l=0.0 is out of range: expected l > 0 "),
    ("uniface", {"bias": True}, "uniface: bias=True is not allowed: expected False "),
    ("sphereface2", {"alpha": 1}, "sphereface2: alpha=1.0 is out of range: expected 0 < alpha < 1 "),
    ("sphereface2", {"t": 0}, "sphereface2: t=0.0 is out of range: expected t > 0 "),
    ("coco", {"eps": 1.0}, "coco: eps=1.0 is out of range: expected 0 < eps < 1 "),
    ("coco", {"alpha": -1}, "coco: alpha=-1.0 is out of range: expected alpha > 0 "),
    ("center", {"alpha": 0}, "center: alpha=0.0 is out of range: expected 0 < alpha <= 1 "),
    ("center", {"alpha": 1.5}, "center: alpha=1.5 is out of range: expected 0 < alpha <= 1 "),
    ("contrastive", {"margin": -1}, "contrastive: margin=-1.0 is out of range: expected margin >= 0 "),
    ("triplet", {"margin": "0.2"}, "triplet: margin='0.2' is not a number: expected margin >= 0 "),
    ("triplet", {"mining": "hardest"}, "triplet: mining='hardest' is not one of the choices: "
                                       "expected one of 'semihard', 'hard', 'all'"),
    ("range", {"k": 0}, "range: k=0 is out of range: expected k >= 1 "),
    ("marginal", {"theta": 5}, "marginal: theta=5.0 is out of range: expected 0 <= theta <= 4 "),
])
def test_out_of_range_and_non_numeric_values(name, params, message):
    checked = outcome(L.check_params, name, params)
    assert checked is not None and checked.startswith(message), checked
    assert outcome(build, name, **params) == checked  # build runs the same checks


def test_direct_construction_is_checked_too():
    with pytest.raises(ValueError, match=re.escape(f"arcface: m=7.0 is out of range: expected {ANGLE}")):
        L.ArcFace(4, 3, m=7)
    with pytest.raises(ValueError, match=re.escape("atl: m=5 is out of range")):
        L.MarginInnerProduct(2, 3, m=5)  # positional sizes, the preset's own name
    with pytest.raises(ValueError, match=re.escape("AdaFaceMargin: h=-1.0 is out of range: expected h >= 0")):
        L.AdaFaceMargin(h=-1)  # a margin built alone checks its arguments as well
    with pytest.raises(ValueError, match=re.escape("MarginHead: replace_prob=2.0 is out of range")):
        L.MarginHead(2, 3, L.MarginSpec(), replace_prob=2)


# ------------------------------------------------------------------------------------------------
# check_params
# ------------------------------------------------------------------------------------------------


def test_check_params_rejects_a_typo_listing_the_accepted_arguments():
    with pytest.raises(ValueError) as e:
        L.check_params("arcface", {"mm": 1})
    assert str(e.value) == ("loss 'arcface': bad parameters: unknown argument(s) 'mm'; it accepts: embedding_size, "
                            "num_classes, s, m, easy_margin, learn_scale, bias, triplet, semihard, replace_prob, "
                            "engine, engine_options, store, backend, backend_options")
    with pytest.raises(ValueError, match="unknown loss 'arcfase'; available: .*arcface"):
        L.check_params("arcfase", {})
    with pytest.raises(ValueError, match="parameters must be a table"):
        L.check_params("arcface", [("m", 0.5)])


def test_check_params_returns_the_values_as_used():
    out = L.check_params("arcface", {"s": 64, "m": 0, "easy_margin": True})
    assert out == {"s": 64.0, "m": 0.0, "easy_margin": True}
    assert all(type(out[k]) is float for k in ("s", "m"))  # ints for real parameters become floats
    assert L.check_params("sphereface", {"m": 4.0}) == {"m": 4} and type(L.check_params("sphereface", {"m": 4.0})["m"]) is int
    assert L.check_params("elasticarcface", {"std": None}) == {"std": None}  # None: the head's default rule
    assert L.check_params("coco", {"alpha": None}) == {"alpha": None}
    assert L.check_params("softmax", {}) == {}
    store = object()  # arguments without a rule pass unchanged
    assert L.check_params("cosface", {"store": store, "backend_options": {"chunk_size": 8}})["store"] is store
    # the engine name is checked like the rest
    assert L.check_params("cosface", {"engine": "plain"}) == {"engine": "plain"}
    with pytest.raises(ValueError, match="cosface: engine='turbo' is not valid .*unknown engine 'turbo'"):
        L.check_params("cosface", {"engine": "turbo"})
    # and under its former name
    assert L.check_params("cosface", {"backend": "plain"}) == {"backend": "plain"}
    with pytest.raises(ValueError, match="cosface: backend='turbo' is not valid .*unknown engine 'turbo'"):
        L.check_params("cosface", {"backend": "turbo"})


def test_check_params_allocates_nothing():
    # a head of this size would need terabytes: only the check runs
    huge = {"embedding_size": 10**6, "num_classes": 10**9, "s": 32, "m": 0.4}
    assert L.check_params("arcface", huge) == {**huge, "s": 32.0}
    with pytest.raises(ValueError, match="arcface: num_classes=0 is out of range: expected num_classes >= 1"):
        L.check_params("arcface", {"num_classes": 0})


@pytest.mark.parametrize("name", L.available())
def test_every_loss_builds_at_its_defaults_and_passes_its_own_checks(name):
    assert L.check_params(name, {}) == {}
    loss = build(name)
    assert isinstance(loss, torch.nn.Module)


@pytest.mark.parametrize("name", L.available())
def test_every_hyper_parameter_has_a_declared_range(name):
    """The ranges come from the losses' own declarations; each argument a user sets has one."""
    from facemargin.params import accepted_arguments

    specs = L.LOSSES.param_specs(name)
    unruled = set(accepted_arguments(L.LOSSES.get(name))) - set(specs)
    assert unruled <= {"store", "engine_options", "backend_options"}, unruled  # objects, checked where they are used
    for param, text in L.param_ranges(name).items():
        assert text.endswith(")") and len(text) > 10, (param, text)  # each range says what the value means


VALUES = [-1, 0, 0.3, 0.5, 1, 1.5, 2, 2.5, 4, 5, 50, "x", None, True, float("nan")]


@pytest.mark.parametrize("name", L.available())
def test_check_params_and_build_agree(name):
    """For every declared hyper-parameter of every loss and a spread of values: check_params
    accepts exactly what build accepts, with the same message."""
    skip = {"embedding_size", "num_classes", "backend", "engine", "learn_scale", "bias", "triplet", "semihard", "replace_prob"}
    for param in sorted(set(L.LOSSES.param_specs(name)) - skip):
        for value in VALUES:
            checked = outcome(L.check_params, name, {param: value})
            built = outcome(build, name, **{param: value})
            assert checked == built, (name, param, value, checked, built)
            if checked is not None:
                assert checked.startswith(f"{L.LOSSES.resolve(name)}: {param}=")


def test_shared_ranges_have_their_documented_bounds():
    assert checks.ANGLE.describe("m") == ANGLE
    assert checks.COSINE.describe("m") == "0 <= m < 1 (a margin subtracted from a cosine in [-1, 1])"
    assert checks.MULTIPLICATIVE.expectation("m") == "an integer 1 <= m <= 4"
    assert checks.ANGLE.hi == pytest.approx(math.pi / 2)
