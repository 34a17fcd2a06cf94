"""Structural facts of the published layouts that the parameter counts alone would not catch."""
import torch

import facemargin.models as M
from facemargin.models.iresnet import IBasicBlock


def _insightface_keys(layers, emb_bn=True):
    """The state-dict keys of arcface_torch's IResNet, listed from its naming scheme."""
    def bn(p):
        return [f"{p}.weight", f"{p}.bias", f"{p}.running_mean", f"{p}.running_var",
                f"{p}.num_batches_tracked"]
    keys = ["conv1.weight", *bn("bn1"), "prelu.weight"]
    for i, n in enumerate(layers, 1):
        for j in range(n):
            p = f"layer{i}.{j}"
            keys += [*bn(f"{p}.bn1"), f"{p}.conv1.weight", *bn(f"{p}.bn2"), f"{p}.prelu.weight",
                     f"{p}.conv2.weight", *bn(f"{p}.bn3")]
            if j == 0:
                keys += [f"{p}.downsample.0.weight", *bn(f"{p}.downsample.1")]
    keys += [*bn("bn2"), "fc.weight", "fc.bias", *bn("features")]
    return set(keys)


def test_iresnet_state_dict_keys_match_arcface_torch():
    m = M.build("iresnet34")
    sd = m.state_dict()
    assert set(sd) == _insightface_keys((3, 4, 6, 3))
    assert sd["fc.weight"].shape == (512, 512 * 7 * 7)
    assert sd["layer3.0.downsample.0.weight"].shape == (256, 128, 1, 1)


def test_iresnet_block_order_and_stride():
    m = M.build("iresnet18")
    blocks = [b for b in m.modules() if isinstance(b, IBasicBlock)]
    firsts = [m.layer1[0], m.layer2[0], m.layer3[0], m.layer4[0]]
    for b in blocks:
        s = 2 if any(b is f for f in firsts) else 1
        assert b.conv1.stride == (1, 1) and b.conv2.stride == (s, s)
        assert (b.downsample is not None) == (s == 2)


def test_iresnet_block_is_bn_conv_bn_prelu_conv_bn_plus_shortcut():
    torch.manual_seed(0)
    b = IBasicBlock(8, 8).eval()
    for bn in (b.bn1, b.bn2, b.bn3):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        ref = b.bn3(b.conv2(b.prelu(b.bn2(b.conv1(b.bn1(x)))))) + x
        torch.testing.assert_close(b(x), ref)
        # no activation after the sum: shortcut passes negatives through
        torch.nn.init.zeros_(b.bn3.weight)
        torch.nn.init.zeros_(b.bn3.bias)
        torch.testing.assert_close(b(x), x)


def test_iresnet_features_scale_frozen_at_one():
    m = M.build("iresnet18", 16)
    assert not m.features.weight.requires_grad and m.features.bias.requires_grad
    assert torch.equal(m.features.weight, torch.ones(16))


def test_iresnet_dropout():
    m = M.build("iresnet18", 8, dropout=0.4)
    assert m.dropout.p == 0.4


def test_sphere_residual_units_identity_when_zeroed():
    m = M.build("sphere20", 8).eval()
    unit = m.stage3[2]
    x = torch.randn(1, 256, 14, 12)
    with torch.no_grad():
        unit.conv2.weight.zero_()
        # PReLU(0) = 0, no bias: the unit returns its input unchanged
        torch.testing.assert_close(unit(x), x)


def test_mobilefacenet_bottleneck_residual_rule():
    m = M.build("mobilefacenet")
    blocks = [b for b in m.bottlenecks]
    assert len(blocks) == 5 + 1 + 6 + 1 + 2
    strides = [b.body[1][0].stride[0] for b in blocks]
    assert strides == [2, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1]
    assert [b.residual for b in blocks] == [s == 1 for s in strides]
    expansions = [b.body[0][0].out_channels // b.body[0][0].in_channels for b in blocks]
    assert expansions == [2] * 5 + [4] + [2] * 6 + [4] + [2] * 2
    # linear projection: BN without PReLU
    assert all(len(b.body[2]) == 2 for b in blocks)
    assert m.gdconv[0].kernel_size == (7, 7) and m.gdconv[0].groups == 512
