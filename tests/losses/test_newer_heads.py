"""AdaFace, MagFace, CurricularFace, ElasticFace (Arc, Cos) and SphereFace-R.

Expected values are worked here with plain Python ``math`` (float64) from each head's published
formula, on 2-D embeddings and class rows placed at chosen angles, so every ``θ`` and ``cos θ`` is
a known number; nothing here asks facemargin for an expected value. Then: float64 gradcheck on the
plain and fused engines, plain/fused parity over several steps (loss, gradients, buffers,
regulariser), state_dict round trips with an exact resume, and one launch of two gloo ranks
comparing the sharded heads with the single-process head on the concatenated batch.
"""
from __future__ import annotations

import copy
import inspect
import io
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import facemargin.losses as L

PI = math.pi
NEW = ["adaface", "magface", "curricularface", "elasticarcface", "elasticcosface", "spherefacer"]


# ------------------------------------------------------------------------------------------------
# plain-math helpers
# ------------------------------------------------------------------------------------------------


def angle(a, b):
    """Angle in [0, π] between the 2-D directions at polar angles a and b."""
    d = abs(a - b) % (2 * PI)
    return min(d, 2 * PI - d)


def polar(pts):
    return torch.tensor([[r * math.cos(a), r * math.sin(a)] for a, r in pts], dtype=torch.float64)


def ce(rows, labels):
    total = 0.0
    for z, y in zip(rows, labels):
        mx = max(z)
        total += mx + math.log(sum(math.exp(v - mx) for v in z)) - z[y]
    return total / len(rows)


def clip(v, lo, hi):
    return min(max(v, lo), hi)


# class rows (angle, norm): the norms are not 1, so the heads must normalise them
W2 = [(0.0, 2.0), (2.0, 0.5), (-PI / 2, 1.5), (PI - 0.3, 1.0)]


def setup_2d(head, X):
    """Load W2 into ``head`` (float64) and return the embeddings X = [(angle, norm, label)]."""
    head.double()
    with torch.no_grad():
        head.weight.copy_(polar(W2))
    x = polar([(a, r) for a, r, _ in X])
    y = torch.tensor([lab for _, _, lab in X])
    return x, y


def cosines(X):
    return [[math.cos(angle(a, wa)) for wa, _ in W2] for a, _, _ in X]


def make(name, D=2, C=4, **kw):
    return L.build(name, embedding_size=D, num_classes=C, **kw)


# ------------------------------------------------------------------------------------------------
# registry, defaults, argument errors
# ------------------------------------------------------------------------------------------------


def test_registered_and_built_with_no_hyper_parameter():
    names = set(L.available())
    for name in NEW:
        assert name in names and L.is_head(name)
        head = L.build(name, embedding_size=8, num_classes=5)
        assert isinstance(head, L.MarginHead) and tuple(head.weight.shape) == (5, 8)
        assert head.engine.name == "fused"


@pytest.mark.parametrize("name", NEW)
def test_unknown_hyper_parameter_is_named(name):
    with pytest.raises(ValueError, match="nosuchparam"):
        L.build(name, embedding_size=4, num_classes=3, nosuchparam=1.0)


def _defaults(cls):
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_defaults_are_the_official_ones():
    assert {k: _defaults(L.AdaFace)[k] for k in ("m", "h", "s", "t_alpha")} == {"m": 0.4, "h": 0.333, "s": 64.0,
                                                                                 "t_alpha": 0.01}
    d = _defaults(L.MagFace)
    assert (d["l_a"], d["u_a"], d["l_margin"], d["u_margin"], d["lambda_g"], d["s"], d["easy_margin"],
            d["additive"]) == (10, 110, 0.45, 0.8, 35, 64, True, "arc")
    assert (_defaults(L.CurricularFace)["s"], _defaults(L.CurricularFace)["m"]) == (64, 0.5)
    assert (_defaults(L.SphereFaceR)["s"], _defaults(L.SphereFaceR)["m"], _defaults(L.SphereFaceR)["lw"]) == (30, 1.5, 50)
    for name, m, std, std_plus in (("elasticarcface", 0.5, 0.05, 0.0175), ("elasticcosface", 0.35, 0.05, 0.02)):
        head, plus = make(name), make(name, plus=True)
        assert float(head.scale) == 64.0 and head.margin.m == m
        assert head.margin.std == std and not head.margin.plus
        assert plus.margin.std == std_plus and plus.margin.plus
        assert make(name, plus=True, std=0.3).margin.std == 0.3
    ada = make("adaface")
    assert float(ada.margin.batch_mean) == 20.0 and float(ada.margin.batch_std) == 100.0
    assert float(make("curricularface").margin.t) == 0.0


@pytest.mark.parametrize("name,kw,word", [
    ("adaface", {"t_alpha": 1.5}, "t_alpha"), ("adaface", {"s": 0.0}, "s"), ("adaface", {"h": -1.0}, "h"),
    ("magface", {"l_a": 20.0, "u_a": 10.0}, "u_a"), ("magface", {"additive": "sphere"}, "additive"),
    ("magface", {"lambda_g": -1.0}, "lambda_g"), ("curricularface", {"m": -0.1}, "m"),
    ("elasticarcface", {"std": -0.1}, "std"), ("elasticcosface", {"rng_seed": 1.5}, "rng_seed"),
    ("spherefacer", {"lw": 0.0}, "lw"), ("spherefacer", {"m": 0.0}, "m"),
])
def test_bad_hyper_parameters_raise_value_errors_naming_them(name, kw, word):
    with pytest.raises(ValueError, match=word):
        make(name, **kw)


# ------------------------------------------------------------------------------------------------
# AdaFace
# ------------------------------------------------------------------------------------------------

# norms 0.0005 (clipped to 0.001) and 150 (clipped to 100); sample 1 lies on its class row
# (c_y = 1 is clamped to 1 − 1e-3); sample 4 (large norm, θ_y = 0.2) has θ_y − m·ĝ < 1e-3;
# sample 3 (θ_y = 3.0, small norm) has θ_y − m·ĝ > π − 1e-3
ADA_X = [(0.7, 0.0005, 0), (2.0, 30.0, 1), (-1.0, 5.0, 2), (PI - 0.3 + 3.0, 3.0, 3), (0.2, 150.0, 0),
         (1.1, 20.0, 1)]


def ada_reference(X, m, h, s, alpha, mu0, sd0, update=True):
    n = [clip(r, 0.001, 100.0) for _, r, _ in X]
    mean = sum(n) / len(n)
    std = math.sqrt(sum((v - mean) ** 2 for v in n) / (len(n) - 1))
    mu, sd = (alpha * mean + (1 - alpha) * mu0, alpha * std + (1 - alpha) * sd0) if update else (mu0, sd0)
    rows = []
    for (a, r, lab), ni, cs in zip(X, n, cosines(X)):
        g = clip(h * (ni - mu) / (sd + 1e-3), -1.0, 1.0)
        z = [s * c for c in cs]
        th = math.acos(clip(cs[lab], -1 + 1e-3, 1 - 1e-3))
        th2 = clip(th - m * g, 1e-3, PI - 1e-3)
        z[lab] = s * (math.cos(th2) - m * (1 + g))
        rows.append(z)
    return rows, mu, sd


def test_adaface_hand_worked():
    m, h, s, alpha = 0.4, 2.0, 8.0, 0.5
    head = make("adaface", m=m, h=h, s=s, t_alpha=alpha, engine="plain")
    x, y = setup_2d(head, ADA_X)
    rows, mu, sd = ada_reference(ADA_X, m, h, s, alpha, 20.0, 100.0)
    # the branches the samples were chosen for are really taken
    gs = [clip(h * (clip(r, 0.001, 100) - mu) / (sd + 1e-3), -1, 1) for _, r, _ in ADA_X]
    assert gs[4] == 1.0 and 0.2 - m * gs[4] < 1e-3 and 3.0 - m * gs[3] > PI - 1e-3
    loss = head.train()(x, y)
    assert loss.item() == pytest.approx(ce(rows, y.tolist()), rel=1e-12)
    assert float(head.margin.batch_mean) == pytest.approx(mu, rel=1e-12)
    assert float(head.margin.batch_std) == pytest.approx(sd, rel=1e-12)
    # evaluation uses the moments without moving them
    rows2, _, _ = ada_reference(ADA_X, m, h, s, alpha, mu, sd, update=False)
    torch.testing.assert_close(head.eval().logits(x, y), torch.tensor(rows2, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert float(head.margin.batch_mean) == pytest.approx(mu, rel=1e-12)


def test_adaface_defaults_and_detached_norm():
    head = make("adaface")
    X = ADA_X[1:4] + ADA_X[5:]
    x, y = setup_2d(head, X)
    rows, mu, sd = ada_reference(X, 0.4, 0.333, 64.0, 0.01, 20.0, 100.0)
    x.requires_grad_(True)
    loss = head.train()(x, y)
    assert loss.item() == pytest.approx(ce(rows, y.tolist()), rel=1e-12)
    assert (float(head.margin.batch_mean), float(head.margin.batch_std)) == (pytest.approx(mu, rel=1e-12),
                                                                             pytest.approx(sd, rel=1e-12))
    loss.backward()
    # the loss depends on ‖x‖ only through the detached scaler: no radial gradient at all
    radial = (x.grad * F.normalize(x.detach(), dim=1)).sum(1)
    assert float(radial.abs().max()) < 1e-12 * float(x.grad.abs().max())
    assert float(x.grad.abs().max()) > 1e-3


def test_adaface_batch_of_one_moves_the_mean_only():
    head = make("adaface", t_alpha=0.5)
    x, y = setup_2d(head, [ADA_X[2]])
    head.train()(x, y)
    assert float(head.margin.batch_mean) == pytest.approx(0.5 * 5.0 + 0.5 * 20.0, rel=1e-12)
    assert float(head.margin.batch_std) == 100.0


@pytest.mark.parametrize("name,key", [("adaface", "batch_std"), ("curricularface", "t")])
def test_statistics_stay_float32_in_a_bfloat16_head(name, key):
    head = make(name, D=3, C=5).to(torch.bfloat16)
    assert head.weight.dtype == torch.bfloat16 and getattr(head.margin, key).dtype == torch.float32
    before = float(getattr(head.margin, key))
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(8, 3, generator=g) * 10).to(torch.bfloat16)
    head.train()(x, torch.arange(8) % 5)
    # a step of about 1% of the value: lost in bf16 (8-bit mantissa), kept in float32
    assert float(getattr(head.margin, key)) != before
    assert head.double().margin.__getattr__(key).dtype == torch.float64


# ------------------------------------------------------------------------------------------------
# MagFace
# ------------------------------------------------------------------------------------------------

# l_a = 1, u_a = 5 so that norms inside and outside are easy to place. Sample 0: norm below l_a;
# sample 3: above u_a; sample 2: θ_y = 2.07 (c < 0: easy_margin keeps c; θ_y + m(a) < π);
# sample 5: θ_y = π − 0.2 (c < 0, and θ_y + m(a) > π: the fallback without easy_margin)
MAG_HP = {"l_a": 1.0, "u_a": 5.0, "l_margin": 0.45, "u_margin": 0.8, "lambda_g": 35.0, "s": 8.0}
MAG_X = [(0.3, 0.5, 0), (2.0 + 1.2, 2.5, 1), (-PI / 2 + 2.07, 4.0, 2), (PI - 0.3 + 0.5, 7.0, 3), (-0.4, 1.5, 0),
         (PI / 2 - 0.2, 3.0, 2)]


def mag_reference(X, l_a, u_a, l_margin, u_margin, lambda_g, s, easy_margin=True, additive="arc", norms=None):
    rows, reg = [], 0.0
    for i, ((a, r, lab), cs) in enumerate(zip(X, cosines(X))):
        r = r if norms is None else norms[i]
        aa = clip(r, l_a, u_a)
        mm = (u_margin - l_margin) / (u_a - l_a) * (aa - l_a) + l_margin
        reg += aa / u_a ** 2 + 1 / aa
        z = [s * c for c in cs]
        c, th = cs[lab], angle(a, W2[lab][0])
        if additive == "cos":
            z[lab] = s * (c - mm)
        elif easy_margin:
            z[lab] = s * (math.cos(th + mm) if c > 0 else c)
        else:
            z[lab] = s * (math.cos(th + mm) if th + mm < PI else c - mm * math.sin(mm))
        rows.append(z)
    return rows, lambda_g * reg / len(X)


@pytest.mark.parametrize("variant", [{}, {"easy_margin": False}, {"additive": "cos"}], ids=["easy", "fallback", "cos"])
def test_magface_hand_worked(variant):
    hp = dict(MAG_HP, **variant)
    head = make("magface", **hp)
    x, y = setup_2d(head, MAG_X)
    rows, reg = mag_reference(MAG_X, **hp)
    m_of = lambda r: 0.35 / 4.0 * (clip(r, 1.0, 5.0) - 1.0) + 0.45  # noqa: E731
    assert math.cos(angle(MAG_X[2][0], W2[2][0])) < 0 and angle(MAG_X[2][0], W2[2][0]) + m_of(4.0) < PI
    assert angle(MAG_X[5][0], W2[2][0]) + m_of(3.0) > PI
    loss = head.train()(x, y)
    assert loss.item() == pytest.approx(ce(rows, y.tolist()) + reg, rel=1e-12)
    assert head.last_regularizer == pytest.approx(reg, rel=1e-12)
    torch.testing.assert_close(head.logits(x, y), torch.tensor(rows, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_magface_fallback_past_pi():
    hp = dict(MAG_HP, easy_margin=False)
    X = [(PI - 0.1, 4.5, 0), (2.0 + 0.3, 2.0, 1)]  # θ_y + m(a) > π for sample 0
    head = make("magface", **hp)
    x, y = setup_2d(head, X)
    rows, reg = mag_reference(X, **hp)
    assert PI - 0.1 + 0.45 > PI
    torch.testing.assert_close(head.logits(x, y), torch.tensor(rows, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert head(x, y).item() == pytest.approx(ce(rows, y.tolist()) + reg, rel=1e-12)


@pytest.mark.parametrize("variant", [{}, {"easy_margin": False}, {"additive": "cos"}], ids=["easy", "fallback", "cos"])
def test_magface_gradient_reaches_the_norm(variant):
    # dL/d‖x_i‖ (angles fixed) by central differences of the plain-math loss equals the radial
    # component of autograd's gradient: margin and regulariser are not detached
    hp = dict(MAG_HP, **variant)
    X = MAG_X[1:3] + MAG_X[4:]
    head = make("magface", **hp)
    x, y = setup_2d(head, X)
    x.requires_grad_(True)
    head(x, y).backward()
    radial = (x.grad * F.normalize(x.detach(), dim=1)).sum(1)
    norms = [r for _, r, _ in X]
    for i in range(len(X)):
        def total(ri):
            nn_ = list(norms)
            nn_[i] = ri
            rows, reg = mag_reference(X, norms=nn_, **hp)
            return ce(rows, y.tolist()) + reg
        h = 1e-6
        fd = (total(norms[i] + h) - total(norms[i] - h)) / (2 * h)
        assert float(radial[i]) == pytest.approx(fd, rel=1e-6, abs=1e-9), i
        assert abs(fd) > 1e-3


def test_quality_scores_are_the_norms_of_embed_output():
    from facemargin.eval import embed_images

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 3 * 4, 5))
    images = torch.randn(7, 2, 3, 4)
    emb = embed_images(model, images, batch_size=3)
    q = L.quality_scores(emb)
    with torch.no_grad():
        expect = [math.sqrt(sum(float(v) ** 2 for v in row)) for row in model(images)]
    assert isinstance(q, np.ndarray) and q.shape == (7,)
    np.testing.assert_allclose(q, expect, rtol=1e-5)
    t = L.quality_scores(torch.tensor([[3.0, 4.0], [0.0, -2.0]], dtype=torch.float64))
    torch.testing.assert_close(t, torch.tensor([5.0, 2.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        L.quality_scores(np.zeros(3))
    with pytest.raises(ValueError, match="embeddings"):
        L.quality_scores([[1.0, 2.0]])


# ------------------------------------------------------------------------------------------------
# CurricularFace
# ------------------------------------------------------------------------------------------------

# sample 3 at θ_y = π − 0.3 (past π − m: the fallback target); samples 0, 1 and 3 have hard
# negatives (c_j > cos(θ_y + m)), sample 2 has none
CUR_X = [(0.9, 1.0, 0), (2.0 + 0.7, 3.0, 1), (-PI / 2 + 0.1, 0.5, 2), (PI - 0.3 + PI - 0.3, 2.0, 3), (0.05, 1.0, 0)]


def cur_reference(X, s, m, t):
    rows, hard = [], 0
    for (a, r, lab), cs in zip(X, cosines(X)):
        th = angle(a, W2[lab][0])
        phi_unfolded = math.cos(th + m)
        z = []
        for j, c in enumerate(cs):
            if j == lab:
                z.append(s * (math.cos(th + m) if th + m < PI else c - m * math.sin(m)))
            elif c > phi_unfolded:
                z.append(s * c * (t + c))
                hard += 1
            else:
                z.append(s * c)
        rows.append(z)
    return rows, hard


def test_curricularface_hand_worked():
    s, m = 8.0, 0.5
    head = make("curricularface", s=s, m=m)
    x, y = setup_2d(head, CUR_X)
    with torch.no_grad():
        head.margin.t.fill_(0.3)
    mean_cy = sum(cs[lab] for cs, (_, _, lab) in zip(cosines(CUR_X), CUR_X)) / len(CUR_X)
    t1 = 0.01 * mean_cy + 0.99 * 0.3
    rows, hard = cur_reference(CUR_X, s, m, t1)
    assert hard >= 3 and angle(CUR_X[3][0], W2[3][0]) + m > PI
    loss = head.train()(x, y)  # t moves first, then the hard negatives use it
    assert float(head.margin.t) == pytest.approx(t1, rel=1e-12)
    assert loss.item() == pytest.approx(ce(rows, y.tolist()), rel=1e-12)
    torch.testing.assert_close(head.logits(x, y), torch.tensor(rows, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    # a second training forward moves t again from its new value
    head(x, y)
    assert float(head.margin.t) == pytest.approx(0.01 * mean_cy + 0.99 * t1, rel=1e-12)
    assert head.step_stats()["margin.t"] == pytest.approx(0.01 * mean_cy + 0.99 * t1, rel=1e-9)


@pytest.mark.parametrize("engine", ["plain", "fused"])
def test_curricularface_hard_negative_gradient_has_both_factors(engine):
    # d(s·c(t + c))/dc = s(t + 2c): the gradient of the loss in one hard negative's cosine,
    # checked against the plain-math loss differentiated by central differences in that cosine
    s, m, t = 8.0, 0.5, 0.3
    X = [CUR_X[0]]
    head = make("curricularface", s=s, m=m, engine=engine)
    x, y = setup_2d(head, X)
    with torch.no_grad():
        head.margin.t.fill_(t)
    head.eval()
    W = head.weight.detach().clone().requires_grad_(True)
    loss = functional_call(head, {"weight": W}, (x, y))
    loss.backward()
    # moving class row j (unit direction, angle wa) by dφ changes c_j by sin(a − wa)·dφ·(1/‖W_j‖)·‖W_j‖
    cs = cosines(X)[0]
    rows, _ = cur_reference(X, s, m, t)
    j = max((k for k in range(4) if k != 0), key=lambda k: cs[k])  # the hardest negative
    assert rows[0][j] != s * cs[j]  # it is transformed
    p = [math.exp(v - max(rows[0])) for v in rows[0]]
    p = [v / sum(p) for v in p]
    dL_dc = p[j] * s * (t + 2 * cs[j])
    wa, wr = W2[j]
    # c_j = cos(a − wa); ∂c/∂W_j (unnormalised row at angle wa, norm wr) = sin(a − wa)/wr along the tangent
    a = X[0][0]
    tangent = torch.tensor([-math.sin(wa), math.cos(wa)], dtype=torch.float64)
    got = float(W.grad[j] @ tangent)
    assert got == pytest.approx(dL_dc * math.sin(a - wa) / wr, rel=1e-10)


# ------------------------------------------------------------------------------------------------
# ElasticFace
# ------------------------------------------------------------------------------------------------

EL_X = [(0.2, 1.0, 0), (2.0 - 0.9, 2.0, 1), (-PI / 2 + 0.5, 1.0, 2), (PI - 0.3 - 0.05, 3.0, 3), (-1.4, 1.0, 0)]


def reference_draws(seed, sizes, m, std):
    """The documented draw: N(m, std) in float64 on the CPU from torch.Generator().manual_seed(seed)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.normal(m, std, (n,), generator=g, dtype=torch.float64).tolist() for n in sizes]


def el_reference(X, kind, s, margins):
    rows = []
    for (a, r, lab), cs, mi in zip(X, cosines(X), margins):
        z = [s * c for c in cs]
        th = angle(a, W2[lab][0])
        z[lab] = s * (math.cos(th + mi) if kind == "arc" else cs[lab] - mi)
        rows.append(z)
    return rows


def rank_matched(margins, cy):
    """The k-th largest c_y gets the k-th smallest margin."""
    order = sorted(range(len(cy)), key=lambda i: -cy[i])
    out = [0.0] * len(cy)
    for k, i in enumerate(order):
        out[i] = sorted(margins)[k]
    return out


@pytest.mark.parametrize("name,kind,m", [("elasticarcface", "arc", 0.5), ("elasticcosface", "cos", 0.35)])
@pytest.mark.parametrize("plus", [False, True])
def test_elasticface_hand_worked(name, kind, m, plus):
    s, std, seed = 8.0, 0.2, 11
    head = make(name, s=s, m=m, std=std, plus=plus, rng_seed=seed)
    x, y = setup_2d(head, EL_X)
    cy = [cs[lab] for cs, (_, _, lab) in zip(cosines(EL_X), EL_X)]
    draws = reference_draws(seed, [5, 5], m, std)
    head.train()
    for step in range(2):
        margins = rank_matched(draws[step], cy) if plus else draws[step]
        rows = el_reference(EL_X, kind, s, margins)
        loss = head(x, y)
        assert loss.item() == pytest.approx(ce(rows, y.tolist()), rel=1e-12), step
        tm = head.last_stats.target_margin
        torch.testing.assert_close(tm, torch.tensor([r[lab] for r, lab in zip(rows, y.tolist())], dtype=tm.dtype),
                                   rtol=1e-12, atol=1e-12)
    # outside training the margin is its mean
    rows = el_reference(EL_X, kind, s, [m] * 5)
    torch.testing.assert_close(head.eval().logits(x, y), torch.tensor(rows, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_elasticface_plus_is_rank_matching_not_the_official_indexing():
    m = torch.tensor([0.3, 0.1, 0.5, 0.2])
    cy = torch.tensor([0.9, -0.2, 0.4, 0.1])  # descending order: 0, 2, 3, 1
    got = L.ElasticMargin.rank_match(m, cy)
    assert got.tolist() == pytest.approx([0.1, 0.5, 0.2, 0.3])  # hardest (sample 1) gets the largest
    official = torch.sort(m).values[torch.argsort(cy, descending=True)]
    assert not torch.allclose(got, official)


def test_elasticface_draw_statistics_and_plus_order():
    head = make("elasticcosface", s=4.0, m=0.35, std=0.05, plus=True, D=3, C=6).double().train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 6, (2000,), generator=g)
    head(x, y)
    st = head.last_stats
    mi = st.target_plain / 4.0 - st.target_margin / 4.0  # c_y − (c_y − m_i)
    assert abs(float(mi.mean()) - 0.35) < 4 * 0.05 / math.sqrt(2000)
    assert abs(float(mi.std()) - 0.05) < 0.005
    order = torch.argsort(st.target_plain, descending=True)
    assert bool((mi[order].diff() >= -1e-12).all())  # lower c_y, larger margin


def test_elasticface_generator_follows_init_weights_seed_unless_fixed():
    a, b = make("elasticarcface"), make("elasticarcface")
    a.init_weights(5), b.init_weights(5)
    assert torch.equal(a.margin.rng_state, b.margin.rng_state)
    b.init_weights(6)
    assert not torch.equal(a.margin.rng_state, b.margin.rng_state)
    fixed = make("elasticarcface", rng_seed=3)
    before = fixed.margin.rng_state.clone()
    fixed.init_weights(5)
    assert torch.equal(fixed.margin.rng_state, before)


# ------------------------------------------------------------------------------------------------
# SphereFace-R
# ------------------------------------------------------------------------------------------------

# θ_y = 0.3, 1.9 (k = 0), 2.5 (k = 1), π (c = −1, clamped)
SR_X = [(0.3, 1.0, 0), (2.0 + 1.9, 2.0, 1), (-PI / 2 - 2.5, 0.5, 2), (-0.3 + 1e-6, 3.0, 3)]


def sr_phi(c, m):
    th = math.acos(clip(c, -1 + 1e-5, 1 - 1e-5))
    k = math.floor(m * th / PI)
    return (-1) ** k * math.cos(m * th) - 2 * k


@pytest.mark.parametrize("engine", ["plain", "fused"])
def test_spherefacer_hand_worked_and_straight_through_gradient(engine):
    s, m, lw = 30.0, 1.5, 50.0
    head = make("spherefacer", engine=engine)
    x, y = setup_2d(head, SR_X)
    cs_all = cosines(SR_X)
    ks = [math.floor(m * math.acos(clip(cs[lab], -1 + 1e-5, 1 - 1e-5)) / PI) for cs, (_, _, lab) in zip(cs_all, SR_X)]
    assert ks == [0, 0, 1, 1] and cs_all[3][3] == pytest.approx(-1.0)
    rows = []
    for cs, (_, _, lab) in zip(cs_all, SR_X):
        z = [s * c for c in cs]
        z[lab] = s * sr_phi(cs[lab], m)
        rows.append(z)
    torch.testing.assert_close(head.logits(x, y), torch.tensor(rows, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    x.requires_grad_(True)
    W = head.weight.detach().clone().requires_grad_(True)
    loss = functional_call(head.train(), {"weight": W}, (x, y))
    assert loss.item() == pytest.approx(lw * ce(rows, y.tolist()) / s, rel=1e-12)
    # the rows were renormalised in place (the norms of W2 are not 1)
    torch.testing.assert_close(W.detach().norm(dim=1), torch.ones(4, dtype=torch.float64), rtol=1e-14, atol=1e-14)
    loss.backward()
    # the gradient is that of s·(c + d) with the offset d a constant: built from torch primitives
    d = torch.tensor([[0.0] * 4 for _ in SR_X], dtype=torch.float64)
    for i, (cs, (_, _, lab)) in enumerate(zip(cs_all, SR_X)):
        d[i, lab] = sr_phi(cs[lab], m) - cs[lab]
    x2, W2_ = x.detach().clone().requires_grad_(True), W.detach().clone().requires_grad_(True)
    z = s * (F.normalize(x2, dim=1) @ F.normalize(W2_, dim=1).t() + d)
    (lw * F.cross_entropy(z, y) / s).backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(W.grad, W2_.grad, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# float64 gradcheck on both engines
# ------------------------------------------------------------------------------------------------

GRAD_CASES = [
    # (name, hyper, training, how the embeddings vary, buffers to set)
    ("adaface", {"s": 8.0, "h": 2.0, "t_alpha": 0.5}, True, "direction", {}),
    ("adaface", {"s": 8.0}, False, "direction", {"batch_mean": 2.0, "batch_std": 1.0}),
    ("magface", dict(MAG_HP), True, "free", {}),
    ("magface", dict(MAG_HP, easy_margin=False), True, "free", {}),
    ("magface", dict(MAG_HP, additive="cos"), True, "free", {}),
    ("curricularface", {"s": 8.0}, False, "free", {"t": 0.3}),
    ("elasticarcface", {"s": 8.0, "std": 0.2}, True, "free", {}),
    ("elasticarcface", {"s": 8.0, "std": 0.2, "plus": True}, True, "free", {}),
    ("elasticcosface", {"s": 8.0, "std": 0.2, "plus": True}, True, "free", {}),
]


def _grad_problem(seed=9):
    """Five samples; seed 9 puts one target past π − m (the ArcFace fallback of CurricularFace and
    MagFace) and keeps every cosine away from the kinks (checked in the test)."""
    g = torch.Generator().manual_seed(seed)
    B, D, C = 5, 3, 6
    W = torch.randn(C, D, generator=g, dtype=torch.float64)
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    x = x * torch.tensor([0.7, 1.6, 2.4, 3.3, 4.5], dtype=torch.float64).unsqueeze(1) / x.norm(dim=1, keepdim=True)
    y = torch.tensor([0, 1, 2, 5, 1])
    return x, W, y


@pytest.mark.parametrize("engine", ["plain", "fused"])
@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c[0] + "-" + ",".join(f"{k}={v}" for k, v in c[1].items()))
def test_gradcheck_float64(case, engine):
    name, kw, training, how, buffers = case
    x, W, y = _grad_problem()
    opts = {"engine": "plain"} if engine == "plain" else {"engine_options": {"chunk_size": 4}}
    head = L.build(name, embedding_size=3, num_classes=6, **kw, **opts).double().train(training)
    with torch.no_grad():
        for k, v in buffers.items():
            getattr(head.margin, k).fill_(v)
    state = copy.deepcopy(head.state_dict())
    # away from every kink: c_y not near ±1, 0 (easy margin), the π − m switch; negatives not at
    # CurricularFace's threshold
    c = F.normalize(x, dim=1) @ F.normalize(W, dim=1).t()
    cy = c[torch.arange(5), y]
    assert float((cy.abs() - 1).abs().min()) > 0.01 and float(cy.abs().min()) > 0.01
    assert float(cy.sort().values.diff().min()) > 0.01  # no ties in ElasticFace-plus's ranking
    if name == "curricularface":
        thr = cy * math.cos(0.5) - torch.sqrt(1 - cy ** 2) * math.sin(0.5)
        neg = torch.ones_like(c, dtype=torch.bool).index_put_((torch.arange(5), y), torch.tensor(False))
        assert float((c - thr.unsqueeze(1)).abs()[neg].min()) > 0.01
        assert bool((c > thr.unsqueeze(1))[neg].any())  # some hard negatives
    if name == "magface":
        a = x.norm(dim=1).clamp(kw["l_a"], kw["u_a"])
        mi = (kw["u_margin"] - kw["l_margin"]) / (kw["u_a"] - kw["l_a"]) * (a - kw["l_a"]) + kw["l_margin"]
        assert float((cy - torch.cos(PI - mi)).abs().min()) > 0.01
        assert float((x.norm(dim=1) - kw["l_a"]).abs().min()) > 0.01 and float((x.norm(dim=1) - kw["u_a"]).abs().min()) > 0.01

    def f(xx, WW):
        head.load_state_dict(state)  # the same statistics and draws at every evaluation
        if how == "direction":  # the norm stays fixed: AdaFace's scaler reads it detached
            xx = F.normalize(xx, dim=1) * x.norm(dim=1, keepdim=True)
        return functional_call(head, {"weight": WW}, (xx, y))

    inputs = (x.clone().requires_grad_(True), W.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-6, nondet_tol=1e-12)


# ------------------------------------------------------------------------------------------------
# plain vs fused over several training steps
# ------------------------------------------------------------------------------------------------

PARITY = [
    ("adaface", {}), ("adaface", {"h": 2.0, "t_alpha": 0.5, "s": 16.0}),
    ("magface", {}), ("magface", {"easy_margin": False}), ("magface", {"additive": "cos", "l_a": 2.0, "u_a": 12.0}),
    ("curricularface", {}), ("curricularface", {"s": 16.0, "m": 0.3}),
    ("elasticarcface", {}), ("elasticarcface", {"plus": True}), ("elasticcosface", {}),
    ("elasticcosface", {"plus": True, "std": 0.1}), ("spherefacer", {}),
]


def _data(B, D, C, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    x = x * (2.0 + 60.0 * torch.rand(B, 1, generator=g, dtype=torch.float64))  # norms around MagFace's range
    y = torch.randint(0, C, (B,), generator=g)
    y[0] = C - 1
    return x, y


def _buffers(head):
    return {k: v.clone() for k, v in head.state_dict().items() if k.startswith("margin.")}


@pytest.mark.parametrize("case", PARITY, ids=lambda c: c[0] + "-" + ",".join(f"{k}={v}" for k, v in c[1].items()))
def test_plain_and_fused_agree_over_steps(case):
    name, kw = case
    B, D, C = 7, 5, 11
    torch.manual_seed(0)
    heads = [L.build(name, embedding_size=D, num_classes=C, engine="plain", **kw).double()]
    for chunk in (None, 4):
        heads.append(L.build(name, embedding_size=D, num_classes=C, engine_options={"chunk_size": chunk} if chunk else None,
                             **kw).double())
        heads[-1].load_state_dict(heads[0].state_dict())
    for step in range(3):
        x, y = _data(B, D, C, step)
        out = []
        for head in heads:
            xx = x.clone().requires_grad_(True)
            loss = head(xx, y)
            loss.backward()
            out.append((loss.detach(), xx.grad, head.weight.grad.clone(), _buffers(head), head.last_regularizer))
            with torch.no_grad():
                head.weight -= 0.5 * head.weight.grad
            head.weight.grad = None
        ref = out[0]
        for got in out[1:]:
            torch.testing.assert_close(got[0], ref[0], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(got[1], ref[1], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(got[2], ref[2], rtol=1e-10, atol=1e-12)
            assert set(got[3]) == set(ref[3])
            for k in ref[3]:  # the weights after a step agree to rounding, so do the statistics
                if ref[3][k].dtype == torch.uint8:
                    assert torch.equal(got[3][k], ref[3][k]), k
                else:
                    torch.testing.assert_close(got[3][k], ref[3][k], rtol=1e-12, atol=1e-14, msg=k)
            assert (got[4] is None) == (ref[4] is None)
            if ref[4] is not None:
                assert got[4] == pytest.approx(ref[4], rel=1e-12)
    if name == "magface":
        assert heads[0].last_regularizer is not None and heads[0].last_regularizer > 0


# ------------------------------------------------------------------------------------------------
# state_dict round trip and exact resume
# ------------------------------------------------------------------------------------------------

RESUME = [("adaface", {"t_alpha": 0.3}, ["margin.batch_mean", "margin.batch_std"]),
          ("magface", {}, []), ("curricularface", {}, ["margin.t"]),
          ("elasticarcface", {"plus": True}, ["margin.rng_state"]), ("elasticcosface", {}, ["margin.rng_state"]),
          ("spherefacer", {}, [])]


def _train(head, opt, steps, start):
    losses_ = []
    for step in range(start, start + steps):
        x, y = _data(6, 4, 9, 100 + step)
        loss = head(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses_.append(loss.detach().clone())
    return losses_


@pytest.mark.parametrize("case", RESUME, ids=lambda c: c[0])
def test_state_dict_round_trip_and_exact_resume(case):
    name, kw, keys = case
    torch.manual_seed(1)
    a = L.build(name, embedding_size=4, num_classes=9, **kw).double()
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    _train(a, opt_a, 2, 0)
    for k in keys:
        assert k in a.state_dict()
    if "margin.rng_state" in keys:
        assert a.state_dict()["margin.rng_state"].dtype == torch.uint8
    buf = io.BytesIO()
    torch.save({"head": a.state_dict(), "opt": opt_a.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)
    # a fresh head (other initial rows, other generator) resumes exactly
    torch.manual_seed(2)
    b = L.build(name, embedding_size=4, num_classes=9, **kw).double()
    if name.startswith("elastic"):
        b.margin.reseed(12345)
    b.load_state_dict(ckpt["head"])
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    opt_b.load_state_dict(ckpt["opt"])
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v), k
    la, lb = _train(a, opt_a, 3, 2), _train(b, opt_b, 3, 2)
    for u, v in zip(la, lb):
        assert torch.equal(u, v)
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v), k
    if keys:  # the saved state mattered: resuming without it gives other numbers
        c = L.build(name, embedding_size=4, num_classes=9, **kw).double()
        if name.startswith("elastic"):
            c.margin.reseed(12345)
        c.load_state_dict({k: v for k, v in ckpt["head"].items() if k not in keys}, strict=False)
        opt_c = torch.optim.SGD(c.parameters(), lr=0.1, momentum=0.9)
        opt_c.load_state_dict(ckpt["opt"])
        lc = _train(c, opt_c, 3, 2)
        assert not all(torch.equal(u, v) for u, v in zip(la, lc))


@pytest.mark.parametrize("name", NEW)
def test_finite_at_cos_plus_minus_one_in_float32(name):
    head = make(name, D=4, C=3)
    with torch.no_grad():
        head.weight.copy_(2.0 * torch.eye(4)[:3])
    x = torch.tensor([[64.0, 0, 0, 0], [0, -64.0, 0, 0], [0, 0, 64.0, 0], [-64.0, 0, 0, 0], [3.0, 2.0, -1.0, 0.5]],
                     requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1])
    loss = head.train()(x, y)
    loss.backward()
    assert torch.isfinite(loss) and bool(torch.isfinite(x.grad).all()) and bool(torch.isfinite(head.weight.grad).all())


# ------------------------------------------------------------------------------------------------
# two gloo ranks: sharded = single process on the concatenated batch, and resume across world sizes
# ------------------------------------------------------------------------------------------------

DIST_CASES = [
    ("adaface", {"s": 8.0, "h": 2.0, "t_alpha": 0.5}),
    ("magface", {"s": 8.0, "l_a": 1.0, "u_a": 5.0}),
    ("magface", {"s": 8.0, "l_a": 1.0, "u_a": 5.0, "easy_margin": False, "additive": "cos"}),
    ("curricularface", {"s": 8.0}),
    ("elasticarcface", {"s": 8.0, "std": 0.2, "plus": True}),
    ("elasticcosface", {"s": 8.0, "std": 0.2}),
    ("spherefacer", {}),
]
DB, DD, DC, DSTEPS, DLR = 7, 4, 7, 3, 0.5  # 7 samples over 2 ranks (4 + 3), 7 classes (4 + 3)


def dist_problem(name, kw):
    """The initial full state and the global batches, identical in every process."""
    g = torch.Generator().manual_seed(7)
    head = L.build(name, embedding_size=DD, num_classes=DC, **kw).double()
    state = head.state_dict()
    state["weight"] = torch.randn(DC, DD, generator=g, dtype=torch.float64)
    data = []
    for _ in range(DSTEPS):
        x = torch.randn(DB, DD, generator=g, dtype=torch.float64)
        x = x * (0.5 + 5.0 * torch.rand(DB, 1, generator=g, dtype=torch.float64))
        data.append((x, torch.randint(0, DC, (DB,), generator=g)))
    return state, data


def single_process_run(name, kw):
    """Per step: loss, embedding gradient, weight gradient, margin buffers; SGD on the rows."""
    state, data = dist_problem(name, kw)
    head = L.build(name, embedding_size=DD, num_classes=DC, **kw).double()
    head.load_state_dict(state)
    records, states = [], [copy.deepcopy(head.state_dict())]
    for x, y in data:
        x = x.clone().requires_grad_(True)
        loss = head(x, y)
        loss.backward()
        records.append({"loss": loss.detach(), "xgrad": x.grad, "wgrad": head.weight.grad.clone(),
                        "buffers": _buffers(head), "reg": head.last_regularizer})
        with torch.no_grad():
            head.weight -= DLR * head.weight.grad
        head.weight.grad = None
        states.append(copy.deepcopy(head.state_dict()))
    return records, states


def newer_heads_worker(rank, world, out_dir):
    from facemargin.distributed import sharded_head, full_state_dict, load_full_state_dict
    from facemargin.io import save_torch

    rows = [(0, 4), (4, 3)][rank]
    for i, (name, kw) in enumerate(DIST_CASES):
        state, data = dist_problem(name, kw)
        _, single_states = single_process_run(name, kw)
        out = {"steps": [], "resumed": None}
        head = sharded_head(name, DD, DC, seed=0, ddp_grad_scale=False, **kw).double()
        load_full_state_dict(head, state)
        for step, (x, y) in enumerate(data):
            xl = x[rows[0]:rows[0] + rows[1]].clone().requires_grad_(True)
            loss = head(xl, y[rows[0]:rows[0] + rows[1]])
            loss.backward()
            out["steps"].append({"loss": loss.detach(), "xgrad": xl.grad, "wgrad": head.weight.grad.clone(),
                                 "buffers": _buffers(head), "reg": head.last_regularizer,
                                 "start": head.start, "n": head.num_local})
            with torch.no_grad():
                head.weight -= DLR * head.weight.grad
            head.weight.grad = None
        out["full"] = full_state_dict(head)
        # resume across world sizes: a fresh sharded head loads the single-process state after
        # step 1 and takes step 2
        fresh = sharded_head(name, DD, DC, seed=1, ddp_grad_scale=False, **kw).double()
        load_full_state_dict(fresh, single_states[1])
        x, y = data[1]
        xl = x[rows[0]:rows[0] + rows[1]].clone().requires_grad_(True)
        loss = fresh(xl, y[rows[0]:rows[0] + rows[1]])
        loss.backward()
        out["resumed"] = {"loss": loss.detach(), "xgrad": xl.grad, "buffers": _buffers(fresh)}
        save_torch(out, Path(out_dir, f"case{i}-rank{rank}.pt"))


@pytest.fixture(scope="module")
def gloo_run(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distributed"))
    from dist_launch import assert_ok, run_ranks

    out = tmp_path_factory.mktemp("newer_gloo")
    assert_ok(run_ranks(newer_heads_worker, 2, out, timeout=180), out)
    return out


def _close(a, b):
    return torch.allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("i", range(len(DIST_CASES)), ids=[c[0] + "-" + ",".join(f"{k}={v}" for k, v in c[1].items())
                                                           for c in DIST_CASES])
def test_sharded_on_two_gloo_ranks_equals_single_process(i, gloo_run):
    from facemargin.io import load_torch

    name, kw = DIST_CASES[i]
    ref, ref_states = single_process_run(name, kw)
    rows = [(0, 4), (4, 3)]
    for rank in range(2):
        got = load_torch(Path(gloo_run, f"case{i}-rank{rank}.pt"))
        for step, (r, g) in enumerate(zip(ref, got["steps"])):
            start, n = g["start"], g["n"]
            assert (start, n) == ((0, 4), (4, 3))[rank]
            assert _close(g["loss"], r["loss"]), (name, rank, step, g["loss"], r["loss"])
            s0, nb = rows[rank]
            assert _close(g["xgrad"], r["xgrad"][s0:s0 + nb]), (name, rank, step)
            assert _close(g["wgrad"], r["wgrad"][start:start + n]), (name, rank, step)
            assert set(g["buffers"]) == set(r["buffers"])
            for k, v in r["buffers"].items():
                assert torch.equal(g["buffers"][k], v) if v.dtype == torch.uint8 else _close(g["buffers"][k], v), k
            assert (g["reg"] is None) == (r["reg"] is None)
            if r["reg"] is not None:
                assert g["reg"] == pytest.approx(r["reg"], rel=1e-12)
        for k, v in ref_states[-1].items():
            assert _close(got["full"][k].to(v.dtype), v) if v.is_floating_point() else torch.equal(got["full"][k], v), k
        res = got["resumed"]
        assert _close(res["loss"], ref[1]["loss"])
        s0, nb = rows[rank]
        assert _close(res["xgrad"], ref[1]["xgrad"][s0:s0 + nb])
        for k, v in ref[1]["buffers"].items():
            assert torch.equal(res["buffers"][k], v) if v.dtype == torch.uint8 else _close(res["buffers"][k], v), k
    # the margin state really moved (the comparison is not between two untouched states)
    init = ref_states[0]
    moved = [k for k in init if k.startswith("margin.") and not torch.equal(init[k], ref_states[-1][k])]
    expect = {"adaface": 2, "curricularface": 1, "elasticarcface": 1, "elasticcosface": 1}.get(name, 0)
    assert len(moved) == expect, moved
