"""ImageFolder on tiny PNG/BMP folders written here, and ArrayDataset normalisation."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from facemargin.data.arrays import ArrayDataset, images_to_tensor
from facemargin.data.folder import ImageFolder


def norm(v):
    return (np.asarray(v, dtype=np.float64) / 255 - 0.5) / 0.5


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "faces"
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 255
    rgb[1, 2] = (10, 20, 30)
    (root / "zed").mkdir(parents=True)
    (root / "amy").mkdir()
    Image.fromarray(rgb).save(root / "zed" / "b.png")
    Image.fromarray(np.full((4, 6), 51, np.uint8)).save(root / "zed" / "a.PNG")
    Image.fromarray(np.full((5, 5, 3), 200, np.uint8)).save(root / "amy" / "x.bmp")
    (root / "amy" / "notes.txt").write_text("not an image")
    (root / "amy" / ".hidden.png").write_bytes(b"junk")
    return root, rgb


def test_image_folder_layout_and_values(folder):
    root, rgb = folder
    ds = ImageFolder(root)
    assert ds.classes == ["amy", "zed"] and ds.num_classes == 2
    assert [p.name for p in ds.paths] == ["x.bmp", "a.PNG", "b.png"]
    assert ds.labels.tolist() == [0, 1, 1]
    x, y = ds[2]
    assert y == 1 and x.shape == (3, 4, 6) and x.dtype == torch.float32
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), norm(rgb), atol=1e-6)
    x, _ = ds[1]  # greyscale converted to RGB: 51 -> (0.2 - 0.5)/0.5 = -0.6
    np.testing.assert_allclose(x.numpy(), -0.6, atol=1e-6)
    assert ds.image(0).shape == (5, 5, 3) and ds.image(0).dtype == np.uint8


def test_image_folder_resize_and_loader(folder):
    root, _ = folder
    ds = ImageFolder(root, size=(8, 10), transform=lambda t: t * 2)
    xb, yb = next(iter(DataLoader(ds, batch_size=3)))
    assert xb.shape == (3, 3, 8, 10) and yb.tolist() == [0, 1, 1]
    np.testing.assert_allclose(xb[0].numpy(), 2 * norm(200), atol=1e-6)  # flat image stays flat


def test_image_folder_errors(tmp_path, folder):
    root, _ = folder
    with pytest.raises(FileNotFoundError, match="not found"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "img.png").write_bytes(b"")
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolder(tmp_path / "flat")
    (root / "empty_class").mkdir()
    with pytest.raises(ValueError, match="empty_class contains no images"):
        ImageFolder(root)
    (root / "empty_class" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = ImageFolder(root)
    i = [p.name for p in ds.paths].index("broken.png")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        ds[i]
    with pytest.raises(ValueError, match="size"):
        ImageFolder(root, size=(0, 3))


def test_array_dataset_normalisation():
    imgs = np.array([[[0, 255], [51, 128]]], dtype=np.uint8)  # (1, 2, 2) grey
    ds = ArrayDataset(imgs, [3])
    x, y = ds[0]
    assert y == 3 and x.shape == (1, 2, 2) and x.dtype == torch.float32
    np.testing.assert_allclose(x[0].numpy(), [[-1.0, 1.0], [-0.6, 1 / 255]], atol=1e-6)
    rgb = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(1, 2, 2, 3)
    x, _ = ArrayDataset(rgb, np.array([0]))[0]
    assert x.shape == (3, 2, 2)
    np.testing.assert_allclose(x[2].numpy(), norm(rgb[0, :, :, 2]), atol=1e-6)  # channel order
    stacked = torch.stack([ArrayDataset(rgb, [0])[0][0]])
    np.testing.assert_allclose(images_to_tensor(rgb).numpy(), stacked.numpy())


def test_array_dataset_augment_flips():
    img = np.arange(6, dtype=np.uint8).reshape(1, 2, 3) * 40
    ds = ArrayDataset(img, [0], augment=True)
    plain = torch.tensor(norm(img[0]), dtype=torch.float32)
    mirror = torch.tensor(norm(img[0][:, ::-1].copy()), dtype=torch.float32)
    torch.manual_seed(0)
    seen = {"plain": 0, "mirror": 0}
    for _ in range(40):
        x = ds[0][0][0]
        if torch.allclose(x, plain):
            seen["plain"] += 1
        else:
            assert torch.allclose(x, mirror)
            seen["mirror"] += 1
    assert seen["plain"] > 5 and seen["mirror"] > 5
    torch.manual_seed(0)
    first = [ds[0][0] for _ in range(5)]
    torch.manual_seed(0)
    again = [ds[0][0] for _ in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_array_dataset_errors():
    with pytest.raises(ValueError, match="uint8"):
        ArrayDataset(np.zeros((2, 3, 3), np.float32), [0, 1])
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        ArrayDataset(np.zeros((2, 3, 3), np.uint8), [0, 1, 2])
    with pytest.raises(ValueError, match="shape"):
        ArrayDataset(np.zeros((3, 3), np.uint8), [0, 1, 2])
    with pytest.raises(IndexError):
        ArrayDataset(np.zeros((2, 3, 3), np.uint8), [0, 1])[2]


def test_grey_items_for_one_channel_models(tmp_path):
    """``channels=1`` gives the BT.601 grey image (rounded to uint8, then normalised)."""
    from PIL import Image

    from facemargin.data.folder import ImageFolder

    (tmp_path / "a").mkdir()
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    Image.fromarray(rgb).save(tmp_path / "a" / "x.png")
    x, label = ImageFolder(tmp_path, channels=1)[0]
    grey = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)  # 124
    assert tuple(x.shape) == (1, 4, 5) and label == 0
    np.testing.assert_allclose(x.numpy(), (grey / 255 - 0.5) / 0.5, rtol=1e-6)
    assert tuple(ImageFolder(tmp_path)[0][0].shape) == (3, 4, 5)
    with pytest.raises(ValueError, match="channels must be 1"):
        ImageFolder(tmp_path, channels=2)
