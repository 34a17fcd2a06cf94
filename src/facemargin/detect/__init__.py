"""Face detection with five landmarks, offline: MTCNN in PyTorch, weights from the ``mtcnn`` wheel.

* :class:`MTCNN` (``MTCNN()(image) -> Detections``: boxes, scores, landmarks in the order left
  eye, right eye, nose, left mouth corner, right mouth corner), :func:`detect_faces`;
* :func:`detect_folder`: a folder of photos to a detections file, aligned crops and a log;
* :mod:`.weights`: the pinned, checked weight files (optional extra ``facemargin[detect]``).
"""
from .._lazy import lazy_package


def _public():
    """The public names, imported on first use (``facemargin --help`` needs no torch)."""
    from .folder import detect_folder, list_images
    from .mtcnn import MTCNN, POLICIES, Detections, detect_faces, nms
    from .nets import ONet, PNet, RNet
    from .weights import MissingDetectorWeights, SHA256, weights_dir
    return locals()


__getattr__ = lazy_package(__name__, _public)

__all__ = ["MTCNN", "Detections", "detect_faces", "detect_folder", "list_images", "nms", "POLICIES",
           "PNet", "RNet", "ONet", "MissingDetectorWeights", "SHA256", "weights_dir"]
