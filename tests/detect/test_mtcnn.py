"""The cascade on a real photograph, and its box arithmetic on hand-worked cases."""
import numpy as np
import pytest
from PIL import Image

from facemargin.align import ARCFACE_112, estimate_transform, transform_points
from facemargin.detect.mtcnn import Detections, crop_resize, nms, pyramid_scales, refine, square


def test_astronaut_one_face_with_landmarks_on_the_features(detector, astronaut, astronaut_points):
    det = detector(astronaut)
    assert len(det) == 1
    assert det.scores[0] > 0.99
    x1, y1, x2, y2 = det.boxes[0]
    # the face spans about x 180..270, y 60..170 of the 512x512 photo
    assert 170 < x1 < 195 and 255 < x2 < 280 and 50 < y1 < 80 and 155 < y2 < 185
    err = np.linalg.norm(det.landmarks[0] - astronaut_points, axis=1)
    assert np.all(err < 4.0), err           # eyes, nose and mouth corners within 4 px of hand-read points
    assert np.all(err[:3] < 2.0), err       # eyes and nose within 2 px
    lm = det.landmarks[0]
    assert lm[0, 0] < lm[2, 0] < lm[1, 0]   # left eye, nose, right eye from left to right
    assert lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min()  # eyes above the nose above the mouth


def test_blank_and_tiny_images_have_no_face(detector):
    assert len(detector(np.full((120, 160, 3), 128, np.uint8))) == 0
    assert len(detector(np.zeros((8, 8, 3), np.uint8))) == 0


def _two_faces(astronaut):
    face = Image.fromarray(astronaut[40:200, 160:290])
    canvas = np.full((360, 640, 3), 210, np.uint8)
    small = np.asarray(face.resize((104, 128)))
    big = np.asarray(face.resize((156, 192)))
    canvas[116:244, 268:372] = small   # centred
    canvas[150:342, 470:626] = big     # larger, off-centre
    return canvas


def test_several_faces_and_the_policies(detector, astronaut):
    canvas = _two_faces(astronaut)
    det = detector(canvas)
    assert len(det) == 2
    centres = (det.boxes[:, 0] + det.boxes[:, 2]) / 2
    largest, central = det.pick("largest"), det.pick("central", canvas.shape[:2])
    assert 470 < centres[largest] < 626
    assert 268 < centres[central] < 372
    with pytest.raises(ValueError, match="unknown face policy"):
        det.pick("first")


def test_nms_by_hand():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 5, 5]], float)
    scores = np.array([0.9, 0.95, 0.5, 0.8])
    # IoU(0,1) = 90/110 = 0.82 -> box 0 goes; IoU(1,3) = 16/109; box 3 is inside box 0 (gone) only
    assert nms(boxes, scores, 0.5).tolist() == [1, 3, 2]
    # over the smaller box, box 3 overlaps box 1 by 16/25 = 0.64 > 0.5
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [1, 2]


def test_box_helpers_by_hand():
    sq = square(np.array([[10.0, 20.0, 30.0, 60.0]]))
    np.testing.assert_allclose(sq, [[0.0, 20.0, 40.0, 60.0]])
    # offsets are fractions of (x2 - x1 + 1)
    np.testing.assert_allclose(refine(np.array([[0.0, 0.0, 9.0, 19.0]]), np.array([[0.1, -0.1, 0.2, 0.05]])),
                               [[1.0, -2.0, 11.0, 20.0]])
    # short side 100: 60, 42.5, 30.2, 21.4, 15.2 pixels; the next (10.7) is under 12
    assert pyramid_scales(100, 200, 20) == pytest.approx([0.6 * 0.709 ** k for k in range(5)])


def test_crop_resize_samples_box_corners():
    import torch

    img = torch.arange(3 * 5 * 7, dtype=torch.float32).reshape(3, 5, 7)
    crop = crop_resize(img, np.array([[1.0, 2.0, 5.0, 4.0]]), 3)
    assert crop.shape == (1, 3, 3, 3)
    # corners and centre land on pixels: (x=1,y=2), (x=5,y=4), centre (3, 3)
    assert crop[0, :, 0, 0].tolist() == img[:, 2, 1].tolist()
    assert crop[0, :, 2, 2].tolist() == img[:, 4, 5].tolist()
    assert crop[0, :, 1, 1].tolist() == img[:, 3, 3].tolist()
    outside = crop_resize(img, np.array([[-40.0, -40.0, -20.0, -20.0]]), 3)
    assert float(outside.abs().max()) == 0.0


def test_aligned_eyes_near_template(detector, astronaut):
    lm = detector(astronaut).landmarks[0]
    m = estimate_transform(lm, "arcface", 112)
    eyes = transform_points(m, lm[:2])
    assert np.all(np.linalg.norm(eyes - ARCFACE_112[:2], axis=1) < 3.0)


def test_detections_to_list_is_json_ready(detector, astronaut):
    import json

    items = detector(astronaut).to_list()
    back = json.loads(json.dumps(items))
    assert set(back[0]) == {"box", "score", "landmarks"} and np.asarray(back[0]["landmarks"]).shape == (5, 2)
    assert isinstance(Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))).to_list(), list)
