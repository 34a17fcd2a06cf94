"""Output shapes at each model's input size, and the wrong-input errors."""
import pytest
import torch

import facemargin.models as M


@pytest.mark.parametrize("name,emb", [("lenetpp", 2), ("lenetpp", 3), ("lenetpp", 128),
                                      ("mobilefacenet", 512)])
def test_small_models_train_and_eval_shapes(name, emb):
    m = M.build(name, emb)
    x = torch.rand(2, *M.input_size(name)) * 2 - 1
    y = m(x)  # training mode (BatchNorm uses batch statistics)
    assert y.shape == (2, emb) and torch.isfinite(y).all()
    y.sum().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    m.eval()
    with torch.no_grad():
        assert m(x[:1]).shape == (1, emb)


@pytest.mark.parametrize("name", ["sphere20", "resface28", "iresnet18"])
def test_big_models_eval_shape_batch1(name):
    m = M.build(name, embedding_size=256).eval()
    with torch.no_grad():
        y = m(torch.rand(1, *M.input_size(name)) * 2 - 1)
    assert y.shape == (1, 256) and torch.isfinite(y).all()


def test_eval_output_independent_of_batch_mates():
    m = M.build("mobilefacenet", 64).eval()
    x = torch.rand(3, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        together = m(x)
        alone = torch.cat([m(x[i:i + 1]) for i in range(3)])
    scale = together.abs().max().item()  # untrained nets in eval mode have large outputs
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("name", ["lenetpp", "sphere20", "resface28", "iresnet18", "iresnet50",
                                  "mobilefacenet"])
def test_wrong_input_size_names_expected(name):
    m = M.build(name, 8)
    c, h, w = M.input_size(name)
    for shape in [(2, c, h + 1, w), (2, c, w + 4, h), (2, 2 if c != 2 else 4, h, w), (c, h, w)]:
        with pytest.raises(ValueError, match=rf"expects images of shape \(B, {c}, {h}, {w}\)"):
            m(torch.zeros(shape))
    with pytest.raises(ValueError, match="float images"):
        m(torch.zeros((2, c, h, w), dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty batch"):
        m(torch.zeros((0, c, h, w)))


def test_sphere20_refuses_square_faces():
    # the 112x96 net must not silently accept the 112x112 crops of the other backbones
    with pytest.raises(ValueError, match=r"\(B, 3, 112, 96\)"):
        M.build("sphere20", 4)(torch.zeros(1, 3, 112, 112))


def test_lenetpp_in_channels_and_width():
    m = M.build("lenetpp", 2, in_channels=3, width=0.5)
    assert m.input_size == (3, 28, 28)
    assert m.stage1[0].out_channels == 16 and m.stage3[2].out_channels == 64
    assert m(torch.zeros(2, 3, 28, 28)).shape == (2, 2)


def test_lenetpp_learns_a_tiny_task():
    """Gradients reach every layer: 25 Adam steps separate two synthetic classes."""
    torch.manual_seed(0)
    x = torch.rand(16, 1, 28, 28) * 0.2 - 1
    y = torch.arange(16) % 2
    x[y == 1, :, 4:12, 4:12] = 1.0  # class 1 has a bright square
    net = M.build("lenetpp", 2, width=0.25)
    clf = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(list(net.parameters()) + list(clf.parameters()), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = torch.nn.functional.cross_entropy(clf(net(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]
