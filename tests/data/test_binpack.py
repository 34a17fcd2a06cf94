""".bin verification packs: round trips, insightface variants, and hostile pickles that must not run."""
import io
import os
import pickle
import pickletools

import numpy as np
import pytest
from PIL import Image

from facemargin.data.binpack import load_bin, read_bin_raw, safe_load, write_bin


def images(n, h=16, w=12, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def png(img) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_round_trip_png_exact_and_file_layout(tmp_path):
    imgs, issame = images(6), [True, False, True]
    path = tmp_path / "pack.bin"
    write_bin(path, imgs, issame, format="png")
    raw = path.read_bytes()
    assert raw[:2] == b"\x80\x04"  # pickle protocol 4
    bins, same = pickle.loads(raw)  # our own file: a plain (list of bytes, list of bool)
    assert isinstance(bins, list) and all(isinstance(b, bytes) for b in bins) and len(bins) == 6
    assert same == issame and all(type(v) is bool for v in same)
    for b, img in zip(bins, imgs):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(b))), img)
    got, got_same = load_bin(path)
    assert got.dtype == np.uint8 and got.shape == (6, 16, 12, 3)
    np.testing.assert_array_equal(got, imgs)
    assert got_same.dtype == bool and got_same.tolist() == issame


def test_round_trip_jpeg_and_resize(tmp_path):
    yy, xx = np.mgrid[0:32, 0:32]
    smooth = np.stack([np.stack([yy * 4 + k, xx * 4, yy + xx], -1) for k in range(4)]).astype(np.uint8)
    write_bin(tmp_path / "p.bin", smooth, [False, True])
    got, same = load_bin(tmp_path / "p.bin")
    assert np.abs(got.astype(int) - smooth).mean() < 3 and same.tolist() == [False, True]
    small, _ = load_bin(tmp_path / "p.bin", image_size=(8, 16))
    assert small.shape == (4, 8, 16, 3)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_insightface_variants_numpy_bins_and_bools(tmp_path, protocol):
    """Packs whose images are uint8 arrays of the encoded bytes and whose flags are NumPy bools."""
    imgs = images(4, seed=protocol)
    bins = [np.frombuffer(png(im), dtype=np.uint8) for im in imgs]
    same = [np.bool_(True), np.bool_(False)]
    path = tmp_path / "if.bin"
    path.write_bytes(pickle.dumps((bins, same), protocol=protocol))
    got, got_same = load_bin(path)
    np.testing.assert_array_equal(got, imgs)
    assert got_same.tolist() == [True, False]
    # plain bytes at protocol 2 go through _codecs.encode, which we admit for latin-1 only
    path.write_bytes(pickle.dumps(([png(im) for im in imgs], [True, False]), protocol=protocol))
    np.testing.assert_array_equal(load_bin(path)[0], imgs)


class _System:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _Open:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    payload = pickle.dumps(([b"x", _System(f"touch {marker}")], [True]), protocol=4)
    assert b"system" in payload  # the pickle really names os.system
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=r"refusing to unpickle .*\(global (posix|os|nt)\.system\)") as e:
        load_bin(path)
    assert str(path) in str(e.value)
    assert not marker.exists()
    # sanity: an ordinary unpickler would have run it (proves the payload is live)
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()

    path.write_bytes(pickle.dumps((_Open(str(marker)), []), protocol=2))
    with pytest.raises(ValueError, match=r"global (builtins|io)\.open"):
        load_bin(path)
    assert not marker.exists()


def test_refuses_codecs_tricks_object_arrays_and_other_types(tmp_path):
    # _codecs.encode is admitted only as (str, 'latin1'): another codec is refused
    ops = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x06\x00\x00\x00base64\x86R."
    pickletools.dis(ops, out=io.StringIO())  # well-formed
    with pytest.raises(ValueError, match="latin1"):
        safe_load(ops, "ops")
    obj_arr = np.array([b"a", 1], dtype=object)
    with pytest.raises(ValueError, match="dtype object"):
        safe_load(pickle.dumps(([obj_arr], []), protocol=4), "o")
    with pytest.raises(ValueError, match="type dict"):
        safe_load(pickle.dumps(({"a": b"b"}, []), protocol=4), "d")
    with pytest.raises(ValueError, match="persistent id"):
        safe_load(b"\x80\x04P0\n.", "p")


def test_structure_validation(tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(([b"a", b"b", b"c"], [True]), protocol=4))
    with pytest.raises(ValueError, match="3 images for 1 pairs"):
        load_bin(path)
    path.write_bytes(pickle.dumps([b"a", b"b", b"c"], protocol=4))
    with pytest.raises(ValueError, match="pair"):
        load_bin(path)
    path.write_bytes(pickle.dumps(([b"a", b"b"], [2]), protocol=4))
    with pytest.raises(ValueError, match="booleans"):
        load_bin(path)
    path.write_bytes(pickle.dumps(([b"not an image", b"b"], [True]), protocol=4))
    with pytest.raises(ValueError, match=r"image 0 of .*bad.bin.*cannot decode"):
        load_bin(path)
    path.write_bytes(pickle.dumps(([b"a", b"b"], [True]), protocol=4)[:-5])
    with pytest.raises(ValueError, match="cannot read pickle"):
        load_bin(path)
    with pytest.raises(FileNotFoundError):
        load_bin(tmp_path / "missing.bin")
    with pytest.raises(ValueError, match="2 per pair"):
        write_bin(tmp_path / "w.bin", images(3), [True])
    assert len(read_bin_raw(_write(tmp_path, images(2)))[0]) == 2


def _write(tmp_path, imgs):
    p = tmp_path / "ok.bin"
    write_bin(p, imgs, [True])
    return p
