"""Sub-center ArcFace, UniFace and SphereFace2 against values worked by hand from their formulas."""
import math

import pytest
import torch
import torch.nn.functional as F

from facemargin import losses
from facemargin.losses import subcenter_outliers

ENGINES = ["plain", "fused"]


def _softplus(v):
    return math.log1p(math.exp(v))


@pytest.mark.parametrize("engine", ENGINES)
def test_subcenter_arcface_by_hand(engine):
    """C=2, K=2, D=2: the class cosine is the best sub-center's; ArcFace on the target."""
    s, m = 4.0, 0.5
    head = losses.build("subcenter_arcface", embedding_size=2, num_classes=2, K=2, s=s, m=m, engine=engine).double()
    a = [0.0, 0.7, 2.0, 2.9]  # angles of the rows: class 0 at 0 and 0.7 rad, class 1 at 2.0 and 2.9 rad
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[math.cos(t), math.sin(t)] for t in a], dtype=torch.float64) * 3.0)
    phi = 0.5  # the sample's angle: 0.2 from row 1 (closest of class 0), 1.5 from row 2 (closest of class 1)
    x = torch.tensor([[2 * math.cos(phi), 2 * math.sin(phi)]], dtype=torch.float64, requires_grad=True)
    loss = head(x, torch.tensor([0]))
    t = s * math.cos(0.2 + m)
    other = s * math.cos(1.5)
    assert float(loss) == pytest.approx(-t + math.log(math.exp(t) + math.exp(other)), rel=1e-12)
    loss.backward()
    g = head.weight.grad.norm(dim=1)
    assert g[0] == 0 and g[3] == 0 and g[1] > 0 and g[2] > 0  # only the arg-max sub-centers learn
    assert head.weight.shape == (4, 2) and head.subcenters.shape == (2, 2, 2)
    # logits(x) are the pooled cosines times s, the margin only on the target
    z = head.logits(x.detach())
    torch.testing.assert_close(z, torch.tensor([[s * math.cos(0.2), other]], dtype=torch.float64))


def test_subcenter_rejects_bad_k_and_triplet():
    with pytest.raises(ValueError, match="K"):
        losses.build("subcenter_arcface", embedding_size=2, num_classes=2, K=0)
    with pytest.raises(ValueError, match="triplet"):
        losses.build("subcenter_arcface", embedding_size=2, num_classes=2, triplet=True)


def test_subcenter_outliers_by_hand():
    """Class 0: three samples near sub-center 0, one at 90° from it, near sub-center 1."""
    centers = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, -1.0]]])
    emb = torch.tensor([[1.0, 0.1], [2.0, -0.1], [1.0, 0.0], [0.05, 1.0], [-1.0, 0.0], [-1.0, 0.3]])
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    out = subcenter_outliers(centers, emb, labels, threshold_deg=75)
    assert out["dominant"].tolist() == [0, 0]
    assert out["outliers"].tolist() == [3]
    assert out["nearest"].tolist() == [0, 0, 0, 1, 0, 0]
    assert float(out["cosine"][3]) == pytest.approx(0.05 / math.hypot(0.05, 1.0))
    with pytest.raises(ValueError, match="labels must lie"):
        subcenter_outliers(centers, emb, torch.tensor([0, 0, 0, 0, 1, 2]))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("per_class_bias", [False, True])
def test_uniface_by_hand(engine, per_class_bias):
    s, m, l = 4.0, 0.4, 0.7
    C = 3
    head = losses.build("uniface", embedding_size=2, num_classes=C, s=s, m=m, l=l, per_class_bias=per_class_bias,
                        engine=engine).double()
    head.init_weights(0)  # the bias init again, now in float64
    b0 = math.log(C * 10)
    bias = head.bias if per_class_bias else head.b
    assert torch.allclose(bias.detach(), torch.full_like(bias, b0))
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]], dtype=torch.float64))
        if per_class_bias:
            head.bias.copy_(torch.tensor([0.5, -0.3, 1.0], dtype=torch.float64))
    bj = [0.5, -0.3, 1.0] if per_class_bias else [b0] * 3
    x = torch.tensor([[3.0, 4.0], [0.0, -1.0]], dtype=torch.float64)  # cosines (0.6, 0.8, -0.6), (0, -1, 0)
    y = torch.tensor([0, 2])
    cos = [[0.6, 0.8, -0.6], [0.0, -1.0, 0.0]]

    def clamp(v):
        return max(-s, min(s, v))

    total = 0.0
    for i in range(2):
        for j in range(C):
            if j == int(y[i]):
                total += _softplus(-clamp(s * (cos[i][j] - m) - bj[j]))
            else:
                total += l * _softplus(clamp(s * cos[i][j] - bj[j]))
    assert float(head(x, y)) == pytest.approx(total / 2, rel=1e-12)


def test_sphereface2_bias_init_and_loss_by_hand():
    lam, r, m, t, lw = 0.7, 10.0, 0.4, 3.0, 50.0
    C = 3
    head = losses.build("sphereface2", embedding_size=2, num_classes=C, alpha=lam, r=r, m=m, t=t, lw=lw).double()
    head.init_weights(0)  # the bias init again, now in float64
    z = lam / ((1 - lam) * (C - 1))
    ay, ai = r * (2 * 0.5 ** t - 1 - m), r * (2 * 0.5 ** t - 1 + m)
    b = math.log(2 * z) - ai - math.log(1 - z + math.sqrt((1 - z) ** 2 + 4 * z * math.exp(ay - ai)))
    assert float(head.b) == pytest.approx(b, rel=1e-12)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=torch.float64))
    x = torch.tensor([[3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    cos = [0.6, 0.8, -1.4 / math.sqrt(2)]

    def g(c):
        return 2 * ((c + 1) / 2) ** t - 1

    terms = lam * _softplus(-(r * (g(cos[0]) - m) + b))
    terms += sum((1 - lam) * _softplus(r * (g(c) + m) + b) for c in cos[1:])
    loss = head(x, torch.tensor([0]))
    assert float(loss) == pytest.approx(lw * C / r * terms / (1 * C), rel=1e-12)
    # rows were renormalised in place
    assert torch.allclose(head.weight.norm(dim=1), torch.ones(3, dtype=torch.float64))
    # the offset g(c) ∓ m − c is detached: the gradient is that of r·c + const per column
    loss.backward()
    xx = x.detach().clone().requires_grad_(True)
    c = F.normalize(xx, dim=1) @ head.weight.detach().t()
    logits = r * c + b + (r * (torch.tensor([[g(cos[0]) - m, g(cos[1]) + m, g(cos[2]) + m]], dtype=torch.float64)
                               - c.detach()))
    onehot = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    wts = lw * C / r * (lam * onehot + (1 - lam) * (1 - onehot))
    ref = F.binary_cross_entropy_with_logits(logits, onehot, weight=wts)
    ref.backward()
    torch.testing.assert_close(x.grad, xx.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss.detach(), ref.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["subcenter_arcface", "uniface"])
@pytest.mark.parametrize("engine", ENGINES)
def test_gradcheck_float64(name, engine):
    torch.manual_seed(0)
    head = losses.build(name, embedding_size=4, num_classes=5, s=4.0, engine=engine).double()
    x = (torch.randn(6, 4, dtype=torch.float64) * 2).requires_grad_(True)
    y = torch.tensor([0, 1, 4, 4, 2, 3])
    params = [p for p in head.parameters()]
    names = [n for n, _ in head.named_parameters()]

    def f(x, *ps):
        return torch.func.functional_call(head, dict(zip(names, ps)), (x, y))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6, nondet_tol=1e-12)
