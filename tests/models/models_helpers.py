"""Helpers for the backbone tests: parameter counts of layers, written from the layouts."""
import torch


def conv(cin, cout, k, bias=False, groups=1):
    """Parameters of a k x k convolution."""
    return (cin // groups) * cout * k * k + (cout if bias else 0)


def bn(c):
    return 2 * c


def prelu(c):
    return c


def linear(i, o, bias=True):
    return i * o + (o if bias else 0)


def randomise_norms(model):
    """Give BatchNorm running statistics and affine terms and PReLU slopes non-trivial values,
    so that eval-mode outputs (and any BN folding by an exporter) are exercised."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
            elif isinstance(m, torch.nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5)
    return model
