"""The worked examples of docs/extending.md run as written, and the per-sample margin is exact."""
import math
import re
from pathlib import Path

import pytest
import torch

from facemargin import losses, models

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture(scope="module")
def example():
    """Run the doc's margin file and backbone block once (they register their names)."""
    blocks = _blocks()
    ns = {}
    exec(compile(blocks[0], str(DOC), "exec"), ns)
    exec(compile(blocks[-1], str(DOC), "exec"), {})
    yield ns
    # the registries are global: other tests list the registered names
    losses.LOSSES.unregister("example_normcosface")
    models.BACKBONES.unregister("example_tiny")


def test_the_doc_margin_is_one_file_and_exact(example):
    head = losses.build("example_normcosface", embedding_size=2, num_classes=2, s=4.0).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
    x = torch.tensor([[3.0, 4.0], [30.0, -40.0]], dtype=torch.float64)  # norms 5 and 50
    y = torch.tensor([0, 1])
    m = [0.2, 0.5]  # 0.2 + 0.01·(5 − 10) clipped up to 0.2; 0.2 + 0.01·40 = 0.6 clipped down to 0.5
    c = [(0.6, 0.8), (0.6, -0.8)]  # cosines to classes 0 and 1
    t0, o0 = 4 * (0.6 - m[0]), 4 * 0.8
    t1, o1 = 4 * (-0.8 - m[1]), 4 * 0.6
    want = 0.5 * ((math.log(math.exp(t0) + math.exp(o0)) - t0) + (math.log(math.exp(t1) + math.exp(o1)) - t1))
    assert float(head(x, y)) == pytest.approx(want, rel=1e-12)
    assert c  # (the cosines above, written out for the reader)


def test_the_doc_margin_runs_on_every_engine(example):
    torch.manual_seed(0)
    plain = losses.build("example_normcosface", embedding_size=4, num_classes=6, engine="plain").double()
    fused = losses.build("example_normcosface", embedding_size=4, num_classes=6).double()
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(5, 4, dtype=torch.float64) * 12
    y = torch.tensor([0, 5, 2, 2, 1])
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    lp, lf = plain(xs[0], y), fused(xs[1], y)
    lp.backward(), lf.backward()
    torch.testing.assert_close(lf, lp, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(xs[1].grad, xs[0].grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fused.weight.grad, plain.weight.grad, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="unknown argument.*'mm'.*it accepts: embedding_size"):
        losses.build("example_normcosface", embedding_size=4, num_classes=6, mm=0.3)


def test_the_doc_margin_runs_on_a_sharded_store(example):
    """The same file, on the sharded store (a world of one here; tests/distributed runs every
    registered head over two ranks): the same loss and gradients as the dense head."""
    from facemargin.distributed import full_state_dict, sharded_head

    sharded = sharded_head("example_normcosface", 4, 6, seed=3).double()
    dense = losses.build("example_normcosface", embedding_size=4, num_classes=6).double()
    dense.load_state_dict(full_state_dict(sharded))
    x = torch.randn(5, 4, dtype=torch.float64) * 12
    y = torch.tensor([0, 5, 2, 2, 1])
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    ls, ld = sharded(xs[0], y), dense(xs[1], y)
    ls.backward(), ld.backward()
    torch.testing.assert_close(ls, ld, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(xs[0].grad, xs[1].grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sharded.weight.grad, dense.weight.grad, rtol=1e-10, atol=1e-12)


def test_the_doc_backbone(example):
    assert "example_tiny" in models.available()
    net = models.build("example_tiny", embedding_size=8)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 8)
    with pytest.raises(ValueError, match="expects images of shape"):
        net(torch.zeros(2, 3, 28, 28))
