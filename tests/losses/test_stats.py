"""The per-sample statistics every head logs: ``train_acc`` is the plain accuracy (the label is the
arg-max of the plain logits, bias included), also for heads that transform the non-target logits,
whose loss reads other values than the ones the accuracy is about."""
import pytest
import torch

from facemargin import losses


@pytest.mark.parametrize("name", ["curricularface", "sphereface2", "uniface", "arcface", "softmax"])
@pytest.mark.parametrize("engine,chunk", [("plain", None), ("fused", None), ("fused", 4)])
def test_train_acc_is_the_plain_accuracy(name, engine, chunk):
    torch.manual_seed(0)
    C, D, B = 9, 6, 64
    head = losses.build(name, embedding_size=D, num_classes=C, engine=engine,
                        engine_options={"chunk_size": chunk} if chunk else None).double()
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, C, (B,), generator=g)
    with torch.no_grad():  # embeddings near their class row for some samples: an accuracy off 0 and 1
        x = torch.randn(B, D, generator=g, dtype=torch.float64)
        x[: B // 2] += 3.0 * torch.nn.functional.normalize(head.weight[y[: B // 2]], dim=1)
    head(x, y)
    plain = head.logits(x)  # no margin, no transform: the classifier's own scores
    expected = float((plain.argmax(dim=1) == y).double().mean())
    assert 0.2 < expected < 1.0
    assert head.last_stats.shares()["train_acc"] == pytest.approx(expected)
    other = plain.clone()
    other[torch.arange(B), y] = -float("inf")
    torch.testing.assert_close(head.last_stats.other_max, other.amax(dim=1), rtol=1e-12, atol=1e-12)
