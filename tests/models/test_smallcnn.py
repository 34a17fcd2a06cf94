"""smallcnn: parameter count from its layer list, shapes, argument checks, and lr 0.1 training."""
import pytest
import torch

import facemargin.models as M


def formula(emb, size=32, cin=3):
    convs = [(cin, 16), (16, 32), (32, 64), (64, 128)]
    conv = sum(a * b * 9 + 2 * b for a, b in convs)  # bias-free 3x3 convolutions + BatchNorm scale/shift
    side = size // 8  # stride-2 stem, then two 2x2 pools
    return conv + 128 * side * side * emb + 2 * emb  # bias-free linear + BatchNorm1d


@pytest.mark.parametrize("emb,size,cin", [(128, 32, 3), (64, 48, 1), (2, 16, 3)])
def test_parameter_count_and_shape(emb, size, cin):
    m = M.build("smallcnn", emb, image_size=size, in_channels=cin)
    assert M.num_parameters(m) == formula(emb, size, cin)
    assert m(torch.randn(3, cin, size, size)).shape == (3, emb)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="image_size"):
        M.build("smallcnn", 128, image_size=30)
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        M.build("smallcnn", 8)(torch.randn(2, 3, 28, 28))


def test_trains_at_lr_0_1():
    torch.manual_seed(0)
    m = M.build("smallcnn", 16)
    head = torch.nn.Linear(16, 4)
    x = torch.randn(64, 3, 32, 32)
    y = torch.arange(64) % 4
    x[y == 1, :, :16] += 1.5  # four separable classes
    x[y == 2, :, 16:] += 1.5
    x[y == 3] -= 1.0
    opt = torch.optim.SGD(list(m.parameters()) + list(head.parameters()), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(head(m(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.2 * losses[0]
