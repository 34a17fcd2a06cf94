"""The detector tests need the MTCNN weights (facemargin[detect]) and scikit-image's astronaut photo."""
import numpy as np
import pytest


@pytest.fixture(scope="session")
def detector():
    from facemargin.detect import MTCNN

    return MTCNN()


@pytest.fixture(scope="session")
def astronaut():
    """NASA's portrait of Eileen Collins (public domain), 512x512 RGB, shipped with scikit-image."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def astronaut_points():
    """Read by eye from the photo at 4x zoom: eye pupils, nose tip, mouth corners (image x, y)."""
    return np.array([[202.5, 101.0], [246.0, 103.0], [224.0, 126.0], [203.0, 141.0], [244.0, 142.0]])
