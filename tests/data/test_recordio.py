"""RecordIO: our writer checked against a byte-level parser written here from the dmlc/mxnet layout,
read back with the library reader, im2rec files without header, multi-part frames, errors, workers."""
import io
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from facemargin.data.recordio import (RecordIO, pack_payload, read_frame, rebuild_index, write_frame,
                                      write_record)

MAGIC = 0xCED7230A


# ---------------------------------------------------------------- independent byte-level helpers
def parse_frames(raw: bytes):
    """Split a .rec into (offset, cflag, data) frames straight from the byte layout."""
    pos, out = 0, []
    while pos < len(raw):
        magic, lrec = struct.unpack("<II", raw[pos:pos + 8])
        assert magic == MAGIC, f"bad magic at {pos}"
        cflag, n = lrec >> 29, lrec & ((1 << 29) - 1)
        data = raw[pos + 8:pos + 8 + n]
        assert len(data) == n
        pad = (4 - n % 4) % 4
        assert raw[pos + 8 + n:pos + 8 + n + pad] == b"\0" * pad
        out.append((pos, cflag, data))
        pos += 8 + n + pad
    return out


def parse_payload(p: bytes):
    flag, label, id_, id2 = struct.unpack("<IfQQ", p[:24])
    labels = struct.unpack(f"<{flag}f", p[24:24 + 4 * flag]) if flag else None
    return flag, label, labels, id_, id2, p[24 + 4 * flag:]


def raw_record(payload: bytes) -> bytes:
    """Encode one single-frame record by hand."""
    pad = (4 - len(payload) % 4) % 4
    return struct.pack("<II", MAGIC, len(payload)) + payload + b"\0" * pad


def pil_decode(b: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))


def jpeg(img, q=95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=q)
    return buf.getvalue()


def smooth_images(n, h=24, w=20, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    imgs = []
    for _ in range(n):
        c = rng.uniform(40, 200, size=3)
        g = rng.uniform(-2, 2, size=(3, 2))
        img = np.stack([c[k] + g[k, 0] * yy + g[k, 1] * xx for k in range(3)], -1)
        imgs.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(imgs)


LABELS = np.array([2, 0, 1, 0, 2, 2, 1])


@pytest.fixture()
def rec_set(tmp_path):
    imgs = smooth_images(len(LABELS))
    order = write_record(tmp_path, imgs, LABELS)
    return tmp_path, imgs, order


# ---------------------------------------------------------------- writer vs independent parser
def test_writer_bytes_follow_insightface_layout(rec_set):
    root, imgs, order = rec_set
    assert order.tolist() == np.argsort(LABELS, kind="stable").tolist()
    frames = parse_frames((root / "train.rec").read_bytes())
    n, c = len(LABELS), 3
    assert len(frames) == 1 + n + c and all(f[1] == 0 for f in frames)
    # idx lines: key \t byte offset of each record
    lines = (root / "train.idx").read_text().splitlines()
    assert lines == [f"{k}\t{frames[k][0]}" for k in range(len(frames))]
    assert (root / "property").read_text().strip() == "3,24,20"
    # header record 0: flag 2, labels (first identity key, end of identity keys), no image
    flag, _, labels, id_, _, rest = parse_payload(frames[0][2])
    assert (flag, labels, id_, rest) == (2, (n + 1.0, n + 1.0 + c), 0, b"")
    # image records: scalar label, id = key, JPEG of the image
    for k in range(1, n + 1):
        flag, label, _, id_, id2, rest = parse_payload(frames[k][2])
        j = order[k - 1]
        assert (flag, label, id_, id2) == (0, float(LABELS[j]), k, 0)
        assert rest[:2] == b"\xff\xd8"
        assert np.abs(pil_decode(rest).astype(int) - imgs[j]).mean() < 3
    # identity records: (start, end) key range of each class's images
    sorted_labels = LABELS[order]
    for cls in range(c):
        flag, _, labels, id_, _, rest = parse_payload(frames[n + 1 + cls][2])
        keys = [k + 1 for k in range(n) if sorted_labels[k] == cls]
        assert (flag, labels, rest) == (2, (float(keys[0]), float(keys[-1] + 1)), b"")


def test_reader_round_trip(rec_set):
    root, imgs, order = rec_set
    ds = RecordIO(root)
    frames = parse_frames((root / "train.rec").read_bytes())
    assert len(ds) == len(LABELS) and ds.num_classes == 3
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == LABELS[order].tolist()
    assert ds.header_range == (0, 8) and ds.identity_range == (8, 11)
    assert [ds.identity(c) for c in range(3)] == [(1, 3), (3, 5), (5, 8)]
    for i in range(len(ds)):
        img = ds.image(i)
        assert img.dtype == np.uint8 and img.shape == (24, 20, 3)
        np.testing.assert_array_equal(img, pil_decode(parse_payload(frames[i + 1][2])[5]))
        x, y = ds[i]
        assert x.dtype == torch.float32 and x.shape == (3, 24, 20) and y == LABELS[order[i]]
        torch.testing.assert_close(x, (torch.from_numpy(img).permute(2, 0, 1).float() / 255 - 0.5) / 0.5)
    # negative index and transform
    ds2 = RecordIO(root / "train.rec", transform=lambda im: im.shape)
    assert ds2[-1] == ((24, 20, 3), LABELS[order[-1]])
    with pytest.raises(IndexError):
        ds.image(len(ds))


def test_im2rec_style_file_without_header(tmp_path):
    """Hand-made im2rec file: keys in arbitrary order, scalar and multi-float labels, record 0 an image."""
    imgs = smooth_images(4, 16, 16, seed=1)
    specs = [  # (key, header flag, label(s))
        (0, 2, (3.0, 7.5)),  # flag>0 in key 0 but with an image: not an insightface header
        (5, 0, 1.0),
        (3, 0, 0.0),
        (9, 1, (2.0,)),
    ]
    raw, idx = b"", []
    for (key, flag, lab), img in zip(specs, imgs):
        if flag:
            payload = struct.pack("<IfQQ", flag, 0.0, key, 0) + struct.pack(f"<{flag}f", *lab) + jpeg(img)
        else:
            payload = struct.pack("<IfQQ", 0, lab, key, 0) + jpeg(img)
        idx.append(f"{key}\t{len(raw)}")
        raw += raw_record(payload)
    (tmp_path / "data.rec").write_bytes(raw)
    (tmp_path / "data.idx").write_text("\n".join(idx) + "\n")
    ds = RecordIO(tmp_path / "data.rec")
    assert ds.header_range is None and len(ds) == 4
    assert ds.keys.tolist() == [0, 5, 3, 9]
    assert ds.labels.tolist() == [3, 1, 0, 2] and ds.num_classes == 4
    for i in range(4):
        assert np.abs(ds.image(i).astype(int) - imgs[i]).mean() < 3


def test_writer_without_header_is_im2rec_layout(tmp_path):
    imgs = smooth_images(5, 8, 8)
    order = write_record(tmp_path, imgs, [1, 0, 1, 2, 0], with_header=False)
    assert order.tolist() == [0, 1, 2, 3, 4]
    frames = parse_frames((tmp_path / "train.rec").read_bytes())
    assert [parse_payload(f[2])[:2] + parse_payload(f[2])[3:4] for f in frames] == \
        [(0, 1.0, 0), (0, 0.0, 1), (0, 1.0, 2), (0, 2.0, 3), (0, 0.0, 4)]
    ds = RecordIO(tmp_path)
    assert ds.labels.tolist() == [1, 0, 1, 2, 0] and ds.num_classes == 3 and ds.header_range is None


def test_multipart_frames_when_payload_holds_magic(tmp_path):
    m = struct.pack("<I", MAGIC)
    payload = b"abcd" + m + b"efghijkl" + m + b"xyz" + m[:2] + b"\x00" + m  # last magic unaligned
    buf = io.BytesIO()
    size = write_frame(buf, payload)
    raw = buf.getvalue()
    assert size == len(raw) and len(raw) % 4 == 0
    frames = parse_frames(raw)
    assert [(f[1], f[2]) for f in frames] == [(1, b"abcd"), (2, b"efghijkl"), (3, b"xyz" + m[:2] + b"\x00" + m)]
    assert read_frame(raw, 0) == (payload, len(raw))
    # a JPEG whose record payload holds the magic at an aligned position reads back through RecordIO
    img = smooth_images(1, 16, 16)[0]
    data = jpeg(img)
    data += b"\0" * ((-(24 + len(data))) % 4) + m + b"tail"  # bytes after the JPEG end are ignored
    with open(tmp_path / "train.rec", "wb") as f:
        write_frame(f, pack_payload(4.0, data, id=0))
    (tmp_path / "train.idx").write_text("0\t0\n")
    assert [f[1] for f in parse_frames((tmp_path / "train.rec").read_bytes())] == [1, 3]
    ds = RecordIO(tmp_path)
    assert ds.labels.tolist() == [4] and ds.record(0)[1] == data
    assert np.abs(ds.image(0).astype(int) - img).mean() < 3


# ---------------------------------------------------------------- errors
def test_corrupted_magic_names_record_and_file(rec_set):
    root, _, _ = rec_set
    rec = root / "train.rec"
    raw = bytearray(rec.read_bytes())
    off = parse_frames(bytes(raw))[3][0]  # key 3 = image index 2
    raw[off:off + 4] = b"\0\0\0\0"
    rec.write_bytes(bytes(raw))
    ds = RecordIO(root)
    ds.image(1)  # neighbours still fine
    with pytest.raises(ValueError, match=r"record 2 \(key 3\)") as e:
        ds.image(2)
    assert str(rec) in str(e.value) and "magic" in str(e.value)


def test_truncated_file_names_record(rec_set):
    root, _, _ = rec_set
    rec = root / "train.rec"
    frames = parse_frames(rec.read_bytes())
    last_img = frames[len(LABELS)]
    cut = last_img[0] + 8 + len(last_img[2]) // 2
    rec.write_bytes(rec.read_bytes()[:cut])  # the index still lists the records past the cut
    ds = RecordIO(root)
    ds.image(5)
    with pytest.raises(ValueError, match=r"record 6 \(key 7\).*past the end.*truncated") as e:
        ds.image(6)
    assert str(rec) in str(e.value)
    with pytest.raises(ValueError, match=r"record 6"):
        ds.labels


def test_undecodable_image_names_record(rec_set):
    root, _, _ = rec_set
    rec = root / "train.rec"
    raw = bytearray(rec.read_bytes())
    off, _, data = parse_frames(bytes(raw))[1]
    start = off + 8 + 24
    raw[start:off + 8 + len(data)] = b"\x13" * (len(data) - 24)  # same length, not an image
    rec.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"record 0 \(key 1\).*cannot decode"):
        RecordIO(root).image(0)


def test_missing_index_says_how_to_rebuild(rec_set):
    root, _, _ = rec_set
    original = (root / "train.idx").read_text()
    (root / "train.idx").unlink()
    with pytest.raises(FileNotFoundError, match="rebuild_index") as e:
        RecordIO(root)
    assert "train.idx" in str(e.value)
    path = rebuild_index(root / "train.rec")
    assert path == root / "train.idx" and path.read_text() == original
    assert RecordIO(root).labels.tolist() == sorted(LABELS.tolist())


def test_wrong_image_size_names_expected_size(rec_set):
    root, _, _ = rec_set
    (root / "property").write_text("3,112,112\n")
    with pytest.raises(ValueError, match=r"expected size is 112x112"):
        RecordIO(root).image(0)
    with pytest.raises(ValueError, match=r"expected size is 30x30"):
        RecordIO(root, image_size=30)[0]


def test_label_beyond_num_classes_and_bad_writer_input(rec_set, tmp_path):
    root, imgs, _ = rec_set
    (root / "property").write_text("2,24,20\n")
    with pytest.raises(ValueError, match="num_classes 2"):
        RecordIO(root).labels
    with pytest.raises(ValueError, match="expected size is 24x20"):
        write_record(tmp_path / "x", [imgs[0], imgs[1][:10]], [0, 1])
    with pytest.raises(ValueError, match="labels"):
        write_record(tmp_path / "y", imgs[:2], [0, 1, 2])
    assert not (tmp_path / "x" / "train.rec").exists()  # atomic: nothing half-written


# ---------------------------------------------------------------- workers
def test_dataloader_with_two_workers_and_pickle(rec_set):
    root, _, order = rec_set
    ds = RecordIO(root)
    ds.image(0)  # open the map in the parent first: workers must reopen their own
    direct = torch.stack([ds[i][0] for i in range(len(ds))])
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    xs, ys = zip(*loader)
    torch.testing.assert_close(torch.cat(xs), direct)
    assert torch.cat(ys).tolist() == LABELS[order].tolist()
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone.image(3), ds.image(3))


def test_hand_made_insightface_file_with_float_array_labels(tmp_path):
    """insightface layout written by hand; image labels stored as a float array (flag=2)."""
    imgs = smooth_images(3, 12, 12, seed=3)
    labels = [0, 1, 1]
    payloads = [struct.pack("<IfQQ", 2, 0.0, 0, 0) + struct.pack("<2f", 4.0, 6.0)]
    for k, (img, lab) in enumerate(zip(imgs, labels), 1):
        payloads.append(struct.pack("<IfQQ", 2, 0.0, k, 0) + struct.pack("<2f", lab, 0.5) + jpeg(img))
    for a, b in [(1, 2), (2, 4)]:
        payloads.append(struct.pack("<IfQQ", 2, 0.0, 0, 0) + struct.pack("<2f", a, b))
    raw, idx = b"", ""
    for k, p in enumerate(payloads):
        idx += f"{k}\t{len(raw)}\n"
        raw += raw_record(p)
    (tmp_path / "train.rec").write_bytes(raw)
    (tmp_path / "train.idx").write_text(idx)
    (tmp_path / "property").write_text("2,12,12")
    ds = RecordIO(tmp_path)
    assert len(ds) == 3 and ds.labels.tolist() == labels and ds.num_classes == 2
    assert ds.identity(1) == (2, 4) and ds[2][1] == 1
    assert np.abs(ds.image(2).astype(int) - imgs[2]).mean() < 3
