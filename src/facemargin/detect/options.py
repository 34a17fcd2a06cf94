"""What ``facemargin detect`` and ``facemargin align --detect`` share: the detector's options, the
one-line error for missing weights, and the summary line of a folder run."""
from __future__ import annotations

import contextlib

from .weights import MissingDetectorWeights


def add_detector_options(p) -> None:
    """Options shared by ``facemargin detect`` and ``facemargin align --detect``."""
    p.add_argument("--policy", default="largest", choices=("largest", "central"),
                   help="face kept when a photo has several: the largest box or the most central (default largest)")
    p.add_argument("--workers", type=int, default=0, help="detector processes (default 0: in this process)")
    p.add_argument("--min-face-size", dest="min_face_size", type=float, default=20.0,
                   help="smallest face searched for, in pixels (default 20)")
    p.add_argument("--thresholds", type=float, nargs=3, default=(0.6, 0.7, 0.8), metavar=("P", "R", "O"),
                   help="score thresholds of the three networks (default 0.6 0.7 0.8)")


@contextlib.contextmanager
def clear_missing_weights():
    """Report missing detector weights as a one-line command error (with the install command)."""
    try:
        yield
    except MissingDetectorWeights as e:
        raise ValueError(str(e)) from None


def print_summary(summary) -> None:
    """One line of counts, and where the log of odd photos went."""
    print(f"{summary['images']} photo(s): {summary['with_face']} with a face, {summary['no_face']} without, "
          f"{summary['several_faces']} with several, {summary['unreadable']} unreadable"
          + (f"; {summary['not_images']} other file(s) not images" if summary.get("not_images") else "")
          + (f"; {summary['aligned']} aligned crop(s)" if summary["aligned"] else "")
          + (f"; log {summary['log']}" if summary.get("log") else ""))
