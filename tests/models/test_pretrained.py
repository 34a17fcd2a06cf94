"""insightface arcface_torch checkpoints: the MobileFaceNet key map, IResNets key for key, --init-from."""
import numpy as np
import pytest
import torch
from torch import nn

from facemargin.models import build, export_onnx, load_pretrained
from facemargin.models.pretrained import insightface_mbf_keys


# --- a reference network named as arcface_torch's backbones/mobilefacenet.py names its modules ---------
class ConvBlock(nn.Module):
    def __init__(self, cin, cout, kernel=1, stride=1, padding=0, groups=1, act=True):
        super().__init__()
        mods = [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        self.layers = nn.Sequential(*(mods + [nn.PReLU(cout)] if act else mods))

    def forward(self, x):
        return self.layers(x)


class DepthWise(nn.Module):
    def __init__(self, cin, cout, residual=False, stride=2, groups=1):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(ConvBlock(cin, groups), ConvBlock(groups, groups, 3, stride, 1, groups=groups),
                                    ConvBlock(groups, cout, act=False))

    def forward(self, x):
        return x + self.layers(x) if self.residual else self.layers(x)


class Residual(nn.Module):
    def __init__(self, c, n, groups):
        super().__init__()
        self.layers = nn.Sequential(*[DepthWise(c, c, True, 1, groups) for _ in range(n)])

    def forward(self, x):
        return self.layers(x)


class GDC(nn.Module):
    def __init__(self, emb):
        super().__init__()
        self.layers = nn.Sequential(ConvBlock(512, 512, 7, groups=512, act=False), nn.Flatten(),
                                    nn.Linear(512, emb, bias=False), nn.BatchNorm1d(emb))

    def forward(self, x):
        return self.layers(x)


class InsightfaceMBF(nn.Module):
    def __init__(self, emb=512, blocks=(1, 4, 6, 2), scale=2):
        super().__init__()
        c1, c2 = 64 * scale, 128 * scale
        first = ConvBlock(c1, c1, 3, 1, 1, groups=64) if blocks[0] == 1 else Residual(c1, blocks[0], 128)
        self.layers = nn.ModuleList([
            ConvBlock(3, c1, 3, 2, 1), first,
            DepthWise(c1, c1, stride=2, groups=128), Residual(c1, blocks[1], 128),
            DepthWise(c1, c2, stride=2, groups=256), Residual(c2, blocks[2], 256),
            DepthWise(c2, c2, stride=2, groups=512), Residual(c2, blocks[3], 256)])
        self.conv_sep = ConvBlock(c2, 512)
        self.features = GDC(emb)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.features(self.conv_sep(x))


def _randomise(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                v = torch.rand(t.shape, generator=g) * 0.5 + 0.75 if "running_var" in name or name.endswith("2.weight") \
                    else torch.randn(t.shape, generator=g) * (0.5 / max(1, t[0].numel()) ** 0.5 if t.dim() > 1 else 0.1)
                t.copy_(v)
    return model.eval()


@pytest.mark.parametrize("scale,blocks,emb", [(2, (1, 4, 6, 2), 512), (1, (1, 4, 6, 2), 128), (2, (2, 1, 2, 1), 64)])
def test_insightface_mbf_loads_with_identical_outputs(tmp_path, scale, blocks, emb):
    ref = _randomise(InsightfaceMBF(emb, blocks, scale))
    assert len(ref.state_dict()) == len(insightface_mbf_keys(blocks))
    torch.save(ref.state_dict(), tmp_path / "backbone.pth")
    ours = load_pretrained("mbf", tmp_path / "backbone.pth")
    assert ours.scale == scale and ours.blocks == blocks and ours.embedding_size == emb
    x = torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert expected.abs().max() > 0.1
    assert torch.equal(got, expected)


def test_paper_mobilefacenet_is_insightface_scale_one():
    # the same 333 tensors with the same shapes, only named differently
    ours = build("mobilefacenet", 128).state_dict()
    theirs = InsightfaceMBF(128, scale=1).state_dict()
    for k, t in insightface_mbf_keys().items():
        assert ours[k].shape == theirs[t].shape, k


def test_iresnet_and_own_files(tmp_path):
    model = _randomise(build("iresnet18", 64))
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "r18.pth")
    loaded = load_pretrained("iresnet18", tmp_path / "r18.pth")
    assert loaded.embedding_size == 64 and not loaded.training
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # our own layout of a widened MobileFaceNet round-trips too
    mbf = _randomise(build("mobilefacenet", 32, scale=2, blocks=(1, 2, 3, 1)))
    torch.save(mbf.state_dict(), tmp_path / "own.pth")
    again = load_pretrained("mobilefacenet", tmp_path / "own.pth")
    assert again.blocks == (1, 2, 3, 1) and again.scale == 2
    with torch.no_grad():
        assert torch.equal(again(x), mbf(x))


def test_bad_files_name_the_file(tmp_path):
    ref = InsightfaceMBF(128, scale=1).state_dict()
    del ref["conv_sep.layers.2.weight"]
    torch.save(ref, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"broken\.pth: .*conv_sep\.layers\.2\.weight"):
        load_pretrained("mbf", tmp_path / "broken.pth")
    torch.save(build("iresnet18", 64).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"r18\.pth: .*MobileFaceNet"):
        load_pretrained("mobilefacenet", tmp_path / "r18.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list\.pth holds no backbone state dict"):
        load_pretrained("iresnet18", tmp_path / "list.pth")


def test_onnx_export_keeps_insightface_convention(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    ref = _randomise(InsightfaceMBF(128, scale=1))
    torch.save(ref.state_dict(), tmp_path / "backbone.pth")
    summary = export_onnx(load_pretrained("mbf", tmp_path / "backbone.pth"), tmp_path / "mbf.onnx")
    graph = onnx.load(str(tmp_path / "mbf.onnx")).graph
    assert len(graph.input) == 1 and len(graph.output) == 1
    dims = [d.dim_value or d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 112, 112]
    import onnxruntime as ort

    # an insightface pipeline feeds RGB 112x112 as (x - 127.5) / 127.5
    pixels = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3)).astype(np.float32)
    blob = ((pixels - 127.5) / 127.5).transpose(0, 3, 1, 2).copy()
    sess = ort.InferenceSession(str(tmp_path / "mbf.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: blob})[0]
    with torch.no_grad():
        expected = ref(torch.from_numpy(blob)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4 * max(1.0, np.abs(expected).max()))
    assert summary["max_abs_diff"] is not None


def test_init_from_a_backbone_only_file(tmp_path):
    from facemargin.cli import main
    from facemargin.train.checkpoint import load_checkpoint

    ref = _randomise(InsightfaceMBF(16, scale=1))
    torch.save(ref.state_dict(), tmp_path / "backbone.pth")
    rng = np.random.default_rng(0)
    from facemargin.data import write_record

    write_record(tmp_path / "rec", rng.integers(0, 256, (8, 112, 112, 3), dtype=np.uint8), np.arange(8) % 2)
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "rec"), "--set", "data.name=recordio", "--set",
                 "model.name=mobilefacenet", "--set", "model.embedding_size=16", "--set", "train.batch_size=4",
                 "--set", "train.device=cpu", "--set", "train.progress=false", "--set", "optim.lr=0.0",
                 "--set", "optim.momentum=0.0", "--set", "optim.weight_decay=0.0",
                 "--init-from", str(tmp_path / "backbone.pth"), "--steps", "1", "--out", str(out)]) == 0
    state = load_checkpoint(out / "checkpoint.pt")["model"]
    # lr 0: the weights are the insightface file's, renamed (BN running stats move in train mode)
    for ours, theirs in insightface_mbf_keys().items():
        if "running" not in ours and "num_batches" not in ours:
            assert torch.equal(state[ours], ref.state_dict()[theirs]), ours
