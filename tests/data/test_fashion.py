"""Fashion-MNIST IDX reader: round trips, corrupt files, search order, localhost download."""
import functools
import gzip
import http.server
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from facemargin.data import fashion
from facemargin.data.fashion import load_fashion_mnist, read_idx, write_idx


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    """IDX bytes written here from the format description, independently of write_idx."""
    header = bytes([0, 0, type_code, array.ndim])
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    big = array.astype(array.dtype.newbyteorder(">"))
    return header + big.tobytes()


def parse_idx(raw: bytes) -> np.ndarray:
    """Independent IDX parser used to check write_idx."""
    assert raw[0] == 0 and raw[1] == 0
    code, ndim = raw[2], raw[3]
    dims = [struct.unpack(">I", raw[4 + 4 * i : 8 + 4 * i])[0] for i in range(ndim)]
    dt = {8: ">u1", 9: ">i1", 11: ">i2", 12: ">i4", 13: ">f4", 14: ">f8"}[code]
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=dt).reshape(dims)


def make_split(folder: Path, prefix: str, n: int, gz: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for kind, arr, name in (("images", images, "idx3"), ("labels", labels, "idx1")):
        data = idx_bytes(arr, 0x08)
        path = folder / (f"{prefix}-{kind}-{name}-ubyte" + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data) if gz else data)
    return images, labels


@pytest.fixture
def no_system_data(monkeypatch, tmp_path):
    """Hide the machine's own Fashion-MNIST and FACEMARGIN_DATA from the search order."""
    monkeypatch.delenv("FACEMARGIN_DATA", raising=False)
    monkeypatch.setattr(fashion, "SYSTEM_DIR", tmp_path / "no-system-dir")
    return tmp_path


@pytest.mark.parametrize("gz", [False, True])
def test_round_trip_plain_and_gzip(tmp_path, gz):
    tr_x, tr_y = make_split(tmp_path, "train", 5, gz, seed=1)
    te_x, te_y = make_split(tmp_path, "t10k", 3, gz, seed=2)
    x, y = load_fashion_mnist("train", root=tmp_path)
    assert x.dtype == np.uint8 and x.shape == (5, 28, 28)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(x, tr_x)
    np.testing.assert_array_equal(y, tr_y)
    x, y = load_fashion_mnist("test", root=tmp_path)
    np.testing.assert_array_equal(x, te_x)
    np.testing.assert_array_equal(y, te_y)


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_write_idx_checked_by_independent_parser(tmp_path, dtype):
    rng = np.random.default_rng(0)
    a = (rng.normal(size=(3, 4, 2)) * 50).astype(dtype)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, a)
        raw = (tmp_path / name).read_bytes()
        if name.endswith(".gz"):
            raw = gzip.decompress(raw)
        np.testing.assert_array_equal(parse_idx(raw), a)
        back = read_idx(tmp_path / name)
        assert back.dtype == np.dtype(dtype) and back.dtype.isnative
        np.testing.assert_array_equal(back, a)


def test_corrupt_files_raise_naming_file(tmp_path):
    make_split(tmp_path, "train", 4, gz=False)
    img = tmp_path / "train-images-idx3-ubyte"
    good = img.read_bytes()
    img.write_bytes(good[:-10])  # truncated data
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*truncated.*expected 3136"):
        load_fashion_mnist("train", root=tmp_path)
    img.write_bytes(good + b"xx")
    with pytest.raises(ValueError, match="trailing bytes"):
        load_fashion_mnist("train", root=tmp_path)
    img.write_bytes(good[:9])  # header cut inside the dimensions
    with pytest.raises(ValueError, match="truncated IDX header"):
        load_fashion_mnist("train", root=tmp_path)
    img.write_bytes(b"\x89PNG" + good[4:])
    with pytest.raises(ValueError, match="not an IDX file"):
        load_fashion_mnist("train", root=tmp_path)
    # a labels file where images are expected: wrong magic
    img.write_bytes((tmp_path / "train-labels-idx1-ubyte").read_bytes())
    with pytest.raises(ValueError, match="magic 0x00000801, expected 0x00000803"):
        load_fashion_mnist("train", root=tmp_path)
    # gzip cut short
    img.unlink()
    gz = tmp_path / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(good)[:-20])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz.*gzip"):
        load_fashion_mnist("train", root=tmp_path)


def test_count_mismatch(tmp_path):
    make_split(tmp_path, "train", 4, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3, np.uint8), 0x08))
    with pytest.raises(ValueError, match="4 images but .* 3 labels"):
        load_fashion_mnist("train", root=tmp_path)


def test_search_order_and_missing(monkeypatch, no_system_data):
    tmp = no_system_data
    env_x, _ = make_split(tmp / "envdir" / "fashion-mnist", "train", 2, gz=True, seed=5)
    monkeypatch.setenv("FACEMARGIN_DATA", str(tmp / "envdir"))
    x, _ = load_fashion_mnist("train", cache_dir=tmp / "cache")
    np.testing.assert_array_equal(x, env_x)
    # an explicit root is the only place searched
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist("train", root=tmp / "empty")
    monkeypatch.delenv("FACEMARGIN_DATA")
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_fashion_mnist("train", cache_dir=tmp / "cache")
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation", root=tmp)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def local_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_Quiet, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_from_localhost(no_system_data, local_server):
    served, url = local_server
    te_x, te_y = make_split(served, "t10k", 6, gz=True, seed=3)
    cache = no_system_data / "cache"
    x, y = load_fashion_mnist("test", download=True, base_url=url, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(x, te_x)
    np.testing.assert_array_equal(y, te_y)
    assert sorted(p.name for p in cache.iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    # now found in the cache without downloading (server content changed, result not)
    make_split(served, "t10k", 6, gz=True, seed=4)
    x2, _ = load_fashion_mnist("test", cache_dir=cache)
    np.testing.assert_array_equal(x2, te_x)
    # with an explicit root, the download goes there
    root = no_system_data / "myroot"
    x3, _ = load_fashion_mnist("test", root=root, download=True, base_url=url, progress=False)
    assert (root / "t10k-labels-idx1-ubyte.gz").is_file() and x3.shape == (6, 28, 28)


def test_download_failures(no_system_data, local_server):
    served, url = local_server
    cache = no_system_data / "cache"
    with pytest.raises(OSError, match="cannot download .*train-images-idx3-ubyte.gz"):
        load_fashion_mnist("train", download=True, base_url=url, cache_dir=cache, progress=False)
    (served / "train-images-idx3-ubyte.gz").write_bytes(b"not an idx file at all")
    with pytest.raises(ValueError, match="not an IDX file"):
        load_fashion_mnist("train", download=True, base_url=url, cache_dir=cache, progress=False)
    assert not (cache / "train-images-idx3-ubyte.gz").exists()  # bad download removed
    assert not list(cache.glob("*.tmp")) and not list(cache.glob(".*"))


@pytest.mark.skipif(not fashion.SYSTEM_DIR.is_dir(), reason="Fashion-MNIST not installed")
def test_system_copy_if_installed():
    x, y = load_fashion_mnist("test", root=fashion.SYSTEM_DIR)
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)
    assert np.bincount(y).tolist() == [1000] * 10
