"""MTCNN weights from the ``mtcnn`` wheel's data files, read without its code and without free unpickling.

The ``mtcnn==1.0.0`` package (MIT licence) ships ``assets/weights/{pnet,rnet,onet}.lz4``: LZ4
frames holding a joblib pickle of a list of float32 NumPy arrays in Keras layout (convolution
kernels ``(kh, kw, in, out)``, dense kernels ``(in, out)``, PReLU slopes ``(1, 1, C)`` or ``(C,)``).
The package itself imports tensorflow, so it is never imported here: its folder is found with
``importlib.util.find_spec`` and only the three data files are read.

A pickle can run any code it names, so before a file is unpickled its SHA-256 is compared with
the digest pinned in :data:`SHA256`. The unpickling itself admits nothing but joblib's array
records (rebuilt here as plain arrays from the raw bytes that follow each record), ``numpy.dtype``
of plain numeric kinds, and lists; anything else is refused with a ``ValueError`` naming the file.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import pickle
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

PathLike = Union[str, os.PathLike]

#: The package and version whose data files hold the weights.
PACKAGE = "mtcnn"
PACKAGE_VERSION = "1.0.0"
INSTALL_HINT = ("pip install 'facemargin[detect]' (or: pip install --no-deps mtcnn==1.0.0 joblib lz4; "
                "--no-deps keeps tensorflow out, which facemargin does not need)")

#: SHA-256 of each weight file of mtcnn 1.0.0; files with any other digest are never unpickled.
SHA256: Dict[str, str] = {
    "pnet": "ea6b0c3e685ebee3165326ad6484acc95f2ef78f1c94fbf40a55704fa989f7b5",
    "rnet": "cb00e6460f3c98b0bfafaba3c0a0ded4bdf6e62cee7174d969e8670d7e757fee",
    "onet": "94f6ea2f4cf985275ee958cdd762d17b6009348a4fb9d8c6be39ba73ffd22ca3",
}


class MissingDetectorWeights(ImportError):
    """The optional detector weights (the ``mtcnn`` wheel's data files) are not installed."""


def weights_dir() -> Path:
    """Folder of the installed ``mtcnn`` package's weight files (the package is located, not imported)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingDetectorWeights(f"face detection needs the MTCNN weights of the {PACKAGE}=={PACKAGE_VERSION} "
                                     f"package, which is not installed; install them with: {INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "assets" / "weights"
    if not folder.is_dir():
        raise MissingDetectorWeights(f"{folder} does not exist: the installed {PACKAGE} package has no weight files; "
                                     f"install version {PACKAGE_VERSION} with: {INSTALL_HINT}")
    return folder


def sha256_of(path: PathLike) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- restricted joblib reader
class _ArrayRecord:
    """Stand-in for joblib's array record: it only collects the record's attributes."""

    def __init__(self):
        self.state: Dict = {}


_RECORD_KEYS = {"subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes"}


class _JoblibArrayUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its stream can be read between opcodes
    """Unpickles a joblib file of plain arrays; every global but four harmless ones is refused."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes, source: str):
        self._stream = io.BytesIO(data)
        super().__init__(self._stream)
        self.source = source

    def find_class(self, module, name):  # noqa: D102
        if (module, name) == ("joblib.numpy_pickle", "NumpyArrayWrapper"):
            return _ArrayRecord
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray  # only ever compared against, as the record's "subclass"
        if (module, name) == ("numpy", "dtype"):
            return _plain_dtype
        raise ValueError(f"refusing to unpickle {module}.{name} in {self.source}: a weight file may hold only "
                         "lists of plain NumPy arrays")

    def persistent_load(self, pid):  # noqa: D102
        raise ValueError(f"refusing to unpickle a persistent id in {self.source}")

    def _load_build(self):
        state = self.stack[-1]
        inst = self.stack[-2]
        if not isinstance(inst, _ArrayRecord):
            if isinstance(inst, np.dtype):  # dtype.__setstate__ with a plain tuple: byte order, flags
                return pickle._Unpickler.load_build(self)
            raise ValueError(f"{self.source}: unexpected object of type {type(inst).__name__} in a weight file")
        self.stack.pop()
        if not isinstance(state, dict) or not set(state) <= _RECORD_KEYS:
            raise ValueError(f"{self.source}: malformed array record {sorted(state) if isinstance(state, dict) else state!r}")
        self.stack[-1] = self._read_array(state)

    dispatch[pickle.BUILD[0]] = _load_build

    def _read_array(self, state: Dict) -> np.ndarray:
        dtype, shape, order = state.get("dtype"), state.get("shape"), state.get("order", "C")
        if state.get("subclass", np.ndarray) is not np.ndarray:
            raise ValueError(f"{self.source}: array record of a NumPy subclass")
        if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
            raise ValueError(f"{self.source}: array record of dtype {dtype!r}; only plain numeric arrays are read")
        if not (isinstance(shape, tuple) and all(isinstance(s, int) and s >= 0 for s in shape)) or order not in ("C", "F"):
            raise ValueError(f"{self.source}: array record with shape {shape!r}, order {order!r}")
        f = self._stream
        if state.get("numpy_array_alignment_bytes") is not None:  # one byte: how many padding bytes follow
            pad = f.read(1)
            if len(pad) != 1:
                raise ValueError(f"{self.source}: truncated before an array")
            f.read(pad[0])
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        raw = f.read(n)
        if len(raw) != n:
            raise ValueError(f"{self.source}: truncated array of shape {shape} ({len(raw)} of {n} bytes)")
        arr = np.frombuffer(raw, dtype=dtype).copy()
        return arr.reshape(shape[::-1]).T.copy() if order == "F" else arr.reshape(shape)


def _plain_dtype(spec, align=False, copy=False):
    dt = np.dtype(spec)
    if dt.kind not in "biuf":
        raise ValueError(f"refusing NumPy dtype {spec!r} in a weight file")
    return dt


def load_weight_arrays(path: PathLike, expected_sha256: Optional[str] = None) -> List[np.ndarray]:
    """Read one weight file (LZ4 frame of a joblib pickle) as a list of arrays.

    With ``expected_sha256`` the file's digest is checked first and a mismatch raises
    ``ValueError`` before anything is decompressed or unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MTCNN weight file not found: {path}")
    if expected_sha256 is not None:
        got = sha256_of(path)
        if got != expected_sha256:
            raise ValueError(f"{path}: SHA-256 {got} does not match the pinned {expected_sha256} of "
                             f"{PACKAGE}=={PACKAGE_VERSION}; refusing to unpickle it (reinstall: {INSTALL_HINT})")
    try:
        import lz4.frame
    except ImportError as e:
        raise MissingDetectorWeights(f"reading {path} needs the lz4 package ({e}); install it with: {INSTALL_HINT}") from e
    try:
        data = lz4.frame.decompress(path.read_bytes())
    except RuntimeError as e:
        raise ValueError(f"{path}: not an LZ4 frame ({e})") from e
    try:
        obj = _JoblibArrayUnpickler(data, str(path)).load()
    except ValueError:
        raise
    except Exception as e:  # truncated or malformed pickle
        raise ValueError(f"{path}: cannot read the weight pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, list) or not all(isinstance(a, np.ndarray) for a in obj):
        raise ValueError(f"{path}: expected a list of arrays, got {type(obj).__name__}")
    return obj


def mtcnn_weights(name: str, folder: Optional[PathLike] = None) -> List[np.ndarray]:
    """The Keras-layout arrays of ``pnet``, ``rnet`` or ``onet``, checked against the pinned SHA-256."""
    if name not in SHA256:
        raise ValueError(f"unknown MTCNN network {name!r}; choose one of {', '.join(SHA256)}")
    folder = Path(folder) if folder is not None else weights_dir()
    return load_weight_arrays(folder / f"{name}.lz4", SHA256[name])
