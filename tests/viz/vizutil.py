import io
import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_size=(200, 200), max_size=(5000, 5000)):
    """The file is a non-empty PNG that Pillow decodes, with a plausible pixel size."""
    from PIL import Image

    data = open(path, "rb").read()
    assert len(data) > 1000, f"{path} is suspiciously small ({len(data)} bytes)"
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        w, h = im.size
        assert im.format == "PNG"
        # a figure is not a single flat colour
        extrema = im.convert("L").getextrema()
        assert extrema[0] < extrema[1]
    assert min_size[0] <= w <= max_size[0] and min_size[1] <= h <= max_size[1], (w, h)
    return w, h


def points_at(angles_deg, norms=None):
    a = np.radians(np.asarray(angles_deg, dtype=np.float64))
    r = np.ones_like(a) if norms is None else np.asarray(norms, dtype=np.float64)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def clustered(n_per_class=40, classes=4, dim=2, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * 4
    x = np.repeat(centers, n_per_class, axis=0) + rng.normal(size=(classes * n_per_class, dim))
    y = np.repeat(np.arange(classes), n_per_class)
    return x, y
