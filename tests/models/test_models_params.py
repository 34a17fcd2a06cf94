"""Parameter counts against formulas written here from each paper's / prototxt's layout."""
import pytest
import torch

import facemargin.models as M
from models_helpers import bn, conv, linear, prelu


def count(model, trainable_only=False):
    return M.num_parameters(model, trainable_only)


def lenetpp_formula(emb, width=1.0, cin=1):
    c = [max(1, round(v * width)) for v in (32, 64, 128)]
    total, prev = 0, cin
    for ch in c:  # two 5x5 convs with bias + PReLU each, per stage
        total += conv(prev, ch, 5, bias=True) + prelu(ch) + conv(ch, ch, 5, bias=True) + prelu(ch)
        prev = ch
    return total + linear(c[2] * 4 * 4, emb)  # 28 -> 14 -> 7 -> 4 (Caffe's ceil pooling)


def unit(c):  # SphereFace residual unit: 2 x (conv3x3 without bias + PReLU)
    return 2 * (conv(c, c, 3) + prelu(c))


def sphere_formula(emb, cin, units, fc_hw, stem=0):
    total = stem
    for c, n in zip((64, 128, 256, 512), units):
        total += conv(cin, c, 3, bias=True) + prelu(c) + n * unit(c)
        cin = c
    return total + linear(512 * fc_hw, emb)


def iresnet_formula(layers, emb):
    total = conv(3, 64, 3) + bn(64) + prelu(64)
    cin = 64
    for c, n in zip((64, 128, 256, 512), layers):
        for i in range(n):
            total += bn(cin) + conv(cin, c, 3) + bn(c) + prelu(c) + conv(c, c, 3) + bn(c)
            if i == 0:
                total += conv(cin, c, 1) + bn(c)
            cin = c
    return total + bn(512) + linear(512 * 7 * 7, emb) + bn(emb)


def mobilefacenet_formula(emb):
    def cbp(cin, cout, k, groups=1, act=True):
        return conv(cin, cout, k, groups=groups) + bn(cout) + (prelu(cout) if act else 0)

    total = cbp(3, 64, 3) + cbp(64, 64, 3, groups=64)
    cin = 64
    # Table 1 of the paper: (t, c, n, s)
    for t, c, n, _ in [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)]:
        for _ in range(n):
            h = cin * t
            total += cbp(cin, h, 1) + cbp(h, h, 3, groups=h) + cbp(h, c, 1, act=False)
            cin = c
    total += cbp(cin, 512, 1) + cbp(512, 512, 7, groups=512, act=False)
    return total + linear(512, emb, bias=False) + bn(emb)


@pytest.mark.parametrize("emb,width,cin", [(2, 1.0, 1), (3, 1.0, 1), (128, 1.0, 1), (64, 0.5, 1),
                                           (2, 0.25, 3)])
def test_lenetpp(emb, width, cin):
    assert count(M.build("lenetpp", emb, width=width, in_channels=cin)) == \
        lenetpp_formula(emb, width, cin)


def test_lenetpp_documented_count():
    assert lenetpp_formula(2) == 795_296 + 2049 * 2


def test_sphere20():
    n = count(M.build("sphere20", 512))
    assert n == sphere_formula(512, 3, (1, 2, 4, 1), 7 * 6) == 22_666_944
    # conv1_1 .. conv4_3 of the prototxt: 4 transitions + 2 x (1+2+4+1) residual convs = 20
    m = M.build("sphere20")
    assert sum(isinstance(x, torch.nn.Conv2d) for x in m.modules()) == 20
    assert m.fc5.in_features == 512 * 7 * 6  # 112x96 halved four times


def test_resface28():
    m = M.build("resface28", 512)
    stem = conv(3, 32, 3, bias=True) + prelu(32)
    assert count(m) == sphere_formula(512, 32, (1, 2, 5, 3), 5 * 5, stem) == 28_847_520
    # 27 convolutions + fc5 = 28 layers; unpadded stride-2 convs: 112->110->54->26->12->5
    assert sum(isinstance(x, torch.nn.Conv2d) for x in m.modules()) == 27
    size = 112 - 2
    for _ in range(4):
        size = (size - 3) // 2 + 1
    assert size == 5 and m.fc5.in_features == 512 * size * size


@pytest.mark.parametrize("name,layers", [("iresnet18", (2, 2, 2, 2)), ("iresnet34", (3, 4, 6, 3)),
                                         ("iresnet50", (3, 4, 14, 3)),
                                         ("iresnet100", (3, 13, 30, 3))])
def test_iresnet_counts(name, layers):
    m = M.build(name, 512)
    assert count(m) == iresnet_formula(layers, 512)
    # the BN1d scale of the embedding is frozen at 1 (insightface): 512 values not trainable
    assert count(m) - count(m, trainable_only=True) == 512


def test_iresnet50_published_size():
    n = count(M.build("iresnet50", 512))
    assert abs(n - 43.6e6) / 43.6e6 < 0.005, n
    assert n == 43_590_848


def test_iresnet_documented_counts():
    expected = {"iresnet18": 24_025_600, "iresnet34": 34_139_328, "iresnet50": 43_590_848,
                "iresnet100": 65_156_160}
    layers = {"iresnet18": (2, 2, 2, 2), "iresnet34": (3, 4, 6, 3), "iresnet50": (3, 4, 14, 3),
              "iresnet100": (3, 13, 30, 3)}
    for k, v in expected.items():
        assert iresnet_formula(layers[k], 512) == v


@pytest.mark.parametrize("emb", [128, 512])
def test_mobilefacenet(emb):
    assert count(M.build("mobilefacenet", emb)) == mobilefacenet_formula(emb)


def test_mobilefacenet_paper_size():
    # the paper reports 0.99M parameters for the 128-d model
    n = count(M.build("mobilefacenet", 128))
    assert n == 1_003_136 and abs(n - 0.99e6) / 0.99e6 < 0.02
    assert count(M.build("mobilefacenet", 512)) == 1_200_512
