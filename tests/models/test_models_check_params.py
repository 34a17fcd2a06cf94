"""Backbone options are checked by models.check_params without building, as models.build checks them."""
import pytest

import facemargin.models as M


def outcome(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except ValueError as e:
        return str(e)
    return None


def test_unknown_option_lists_the_accepted_ones():
    with pytest.raises(ValueError) as e:
        M.check_params("sphere20", {"widht": 2})
    assert str(e.value) == ("backbone 'sphere20': bad parameters: unknown argument(s) 'widht'; "
                            "it accepts: embedding_size, dropout")
    with pytest.raises(ValueError, match="unknown backbone 'resnet9000'"):
        M.check_params("resnet9000", {})


@pytest.mark.parametrize("name,params,message", [
    ("lenetpp", {"dropout": 1.0}, "lenetpp: dropout=1.0 is out of range: expected 0 <= dropout < 1 "),
    ("lenetpp", {"width": 0}, "lenetpp: width=0.0 is out of range: expected width > 0 "),
    ("lenetpp", {"width": "wide"}, "lenetpp: width='wide' is not a number: expected width > 0 "),
    ("lenetpp", {"in_channels": 1.5}, "lenetpp: in_channels=1.5 is not an integer: expected an integer in_channels >= 1 "),
    ("iresnet50", {"dropout": -0.1}, "iresnet50: dropout=-0.1 is out of range: expected 0 <= dropout < 1 "),
    ("iresnet50", {"zero_init_residual": "no"}, "iresnet50: zero_init_residual='no' is not true or false"),
    ("mobilefacenet", {"scale": 0}, "mobilefacenet: scale=0 is out of range: expected scale >= 1 "),
    ("mobilefacenet", {"blocks": (1, 2, 3)}, "mobilefacenet: blocks=(1, 2, 3) is not valid (not four positive integers)"),
    ("smallcnn", {"image_size": 30}, "smallcnn: image_size=30 is not valid (not a positive multiple of 8)"),
    ("sphere20", {"embedding_size": 0}, "sphere20: embedding_size=0 is out of range: expected embedding_size >= 1 "),
])
def test_bad_values_name_backbone_option_and_range(name, params, message):
    checked = outcome(M.check_params, name, params)
    assert checked is not None and checked.startswith(message), checked
    assert outcome(M.build, name, **params) == checked  # build runs the same checks first


def test_good_options_come_back_as_used_without_building():
    assert M.check_params("lenetpp", {"width": 1, "in_channels": 3.0, "dropout": 0}) == \
        {"width": 1.0, "in_channels": 3, "dropout": 0.0}
    # no weights: an absurd width costs nothing here
    assert M.check_params("lenetpp", {"width": 1e6}) == {"width": 1e6}
    for name in M.available():
        assert M.check_params(name, {}) == {}
        assert set(M.BACKBONES.param_specs(name)) >= {"embedding_size", "dropout"}
