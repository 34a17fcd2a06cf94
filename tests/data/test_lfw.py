"""LFW folder + pairs.txt in both layouts."""
import numpy as np
import pytest
from PIL import Image

from facemargin.data.lfw import load_lfw, load_lfw_pairs, read_pairs_file

PEOPLE = {"Ann_Lee": 3, "Bo_Chen": 2, "Cy_Dorn": 2, "Di_Eve": 1}


def colour(name, n):
    """A distinct flat colour per image so that loaded images can be identified."""
    k = list(PEOPLE).index(name)
    return np.array([40 * k + 10, 30 * n, 100], dtype=np.uint8)


@pytest.fixture()
def lfw_root(tmp_path):
    root = tmp_path / "lfw"
    for name, count in PEOPLE.items():
        (root / name).mkdir(parents=True)
        for n in range(1, count + 1):
            img = np.broadcast_to(colour(name, n), (10, 8, 3)).copy()
            Image.fromarray(img).save(root / name / f"{name}_{n:04d}.png")
    return root


SAME = ["Ann_Lee\t1\t2", "Bo_Chen\t1\t2", "Cy_Dorn\t2\t1"]
DIFF = ["Ann_Lee\t3\tBo_Chen\t1", "Cy_Dorn\t1\tDi_Eve\t1", "Bo_Chen\t2\tAnn_Lee\t1"]


def test_fold_layout(lfw_root):
    # 2 folds of 3 same + 3 different pairs: the 10x300 layout in miniature
    lines = ["2\t3"] + SAME + DIFF + SAME[::-1] + DIFF[::-1]
    (lfw_root / "pairs.txt").write_text("\n".join(lines) + "\n")
    p1, p2, issame = load_lfw_pairs(lfw_root)
    assert issame.dtype == bool and issame.tolist() == [True] * 3 + [False] * 3 + [True] * 3 + [False] * 3
    assert p1[0] == lfw_root / "Ann_Lee" / "Ann_Lee_0001.png" and p2[0] == lfw_root / "Ann_Lee" / "Ann_Lee_0002.png"
    assert p1[4] == lfw_root / "Cy_Dorn" / "Cy_Dorn_0001.png" and p2[4] == lfw_root / "Di_Eve" / "Di_Eve_0001.png"
    _, header = read_pairs_file(lfw_root / "pairs.txt")
    assert header == (2, 3)
    images, same = load_lfw(lfw_root)
    assert images.shape == (24, 10, 8, 3) and same.tolist() == issame.tolist()
    np.testing.assert_array_equal(images[8, 0, 0], colour("Cy_Dorn", 1))  # pair 4, first image
    np.testing.assert_array_equal(images[9, 0, 0], colour("Di_Eve", 1))
    small, _ = load_lfw(lfw_root, image_size=4)
    assert small.shape == (24, 4, 4, 3)


def test_plain_layout_with_and_without_header(tmp_path, lfw_root):
    lines = ["Ann_Lee 1 3", "Ann_Lee 2 Di_Eve 1", "Bo_Chen 1 2"]
    pairs = tmp_path / "pairs.txt"  # in the parent of the image folder: found by default
    pairs.write_text("\n".join(lines) + "\n")
    p1, p2, issame = load_lfw_pairs(lfw_root)
    assert issame.tolist() == [True, False, True]
    assert [p.name for p in p2] == ["Ann_Lee_0003.png", "Di_Eve_0001.png", "Bo_Chen_0002.png"]
    other = tmp_path / "list.txt"
    other.write_text("3\n\n" + "\n".join(lines) + "\n")
    assert load_lfw_pairs(lfw_root, other)[2].tolist() == [True, False, True]


def test_missing_image_names_file_and_line(lfw_root):
    (lfw_root / "pairs.txt").write_text("Ann_Lee 1 2\nBo_Chen 1 7\n")
    with pytest.raises(FileNotFoundError, match=r"line 2: image .*Bo_Chen_0007\.jpg not found"):
        load_lfw_pairs(lfw_root)


def test_malformed_pairs(lfw_root):
    pairs = lfw_root / "pairs.txt"
    pairs.write_text("1\t2\nAnn_Lee 1 2\nBo_Chen 1 2\nAnn_Lee 1 Bo_Chen 1\n")
    with pytest.raises(ValueError, match="4 lines"):
        load_lfw_pairs(lfw_root)
    pairs.write_text("1\t1\nAnn_Lee 1 Bo_Chen 1\nAnn_Lee 1 2\n")
    with pytest.raises(ValueError, match="line 2.*same"):
        load_lfw_pairs(lfw_root)
    pairs.write_text("Ann_Lee 1\n")
    with pytest.raises(ValueError, match="line 1"):
        load_lfw_pairs(lfw_root)
    pairs.write_text("Ann_Lee x 2\n")
    with pytest.raises(ValueError, match="line 1"):
        load_lfw_pairs(lfw_root)
    with pytest.raises(FileNotFoundError):
        load_lfw_pairs(lfw_root / "nope")
