"""Alignment: recovery of known similarity transforms, least-squares optimality, templates, warping."""
import numpy as np
import pytest

from facemargin.align import (ARCFACE_112, SPHEREFACE_96x112, ec_mc_transform, estimate_transform, norm_crop,
                              output_shape, reference_points, templates, transform_points, umeyama,
                              warp_affine)


def similarity(angle_deg, scale, tx, ty):
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


def invert(m):
    a = np.linalg.inv(m[:, :2])
    return np.hstack([a, (-a @ m[:, 2])[:, None]])


CASES = [(0, 1, 0, 0), (17, 0.5, 12.3, -4.1), (-40, 2.7, -80, 33), (179, 0.31, 5, 5), (90, 1.3, 0, 100)]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("template,size", [("arcface", 112), ("arcface", 224), ("sphereface", 112), ("arcface", 96)])
def test_recovers_known_similarity(case, template, size):
    t = similarity(*case)  # image -> crop
    dst = reference_points(template, size)
    lm = transform_points(invert(t), dst)  # landmarks an image would have
    m = estimate_transform(lm, template=template, size=size)
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m, t, atol=1e-6)


def test_least_squares_matches_linear_solution_with_noise():
    # a 2-D similarity x' = a x - b y + tx, y' = b x + a y + ty is linear in (a, b, tx, ty)
    rng = np.random.default_rng(0)
    for _ in range(5):
        lm = transform_points(invert(similarity(rng.uniform(-60, 60), rng.uniform(0.3, 3), *rng.uniform(-50, 50, 2))),
                              ARCFACE_112) + rng.normal(0, 2.0, (5, 2))
        rows, rhs = [], []
        for (x, y), (u, v) in zip(lm, ARCFACE_112):
            rows += [[x, -y, 1, 0], [y, x, 0, 1]]
            rhs += [u, v]
        a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
        expected = np.array([[a, -b, tx], [b, a, ty]])
        np.testing.assert_allclose(estimate_transform(lm), expected, atol=1e-9)


def test_reflection_is_not_used():
    mirrored = ARCFACE_112 * np.array([-1, 1])  # a mirror image of the template
    m = umeyama(mirrored, ARCFACE_112)
    assert np.linalg.det(m[:, :2]) > 0  # a rotation, never a reflection
    r = m[:, :2] / np.sqrt(np.linalg.det(m[:, :2]))
    np.testing.assert_allclose(r @ r.T, np.eye(2), atol=1e-12)


def test_templates_and_shapes():
    assert set(templates()) == {"arcface", "sphereface", "ec_mc"}
    np.testing.assert_allclose(reference_points("arcface", 112)[0], [38.2946, 51.6963])
    np.testing.assert_allclose(reference_points("sphereface", 224), SPHEREFACE_96x112 * 2)
    assert output_shape("sphereface", 112) == (112, 96) and output_shape("arcface", 128) == (128, 128)
    with pytest.raises(ValueError, match="unknown alignment template"):
        estimate_transform(ARCFACE_112, template="nope")
    with pytest.raises(ValueError, match="five"):
        estimate_transform(ARCFACE_112[:4])
    with pytest.raises(ValueError, match="non-finite"):
        estimate_transform(np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match="coincide"):
        estimate_transform(np.ones((5, 2)))
    # flat x1, y1, ..., x5, y5 is accepted
    np.testing.assert_allclose(estimate_transform(ARCFACE_112.ravel()), estimate_transform(ARCFACE_112))


def test_ec_mc_hand_worked():
    lm = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], float)  # ec (50, 40), mc (50, 80)
    m = estimate_transform(lm, template="ec_mc")
    np.testing.assert_allclose(m, [[1, 0, 5.5], [0, 1, 8]], atol=1e-12)  # ec -> (55.5, 48), d = 40
    np.testing.assert_allclose(ec_mc_transform(lm, ec_y=36), [[1, 0, 5.5], [0, 1, -4]], atol=1e-12)
    np.testing.assert_allclose(ec_mc_transform(lm, size=224), [[2, 0, 11.5], [0, 2, 16]], atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_ec_mc_levels_eyes_and_sets_distance(case):
    lm0 = np.array([[30, 40], [70, 40], [52, 62], [38, 80], [66, 81]], float)
    lm = transform_points(similarity(*case), lm0)
    m = estimate_transform(lm, template="ec_mc", ec_y=44)
    out = transform_points(m, lm)
    assert abs(out[0, 1] - out[1, 1]) < 1e-9  # eyes level
    ec, mc = out[:2].mean(0), out[3:].mean(0)
    np.testing.assert_allclose(ec, [55.5, 44], atol=1e-9)
    assert abs((mc - ec)[1] - 40) < 1e-9
    assert out[0, 0] < out[1, 0]  # left eye stays left: no mirroring
    with pytest.raises(ValueError, match="not below"):
        estimate_transform(lm0[[0, 1, 2, 0, 1]] - [0, 10], template="ec_mc")


def test_warp_integer_shift_and_identity_crop():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    out = warp_affine(img, [[1, 0, 3], [0, 1, -2]], (40, 50))
    np.testing.assert_array_equal(out[:38, 3:], img[2:, :47])  # out[y, x] = img[y + 2, x - 3]
    assert (out[:, :3] == 0).all() and (out[38:] == 0).all()
    face = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    np.testing.assert_array_equal(norm_crop(face, ARCFACE_112), face)
    # grey image, bilinear midpoint
    grey = np.array([[0, 100], [200, 50]], np.uint8)
    half = warp_affine(grey, [[1, 0, -0.5], [0, 1, -0.5]], (1, 1))
    assert half.shape == (1, 1) and half[0, 0] == 88  # (0 + 100 + 200 + 50) / 4 = 87.5 -> 88


@pytest.mark.parametrize("template,size", [("arcface", 112), ("sphereface", 112), ("arcface", 64)])
def test_norm_crop_puts_a_feature_where_the_template_says(template, size):
    """A bright blob at the image's nose landmark must land on the template's nose point."""
    t = similarity(23, 0.8, 14, -9)
    dst = reference_points(template, size)
    lm = transform_points(invert(t), dst)
    h, w = 180, 200
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float64)
    blob = 250 * np.exp(-((xx - lm[2, 0]) ** 2 + (yy - lm[2, 1]) ** 2) / (2 * 3.0 ** 2))
    img[..., 1] = blob
    crop = norm_crop(np.rint(img).astype(np.uint8), lm, size=size, template=template)
    assert crop.shape == output_shape(template, size) + (3,) and crop.dtype == np.uint8
    g = crop[..., 1].astype(np.float64)
    cy, cx = np.mgrid[0:crop.shape[0], 0:crop.shape[1]]
    centroid = np.array([(g * cx).sum() / g.sum(), (g * cy).sum() / g.sum()])
    np.testing.assert_allclose(centroid, dst[2], atol=0.05)
    assert crop[..., 0].max() == 0
