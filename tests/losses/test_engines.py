"""The engines: the fused engine gives the same loss, gradients and stats as the plain reference."""
import math

import pytest
import torch
import torch.nn.functional as F

from facemargin import losses
from facemargin.losses import ENGINES, MarginSpec, AdditiveMargin, MultiplicativeMargin, margin_cross_entropy
from facemargin.losses.engines import BlockSoftmaxCE


def fused_margin_cross_entropy(x, weight, y, spec, scale=1.0, lambda_=None, bias=None, chunk_size=None):
    return margin_cross_entropy(x, weight, y, spec, scale, lambda_, bias, engine="fused", chunk_size=chunk_size)

HEADS = [n for n in losses.available() if losses.is_head(n)]

# hyper-parameter variants beyond the defaults that take a different branch of the margin
VARIANTS = [(h, {}) for h in HEADS] + [
    ("normface", {"learn_scale": True}),
    ("arcface", {"easy_margin": True}),
    ("sphereface", {"m": 1}),
    ("sphereface", {"m": 2, "iteration": 50}),
    ("sphereface", {"m": 3}),
    ("lsoftmax", {"m": 2}),
    ("combined", {"m1": 1.2, "m2": 0.1, "m3": 0.1}),
    ("atl", {"m": 2, "lambda_min": 3, "iteration": 10000}),
]


def _ids(v):
    return f"{v[0]}-" + "-".join(f"{k}={val}" for k, val in v[1].items()) if v[1] else v[0]


def _pair(name, kw, C, D, dtype, chunk=None, seed=0):
    """The same head twice: plain and fused backends, identical parameters."""
    torch.manual_seed(seed)
    plain = losses.build(name, embedding_size=D, num_classes=C, engine="plain", **kw).to(dtype)
    fused = losses.build(name, embedding_size=D, num_classes=C,
                         engine_options={"chunk_size": chunk} if chunk else None, **kw).to(dtype)
    assert fused.engine.name == "fused"  # the default engine
    with torch.no_grad():
        if plain.bias is not None:
            plain.bias.normal_()
        if isinstance(plain.scale, torch.nn.Parameter):
            plain.scale.fill_(7.5)
    fused.load_state_dict(plain.state_dict())
    return plain, fused


def _run(head, x, y):
    x = x.clone().requires_grad_(True)
    loss = head(x, y)
    loss.backward()
    grads = {"x": x.grad}
    for n, p in head.named_parameters():
        grads[n.removeprefix("store.")] = p.grad  # the class rows live in the head's store
    return loss, grads, head.last_stats


def _data(B, D, C, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(B, D, generator=g) * 2.0).to(dtype)
    y = torch.randint(0, C, (B,), generator=g)
    y[0] = C - 1  # the last class, so the last block of a chunked run holds a target
    return x, y


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
@pytest.mark.parametrize("chunk", [None, 3])
def test_fused_equals_plain_float64(variant, chunk):
    name, kw = variant
    B, D, C = 6, 5, 11
    plain, fused = _pair(name, kw, C, D, torch.float64, chunk)
    x, y = _data(B, D, C, torch.float64)
    lp, gp, sp = _run(plain, x, y)
    lf, gf, sf = _run(fused, x, y)
    assert lf.dtype == torch.float64
    torch.testing.assert_close(lf, lp.to(lf.dtype), rtol=1e-12, atol=1e-12)
    assert set(gp) == set(gf)
    for k in gp:
        if gp[k] is None:
            assert gf[k] is None, k
        else:
            torch.testing.assert_close(gf[k], gp[k], rtol=1e-10, atol=1e-12, msg=k)
    for a, b in zip(sf, sp):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # the λ schedule advanced identically
    if plain.schedule is not None:
        assert int(fused.iteration) == int(plain.iteration) and fused.lambda_ == plain.lambda_


@pytest.mark.parametrize("variant", VARIANTS[: len(HEADS)], ids=_ids)
def test_fused_equals_plain_float32(variant):
    name, kw = variant
    B, D, C = 16, 12, 40
    plain, fused = _pair(name, kw, C, D, torch.float32)
    x, y = _data(B, D, C, torch.float32)
    lp, gp, sp = _run(plain, x, y)
    lf, gf, sf = _run(fused, x, y)
    assert lf.dtype == torch.float32
    torch.testing.assert_close(lf, lp, rtol=2e-6, atol=1e-6)
    for k in gp:
        if gp[k] is not None:
            scale = gp[k].abs().max().clamp_min(1e-6)
            assert (gf[k] - gp[k]).abs().max() / scale < 2e-5, k
    for a, b in zip(sf, sp):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def _spec_cases():
    """(spec, scale, lambda, bias?) for every branch of the margin function."""
    return [
        (MarginSpec("norm", False, AdditiveMargin()), None, None, True),                # softmax
        (MarginSpec("scale", False, AdditiveMargin()), 3.0, None, True),                # l2softmax
        (MarginSpec("scale", True, AdditiveMargin()), 4.0, None, False),                # normface
        (MarginSpec("scale", True, AdditiveMargin(1.0, 0.0, 0.35)), 5.0, None, False),  # cosface
        (MarginSpec("scale", True, AdditiveMargin(1.0, 0.5, 0.0)), 5.0, None, False),   # arcface
        (MarginSpec("scale", True, AdditiveMargin(1.0, 0.5, 0.0, True)), 5.0, None, False),
        (MarginSpec("scale", True, AdditiveMargin(1.3, 0.2, 0.1)), 5.0, None, False),   # combined m1≠1
        (MarginSpec("norm", True, MultiplicativeMargin(4)), None, 3.0, False),          # sphereface
        (MarginSpec("norm", False, MultiplicativeMargin(3)), None, 2.0, False),         # lsoftmax
        (MarginSpec("scale", False, MultiplicativeMargin(2)), 2.0, 1.5, True),          # not a preset
    ]


@pytest.mark.parametrize("case", range(len(_spec_cases())))
@pytest.mark.parametrize("chunk", [None, 3])
def test_gradcheck_float64(case, chunk):
    spec, scale, lam, has_bias = _spec_cases()[case]
    g = torch.Generator().manual_seed(case)
    B, D, C = 4, 5, 7
    x = (torch.randn(B, D, generator=g, dtype=torch.float64) * 1.5).requires_grad_(True)
    W = torch.randn(C, D, generator=g, dtype=torch.float64).requires_grad_(True)
    y = torch.tensor([0, 3, 6, 3])
    b = torch.randn(C, generator=g, dtype=torch.float64).requires_grad_(True) if has_bias else None
    s = torch.tensor(scale, dtype=torch.float64, requires_grad=True) if scale is not None else None
    if isinstance(spec.margin, AdditiveMargin) and spec.margin.m2 > 0 and spec.margin.m1 == 1:
        # put sample 1 past the ArcFace threshold θ + m > π: the linear fallback is checked too
        with torch.no_grad():
            x[1] = -W[3] * 0.9 + 0.05 * torch.randn(D, generator=g, dtype=torch.float64)
    # away from kinks: every target cosine at least 1e-3 from a branch point of φ
    with torch.no_grad():
        c = F.cosine_similarity(x, W[y])
    kinks = [0.0, math.cos(math.pi - 0.5), math.cos(math.pi - 0.2)] + [math.cos(k * math.pi / m) for m in (2, 3, 4)
                                                                       for k in range(1, m)]
    assert min(abs(float(ci) - k) for ci in c for k in kinks) > 1e-3

    inputs = [x, W] + ([b] if b is not None else []) + ([s] if s is not None else [])

    def f(*args):
        it = iter(args[2:])
        bb = next(it) if b is not None else None
        ss = next(it) if s is not None else 1.0
        return fused_margin_cross_entropy(args[0], args[1], y, spec, ss, lam, bb, chunk_size=chunk)[0]

    # nondet_tol: gradcheck runs backward twice on one graph; the second pass recomputes the
    # logits instead of reusing the (consumed) buffer, which differs at the rounding level
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-6, nondet_tol=1e-12)


def test_arcface_fallback_is_reached_and_matches_plain():
    """A target past θ + m > π uses s(cos θ − m sin m) in both paths."""
    spec = MarginSpec("scale", True, AdditiveMargin(1.0, 0.5, 0.0))
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    x = torch.tensor([[-1.0, 0.05]], dtype=torch.float64)  # θ ≈ π − 0.05 for class 0
    y = torch.tensor([0])
    lf, sf = fused_margin_cross_entropy(x, W, y, spec, 2.0)
    lp, sp = margin_cross_entropy(x, W, y, spec, 2.0, engine="plain")
    cos0 = -1 / math.hypot(1, 0.05)
    cos1 = 0.05 / math.hypot(1, 0.05)
    t = 2.0 * (cos0 - 0.5 * math.sin(0.5))
    expected = -t + math.log(math.exp(t) + math.exp(2.0 * cos1))
    assert float(sf.target_margin) == pytest.approx(t, rel=1e-12)
    assert float(lf) == pytest.approx(expected, rel=1e-12)
    assert float(lp) == pytest.approx(expected, rel=1e-12)


def test_cosface_two_classes_by_hand():
    """CosFace with C = 2: L = log(1 + exp(s cos θ_2 − s(cos θ_1 − m))), worked by hand."""
    s, m = 8.0, 0.35
    head = losses.build("cosface", embedding_size=2, num_classes=2, s=s, m=m, engine="fused")
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    x = torch.tensor([[3.0, 4.0]])  # cos θ_1 = 0.6, cos θ_2 = 0.8
    loss = head(x, torch.tensor([0]))
    assert float(loss.detach()) == pytest.approx(math.log1p(math.exp(s * 0.8 - s * (0.6 - m))), rel=1e-6)
    st = head.last_stats
    assert float(st.target_plain) == pytest.approx(s * 0.6, rel=1e-6)
    assert float(st.target_margin) == pytest.approx(s * (0.6 - m), rel=1e-6)
    assert float(st.other_max) == pytest.approx(s * 0.8, rel=1e-6)


@pytest.mark.parametrize("name", ["arcface", "sphereface", "softmax", "normface"])
def test_chunked_equals_unchunked(name):
    B, D, C = 9, 6, 23
    x, y = _data(B, D, C, torch.float64, seed=5)
    results = []
    for chunk in (None, 1, 4, 22, 23, 100):
        torch.manual_seed(3)
        head = losses.build(name, embedding_size=D, num_classes=C, engine="fused",
                            engine_options={"chunk_size": chunk}).double()
        results.append(_run(head, x, y))
    ref_loss, ref_grads, ref_stats = results[0]
    for loss, grads, stats in results[1:]:
        torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
        for k in ref_grads:
            torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-10, atol=1e-12)
        for a, b in zip(stats, ref_stats):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk", [None, 4])
def test_backward_twice_with_retain_graph(chunk):
    """The in-place reuse of the logits buffer must not corrupt a second backward."""
    x, y = _data(5, 4, 9, torch.float64)
    x.requires_grad_(True)
    W = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    spec = MarginSpec("scale", True, AdditiveMargin(1.0, 0.3, 0.1))
    loss, _ = fused_margin_cross_entropy(x, W, y, spec, 10.0, chunk_size=chunk)
    g1 = torch.autograd.grad(loss, [x, W], retain_graph=True)
    g2 = torch.autograd.grad(loss, [x, W])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["arcface", "cosface", "combined", "sphereface", "normface"])
@pytest.mark.parametrize("weight_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("chunk", [None, 2])
def test_bfloat16_is_finite_at_the_extremes(name, weight_dtype, chunk):
    """bf16 input, s = 64, targets at cos = +1 and cos = −1: finite loss and gradients."""
    D, C = 8, 5
    kw = {"s": 64.0} if name != "sphereface" else {}
    head = losses.build(name, embedding_size=D, num_classes=C, engine="fused",
                        engine_options={"chunk_size": chunk}, **kw).to(weight_dtype)
    W = head.weight.detach()
    x = torch.stack([W[0] * 3, -W[1] * 2, W[2] + W[3], torch.ones(D)]).to(torch.bfloat16).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 4])
    loss = head(x, y)
    loss.backward()
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert torch.isfinite(x.grad.float()).all() and x.grad.dtype == torch.bfloat16
    assert torch.isfinite(head.weight.grad.float()).all()
    # the plain path agrees within bf16 precision
    ref = losses.build(name, embedding_size=D, num_classes=C, engine="plain", **kw).to(weight_dtype)
    ref.load_state_dict(head.state_dict())
    assert float(loss) == pytest.approx(float(ref(x.detach(), y)), rel=0.05, abs=0.5)


def test_atl_switches_with_fused_backend():
    """triplet + semihard (outside the backend) behave identically on both backends."""
    B, D, C = 12, 6, 4
    kw = dict(m=2, lambda_min=3, iteration=10000, triplet=True, semihard=True, replace_prob=0.5)
    plain, fused = _pair("atl", kw, C, D, torch.float64)
    x, y = _data(B, D, C, torch.float64, seed=7)
    torch.manual_seed(11)
    lp, gp, sp = _run(plain, x, y)
    torch.manual_seed(11)
    lf, gf, sf = _run(fused, x, y)
    torch.testing.assert_close(lf, lp)
    torch.testing.assert_close(gf["x"], gp["x"], rtol=1e-10, atol=1e-12)
    assert gp["weight"] is None and gf["weight"] is None
    torch.testing.assert_close(fused.weight, plain.weight)  # same rows replaced by samples
    # the mask really zeroed something and kept something (the case is not vacuous)
    zero_rows = (gf["x"].abs().sum(dim=1) == 0)
    assert zero_rows.any() and (~zero_rows).any()


def test_backend_registered_and_options_checked():
    assert "fused" in ENGINES
    x, y = _data(3, 4, 5, torch.float32)
    W = torch.randn(5, 4)
    spec = MarginSpec()
    with pytest.raises(ValueError, match="chunk_size"):
        margin_cross_entropy(x, W, y, spec, engine="fused", chunk_size=0)
    with pytest.raises(ValueError, match="unknown option"):
        margin_cross_entropy(x, W, y, spec, engine="fused", chunks=3)
    with pytest.raises(ValueError, match="unknown engine 'turbo'"):
        margin_cross_entropy(x, W, y, spec, engine="turbo")
    with pytest.raises(ValueError, match="unknown engine"):
        losses.build("arcface", embedding_size=4, num_classes=5, engine="turbo")


def test_function_returns_stats_without_gradient():
    x, y = _data(4, 3, 6, torch.float64)
    W = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    f = 2.0 * F.normalize(x, dim=1)
    T = (f * F.normalize(W, dim=1)[y]).sum(1) - 2.0 * 0.2  # a CosFace target, m = 0.2
    out = BlockSoftmaxCE.apply(f, W, None, T, y, True, None, None, None, None, None)
    loss, tp, tm, om = out
    assert loss.requires_grad and not tp.requires_grad and not tm.requires_grad and not om.requires_grad
    torch.testing.assert_close(tm, tp - 2.0 * 0.2)


@pytest.mark.parametrize("name", ["arcface", "sphereface"])
@pytest.mark.parametrize("chunk", [None, 5])
def test_under_cpu_autocast(name, chunk):
    """Under bf16 autocast the fused path runs (bf16 GEMMs), close to the plain path's autocast result."""
    plain, fused = _pair(name, {}, 13, 8, torch.float32, chunk)
    x, y = _data(6, 8, 13, torch.float32, seed=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp, gp, _ = _run(plain, x, y)
        lf, gf, _ = _run(fused, x, y)
    assert lf.dtype == torch.float32 and torch.isfinite(lf)
    assert float(lf) == pytest.approx(float(lp), rel=0.03, abs=0.05)
    for k in ("x", "weight"):
        assert gf[k].dtype == torch.float32 and torch.isfinite(gf[k]).all()
        cos = F.cosine_similarity(gf[k].flatten(), gp[k].flatten(), dim=0)
        assert cos > 0.99, (k, float(cos))


@pytest.mark.parametrize("name", ["curricularface", "sphereface2", "uniface", "subcenter_arcface", "arcface"])
@pytest.mark.parametrize("chunk", [None, 4])
def test_column_slices_equal_one_slice(monkeypatch, name, chunk):
    """Elementwise work split into column slices (tiny slices here) gives the plain path's numbers."""
    from facemargin.losses.engines import blocks

    monkeypatch.setattr(blocks, "_SLICE_ELEMS", 7)  # B = 6: one column per slice
    plain, fused = _pair(name, {}, 11, 5, torch.float64, chunk)
    x, y = _data(6, 5, 11, torch.float64)
    for _ in range(2):  # the second call sees the state the first one updated
        lp, gp, _ = _run(plain, x, y)
        lf, gf, _ = _run(fused, x, y)
        torch.testing.assert_close(lf, lp, rtol=1e-12, atol=1e-12)
        for k in gp:
            if gp[k] is not None:
                torch.testing.assert_close(gf[k], gp[k], rtol=1e-10, atol=1e-12, msg=k)
        for h in (plain, fused):
            for p in h.parameters():
                p.grad = None
