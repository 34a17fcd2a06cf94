"""What the fused engine spends: the GEMMs of one training step, whatever the head.

A plain linear layer with cross-entropy costs three GEMMs (the logits, then the gradients of the
features and of the weight). The fused engine costs the same three unchunked, and one more per
block chunked (the block is recomputed in backward). A margin that transforms the non-target
logits (CurricularFace, SphereFace2) must not add a GEMM: its derivative is taken where the plain
logits are at hand. Sub-center heads do their K rows per class in the same GEMMs.
"""
import pytest
import torch

from facemargin import losses
from facemargin.losses.core import MarginContext
from facemargin.losses.curricularface import CurricularMargin
from facemargin.losses.sphereface2 import SphereFace2Margin

class CountGemms:
    """Sums the multiply-adds of the matrix products (the fused engine's all go through
    ``torch.mm`` and ``Tensor.addmm_``; backward runs in the autograd engine, so the count wraps
    the functions themselves rather than a thread-local mode)."""

    def __init__(self, monkeypatch):
        self.madds = 0
        real_mm, real_addmm = torch.mm, torch.Tensor.addmm_

        def mm(a, b, **kw):
            self.madds += a.shape[0] * a.shape[1] * b.shape[1]
            return real_mm(a, b, **kw)

        def addmm_(t, a, b, **kw):
            self.madds += a.shape[0] * a.shape[1] * b.shape[1]
            return real_addmm(t, a, b, **kw)
        monkeypatch.setattr(torch, "mm", mm)
        monkeypatch.setattr(torch.Tensor, "addmm_", addmm_)


B, D = 6, 8


def _step_madds(monkeypatch, name, C, chunk=None, **kw):
    """Multiply-adds of one training step of head ``name``, in units of one ``(B, D)×(D, rows)``
    product over all of its class rows."""
    torch.manual_seed(0)
    head = losses.build(name, embedding_size=D, num_classes=C, engine_options={"chunk_size": chunk} if chunk else None,
                        **kw)
    x = torch.randn(B, D, requires_grad=True)
    y = torch.arange(B) % C
    head(x, y)  # a first step moves the running statistics off their start
    with monkeypatch.context() as mp:
        counter = CountGemms(mp)
        head(x, y).backward()
    return counter.madds / (B * D * head.weight.shape[0])


@pytest.mark.parametrize("name", ["arcface", "curricularface", "sphereface2", "uniface", "subcenter_arcface"])
def test_unchunked_step_is_three_gemms(monkeypatch, name):
    """The logits, then the features' and the rows' gradients: the bare path's three products
    (over C·K rows for sub-centers), nothing more."""
    assert _step_madds(monkeypatch, name, C=50) == 3


@pytest.mark.parametrize("name", ["arcface", "curricularface", "sphereface2", "uniface", "subcenter_arcface"])
def test_chunked_step_is_four_gemms(monkeypatch, name):
    """Chunked, backward recomputes each block once: four products, whatever the head."""
    assert _step_madds(monkeypatch, name, C=50, chunk=7) == 4


def test_curricular_bias_recomputes_once(monkeypatch):
    """With a trained bias the exponentials cannot carry the transform's derivative: backward
    recomputes the block, one product more than the unbiased head, and never more."""
    assert _step_madds(monkeypatch, "curricularface", C=50, bias=True) == 4


def _context(c, thr, values=None):
    ctx = MarginContext(labels=torch.zeros(c.shape[0], dtype=torch.long), norm=torch.ones(c.shape[0], dtype=c.dtype),
                        cos_target=thr.to(c.dtype))
    ctx.values.update(values or {})
    return ctx


def test_curricular_closed_form_derivative_equals_autograd():
    m = CurricularMargin(0.5).double()
    m.t.fill_(0.3)
    g = torch.Generator().manual_seed(2)
    c = torch.rand(5, 40, generator=g, dtype=torch.float64) * 2.4 - 1.2  # also outside [-1, 1]
    ctx = _context(c, torch.rand(5, generator=g, dtype=torch.float64) * 2 - 1)
    m.prepare(ctx)
    v, d = m.others_and_grad(c.clone(), ctx)  # may work in place on its argument
    v_ref, d_ref = super(CurricularMargin, m).others_and_grad(c, ctx)  # the autograd default
    assert ((c > ctx.values["curricular_cos_m"].unsqueeze(1)) & (c.abs() < 1)).any()  # hard negatives present
    torch.testing.assert_close(v, v_ref, rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(d, d_ref, rtol=0, atol=1e-15)
    # by hand: a hard negative c = 0.8 with t = 0.3 has derivative t + 2c = 1.9; outside [-1, 1] none
    c1 = torch.tensor([[0.8, 1.1, -1.1]], dtype=torch.float64)
    ctx1 = _context(c1, torch.tensor([0.0], dtype=torch.float64), {"curricular_cos_m": torch.tensor([0.5], dtype=torch.float64)})
    v1, d1 = m.others_and_grad(c1.clone(), ctx1)
    torch.testing.assert_close(d1, torch.tensor([[1.9, 0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(v1, torch.tensor([[0.8 * 1.1, 1.0 * 1.3, -1.0]], dtype=torch.float64))


def test_sphereface2_transform_derivative_is_one():
    m = SphereFace2Margin(0.4, 3.0).double()
    c = torch.linspace(-1, 1, 21, dtype=torch.float64).view(3, 7)
    ctx = _context(c, torch.zeros(3))
    v, d = m.others_and_grad(c.clone(), ctx)
    assert d is None  # the offset is detached
    v_ref, d_ref = super(SphereFace2Margin, m).others_and_grad(c, ctx)
    torch.testing.assert_close(v, v_ref, rtol=0, atol=1e-15)
    torch.testing.assert_close(d_ref, torch.ones_like(c))


@pytest.mark.parametrize("chunk", [None, 3])
def test_curricular_with_bias_and_hard_negatives_matches_plain(chunk):
    torch.manual_seed(0)
    plain = losses.build("curricularface", embedding_size=5, num_classes=11, engine="plain", bias=True).double()
    fused = losses.build("curricularface", embedding_size=5, num_classes=11, bias=True,
                         engine_options={"chunk_size": chunk} if chunk else None).double()
    with torch.no_grad():
        plain.bias.normal_()
        plain.margin.t.fill_(0.4)  # a t off zero: the hard negatives' derivative t + 2c matters
    fused.load_state_dict(plain.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 11, (6,), generator=g)
    out = []
    for head in (plain, fused):
        xx = x.clone().requires_grad_(True)
        loss = head(xx, y)
        loss.backward()
        out.append((loss, xx.grad, head.weight.grad, head.bias.grad))
    for a, b in zip(out[1], out[0]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
