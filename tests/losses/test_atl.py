"""The Angular Triplet Loss layer (``MarginInnerProduct``, name ``atl``) against SPEC §4.

Expected logits are worked here with Python ``math`` from 2-D embeddings at chosen angles; the
easy / semi-hard / hard samples of the mask tests are placed by construction and their category
is re-derived here from the SPEC definitions (never from facemargin).
"""
from __future__ import annotations

import inspect
import io
import math

import pytest
import torch
import torch.nn.functional as F

import facemargin.losses as L

PI = math.pi
A1, A2 = 2 * PI / 3, -2 * PI / 3  # angles of class rows 1 and 2; row 0 at angle 0


def polar(pts):
    return torch.tensor([[r * math.cos(a), r * math.sin(a)] for a, r in pts], dtype=torch.float64)


def angle(a, b):
    d = abs(a - b) % (2 * PI)
    return min(d, 2 * PI - d)


def psi_ref(t, m):
    k = min(int(math.floor(t * m / PI)), m - 1)
    return (-1) ** k * math.cos(m * t) - 2 * k


def lam_at(base, gamma, power, lambda_min, it):
    return max(lambda_min, base * (1 + gamma * it) ** (-power))


def target_ref(name, kw, t, r, lam):
    """Margin target logit for an embedding of norm r at angle t from its class row (SPEC §2/§4)."""
    c = math.cos(t)
    if name in ("atl", "sphereface"):
        m = kw.get("m", 4)
        return r * c if m == 1 else r * (lam * c + psi_ref(t, m)) / (1 + lam)
    s = kw.get("s", 64.0)
    if name == "cosface":
        return s * (c - kw.get("m", 0.35))
    if name == "arcface":
        m = kw.get("m", 0.5)
        return s * (math.cos(t + m) if t + m <= PI else c - m * math.sin(m))
    if name == "combined":
        m1, m2, m3 = kw.get("m1", 1.0), kw.get("m2", 0.3), kw.get("m3", 0.2)
        return s * (math.cos(m1 * t + m2) - m3)
    raise AssertionError(name)


def plain_ref(name, kw, t, r):
    return r * math.cos(t) if name in ("atl", "sphereface") else kw.get("s", 64.0) * math.cos(t)


# ------------------------------------------------------------------------------------------------
# construction
# ------------------------------------------------------------------------------------------------


def test_signature_and_defaults_follow_spec():
    sig = inspect.signature(L.MarginInnerProduct)
    params = list(sig.parameters.values())
    names = [p.name for p in params]
    assert names[:11] == ["embedding_size", "num_classes", "m", "base", "gamma", "power", "lambda_min",
                          "iteration", "triplet", "semihard", "replace_prob"]
    d = {p.name: p.default for p in params}
    assert d["embedding_size"] is inspect.Parameter.empty and d["num_classes"] is inspect.Parameter.empty
    assert (d["m"], d["base"], d["gamma"], d["power"], d["lambda_min"], d["iteration"]) == (4, 1000, 0.12, 1, 5, 0)
    assert (d["triplet"], d["semihard"], d["replace_prob"]) == (False, False, 0.5)
    head = L.build("atl", embedding_size=4, num_classes=6)
    assert type(head) is L.MarginInnerProduct
    assert tuple(head.weight.shape) == (6, 4) and getattr(head, "bias", None) is None
    assert (head.triplet, head.semihard, head.replace_prob) == (False, False, 0.5)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="m"):
        L.MarginInnerProduct(2, 3, m=5)
    with pytest.raises(ValueError, match="replace_prob"):
        L.MarginInnerProduct(2, 3, replace_prob=1.5)
    # the switches need normalised class rows: not offered on heads with raw weights
    with pytest.raises(ValueError, match="normalised"):
        L.build("lsoftmax", embedding_size=2, num_classes=3, triplet=True)


# ------------------------------------------------------------------------------------------------
# logits: m = 1..4 with the λ blend
# ------------------------------------------------------------------------------------------------

# class rows at angles 0, 2π/3, −2π/3 with unequal norms (ATL uses ŵ: norms must not matter)
W_ROWS = [(0.0, 2.0), (A1, 0.5), (A2, 1.0)]
# embeddings (angle, norm, label): θ_y = 0.3, 1.0, 1.9, 2.9, 0.4 (every interval of m = 2, 3, 4)
X_ROWS = [(0.3, 1.5, 0), (1.0, 2.0, 0), (1.9, 0.7, 0), (2.9, 3.0, 0), (A1 - 0.4, 1.2, 1)]


def atl_2d(**kw):
    head = L.MarginInnerProduct(2, 3, **kw).double()
    with torch.no_grad():
        head.weight.copy_(polar(W_ROWS))
    x = polar([(a, r) for a, r, _ in X_ROWS])
    y = torch.tensor([lab for *_, lab in X_ROWS])
    return head, x, y


def expected_logits(m, lam, with_labels=True):
    rows = []
    for a, r, lab in X_ROWS:
        row = []
        for j, (wa, _) in enumerate(W_ROWS):
            t = angle(a, wa)
            if with_labels and j == lab and m > 1:
                row.append(r * (lam * math.cos(t) + psi_ref(t, m)) / (1 + lam))
            else:
                row.append(r * math.cos(t))  # x·ŵ_j = ‖x‖ cos θ_j
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("sched", [
    {},  # defaults: first training forward λ = 1000/1.12
    {"base": 10.0, "gamma": 0.5, "power": 2.0, "lambda_min": 0.3, "iteration": 2},  # λ = 10/2.5² = 1.6
    {"base": 1000.0, "lambda_min": 3.0, "iteration": 5000},  # floored at λ = 3
])
def test_logits_with_lambda_blend(m, sched):
    head, x, y = atl_2d(m=m, **sched)
    p = {"base": 1000.0, "gamma": 0.12, "power": 1.0, "lambda_min": 5.0, "iteration": 0, **sched}
    lam = lam_at(p["base"], p["gamma"], p["power"], p["lambda_min"], p["iteration"] + 1)
    head.train()
    loss = head(x, y)
    assert head.lambda_ == pytest.approx(lam, rel=1e-12)
    z = expected_logits(m, lam)
    torch.testing.assert_close(head.logits(x, y), z, rtol=1e-11, atol=1e-11)
    ce = sum(torch.logsumexp(z[i], 0).item() - z[i, y[i]].item() for i in range(len(y))) / len(y)
    assert loss.item() == pytest.approx(ce, rel=1e-11)
    torch.testing.assert_close(head.logits(x), expected_logits(m, lam, with_labels=False), rtol=1e-11, atol=1e-11)


def test_m1_is_plain_normalised_inner_product_at_any_lambda():
    a, x, y = atl_2d(m=1, base=1000.0)
    b, _, _ = atl_2d(m=1, base=0.0, lambda_min=0.0)
    expect = expected_logits(1, lam=0.0, with_labels=False)
    for head in (a, b):
        torch.testing.assert_close(head.logits(x, y), expect, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(head.logits(x), expect, rtol=1e-12, atol=1e-12)
    # hand value: row 1 of x (θ = 1 rad to class 0, ‖x‖ = 2): 2 cos 1
    assert a.logits(x, y)[1, 0].item() == pytest.approx(2 * math.cos(1.0), rel=1e-12)


def test_literal_m2_value():
    """θ_y = 1.9 ∈ [π/2, π]: k = 1, ψ_2 = −cos 3.8 − 2; λ = 3 (floor): 0.7 (3 cos 1.9 + ψ_2)/4."""
    head, x, y = atl_2d(m=2, lambda_min=3.0, iteration=10_000)
    head.eval()
    assert head.lambda_ == 3.0
    expect = 0.7 * (3 * math.cos(1.9) - math.cos(3.8) - 2) / 4
    assert head.logits(x, y)[2, 0].item() == pytest.approx(expect, rel=1e-12)
    assert expect == pytest.approx(-0.38131, abs=1e-5)  # 0.7·(−0.96998 + 0.79097 − 2)/4


def test_lambda_counter_survives_save_and_load():
    head, x, y = atl_2d(m=2, triplet=True, semihard=True, replace_prob=1.0)
    for _ in range(4):
        head.train()(x, y).backward()
    buf = io.BytesIO()
    torch.save(head.state_dict(), buf)
    buf.seek(0)
    fresh = L.MarginInnerProduct(2, 3, m=2, triplet=True, semihard=True, replace_prob=1.0).double()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert int(fresh.iteration) == int(head.iteration) == 4
    assert fresh.lambda_ == head.lambda_ == pytest.approx(1000 / 1.48, rel=1e-12)
    torch.testing.assert_close(fresh.weight, head.weight, rtol=0, atol=0)
    torch.testing.assert_close(fresh.eval()(x, y), head.eval()(x, y), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# semihard: easy and hard samples get no embedding gradient; class weights unmasked
# ------------------------------------------------------------------------------------------------

# (angle, norm, label, category by construction) with class rows at 0, 2π/3, −2π/3 (unit)
MASK_ROWS = [
    (0.05, 1.3, 0, "easy"),        # almost on its row
    (0.9, 2.0, 0, "semi"),         # right without margin (cos .9 > cos 1.19), wrong with it
    (1.5, 1.1, 0, "hard"),         # nearer row 1 than its own
    (A1 + 0.1, 0.8, 1, "easy"),
    (A2 + 0.95, 1.7, 2, "semi"),   # towards row 0
    (A1 - 1.6, 1.4, 1, "hard"),    # nearer row 0
]
MASK_HEADS = [
    ("atl", {"m": 2, "base": 0.0, "lambda_min": 1.0}),
    ("atl", {"m": 3, "base": 0.0, "lambda_min": 1.0}),
    ("atl", {"m": 4, "base": 0.0, "lambda_min": 1.0}),
    ("sphereface", {"m": 4, "base": 0.0, "lambda_min": 1.0}),
    ("cosface", {}),
    ("arcface", {}),
    ("combined", {}),
]


def mask_batch():
    W = polar([(0.0, 1.0), (A1, 1.0), (A2, 1.0)])
    x = polar([(a, r) for a, r, *_ in MASK_ROWS])
    y = torch.tensor([row[2] for row in MASK_ROWS])
    return W, x, y


def category(name, kw, a, r, lab, lam):
    """SPEC §4: easy = label is arg-max of the margin logits; hard = not arg-max of the plain ones."""
    rows = [0.0, A1, A2]
    ts = [angle(a, wa) for wa in rows]
    others = [plain_ref(name, kw, t, r) for j, t in enumerate(ts) if j != lab]
    if target_ref(name, kw, ts[lab], r, lam) > max(others):
        return "easy"
    if plain_ref(name, kw, ts[lab], r) <= max(others):
        return "hard"
    return "semi"


def run_head(name, kw, W, x, y, **switches):
    head = L.build(name, embedding_size=2, num_classes=3, **kw, **switches).double().train()
    with torch.no_grad():
        head.weight.copy_(W)
    xx = x.clone().requires_grad_()
    loss = head(xx, y)
    loss.backward()
    return head, loss.detach(), xx.grad


@pytest.mark.parametrize("case", MASK_HEADS, ids=lambda c: c[0] + "-" + ",".join(f"{k}={v}" for k, v in c[1].items()))
def test_semihard_masks_easy_and_hard_embedding_gradients(case):
    name, kw = case
    W, x, y = mask_batch()
    cats = [category(name, kw, a, r, lab, 1.0) for a, r, lab, _ in MASK_ROWS]
    assert cats == [row[3] for row in MASK_ROWS], cats  # the construction is what it claims

    plain, loss0, g0 = run_head(name, kw, W, x, y)
    masked, loss1, g1 = run_head(name, kw, W, x, y, semihard=True)
    assert loss1 == loss0  # the mask changes gradients only
    for i, cat in enumerate(cats):
        assert bool((g0[i] != 0).all()), (i, g0[i])  # without the mask every sample has a gradient
        if cat == "semi":
            torch.testing.assert_close(g1[i], g0[i], rtol=0, atol=0)
        else:
            assert bool((g1[i] == 0).all()), (i, cat, g1[i])
    # the class weights' gradient is not masked
    assert masked.weight.grad is not None and bool((masked.weight.grad != 0).any())
    torch.testing.assert_close(masked.weight.grad, plain.weight.grad, rtol=0, atol=0)


def test_semihard_with_m1_masks_only_easy_samples():
    """m = 1 has no margin: samples are easy (right) or wrong; the wrong ones keep training."""
    W, x, y = mask_batch()
    kw = {"m": 1}
    cats = [category("atl", kw, a, r, lab, 0.0) for a, r, lab, _ in MASK_ROWS]
    assert cats == ["easy", "easy", "hard", "easy", "easy", "hard"]
    _, _, g0 = run_head("atl", kw, W, x, y)
    _, _, g1 = run_head("atl", kw, W, x, y, semihard=True)
    for i, cat in enumerate(cats):
        if cat == "easy":
            assert bool((g1[i] == 0).all())
        else:
            assert bool((g0[i] != 0).all())
            torch.testing.assert_close(g1[i], g0[i], rtol=0, atol=0)


def test_semihard_is_off_in_eval_mode():
    W, x, y = mask_batch()
    kw = {"m": 2, "base": 0.0, "lambda_min": 1.0}
    head = L.build("atl", embedding_size=2, num_classes=3, semihard=True, **kw).double().eval()
    with torch.no_grad():
        head.weight.copy_(W)
    xx = x.clone().requires_grad_()
    head(xx, y).backward()
    _, _, g0 = run_head("atl", kw, W, x, y)
    torch.testing.assert_close(xx.grad, g0, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# triplet: rows replaced by samples during backward, no weight gradient
# ------------------------------------------------------------------------------------------------

TRIPLET_HEADS = [
    ("atl", {"m": 2}),
    ("atl", {"m": 4, "lambda_min": 3.0}),
    ("atl", {"m": 1}),
    ("sphereface", {"m": 4}),
    ("cosface", {}),
    ("arcface", {}),
    ("combined", {}),
]


def triplet_batch():
    torch.manual_seed(5)
    C, D = 6, 4
    W = torch.randn(C, D, dtype=torch.float64)
    x = torch.randn(7, D, dtype=torch.float64) * 3
    y = torch.tensor([0, 2, 0, 5, 2, 0, 5])  # classes 1, 3, 4 absent; last samples: 0→5, 2→4, 5→6
    return W, x, y


def new_head(name, kw, W, **switches):
    head = L.build(name, embedding_size=W.shape[1], num_classes=W.shape[0], **kw, **switches).double().train()
    with torch.no_grad():
        head.weight.copy_(W)
    return head


@pytest.mark.parametrize("semihard", [False, True])
@pytest.mark.parametrize("case", TRIPLET_HEADS, ids=lambda c: c[0] + "-" + ",".join(f"{k}={v}" for k, v in c[1].items()))
def test_triplet_replaces_rows_with_last_sample_of_each_class(case, semihard):
    name, kw = case
    W, x, y = triplet_batch()
    head = new_head(name, kw, W, triplet=True, semihard=semihard, replace_prob=1.0)
    ref = new_head(name, kw, W, semihard=semihard)
    xx, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss, loss_ref = head(xx, y), ref(xr, y)
    # the forward pass uses the current rows, untouched until backward
    torch.testing.assert_close(loss, loss_ref, rtol=0, atol=0)
    torch.testing.assert_close(head.weight.detach(), W, rtol=0, atol=0)
    loss.backward()
    loss_ref.backward()
    w = head.weight.detach()
    for cls, last in ((0, 5), (2, 4), (5, 6)):
        torch.testing.assert_close(w[cls], x[last], rtol=0, atol=0)  # exactly x_i (unnormalised)
    for cls in (1, 3, 4):
        torch.testing.assert_close(w[cls], W[cls], rtol=0, atol=0)
    assert head.weight.grad is None or bool((head.weight.grad == 0).all())
    # the anchors' gradient is the one of the loss as computed (against the old rows)
    torch.testing.assert_close(xx.grad, xr.grad, rtol=1e-12, atol=1e-12)
    # next use: rows renormalised; logits(x) = r(x)·x̂·ŵ_j with ŵ the new rows
    x2 = torch.randn(3, W.shape[1], dtype=torch.float64)
    expect = F.normalize(x2, dim=1) @ F.normalize(w, dim=1).T
    expect = expect * (x2.norm(dim=1, keepdim=True) if name in ("atl", "sphereface") else 64.0)
    torch.testing.assert_close(head.eval().logits(x2), expect, rtol=1e-12, atol=1e-12)


def test_triplet_replaces_even_when_embeddings_need_no_gradient():
    W, x, y = triplet_batch()
    head = new_head("atl", {"m": 2}, W, triplet=True, replace_prob=1.0)
    head(x, y).backward()  # x is a plain tensor (e.g. a frozen backbone)
    torch.testing.assert_close(head.weight.detach()[0], x[5], rtol=0, atol=0)
    assert head.weight.grad is None or bool((head.weight.grad == 0).all())


@pytest.mark.parametrize("name", ["atl", "cosface", "arcface"])
def test_triplet_replace_prob_zero_changes_nothing(name):
    W, x, y = triplet_batch()
    head = new_head(name, {}, W, triplet=True, replace_prob=0.0)
    ref = new_head(name, {}, W)
    xx, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss = head(xx, y)
    loss.backward()
    ref(xr, y).backward()
    torch.testing.assert_close(head.weight.detach(), W, rtol=0, atol=0)
    assert head.weight.grad is None or bool((head.weight.grad == 0).all())
    torch.testing.assert_close(xx.grad, xr.grad, rtol=1e-12, atol=1e-12)
    # an optimizer step leaves the rows where they are
    torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4).step()
    torch.testing.assert_close(head.weight.detach(), W, rtol=0, atol=0)


def test_triplet_replaces_nothing_in_eval_mode_or_without_grad():
    W, x, y = triplet_batch()
    head = new_head("atl", {"m": 2}, W, triplet=True, replace_prob=1.0).eval()
    xx = x.clone().requires_grad_()
    head(xx, y).backward()
    torch.testing.assert_close(head.weight.detach(), W, rtol=0, atol=0)
    head.train()
    with torch.no_grad():
        head(x, y)
    torch.testing.assert_close(head.weight.detach(), W, rtol=0, atol=0)
    head.logits(x, y).sum()  # logits() never replaces
    torch.testing.assert_close(head.weight.detach(), W, rtol=0, atol=0)


def test_triplet_replace_probability_and_batch_order():
    torch.manual_seed(11)
    # 400 classes with one sample each: about half of the rows are replaced
    C, D = 400, 3
    W = torch.randn(C, D, dtype=torch.float64)
    x = torch.randn(C, D, dtype=torch.float64)
    y = torch.randperm(C)
    head = new_head("atl", {"m": 2}, W, triplet=True)  # default replace_prob = 0.5
    assert head.replace_prob == 0.5
    head(x, y).backward()
    w = head.weight.detach()
    replaced = (w != W).any(dim=1)
    n = int(replaced.sum())
    assert 150 <= n <= 250, n  # Binomial(400, 0.5): mean 200, sd 10
    torch.testing.assert_close(w[y[replaced[y]]], x[replaced[y]], rtol=0, atol=0)
    # several samples per class: a replaced row is one of its class's samples
    C = 5
    W = torch.randn(C, D, dtype=torch.float64)
    x = torch.randn(60, D, dtype=torch.float64)
    y = torch.arange(60) % C
    head = new_head("atl", {"m": 2}, W, triplet=True, replace_prob=0.5)
    head(x, y).backward()
    w = head.weight.detach()
    for cls in range(C):
        samples = x[y == cls]
        assert bool(((samples - w[cls]).abs().sum(dim=1) == 0).any()), cls
