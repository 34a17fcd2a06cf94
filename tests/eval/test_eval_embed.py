"""embed_images: batching over every input kind, eval mode, flip-test fusion."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from facemargin.eval import embed_images


def make_model():
    torch.manual_seed(0)
    # BatchNorm makes train vs eval mode visible; the Linear makes flips visible
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 4, 5), nn.BatchNorm1d(5))


def reference(model, x):
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train(was)
    return out.numpy()


def test_all_input_kinds_equal_direct_forward():
    model = make_model()
    x = torch.randn(11, 2, 3, 4)
    ref = reference(model, x)
    y = torch.arange(11)
    for images in (x, x.numpy(), TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=4),
                   [x[:5], x[5:]]):
        out = embed_images(model, images, batch_size=3)
        assert out.dtype == np.float32 and out.shape == (11, 5)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_flip_fusion_is_sum_with_mirrored_image():
    model = make_model()
    x = torch.randn(6, 2, 3, 4)
    mirrored = x[..., [3, 2, 1, 0]]  # width reversed, built independently of torch.flip
    expected = reference(model, x) + reference(model, mirrored)
    out = embed_images(model, x, batch_size=4, flip=True, progress=True)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(out, 2 * reference(model, x))


def test_mode_restored_and_no_grad():
    model = make_model().train()
    before = model[2].running_mean.clone()
    embed_images(model, torch.randn(8, 2, 3, 4))
    assert model.training
    assert torch.equal(model[2].running_mean, before)  # eval mode: running stats untouched
    assert all(p.grad is None for p in model.parameters())


def test_embed_errors():
    model = make_model()
    with pytest.raises(ValueError, match="float"):
        embed_images(model, np.zeros((2, 2, 3, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        embed_images(model, torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="batch_size"):
        embed_images(model, torch.zeros(2, 2, 3, 4), batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        embed_images(model, [])
