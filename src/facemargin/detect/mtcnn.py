"""The MTCNN cascade: image pyramid -> P-Net proposals -> R-Net refinement -> O-Net boxes and landmarks.

``MTCNN()(image)`` returns a :class:`Detections` of every face in an ``(H, W, 3)`` uint8 RGB image:
boxes ``(x1, y1, x2, y2)``, scores, and five landmarks in this project's order (left eye, right
eye, nose, left mouth corner, right mouth corner; image ``x, y``, the left eye being the one with
the smaller ``x``), sorted by score.

Steps (defaults of the released detector):

1. Pyramid: the image is scaled by ``12 / min_face_size · 0.709^k`` while its short side stays at
   least 12 pixels (area interpolation). P-Net scores every 12x12 window (stride 2 on each scaled
   image); windows above ``thresholds[0]`` become boxes refined by their offsets, merged per scale
   (IoU 0.5) and across scales (IoU 0.7) by non-maximum suppression, then made square.
2. Each box is cropped (bilinear, zero outside the image) to 24x24 for R-Net: new score, offsets,
   ``thresholds[1]``, NMS (IoU 0.7), square again.
3. Crops of 48x48 for O-Net: final score, offsets and landmarks (fractions of the box),
   ``thresholds[2]``, NMS by intersection over the smaller box (0.7). Boxes are clipped to the image.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..data.images import to_rgb_array
from .nets import ONet, PNet, RNet, from_keras
from .weights import mtcnn_weights

POLICIES = ("largest", "central")


@dataclass
class Detections:
    """Faces found in one image, best score first.

    ``boxes`` ``(N, 4)`` float ``x1, y1, x2, y2``; ``scores`` ``(N,)``; ``landmarks`` ``(N, 5, 2)``
    ``(x, y)`` of left eye, right eye, nose, left mouth corner, right mouth corner.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def pick(self, policy: str = "largest", image_shape: Optional[Tuple[int, int]] = None) -> int:
        """Index of the face to keep when there are several: ``largest`` box area, or ``central``
        (box centre nearest the image centre; needs ``image_shape`` ``(H, W)``)."""
        if len(self) == 0:
            raise ValueError("no face to pick")
        if policy == "largest":
            area = (self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])
            return int(np.argmax(area))
        if policy == "central":
            if image_shape is None:
                raise ValueError("policy 'central' needs the image shape")
            centre = np.array([(image_shape[1] - 1) / 2.0, (image_shape[0] - 1) / 2.0])
            mid = (self.boxes[:, :2] + self.boxes[:, 2:]) / 2.0
            return int(np.argmin(((mid - centre) ** 2).sum(1)))
        raise ValueError(f"unknown face policy {policy!r}; choose one of {', '.join(POLICIES)}")

    def to_list(self) -> list:
        """JSON-ready ``[{"box": [x1, y1, x2, y2], "score": s, "landmarks": [[x, y]*5]}, ...]``."""
        return [{"box": [round(float(v), 2) for v in b], "score": round(float(s), 5),
                 "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in lm]}
                for b, s, lm in zip(self.boxes, self.scores, self.landmarks)]


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best first.

    Overlap is intersection over union (``mode="union"``) or over the smaller box (``"min"``),
    with areas ``(x2 - x1) * (y2 - y1)``.
    """
    order = np.argsort(-scores, kind="stable")
    if len(order) == 0:
        return order
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        overlap = inter / np.maximum(denom, 1e-12)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares about their centres (side = the longer side)."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + (w - side) / 2
    out[:, 1] = boxes[:, 1] + (h - side) / 2
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def refine(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply regression offsets (fractions of the box size ``x2 - x1 + 1``) to boxes."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    return boxes + offsets * np.stack([w, h, w, h], axis=1)


def crop_resize(image: torch.Tensor, boxes: np.ndarray, size: int) -> torch.Tensor:
    """Bilinear crops of ``boxes`` from ``image`` ``(3, H, W)``, each ``size x size``; zero outside.

    Crop pixel ``j`` samples image column ``x1 + j (x2 - x1) / (size - 1)`` (rows likewise).
    """
    _, h, w = image.shape
    n = len(boxes)
    t = torch.linspace(0.0, 1.0, size, dtype=torch.float32)
    b = torch.from_numpy(boxes[:, :4].astype(np.float32))
    xs = b[:, 0:1] + t[None] * (b[:, 2:3] - b[:, 0:1])            # (n, size) image columns
    ys = b[:, 1:2] + t[None] * (b[:, 3:4] - b[:, 1:2])
    gx = (2 * xs / max(w - 1, 1) - 1)[:, None, :].expand(n, size, size)
    gy = (2 * ys / max(h - 1, 1) - 1)[:, :, None].expand(n, size, size)
    grid = torch.stack([gx, gy], dim=-1).reshape(1, n * size, size, 2)
    out = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(3, n, size, size).permute(1, 0, 2, 3)


def pyramid_scales(height: int, width: int, min_face_size: float = 20.0, factor: float = 0.709) -> list:
    """Scales ``12/min_face_size · factor^k`` whose scaled short side is still at least 12 pixels."""
    scales, s = [], 12.0 / float(min_face_size)
    while min(height, width) * s >= 12:
        scales.append(s)
        s *= factor
    return scales


class MTCNN:
    """The three-stage MTCNN face detector with 5-point landmarks, weights from the ``mtcnn`` wheel.

    Args:
        min_face_size: smallest face (pixels) searched for (default 20).
        thresholds: score thresholds of P-Net, R-Net and O-Net (default 0.6, 0.7, 0.8).
        factor: pyramid scale step (default 0.709).
        weights_folder: folder of ``pnet.lz4``/``rnet.lz4``/``onet.lz4`` (default: the installed
            ``mtcnn`` package's); each file is checked against its pinned SHA-256.
        device: torch device for the networks (default CPU).

    Missing weights raise :class:`~facemargin.detect.weights.MissingDetectorWeights` with the install command.
    """

    def __init__(self, min_face_size: float = 20.0, thresholds: Sequence[float] = (0.6, 0.7, 0.8),
                 factor: float = 0.709, weights_folder=None, device="cpu"):
        if not min_face_size >= 12:
            raise ValueError(f"min_face_size must be at least 12 pixels, got {min_face_size}")
        if len(thresholds) != 3 or not all(0 <= float(t) <= 1 for t in thresholds):
            raise ValueError(f"thresholds must be three scores in [0, 1], got {thresholds!r}")
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.min_face_size, self.thresholds, self.factor = float(min_face_size), tuple(map(float, thresholds)), float(factor)
        self.device = torch.device(device)
        self.pnet = from_keras(PNet(), mtcnn_weights("pnet", weights_folder), "pnet.lz4").to(self.device)
        self.rnet = from_keras(RNet(), mtcnn_weights("rnet", weights_folder), "rnet.lz4").to(self.device)
        self.onet = from_keras(ONet(), mtcnn_weights("onet", weights_folder), "onet.lz4").to(self.device)
        self._lock = threading.Lock()

    # -- stages --------------------------------------------------------------------------------
    def _propose(self, x: torch.Tensor) -> np.ndarray:
        _, h, w = x.shape
        found = []
        for s in pyramid_scales(h, w, self.min_face_size, self.factor):
            hs, ws = int(math.ceil(h * s)), int(math.ceil(w * s))
            img = F.interpolate(x[None], size=(hs, ws), mode="area")
            offsets, prob = self.pnet(img)
            prob, offsets = prob[0].cpu().numpy(), offsets[0].cpu().numpy()
            ys, xs = np.nonzero(prob > self.thresholds[0])
            if len(ys) == 0:
                continue
            # the 12x12 window of map cell (y, x), in scaled pixels, then its offsets (window size 11)
            win = np.stack([2 * xs + 1, 2 * ys + 1, 2 * xs + 12, 2 * ys + 12], axis=1).astype(np.float64)
            win = win + offsets[:, ys, xs].T * 11.0
            boxes = np.concatenate([win / s, prob[ys, xs][:, None]], axis=1)
            found.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
        if not found:
            return np.zeros((0, 5))
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        boxes[:, :4] = square(boxes[:, :4])
        return boxes

    def _refine(self, x: torch.Tensor, boxes: np.ndarray) -> np.ndarray:
        offsets, prob = self.rnet(crop_resize(x, boxes, 24))
        prob, offsets = prob.cpu().numpy(), offsets.cpu().numpy()
        out = np.concatenate([refine(boxes[:, :4], offsets), prob[:, None]], axis=1)
        out = out[prob > self.thresholds[1]]
        out = out[nms(out[:, :4], out[:, 4], 0.7)]
        out[:, :4] = square(out[:, :4])
        return out

    def _output(self, x: torch.Tensor, boxes: np.ndarray):
        offsets, marks, prob = self.onet(crop_resize(x, boxes, 48))
        prob, offsets, marks = prob.cpu().numpy(), offsets.cpu().numpy(), marks.cpu().numpy()
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        lm = np.stack([w * marks[:, :5] + boxes[:, 0:1] - 1, h * marks[:, 5:] + boxes[:, 1:2] - 1], axis=2)
        out = np.concatenate([refine(boxes[:, :4], offsets), prob[:, None]], axis=1)
        keep = prob > self.thresholds[2]
        out, lm = out[keep], lm[keep]
        k = nms(out[:, :4], out[:, 4], 0.7, mode="min")
        return out[k], lm[k]

    # -- public --------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, image) -> Detections:
        """Detect the faces of one ``(H, W, 3)`` uint8 RGB image (or anything ``to_rgb_array`` takes)."""
        img = to_rgb_array(image, "image to detect faces in")
        h, w = img.shape[:2]
        empty = Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))
        if min(h, w) < 12:
            return empty
        x = (torch.tensor(img, device=self.device).permute(2, 0, 1).float() - 127.5) / 128.0
        with self._lock:
            boxes = self._propose(x)
            if len(boxes):
                boxes = self._refine(x, boxes)
            if not len(boxes):
                return empty
            boxes, lm = self._output(x, boxes)
        if not len(boxes):
            return empty
        b = boxes[:, :4].copy()
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, w - 1)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, h - 1)
        order = np.argsort(-boxes[:, 4], kind="stable")
        return Detections(b[order], boxes[order, 4], lm[order])

    detect = __call__


_CACHE: Dict[tuple, MTCNN] = {}


def detect_faces(image, **kw) -> Detections:
    """Detect faces with a detector built once per process for the given keyword arguments."""
    key = tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in kw.items()))
    if key not in _CACHE:
        _CACHE[key] = MTCNN(**kw)
    return _CACHE[key](image)
