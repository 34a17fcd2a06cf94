"""Equality with pytorch-metric-learning's classification losses on shared weights.

pml keeps its class weights as ``W`` of shape ``(D, C)``: we copy ``head.weight.T`` into it.
pml reduces by the mean over the batch (``MeanReducer``) and adds no weight regulariser by
default; both defaults are asserted below. pml's ArcFace margin is in degrees; its SphereFace and
LargeMargin losses have no λ blend, so they match ours with ``base = lambda_min = 0`` (λ = 0).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import facemargin.losses as L

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_reducers = pytest.importorskip("pytorch_metric_learning.reducers")

# pml's LargeMargin loss calls scipy.special.binom on tensors (a NumPy 2 deprecation in pml)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

B, D, C = 9, 5, 6


def batch():
    torch.manual_seed(7)
    W = torch.randn(C, D, dtype=torch.float64) * torch.linspace(0.5, 2.0, C, dtype=torch.float64)[:, None]
    x = torch.randn(B, D, dtype=torch.float64) * 2
    y = torch.tensor([0, 1, 2, 3, 4, 5, 0, 2, 4])
    # sample 0 far from its class (θ_y = π − 0.2: ArcFace's fallback region), sample 1 close to it
    w0, w1 = F.normalize(W[0], dim=0), F.normalize(W[1], dim=0)
    u0 = F.normalize(x[0] - (x[0] @ w0) * w0, dim=0)
    u1 = F.normalize(x[1] - (x[1] @ w1) * w1, dim=0)
    x[0] = 1.5 * (math.cos(math.pi - 0.2) * w0 + math.sin(math.pi - 0.2) * u0)
    x[1] = 2.5 * (math.cos(0.3) * w1 + math.sin(0.3) * u1)
    return W, x, y


CASES = [
    # (our name, our kwargs, pml class name, pml kwargs)
    ("arcface", {"s": 64.0, "m": 0.5}, "ArcFaceLoss", {"margin": math.degrees(0.5), "scale": 64}),
    ("arcface", {"s": 30.0, "m": 0.3}, "ArcFaceLoss", {"margin": math.degrees(0.3), "scale": 30}),
    ("cosface", {"s": 64.0, "m": 0.35}, "CosFaceLoss", {"margin": 0.35, "scale": 64}),
    ("cosface", {"s": 20.0, "m": 0.2}, "CosFaceLoss", {"margin": 0.2, "scale": 20}),
    ("normface", {"s": 20.0}, "NormalizedSoftmaxLoss", {"temperature": 0.05}),
    ("normface", {"s": 10.0}, "NormalizedSoftmaxLoss", {"temperature": 0.1}),
] + [
    ("sphereface", {"m": m, "base": 0.0, "lambda_min": 0.0}, "SphereFaceLoss", {"margin": m, "scale": 1})
    for m in (1, 2, 3, 4)
] + [
    ("lsoftmax", {"m": m, "base": 0.0, "lambda_min": 0.0}, "LargeMarginSoftmaxLoss", {"margin": m, "scale": 1})
    for m in (1, 2, 3, 4)
]


def build_pair(case, W, **pml_extra):
    name, kw, pml_name, pml_kw = case
    head = L.build(name, embedding_size=D, num_classes=C, **kw).double().train()
    with torch.no_grad():
        head.weight.copy_(W)
    loss_fn = getattr(pml_losses, pml_name)(num_classes=C, embedding_size=D, **pml_kw, **pml_extra).double()
    with torch.no_grad():
        loss_fn.W.copy_(W.T)
    return head, loss_fn


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-" + ",".join(f"{k}={v}" for k, v in c[1].items()))
def test_equal_to_pytorch_metric_learning(case):
    W, x, y = batch()
    head, loss_fn = build_pair(case, W)
    assert tuple(loss_fn.W.shape) == (D, C)
    # pml's defaults that the comparison relies on: mean over the batch, no weight regulariser
    assert isinstance(loss_fn.reducer, pml_reducers.MeanReducer)
    assert loss_fn.weight_regularizer is None

    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, theirs = head(xa, y), loss_fn(xb, y)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(head.weight.grad, loss_fn.W.grad.T, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-" + ",".join(f"{k}={v}" for k, v in c[1].items()))
def test_per_sample_losses_equal(case):
    """Not only the mean: every sample's cross-entropy matches (pml without reduction)."""
    W, x, y = batch()
    head, loss_fn = build_pair(case, W, reducer=pml_reducers.DoNothingReducer())
    theirs = loss_fn(x, y)["loss"]["losses"]
    ours = F.cross_entropy(head.eval().logits(x, y), y, reduction="none")
    assert ours.shape == (B,)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_arcface_fallback_sample_is_exercised():
    """Sample 0 lies past θ_y + m > π, where both libraries switch to cos θ − m sin m."""
    W, x, y = batch()
    c = F.cosine_similarity(x[0:1], W[0:1]).item()
    assert math.acos(c) + 0.5 > math.pi
    head = L.build("arcface", embedding_size=D, num_classes=C).double()
    with torch.no_grad():
        head.weight.copy_(W)
    assert head.logits(x, y)[0, 0].item() == pytest.approx(64 * (c - 0.5 * math.sin(0.5)), rel=1e-12)
