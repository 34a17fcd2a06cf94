"""Classification heads of ``facemargin.losses`` against SPEC §2, worked independently.

The expected logits are computed here with plain Python ``math`` in float64 from the SPEC table,
on 2-D embeddings and class weights placed at chosen angles, so that every ``θ``, ``cos θ`` and
``ψ_m(θ)`` is a known number. Nothing in this file calls facemargin to get an expected value.
"""
from __future__ import annotations

import inspect
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import facemargin.losses as L

PI = math.pi

# ------------------------------------------------------------------------------------------------
# independent reference (SPEC §2, plain Python floats)
# ------------------------------------------------------------------------------------------------

SPEC_DEFAULTS = {
    "softmax": {"bias": True},
    "l2softmax": {"alpha": 24.0, "bias": True},
    "normface": {"s": 16.0},
    "sphereface": {"m": 4, "base": 1000.0, "gamma": 0.12, "power": 1.0, "lambda_min": 5.0, "iteration": 0},
    "lsoftmax": {"m": 4, "base": 1000.0, "gamma": 0.12, "power": 1.0, "lambda_min": 5.0, "iteration": 0},
    "atl": {"m": 4, "base": 1000.0, "gamma": 0.12, "power": 1.0, "lambda_min": 5.0, "iteration": 0},
    "cosface": {"s": 64.0, "m": 0.35},
    "arcface": {"s": 64.0, "m": 0.5, "easy_margin": False},
    "combined": {"s": 64.0, "m1": 1.0, "m2": 0.3, "m3": 0.2},
}
ALIASES = {"asoftmax": "sphereface", "amsoftmax": "cosface"}
MULTIPLICATIVE = ("sphereface", "lsoftmax", "atl")


def kind_of(name):
    return ALIASES.get(name, name)


def hyper(name, overrides):
    hp = dict(SPEC_DEFAULTS[kind_of(name)])
    hp.update(overrides)
    return hp


def lam_at(hp, iteration):
    """λ = max(lambda_min, base·(1 + gamma·iteration)^(−power))."""
    return max(hp["lambda_min"], hp["base"] * (1.0 + hp["gamma"] * iteration) ** (-hp["power"]))


def angle(a, b):
    """Angle in [0, π] between the 2-D directions at polar angles a and b."""
    d = abs(a - b) % (2 * PI)
    return min(d, 2 * PI - d)


def psi_ref(t, m):
    """ψ_m(θ) = (−1)^k cos(mθ) − 2k for θ ∈ [kπ/m, (k+1)π/m]."""
    k = min(int(math.floor(t * m / PI)), m - 1)
    return (-1) ** k * math.cos(m * t) - 2 * k


def ref_logits_row(name, hp, xa, xr, W, b, label, lam):
    """Logits of one embedding (polar angle xa, norm xr) against class weights W = [(angle, norm)]."""
    kind = kind_of(name)
    out = []
    for j, (wa, wr) in enumerate(W):
        t = angle(xa, wa)
        c = math.cos(t)
        tgt = label is not None and j == label
        if kind == "softmax":
            z = xr * wr * c + (b[j] if hp["bias"] else 0.0)
        elif kind == "l2softmax":
            z = hp["alpha"] * wr * c + (b[j] if hp["bias"] else 0.0)
        elif kind == "normface":
            z = hp["s"] * c
        elif kind in MULTIPLICATIVE:
            r = xr * (wr if kind == "lsoftmax" else 1.0)
            m = hp["m"]
            z = r * (lam * c + psi_ref(t, m)) / (1 + lam) if (tgt and m > 1) else r * c
        elif kind == "cosface":
            z = hp["s"] * (c - hp["m"]) if tgt else hp["s"] * c
        elif kind == "arcface":
            s, m = hp["s"], hp["m"]
            if not tgt:
                z = s * c
            elif hp["easy_margin"] and c <= 0:
                z = s * c
            elif t + m <= PI:
                z = s * math.cos(t + m)
            else:
                z = s * (c - m * math.sin(m))
        elif kind == "combined":
            s, m1, m2, m3 = hp["s"], hp["m1"], hp["m2"], hp["m3"]
            if not tgt:
                z = s * c
            elif m1 == 1.0 and t + m2 > PI:
                z = s * (c - m2 * math.sin(m2) - m3)
            else:
                z = s * (math.cos(m1 * t + m2) - m3)
        else:  # pragma: no cover
            raise AssertionError(kind)
        out.append(z)
    return out


def ref_ce(rows, labels):
    total = 0.0
    for z, y in zip(rows, labels):
        mx = max(z)
        lse = mx + math.log(sum(math.exp(v - mx) for v in z))
        total += lse - z[y]
    return total / len(rows)


def polar(pts):
    return torch.tensor([[r * math.cos(a), r * math.sin(a)] for a, r in pts], dtype=torch.float64)


# 2-D setup: class weights (angle, norm) and embeddings (angle, norm, label) chosen so that the
# target angles θ_y = 0.3, 1.0, 1.9, 2.9, 2.283, 0.371 cover every interval [kπ/m, (k+1)π/m]
# for m = 2, 3, 4; θ_y = 2.9 triggers ArcFace's and the combined margin's π fallback; cos θ_y < 0
# for three of them (easy_margin).
W2 = [(0.0, 2.0), (2.0, 1.0), (-PI / 2, 0.5)]
B2 = [0.1, -0.2, 0.3]
X2 = [(0.3, 1.5, 0), (1.0, 2.0, 0), (1.9, 0.7, 0), (2.9, 3.0, 0), (-2.0, 1.0, 1), (-1.2, 1.3, 2)]


def setup_2d(head):
    head.double()
    with torch.no_grad():
        head.weight.copy_(polar(W2))
        if getattr(head, "bias", None) is not None:
            head.bias.copy_(torch.tensor(B2, dtype=torch.float64))
    x = polar([(a, r) for a, r, _ in X2])
    y = torch.tensor([lab for _, _, lab in X2])
    return x, y


HEAD_CASES = [
    ("softmax", {}),
    ("softmax", {"bias": False}),
    ("l2softmax", {}),
    ("l2softmax", {"alpha": 10.0}),
    ("normface", {}),
    ("normface", {"s": 30.0, "learn_scale": True}),
    ("sphereface", {}),
    ("sphereface", {"m": 1}),
    ("sphereface", {"m": 2, "base": 2.0, "gamma": 0.5, "power": 2.0, "lambda_min": 0.1, "iteration": 3}),
    ("sphereface", {"m": 3, "lambda_min": 0.0, "base": 0.0}),
    ("sphereface", {"m": 4, "lambda_min": 0.5, "iteration": 10_000}),
    ("asoftmax", {"m": 4, "lambda_min": 2.0, "iteration": 10_000}),
    ("lsoftmax", {}),
    ("lsoftmax", {"m": 2, "lambda_min": 0.0, "base": 0.0}),
    ("lsoftmax", {"m": 3, "lambda_min": 1.0, "iteration": 10_000}),
    ("atl", {"m": 1}),
    ("atl", {"m": 2, "lambda_min": 3.0, "iteration": 10_000}),
    ("atl", {"m": 3, "lambda_min": 1.0, "iteration": 10_000}),
    ("atl", {"m": 4, "base": 0.0, "lambda_min": 0.0}),
    ("cosface", {}),
    ("amsoftmax", {"s": 30.0, "m": 0.4}),
    ("arcface", {}),
    ("arcface", {"easy_margin": True}),
    ("arcface", {"s": 10.0, "m": 0.8}),
    ("combined", {}),
    ("combined", {"m1": 2.0, "m2": 0.1, "m3": 0.05}),
    ("combined", {"m1": 0.9, "m2": 0.4, "m3": 0.1}),
]
ALL_NAMES = ["softmax", "l2softmax", "normface", "sphereface", "asoftmax", "lsoftmax", "cosface",
             "amsoftmax", "arcface", "combined", "atl"]


def case_id(case):
    name, kw = case
    return name + ("-" + ",".join(f"{k}={v}" for k, v in kw.items()) if kw else "")


def make(name, D=2, C=3, **kw):
    return L.build(name, embedding_size=D, num_classes=C, **kw)


def ref_lambda(name, hp, training_forwards=0):
    if kind_of(name) not in MULTIPLICATIVE:
        return None
    return lam_at(hp, hp["iteration"] + training_forwards)


def ref_batch(name, hp, lam, with_labels=True):
    return [ref_logits_row(name, hp, a, r, W2, B2, lab if with_labels else None, lam) for a, r, lab in X2]


# ------------------------------------------------------------------------------------------------
# registry, construction, shapes
# ------------------------------------------------------------------------------------------------


def test_available_lists_every_head_and_aliases():
    names = set(L.available())
    for n in ["softmax", "l2softmax", "normface", "sphereface", "lsoftmax", "cosface", "arcface",
              "combined", "atl"]:
        assert n in names
    with_aliases = set(L.available(aliases=True))
    assert {"asoftmax", "amsoftmax"} <= with_aliases
    assert names <= with_aliases


@pytest.mark.parametrize("alias,canonical,cls", [
    ("asoftmax", "sphereface", "SphereFace"), ("amsoftmax", "cosface", "CosFace"),
    ("sphereface", "sphereface", "SphereFace"), ("cosface", "cosface", "CosFace"),
    ("arcface", "arcface", "ArcFace"), ("combined", "combined", "CombinedMargin"),
    ("softmax", "softmax", "Softmax"), ("l2softmax", "l2softmax", "L2Softmax"),
    ("normface", "normface", "NormFace"), ("lsoftmax", "lsoftmax", "LSoftmax"),
    ("atl", "atl", "MarginInnerProduct"),
])
def test_build_by_name_and_alias(alias, canonical, cls):
    head = make(alias, D=5, C=7)
    assert type(head) is getattr(L, cls)
    assert type(head) is type(make(canonical, D=5, C=7))


def test_build_unknown_name_is_a_clear_error():
    with pytest.raises(ValueError, match="nosuchloss"):
        L.build("nosuchloss", embedding_size=2, num_classes=2)


def test_build_passes_hyper_parameters():
    head = make("cosface", s=30.0, m=0.2).double()
    with torch.no_grad():
        head.weight.copy_(torch.eye(2, dtype=torch.float64)[[0, 1, 0]])
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    out = head.logits(x, torch.tensor([0]))
    torch.testing.assert_close(out, torch.tensor([[30 * 0.8, 0.0, 30.0]], dtype=torch.float64))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_weight_and_bias_shapes(name):
    head = make(name, D=5, C=7)
    assert isinstance(head.weight, torch.nn.Parameter)
    assert tuple(head.weight.shape) == (7, 5)
    assert any(p is head.weight for p in head.parameters())
    if kind_of(name) in ("softmax", "l2softmax"):
        assert isinstance(head.bias, torch.nn.Parameter) and tuple(head.bias.shape) == (7,)
        assert make(name, D=5, C=7, bias=False).bias is None
    else:
        assert getattr(head, "bias", None) is None


def test_signatures_follow_the_spec_defaults():
    def defaults(cls):
        sig = inspect.signature(cls.__init__)
        return {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}

    assert defaults(L.Softmax)["bias"] is True
    assert defaults(L.L2Softmax)["alpha"] == 24
    assert defaults(L.NormFace)["s"] == 16
    for cls in (L.SphereFace, L.LSoftmax):
        d = defaults(cls)
        assert (d["m"], d["base"], d["gamma"], d["power"], d["lambda_min"], d["iteration"]) == (4, 1000, 0.12, 1, 5, 0)
    assert (defaults(L.CosFace)["s"], defaults(L.CosFace)["m"]) == (64, 0.35)
    d = defaults(L.ArcFace)
    assert (d["s"], d["m"], d["easy_margin"]) == (64, 0.5, False)
    d = defaults(L.CombinedMargin)
    assert (d["s"], d["m1"], d["m2"], d["m3"]) == (64, 1, 0.3, 0.2)


# ------------------------------------------------------------------------------------------------
# logits and loss against hand values
# ------------------------------------------------------------------------------------------------


def test_literal_hand_worked_values():
    """A few cases worked fully by hand (x at 60° from e0, 30° from e1, norm 3)."""
    e = torch.eye(2, dtype=torch.float64)
    x = torch.tensor([[1.5, 1.5 * math.sqrt(3)]], dtype=torch.float64)
    y0 = torch.tensor([0])

    cos = make("cosface").double()
    with torch.no_grad():
        cos.weight.copy_(torch.stack([e[0], e[1], -e[0]]))
    z = cos.logits(x, y0)[0].tolist()
    # target: 64(cos 60° − 0.35) = 64·0.15 = 9.6; others: 64 cos 30° = 32√3; 64 cos 120° = −32
    assert z == pytest.approx([9.6, 32 * math.sqrt(3), -32.0], rel=1e-12)
    # loss = log(e^9.6 + e^{32√3} + e^{−32}) − 9.6
    expect = math.log(math.exp(9.6) + math.exp(32 * math.sqrt(3)) + math.exp(-32)) - 9.6
    assert cos(x, y0).item() == pytest.approx(expect, rel=1e-12)

    sph = make("sphereface", base=0.0, lambda_min=5.0).double().eval()  # λ = 5 at every iteration
    with torch.no_grad():
        sph.weight.copy_(torch.stack([e[0], 2 * e[1], -e[0]]))
    z = sph.logits(x, y0)[0].tolist()
    # θ = π/3 ∈ [π/4, π/2]: k = 1, ψ_4 = −cos(4π/3) − 2 = −1.5; target 3(5·½ − 1.5)/6 = 0.5
    assert z == pytest.approx([0.5, 3 * math.sqrt(3) / 2, -1.5], rel=1e-12)
    sph2 = make("sphereface", m=2, base=0.0, lambda_min=5.0).double().eval()
    sph2.load_state_dict(sph.state_dict())
    # m = 2, k = 0: ψ_2 = cos(2π/3) = −½; target 3(5·½ − ½)/6 = 1
    assert sph2.logits(x, y0)[0, 0].item() == pytest.approx(1.0, rel=1e-12)
    sph3 = make("sphereface", m=3, base=0.0, lambda_min=5.0).double().eval()
    sph3.load_state_dict(sph.state_dict())
    # against e1 (norm 2, irrelevant), θ = π/6, k = 0: ψ_3 = cos(π/2) = 0; target 3(5·(√3/2))/6
    assert sph3.logits(x, torch.tensor([1]))[0, 1].item() == pytest.approx(1.25 * math.sqrt(3), rel=1e-12)

    lso = make("lsoftmax", m=4, base=0.0, lambda_min=5.0).double().eval()
    lso.load_state_dict(sph.state_dict())
    # with ‖W_j‖ (2 for e1): column 1 = 2·3·cos 30° = 3√3; target as SphereFace (‖W_0‖ = 1)
    assert lso.logits(x, y0)[0].tolist() == pytest.approx([0.5, 3 * math.sqrt(3), -1.5], rel=1e-12)

    arc = make("arcface", s=64.0, m=1.2).double()
    with torch.no_grad():
        arc.weight.copy_(torch.stack([e[0], e[1], -e[0]]))
    # class 2 at θ = 120°: 2π/3 + 1.2 > π, fallback 64(cos 120° − 1.2 sin 1.2)
    z = arc.logits(x, torch.tensor([2]))[0].tolist()
    assert z == pytest.approx([32.0, 32 * math.sqrt(3), 64 * (-0.5 - 1.2 * math.sin(1.2))], rel=1e-12)
    # class 1 at θ = 30°: 64 cos(π/6 + 1.2)
    assert arc.logits(x, torch.tensor([1]))[0, 1].item() == pytest.approx(64 * math.cos(PI / 6 + 1.2), rel=1e-12)


@pytest.mark.parametrize("case", HEAD_CASES, ids=case_id)
def test_logits_and_loss_match_spec(case):
    name, kw = case
    hp = hyper(name, kw)
    head = make(name, **kw)
    x, y = setup_2d(head)
    head.eval()
    lam = ref_lambda(name, hp)
    if lam is not None:
        assert head.lambda_ == pytest.approx(lam, rel=1e-12)
    expect = ref_batch(name, hp, lam)
    got = head.logits(x, y)
    assert got.shape == (len(X2), len(W2))
    torch.testing.assert_close(got, torch.tensor(expect, dtype=torch.float64), rtol=1e-10, atol=1e-10)
    assert head(x, y).item() == pytest.approx(ref_ce(expect, y.tolist()), rel=1e-10, abs=1e-10)

    # logits(x) without labels: no margin anywhere
    plain = ref_batch(name, hp, lam, with_labels=False)
    torch.testing.assert_close(head.logits(x), torch.tensor(plain, dtype=torch.float64), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", HEAD_CASES, ids=case_id)
def test_training_forward_uses_the_stepped_lambda(case):
    name, kw = case
    hp = hyper(name, kw)
    head = make(name, **kw)
    x, y = setup_2d(head)
    head.train()
    loss = head(x, y)
    lam = ref_lambda(name, hp, training_forwards=1)
    assert loss.item() == pytest.approx(ref_ce(ref_batch(name, hp, lam), y.tolist()), rel=1e-10, abs=1e-10)
    if lam is not None:
        assert int(head.iteration) == hp["iteration"] + 1
        assert head.lambda_ == pytest.approx(lam, rel=1e-12)


def test_first_training_forward_uses_1000_over_1_12():
    head = make("sphereface")
    x, y = setup_2d(head)
    loss = head.train()(x, y)
    hp = hyper("sphereface", {})
    assert head.lambda_ == pytest.approx(1000 / 1.12, rel=1e-12)
    assert loss.item() == pytest.approx(ref_ce(ref_batch("sphereface", hp, 1000 / 1.12), y.tolist()), rel=1e-12)
    # and not the λ of iteration 0 (the value differs in the 4th digit of the loss here)
    assert loss.item() != pytest.approx(ref_ce(ref_batch("sphereface", hp, 1000.0), y.tolist()), rel=1e-9)


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_cross_entropy_of_logits_equals_forward(name, mode):
    torch.manual_seed(0)
    kw = {"m": 3, "lambda_min": 1.0} if kind_of(name) in MULTIPLICATIVE else {}
    head = make(name, D=6, C=5, **kw).double()
    getattr(head, mode)()
    x = torch.randn(8, 6, dtype=torch.float64)
    y = torch.randint(0, 5, (8,))
    loss = head(x, y)  # first: a training forward steps λ, logits() then uses the same λ
    ce = F.cross_entropy(head.logits(x, y), y)
    torch.testing.assert_close(loss, ce, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_margin_only_touches_the_target_column(name):
    torch.manual_seed(1)
    head = make(name, D=4, C=6).double().eval()
    x = torch.randn(5, 4, dtype=torch.float64)
    y = torch.tensor([0, 5, 2, 2, 1])
    with_m, without = head.logits(x, y), head.logits(x)
    mask = F.one_hot(y, 6).bool()
    torch.testing.assert_close(with_m[~mask], without[~mask], rtol=0, atol=0)
    if name not in ("softmax", "l2softmax", "normface"):
        # a margin head with default margins lowers every target logit
        assert bool((with_m[mask] < without[mask]).all())
    else:
        torch.testing.assert_close(with_m, without, rtol=0, atol=0)


def test_normface_learnable_scale_gets_the_analytic_gradient():
    head = make("normface", s=7.0, learn_scale=True)
    x, y = setup_2d(head)
    assert isinstance(head.scale, torch.nn.Parameter)
    assert any(p is head.scale for p in head.parameters())
    loss = head(x, y)
    loss.backward()
    # dL/ds = mean_i ( Σ_j p_ij cos θ_ij − cos θ_iy ),  p = softmax(s cos θ)
    g = 0.0
    for a, _, lab in X2:
        cs = [math.cos(angle(a, wa)) for wa, _ in W2]
        ex = [math.exp(7.0 * c) for c in cs]
        g += sum(e * c for e, c in zip(ex, cs)) / sum(ex) - cs[lab]
    g /= len(X2)
    assert head.scale.grad is not None
    assert head.scale.grad.item() == pytest.approx(g, rel=1e-10)
    torch.optim.SGD([head.scale], lr=0.5).step()
    assert head.scale.item() == pytest.approx(7.0 - 0.5 * g, rel=1e-12)

    fixed = make("normface", s=7.0)
    assert not any(p.dim() == 0 for p in fixed.parameters())


# ------------------------------------------------------------------------------------------------
# λ schedule
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sphereface", "lsoftmax", "atl"])
def test_lambda_schedule_counts_training_forwards_only(name):
    kw = {"base": 50.0, "gamma": 0.3, "power": 1.5, "lambda_min": 2.0}
    hp = hyper(name, kw)
    head = make(name, **kw)
    x, y = setup_2d(head)
    assert int(head.iteration) == 0
    head.train()
    for n in range(1, 6):
        head(x, y)
        assert int(head.iteration) == n
        assert head.lambda_ == pytest.approx(lam_at(hp, n), rel=1e-12)
    # eval-mode calls and logits() do not count
    head.eval()
    head(x, y)
    head.logits(x, y)
    head.train()
    head.logits(x, y)
    assert int(head.iteration) == 5
    # a training-mode forward counts even without autograd
    with torch.no_grad():
        head(x, y)
    assert int(head.iteration) == 6
    # enough steps reach the floor lambda_min: 50·(1 + 0.3n)^−1.5 < 2 for n ≥ 26
    for _ in range(30):
        head(x, y)
    assert head.lambda_ == pytest.approx(2.0, rel=1e-12)


def test_lambda_floor_and_iteration_argument():
    head = make("sphereface", iteration=1700)
    x, y = setup_2d(head)
    head.train()(x, y)
    # 1000/(1 + 0.12·1701) = 4.875 < 5
    assert int(head.iteration) == 1701
    assert head.lambda_ == 5.0
    head2 = make("sphereface", iteration=1000)
    head2.train()(*setup_2d(head2))
    assert head2.lambda_ == pytest.approx(1000 / (1 + 0.12 * 1001), rel=1e-12)


@pytest.mark.parametrize("name", ["sphereface", "asoftmax", "lsoftmax", "atl"])
def test_lambda_state_survives_save_and_load(name):
    head = make(name, m=3)
    x, y = setup_2d(head)
    head.train()
    for _ in range(7):
        head(x, y)
    buf = io.BytesIO()
    torch.save(head.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = make(name, m=3).double()
    assert int(fresh.iteration) == 0
    fresh.load_state_dict(state)
    assert int(fresh.iteration) == 7
    assert fresh.lambda_ == head.lambda_ == pytest.approx(1000 / (1 + 0.12 * 7), rel=1e-12)
    torch.testing.assert_close(fresh.weight, head.weight, rtol=0, atol=0)
    # both continue identically
    fresh.train()
    torch.testing.assert_close(fresh(x, y), head(x, y), rtol=0, atol=0)
    assert int(fresh.iteration) == int(head.iteration) == 8


# ------------------------------------------------------------------------------------------------
# ψ_m
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_psi_matches_definition_in_every_interval(m):
    thetas, expect = [], []
    for k in range(m):
        lo, hi = k * PI / m, (k + 1) * PI / m
        for f in (0.01, 0.25, 0.5, 0.75, 0.99):
            t = lo + f * (hi - lo)
            thetas.append(t)
            expect.append((-1) ** k * math.cos(m * t) - 2 * k)
    c = torch.tensor([math.cos(t) for t in thetas], dtype=torch.float64)
    torch.testing.assert_close(L.psi(c, m), torch.tensor(expect, dtype=torch.float64), rtol=1e-9, atol=1e-9)
    # ψ at the ends: 1 at θ = 0, 1 − 2m at θ = π
    ends = L.psi(torch.tensor([1.0, -1.0], dtype=torch.float64), m)
    torch.testing.assert_close(ends, torch.tensor([1.0, 1.0 - 2 * m], dtype=torch.float64))


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_psi_is_monotonically_decreasing(m):
    t = torch.linspace(0, PI, 2001, dtype=torch.float64)
    p = L.psi(torch.cos(t), m)
    assert bool((p[1:] - p[:-1] < 0).all())
    # and continuous: no jump larger than the grid allows (|ψ'| ≤ m)
    assert float((p[1:] - p[:-1]).abs().max()) <= m * PI / 2000 * 1.01


@pytest.mark.parametrize("m", [2, 3, 4])
def test_sphereface_target_with_lambda_zero_is_psi(m):
    """With base = lambda_min = 0 the target logit over ‖x‖ is ψ_m(θ_y)."""
    head = make("sphereface", C=2, m=m, base=0.0, lambda_min=0.0).double().eval()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
    thetas = [0.05 + i * (PI - 0.1) / 40 for i in range(41)]
    x = polar([(t, 2.5) for t in thetas])
    z = head.logits(x, torch.zeros(len(thetas), dtype=torch.long))[:, 0] / 2.5
    torch.testing.assert_close(z, torch.tensor([psi_ref(t, m) for t in thetas], dtype=torch.float64))


# ------------------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------------------

GRAD_CASES = [
    ("softmax", {}),
    ("l2softmax", {}),
    ("normface", {"learn_scale": True}),
    ("sphereface", {"m": 4, "lambda_min": 1.0, "iteration": 10_000}),
    ("sphereface", {"m": 2, "lambda_min": 0.0, "base": 0.0}),
    ("sphereface", {"m": 3, "lambda_min": 2.0, "iteration": 10_000}),
    ("asoftmax", {"m": 4}),
    ("lsoftmax", {"m": 4, "lambda_min": 1.0, "iteration": 10_000}),
    ("lsoftmax", {"m": 2, "lambda_min": 0.0, "base": 0.0}),
    ("atl", {"m": 1}),
    ("atl", {"m": 2, "lambda_min": 3.0, "iteration": 10_000}),
    ("cosface", {}),
    ("amsoftmax", {}),
    ("arcface", {}),
    ("arcface", {"easy_margin": True}),
    ("combined", {}),
    ("combined", {"m1": 2.0, "m2": 0.1, "m3": 0.05}),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=case_id)
def test_gradcheck_float64(case):
    name, kw = case
    hp = hyper(name, kw)
    torch.manual_seed(3)
    B, D, C = 5, 3, 4
    head = make(name, D=D, C=C, **kw).double().eval()  # eval: λ stays fixed across calls
    W = torch.randn(C, D, dtype=torch.float64)
    x = torch.randn(B, D, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1])
    # sample 0 at θ_y = π − 0.15 (past the ArcFace / combined switch: the fallback branch),
    # sample 1 at θ_y = 0.4
    w0, w1 = F.normalize(W[0], dim=0), F.normalize(W[1], dim=0)
    u0 = F.normalize(x[0] - (x[0] @ w0) * w0, dim=0)
    u1 = F.normalize(x[1] - (x[1] @ w1) * w1, dim=0)
    x[0] = 1.7 * (math.cos(PI - 0.15) * w0 + math.sin(PI - 0.15) * u0)
    x[1] = 2.2 * (math.cos(0.4) * w1 + math.sin(0.4) * u1)
    # keep away from the kinks: cos θ_y not at ±1, the π − m switch, or 0 (easy_margin)
    c = F.cosine_similarity(x, W[y], dim=1)
    assert float((c.abs() - 1).abs().min()) > 0.005
    kinks = []
    if kind_of(name) == "arcface":
        kinks.append(math.cos(PI - hp["m"]))
        if hp["easy_margin"]:
            kinks.append(0.0)
    if kind_of(name) == "combined" and hp["m1"] == 1.0:
        kinks.append(math.cos(PI - hp["m2"]))
    for k in kinks:
        assert float((c - k).abs().min()) > 0.02, (name, c, k)

    params = {"weight": W.requires_grad_()}
    if getattr(head, "bias", None) is not None:
        params["bias"] = torch.randn(C, dtype=torch.float64).requires_grad_()
    if isinstance(head.scale, torch.nn.Parameter):
        params["scale"] = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    keys = list(params)

    def f(xx, *ps):
        return functional_call(head, dict(zip(keys, ps)), (xx, y))

    x.requires_grad_()
    assert torch.autograd.gradcheck(f, (x, *params.values()), eps=1e-6, atol=1e-6, rtol=1e-5)
    if kind_of(name) in ("normface",):
        assert "scale" in keys


# ------------------------------------------------------------------------------------------------
# numerical safety: cos θ = ±1 exactly, s = 64, float32 / bfloat16
# ------------------------------------------------------------------------------------------------

SAFE_CASES = [
    ("softmax", {}), ("l2softmax", {"alpha": 64.0}), ("normface", {"s": 64.0}),
    ("normface", {"s": 64.0, "learn_scale": True}),
    ("sphereface", {"m": 1}), ("sphereface", {"m": 2}), ("sphereface", {"m": 3}), ("sphereface", {"m": 4}),
    ("lsoftmax", {"m": 4}), ("atl", {"m": 4}), ("atl", {"m": 2, "triplet": True, "semihard": True}),
    ("cosface", {}), ("arcface", {}), ("arcface", {"easy_margin": True}),
    ("combined", {}), ("combined", {"m1": 2.0, "m2": 0.1, "m3": 0.05}),
]


def safe_batch(dtype):
    # class weights on axes: x̂·ŵ is then exactly +1 / −1 for x on / against an axis
    W = 2.0 * torch.eye(4)[:3]
    x = torch.tensor([[64.0, 0, 0, 0], [0, -64.0, 0, 0], [0, 0, 64.0, 0], [-64.0, 0, 0, 0], [3.0, 2.0, -1.0, 0.5]])
    y = torch.tensor([0, 1, 2, 0, 1])
    return W, x.to(dtype), y


@pytest.mark.parametrize("how", ["float32", "bf16-input", "bf16-head", "bf16-autocast"])
@pytest.mark.parametrize("case", SAFE_CASES, ids=case_id)
def test_finite_at_cos_plus_minus_one(case, how):
    name, kw = case
    head = make(name, D=4, C=3, **kw)
    W, x, y = safe_batch(torch.bfloat16 if how in ("bf16-input", "bf16-head") else torch.float32)
    with torch.no_grad():
        head.weight.copy_(W)
    if how == "bf16-head":
        head.to(torch.bfloat16)
    head.train()
    x.requires_grad_()
    if how == "bf16-autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = head(x, y)
    else:
        loss = head(x, y)
    assert torch.isfinite(loss), loss
    loss.backward()
    assert torch.isfinite(x.grad).all()
    for p in head.parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), p
    with torch.no_grad():
        assert torch.isfinite(head.logits(x, y).float()).all()
        assert torch.isfinite(head.logits(x).float()).all()


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_NAMES)
def test_bad_input_raises_clear_value_errors(name):
    head = make(name, D=3, C=5)
    x = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 4])

    calls = [lambda a, b: head(a, b), lambda a, b: head.logits(a, b)]
    for call in calls:
        with pytest.raises(ValueError) as e:  # wrong embedding width
            call(torch.randn(4, 7), y)
        msg = str(e.value)
        assert "width" in msg and "7" in msg and "3" in msg

        for bad in (-1, 5, 17):  # labels outside [0, C)
            yy = y.clone()
            yy[2] = bad
            with pytest.raises(ValueError) as e:
                call(x, yy)
            msg = str(e.value)
            assert "label" in msg and "[0, 5)" in msg and str(bad) in msg

        for v in (float("nan"), float("inf"), float("-inf")):  # non-finite embeddings
            xx = x.clone()
            xx[1, 2] = v
            with pytest.raises(ValueError) as e:
                call(xx, y)
            msg = str(e.value).lower()
            assert "finite" in msg and "1" in msg  # names the offending row

        with pytest.raises(ValueError) as e:  # empty batch
            call(torch.randn(0, 3), torch.zeros(0, dtype=torch.long))
        assert "empty" in str(e.value).lower()

        for yy in (y[:3], y.view(4, 1), torch.zeros(5, dtype=torch.long)):  # wrong label shape
            with pytest.raises(ValueError) as e:
                call(x, yy)
            msg = str(e.value)
            assert "label" in msg and "shape" in msg and "(4,)" in msg

    # logits without labels checks the embeddings too
    with pytest.raises(ValueError, match="width"):
        head.logits(torch.randn(4, 2))
    with pytest.raises(ValueError, match="empty"):
        head.logits(torch.randn(0, 3))
    with pytest.raises(ValueError, match="(?i)finite"):
        head.logits(torch.full((2, 3), float("nan")))
    # a bad call does not advance the λ counter
    if head.iteration is not None:
        assert int(head.iteration) == 0
