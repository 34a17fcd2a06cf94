"""Weight files: pinned digests, restricted unpickling, Keras-to-PyTorch layouts."""
import pickle

import numpy as np
import pytest
import torch

from facemargin.detect import nets, weights


def test_pinned_digests_match_installed_files():
    folder = weights.weights_dir()
    for name, digest in weights.SHA256.items():
        assert weights.sha256_of(folder / f"{name}.lz4") == digest


def test_altered_file_is_refused_before_unpickling(tmp_path):
    src = weights.weights_dir() / "pnet.lz4"
    bad = tmp_path / "pnet.lz4"
    data = bytearray(src.read_bytes())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256 .* does not match the pinned"):
        weights.mtcnn_weights("pnet", tmp_path)


def _joblib_like(obj) -> bytes:
    import lz4.frame

    return lz4.frame.compress(pickle.dumps(obj, protocol=4))


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_restricted_unpickler_refuses_code(tmp_path, capsys):
    path = tmp_path / "evil.lz4"
    path.write_bytes(_joblib_like([Evil()]))
    with pytest.raises(ValueError, match=r"refusing to unpickle builtins\.print"):
        weights.load_weight_arrays(path)
    assert "pwned" not in capsys.readouterr().out


def test_joblib_arrays_round_trip(tmp_path):
    joblib = pytest.importorskip("joblib")
    arrays = [np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.asfortranarray(np.eye(3, dtype=np.float32)),
              np.array([1.5, -2.0], dtype=np.float32)]
    path = tmp_path / "w.lz4"
    joblib.dump(arrays, path, compress="lz4")
    got = weights.load_weight_arrays(path)
    assert len(got) == 3
    for a, b in zip(arrays, got):
        np.testing.assert_array_equal(a, b)


def test_keras_layouts_are_transposed():
    net = nets.RNet()
    rng = np.random.default_rng(0)
    shapes = [(3, 3, 3, 28), (28,), (1, 1, 28), (3, 3, 28, 48), (48,), (1, 1, 48), (2, 2, 48, 64), (64,), (1, 1, 64),
              (576, 128), (128,), (128,), (128, 4), (4,), (128, 2), (2,)]
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    nets.from_keras(net, arrays)
    np.testing.assert_array_equal(net.conv1.weight[5, 2, 0, 1].item(), arrays[0][0, 1, 2, 5])
    np.testing.assert_array_equal(net.fc4.weight[7, 100].item(), arrays[9][100, 7])
    np.testing.assert_array_equal(net.prelu3.weight.detach().numpy(), arrays[8].ravel())
    with pytest.raises(ValueError, match="RNet.conv2.weight has shape"):
        nets.from_keras(nets.RNet(), arrays[:3] + [arrays[3][:, :, :27]] + arrays[4:])


def test_same_pooling_matches_tensorflow_rule():
    # "same" pooling of a 5-wide row with kernel 3, stride 2: windows [0..1] (padded before), [1..3], [3..4]
    x = torch.tensor([[[[1.0, 5.0, 2.0, 7.0, 3.0]]]])
    out = nets.SamePool(3, 2)(x.expand(1, 1, 3, 5))
    assert out.shape[-1] == 3
    assert out[0, 0, 0].tolist() == [5.0, 7.0, 7.0]
    # even width 4, kernel 2: no padding at all
    assert nets.SamePool(2, 2)(torch.arange(4.0).view(1, 1, 1, 4)).flatten().tolist() == [1.0, 3.0]
    # odd width 5, kernel 2: one -inf column after, so the last window is [4] alone
    assert nets.SamePool(2, 2)(torch.arange(5.0).view(1, 1, 1, 5)).flatten().tolist() == [1.0, 3.0, 4.0]
