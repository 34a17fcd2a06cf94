"""A face-like identity set made from fonts: each character is an identity, each font a "photo".

Face sets have thousands of identities, a few dozen images each, and images of very uneven
quality. A script with thousands of characters rendered in every installed font that covers it has
the same structure: KS X 1001's 2350 Hangul syllables in the Korean and CJK font families give
about 2350 identities with several dozen distinct renderings each. Glyph shapes differ between
fonts much as faces differ between photos (stroke weight, serif, proportions), while the identity
(the syllable) stays the same.

:func:`build_glyph_set` writes, into one folder:

* ``train.rec`` / ``train.idx`` / ``property``: the clean renderings of the *training* identities in
  insightface's RecordIO layout (labels ``0..C-1`` in the order of ``manifest["train_identities"]``).
  Degradations are applied while training, a batch at a time (:class:`GlyphTrainSet`), so every
  epoch sees new ones. ``train_images.npy`` holds the same renderings as one uint8 array, so
  training reads them without decoding.
* ``unseen/train.rec`` (+ ``.idx``, ``property``): renderings of the *unseen* identities, each
  degraded once with a generator seeded by the set's seed and the image index, for the all-vs-all
  TAR@FAR protocol; ``unseen.lst`` lists them (``record<TAB>identity<TAB>resolution<TAB>blur<TAB>noise``).
* ``unseen.bin``: a verification pack of pairs drawn from those degraded images (half same
  identity), for LFW-protocol pair accuracy.
* ``manifest.json``: the characters, every font face used (file, face index, SHA-256), the seed,
  the split and the rendering settings. ``build_glyph_set(out, manifest=...)`` rebuilds the same set
  byte for byte from it on a machine that holds the same font files (found by their hash).

Deduplication: renderings are compared by a hash of their pixels. A face whose renderings of a
probe set of characters equal those of an earlier face is a copy (regional variants of one CJK
family share their Hangul glyphs) and is skipped whole; among the rest, an image identical to an
earlier image of the same identity is dropped. Blank renderings (a cmap entry without an outline)
are dropped too.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..io import atomic_open, write_json

PathLike = Union[str, os.PathLike]

FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
MANIFEST_VERSION = 1
#: the clean training renderings as one uint8 array, beside ``train.rec`` (read by ``GlyphSet.train_set``)
TRAIN_IMAGES = "train_images.npy"
#: how many characters are rendered to recognise a face that copies an earlier one
PROBE_CHARS = 48

#: degradation ranges (training-time and for the fixed test set)
DEGRADE = {
    "min_resolution": 10,     # smallest side after down-sampling, in pixels
    "max_rotation": 8.0,      # degrees
    "scale": [0.88, 1.08],    # isotropic scale range
    "max_shift": 2.0,         # pixels
    "max_blur": 1.2,          # Gaussian radius in pixels (half the images stay sharp)
    "max_noise": 18.0,        # Gaussian noise std on 0..255
}


# ----------------------------------------------------------------------------- character sets
def _decode_table(codec: str, leads: Iterable[int], trails: Iterable[int]) -> str:
    out = []
    for a in leads:
        for b in trails:
            try:
                out.append(bytes([a, b]).decode(codec))
            except UnicodeDecodeError:
                continue
    return "".join(out)


def charset(script: str) -> str:
    """The characters (identities) of a script.

    * ``hangul``: the 2350 precomposed syllables of KS X 1001 (EUC-KR rows 0xB0-0xC8);
    * ``hanzi``: the 3755 level-1 hanzi of GB 2312 (rows 0xB0-0xD7);
    * ``kana``: hiragana and katakana (U+3041-3096, U+30A1-30FA);
    * ``latin``: ``A-Z a-z 0-9``.
    """
    s = script.lower()
    if s == "hangul":
        chars = _decode_table("euc_kr", range(0xB0, 0xC9), range(0xA1, 0xFF))
        assert len(chars) == 2350
        return chars
    if s == "hanzi":
        return _decode_table("gb2312", range(0xB0, 0xD8), range(0xA1, 0xFF))
    if s == "kana":
        return "".join(map(chr, range(0x3041, 0x3097))) + "".join(map(chr, range(0x30A1, 0x30FB)))
    if s == "latin":
        return "".join(map(chr, range(65, 91))) + "".join(map(chr, range(97, 123))) + "0123456789"
    raise ValueError(f"unknown script {script!r}; choose hangul, hanzi, kana or latin")


# ----------------------------------------------------------------------------- fonts
@dataclass(frozen=True)
class FontFace:
    """One face of a font file (a ``.ttc`` collection holds several)."""

    path: str
    index: int
    name: str
    sha256: str

    def as_dict(self) -> Dict:
        return {"path": self.path, "index": self.index, "name": self.name, "sha256": self.sha256}


def file_sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def font_files(dirs: Optional[Sequence[PathLike]] = None) -> List[Path]:
    """Font files (``.ttf .otf .ttc .otc``) under ``dirs`` (default: the system font folders), sorted."""
    found = set()
    for d in (dirs if dirs is not None else FONT_DIRS):
        d = Path(os.path.expanduser(str(d)))
        if d.is_file() and d.suffix.lower() in FONT_SUFFIXES:
            found.add(d.resolve())
        elif d.is_dir():
            for p in d.rglob("*"):
                if p.suffix.lower() in FONT_SUFFIXES and p.is_file():
                    found.add(p.resolve())
    return sorted(found)


def _faces_of(path: Path) -> List[Tuple[int, str, set]]:
    """``(face index, family-style name, covered code points)`` of every face of a font file."""
    from fontTools.ttLib import TTCollection, TTFont

    out = []
    if path.suffix.lower() in (".ttc", ".otc"):
        coll = TTCollection(str(path), lazy=True)
        fonts = list(coll.fonts)
    else:
        fonts = [TTFont(str(path), lazy=True)]
    for i, f in enumerate(fonts):
        cmap = f.getBestCmap() or {}
        try:
            name = f["name"].getDebugName(4) or path.stem
        except Exception:
            name = path.stem
        out.append((i, str(name), set(cmap)))
    return out


def find_fonts(chars: str, dirs: Optional[Sequence[PathLike]] = None, progress: bool = False) -> List[FontFace]:
    """Every font face under ``dirs`` whose cmap covers all of ``chars`` (sorted by file and face).

    Files that fontTools cannot read are skipped."""
    need = {ord(c) for c in chars}
    files = font_files(dirs)
    it = files
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(files, desc="scanning fonts", unit="file")
    faces = []
    for path in it:
        try:
            entries = _faces_of(path)
        except Exception:
            continue
        good = [(i, name) for i, name, cps in entries if need <= cps]
        if good:
            digest = file_sha256(path)
            faces += [FontFace(str(path), i, name, digest) for i, name in good]
    return faces


# ----------------------------------------------------------------------------- rendering
class Renderer:
    """Renders single characters of one face as centred ``size``×``size`` grey images.

    The glyph is drawn white on black at a large size, cropped to its ink, scaled so that its
    longer side is ``fill · size`` pixels (aspect kept) and pasted in the centre: every "photo" is
    aligned the same way, as face crops are."""

    def __init__(self, face: FontFace, size: int = 32, fill: float = 0.84):
        from PIL import ImageFont

        self.size, self.fill = int(size), float(fill)
        self.big = max(48, 2 * self.size)
        self.font = ImageFont.truetype(face.path, size=self.big, index=face.index)

    def __call__(self, ch: str) -> Optional[np.ndarray]:
        from PIL import Image, ImageDraw

        canvas = Image.new("L", (2 * self.big, 2 * self.big), 0)
        ImageDraw.Draw(canvas).text((self.big // 3, self.big // 3), ch, fill=255, font=self.font)
        box = canvas.getbbox()
        if box is None:
            return None  # no ink: a cmap entry without an outline
        glyph = canvas.crop(box)
        w, h = glyph.size
        target = self.fill * self.size
        k = target / max(w, h)
        nw, nh = max(1, int(round(w * k))), max(1, int(round(h * k)))
        glyph = glyph.resize((nw, nh), Image.LANCZOS)
        out = Image.new("L", (self.size, self.size), 0)
        out.paste(glyph, ((self.size - nw) // 2, (self.size - nh) // 2))
        return np.asarray(out, dtype=np.uint8).copy()


def image_hash(img: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest()


# ----------------------------------------------------------------------------- degradations
def degrade_pil(img: np.ndarray, angle: float, scale: float, shift, resolution: int, blur: float) -> np.ndarray:
    """One grey uint8 image degraded by one draw, without noise, with Pillow (float32 result):
    the reference :func:`degrade` builds the fixed test set with."""
    from PIL import Image, ImageFilter

    h, w = img.shape[:2]
    # inverse map (output -> input) of a rotation+scale about the centre followed by a shift
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    a, b, d, e = c, s, -s, c
    ox, oy = cx + float(shift[0]), cy + float(shift[1])
    coeffs = (a, b, cx - a * ox - b * oy, d, e, cy - d * ox - e * oy)
    im = Image.fromarray(img, "L").transform((w, h), Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=0)
    if resolution < min(h, w):
        im = im.resize((resolution, resolution), Image.BILINEAR).resize((w, h), Image.BILINEAR)
    if blur > 0:
        im = im.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(im, dtype=np.float32)


def degrade(img: np.ndarray, rng: np.random.Generator, params: Optional[Dict] = None) -> Tuple[np.ndarray, Dict]:
    """A random low-quality version of a grey glyph image, and the draw that made it.

    In order: a small affine jitter (rotation, scale, shift), down-sampling to ``r``×``r`` pixels
    (``r`` uniform in ``[min_resolution, size]``) and back up (bilinear), a Gaussian blur (half of
    the images, radius up to ``max_blur``), and additive Gaussian noise. Returns the uint8 image
    and ``{"resolution", "blur", "noise"}``."""
    p = dict(DEGRADE, **(params or {}))
    h, w = img.shape[:2]
    size = min(h, w)
    ang = math.radians(rng.uniform(-p["max_rotation"], p["max_rotation"]))
    sc = rng.uniform(*p["scale"])
    tx, ty = rng.uniform(-p["max_shift"], p["max_shift"], size=2)
    res = int(rng.integers(int(p["min_resolution"]), size + 1))
    blur = float(rng.uniform(0.0, p["max_blur"])) if rng.random() < 0.5 else 0.0
    noise = float(rng.uniform(0.0, p["max_noise"]))
    out = degrade_pil(img, ang, sc, (tx, ty), res, blur)
    if noise > 0:
        out = out + rng.normal(0.0, noise, size=out.shape).astype(np.float32)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out, {"resolution": res, "blur": round(blur, 4), "noise": round(noise, 4)}


def draw_degradations(n: int, size: int, params: Optional[Dict] = None, generator=None) -> Dict:
    """``n`` random degradations (the distribution :func:`degrade` draws from), from torch's random
    stream (``generator``, or the global one: a trainer checkpoints it, so a resumed run draws the
    same ones). Returns float64/int64 tensors ``angle`` (radians), ``scale``, ``shift`` ``(n, 2)``,
    ``resolution``, ``blur`` and ``noise``."""
    import torch

    p = dict(DEGRADE, **(params or {}))

    def uniform(lo, hi, shape=(n,)):
        return lo + (hi - lo) * torch.rand(shape, generator=generator, dtype=torch.float64)

    rot = math.radians(float(p["max_rotation"]))
    out = {"angle": uniform(-rot, rot), "scale": uniform(*map(float, p["scale"])),
           "shift": uniform(-float(p["max_shift"]), float(p["max_shift"]), (n, 2)),
           "resolution": torch.randint(int(p["min_resolution"]), int(size) + 1, (n,), generator=generator)}
    sharp = torch.rand(n, generator=generator) >= 0.5
    out["blur"] = uniform(0.0, float(p["max_blur"])).masked_fill_(sharp, 0.0)
    out["noise"] = uniform(0.0, float(p["max_noise"]))
    return out


def apply_degradations(images, draws: Dict, generator=None):
    """Degrade a batch of grey images ``(B, H, W)`` (uint8 or float on 0..255) by ``draws``
    (:func:`draw_degradations`), all at once; returns float ``(B, H, W)`` rounded and clipped to
    0..255.

    The batched counterpart of :func:`degrade`, step for step: the affine jitter about the image
    centre (bilinear, zeros outside), down-sampling to ``resolution`` pixels (antialiased bilinear)
    and back up (bilinear), a separable Gaussian blur of standard deviation ``blur`` (edges
    replicated), and Gaussian noise of standard deviation ``noise`` (drawn from ``generator``)."""
    import torch
    import torch.nn.functional as F

    x = images.to(torch.float32)
    if x.dim() != 3:
        raise ValueError(f"images must be (B, H, W), got {tuple(x.shape)}")
    b, h, w = x.shape
    if b == 0:
        return x
    x = x.unsqueeze(1)
    # affine: the input point of every output pixel (inverse map), in align_corners coordinates
    ang, sc = draws["angle"].to(torch.float32), draws["scale"].to(torch.float32)
    tx, ty = draws["shift"].to(torch.float32).unbind(1)
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    u = xs[None] - cx - tx[:, None, None]
    v = ys[None] - cy - ty[:, None, None]
    xin = cos[:, None, None] * u + sin[:, None, None] * v + cx
    yin = -sin[:, None, None] * u + cos[:, None, None] * v + cy
    grid = torch.stack((xin * (2.0 / max(w - 1, 1)) - 1.0, yin * (2.0 / max(h - 1, 1)) - 1.0), dim=-1)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    # resolution: down to r x r and back up, one call per distinct r
    res = draws["resolution"]
    for r in torch.unique(res[res < min(h, w)]).tolist():
        sel = torch.nonzero(res == r).squeeze(1)
        small = F.interpolate(x[sel], size=(r, r), mode="bilinear", antialias=True, align_corners=False)
        x[sel] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    # blur: a separable Gaussian per image (a delta for the sharp ones), edges replicated
    blur = draws["blur"].to(torch.float32)
    if bool((blur > 0).any()):
        half = max(1, math.ceil(3.0 * float(blur.max())))
        t = torch.arange(-half, half + 1, dtype=torch.float32)
        k = torch.exp(-0.5 * (t[None] / blur.clamp_min(1e-6)[:, None]) ** 2)
        k = k / k.sum(1, keepdim=True)
        xb = F.pad(x.view(1, b, h, w), (half, half, half, half), mode="replicate")
        xb = F.conv2d(xb, k.view(b, 1, 1, -1), groups=b)
        xb = F.conv2d(xb, k.view(b, 1, -1, 1), groups=b)
        x = xb.view(b, 1, h, w)
    x = x.squeeze(1)
    noise = draws["noise"].to(torch.float32)
    x = x + noise[:, None, None] * torch.randn(x.shape, generator=generator)
    return x.round_().clamp_(0.0, 255.0)


def degrade_batch(images, params: Optional[Dict] = None, generator=None):
    """Random low-quality versions of a batch of grey images ``(B, H, W)``: float ``(B, H, W)`` on
    0..255, and the draws that made them (:func:`draw_degradations`, :func:`apply_degradations`)."""
    draws = draw_degradations(images.shape[0], min(images.shape[1:]), params, generator)
    return apply_degradations(images, draws, generator), draws


def normalize_grey(x):
    """Grey images ``(B, H, W)`` on 0..255 -> the backbones' input ``(B, 3, H, W)`` in ``(x/255 − 0.5)/0.5``."""
    from .arrays import normalize_uint8

    return normalize_uint8(x).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


class GlyphAugment:
    """Training-time degradation of one image, for :class:`~facemargin.data.RecordIO` (its
    ``transform``): :func:`degrade_batch` on a batch of one, from torch's random stream (which
    torch seeds per DataLoader worker from the run's seed). Returns the normalised float tensor
    ``(3, H, W)`` the backbones take. :class:`GlyphTrainSet` degrades whole batches instead, which
    is much faster."""

    def __init__(self, params: Optional[Dict] = None):
        self.params = dict(DEGRADE, **(params or {}))

    def __call__(self, img: np.ndarray):
        import torch

        grey = img[:, :, 0] if img.ndim == 3 else img
        x, _ = degrade_batch(torch.from_numpy(np.ascontiguousarray(grey))[None], self.params)
        return normalize_grey(x)[0]


class GlyphTrainSet:
    """The training identities' clean renderings held in memory (uint8 ``(N, H, W)``); every batch
    is degraded afresh (:func:`degrade_batch`) from torch's random stream, so a resumed run draws
    the same degradations. The trainer reads it through ``get_batch``, without DataLoader workers.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int, params: Optional[Dict] = None,
                 augment: bool = True):
        import torch

        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W), got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.num_classes, self.augment = int(num_classes), bool(augment)
        self.params = dict(DEGRADE, **(params or {}))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def get_batch(self, idx):
        x = self.images[idx]
        if self.augment:
            x, _ = degrade_batch(x, self.params)
        return normalize_grey(x), self.labels[idx]


# ----------------------------------------------------------------------------- the set
def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img, "L").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def split_identities(num: int, test_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded split of identity indices ``0..num-1`` into sorted (train, test) index arrays."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    perm = np.random.default_rng([int(seed), 1]).permutation(num)
    n_test = max(1, int(round(num * test_fraction)))
    if n_test >= num:
        raise ValueError(f"{num} identities are too few to keep {n_test} unseen and train on the rest")
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _resolve_faces(entries: List[Dict], dirs) -> List[FontFace]:
    """The manifest's faces on this machine: each file found at its path or, by hash, anywhere under ``dirs``."""
    by_hash: Optional[Dict[str, Path]] = None
    faces = []
    for e in entries:
        p = Path(e["path"])
        if not (p.is_file() and file_sha256(p) == e["sha256"]):
            if by_hash is None:
                by_hash = {}
                for f in font_files(dirs):
                    by_hash.setdefault(file_sha256(f), f)
            p = by_hash.get(e["sha256"])
            if p is None:
                raise FileNotFoundError(
                    f"font {e['path']} (face {e['index']}, {e['name']}, sha256 {e['sha256'][:12]}...) of the manifest "
                    "is not on this machine; install the same font files or build a new set without --manifest")
        faces.append(FontFace(str(p), int(e["index"]), str(e["name"]), str(e["sha256"])))
    return faces


_WORKER_RENDERERS: Dict[Tuple[str, int, int], "Renderer"] = {}


def _render_chunk(job) -> List[List[Optional[np.ndarray]]]:
    """Render characters in every face (a worker process keeps its fonts open between chunks)."""
    faces, chunk, size = job
    rows = []
    for ch in chunk:
        row = []
        for f in faces:
            key = (f.path, f.index, size)
            if key not in _WORKER_RENDERERS:
                _WORKER_RENDERERS[key] = Renderer(f, size)
            row.append(_WORKER_RENDERERS[key](ch))
        rows.append(row)
    return rows


def _render_all(faces: List[FontFace], chars: str, size: int, workers: int, renderers: Dict):
    """Rows ``[rendering in face 0, face 1, ...]`` per character, in order; rendered by ``workers``
    processes (the result does not depend on their number)."""
    if workers <= 1:
        for ch in chars:
            yield [renderers[f](ch) for f in faces]
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    step = 32
    jobs = [(faces, chars[i:i + step], size) for i in range(0, len(chars), step)]
    # fork where there is one: the workers need no re-import (they only run Pillow and NumPy)
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
        for rows in ex.map(_render_chunk, jobs):
            yield from rows


def build_glyph_set(out: PathLike, script: str = "hangul", chars: Optional[str] = None,
                    font_dirs: Optional[Sequence[PathLike]] = None, size: int = 32, seed: int = 0,
                    test_fraction: float = 0.2, min_fonts: int = 8, max_test_per_identity: int = 20,
                    num_pairs: int = 6000, manifest: Optional[PathLike] = None, progress: bool = True,
                    workers: Optional[int] = None) -> Dict:
    """Render a glyph identity set into ``out`` (see the module docstring); returns the manifest.

    Args:
        out: output folder.
        script / chars: the identities: a script of :func:`charset`, or an explicit string.
        font_dirs: where to look for fonts (default: the system font folders).
        size: image side in pixels.
        seed: split, test degradations and pairs.
        test_fraction: share of identities kept unseen.
        min_fonts: fewest distinct covering faces accepted (a clear error below it).
        max_test_per_identity: at most this many images per unseen identity (seeded choice), which
            bounds the all-vs-all comparison.
        num_pairs: pairs of the ``unseen.bin`` pack (half same, half different identities).
        manifest: rebuild exactly the set described by this ``manifest.json`` (other arguments ignored).
        workers: rendering processes (default: the CPU count); the set does not depend on it.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    if manifest is not None:
        mpath = Path(manifest)
        if not mpath.is_file():
            raise FileNotFoundError(f"manifest not found: {mpath}")
        try:
            m = json.loads(mpath.read_text(encoding="utf-8"))
            chars, size, seed = m["characters"], int(m["size"]), int(m["seed"])
            test_fraction, max_test_per_identity = float(m["test_fraction"]), int(m["max_test_per_identity"])
            num_pairs, script = int(m["num_pairs"]), m.get("script", "")
            face_entries = m["fonts"]
            degrade_params = m["degrade"]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{mpath}: not a glyph-set manifest ({type(e).__name__}: {e})") from None
        faces = _resolve_faces(face_entries, font_dirs)
        min_fonts = 1
    else:
        if chars is None:
            chars = charset(script)
        else:
            script = ""
        if len(set(chars)) != len(chars):
            raise ValueError("chars holds a character twice; each character is one identity")
        degrade_params = dict(DEGRADE)
        faces = find_fonts(chars, font_dirs, progress=progress)
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    if len(chars) < 2:
        raise ValueError("need at least two characters (identities)")
    where = ", ".join(str(d) for d in (font_dirs if font_dirs is not None else FONT_DIRS))

    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    # 1. drop faces that copy an earlier face (same renderings of a probe set) or render blanks
    probe_idx = np.linspace(0, len(chars) - 1, min(PROBE_CHARS, len(chars))).round().astype(int)
    kept, skipped, seen_prints = [], [], {}
    renderers = {}
    for face in (tqdm(faces, desc="fingerprinting faces", unit="face") if progress else faces):
        try:
            r = Renderer(face, size)
            probe = [r(chars[i]) for i in probe_idx]
        except Exception as e:
            skipped.append({**face.as_dict(), "reason": f"cannot render: {type(e).__name__}: {e}"})
            continue
        if any(p is None for p in probe):
            skipped.append({**face.as_dict(), "reason": "blank renderings"})
            continue
        fp = hashlib.sha1(b"".join(p.tobytes() for p in probe)).hexdigest()
        if fp in seen_prints:
            skipped.append({**face.as_dict(), "reason": f"same renderings as {seen_prints[fp]}"})
            continue
        seen_prints[fp] = f"{face.name} ({Path(face.path).name}#{face.index})"
        kept.append(face)
        renderers[face] = r
    if len(kept) < min_fonts:
        raise ValueError(
            f"only {len(kept)} distinct font faces under {where} cover all {len(chars)} characters "
            f"(need {min_fonts}); install more fonts (scripts/setup.sh installs the Korean and CJK families), "
            "pass font_dirs, choose another script, or lower min_fonts")

    # 2. render every identity in every kept face, dropping blanks and duplicate renderings
    images: List[np.ndarray] = []
    labels: List[int] = []
    font_of: List[int] = []
    dropped_dup = dropped_blank = 0
    rendered = _render_all(kept, chars, size, workers, renderers)
    if progress:
        rendered = tqdm(rendered, total=len(chars), desc=f"rendering {len(chars)} identities x {len(kept)} faces",
                        unit="id")
    for ci, row in enumerate(rendered):
        seen = set()
        for fi, img in enumerate(row):
            if img is None:
                dropped_blank += 1
                continue
            h = image_hash(img)
            if h in seen:
                dropped_dup += 1
                continue
            seen.add(h)
            images.append(img)
            labels.append(ci)
            font_of.append(fi)
    labels_arr = np.asarray(labels, dtype=np.int64)
    font_arr = np.asarray(font_of, dtype=np.int64)
    counts = np.bincount(labels_arr, minlength=len(chars))
    if counts.min() < 2:
        bad = int(np.argmin(counts))
        raise ValueError(f"character {chars[bad]!r} has only {counts[bad]} distinct rendering(s) in the fonts under "
                         f"{where}; every identity needs at least two")

    # 3. split identities; write the training set (clean, degraded while training)
    train_ids, test_ids = split_identities(len(chars), test_fraction, seed)
    lut = np.full(len(chars), -1, dtype=np.int64)
    lut[train_ids] = np.arange(len(train_ids))
    sel = np.flatnonzero(lut[labels_arr] >= 0)
    from .recordio import RecordIO, write_encoded_record

    out.mkdir(parents=True, exist_ok=True)
    train_labels = lut[labels_arr[sel]]
    order = np.argsort(train_labels, kind="stable")  # insightface's layout: records grouped by identity
    sel, train_labels = sel[order], train_labels[order]

    def encoded(rows):  # our own renderings: their size is known, so nothing is decoded back
        return ((_png(images[i]), images[i].shape[:2], f"rendering {i}") for i in rows)

    write_encoded_record(out, encoded(sel), train_labels, num_classes=len(train_ids), progress=progress)
    _write_train_images(RecordIO(out), np.stack([images[i] for i in sel]))

    # 4. the unseen identities: a seeded subset of their renderings, each degraded once
    rng = np.random.default_rng([int(seed), 2])
    test_rows: List[int] = []
    for c in test_ids:
        rows = np.flatnonzero(labels_arr == c)
        if len(rows) > max_test_per_identity:
            rows = np.sort(rng.choice(rows, size=max_test_per_identity, replace=False))
        test_rows += rows.tolist()
    tlut = np.full(len(chars), -1, dtype=np.int64)
    tlut[test_ids] = np.arange(len(test_ids))
    test_imgs, test_q = [], []
    for k, i in enumerate(test_rows):
        img, q = degrade(images[i], np.random.default_rng([int(seed), 3, k]), degrade_params)
        test_imgs.append(img)
        test_q.append(q)
    test_labels = tlut[labels_arr[test_rows]]
    write_encoded_record(out / "unseen", ((_png(x), x.shape[:2], f"unseen image {k}") for k, x in enumerate(test_imgs)),
                         test_labels, with_header=False, num_classes=len(test_ids))
    with atomic_open(out / "unseen.lst", "w", encoding="utf-8") as f:
        f.write("# record\tidentity\tresolution\tblur\tnoise\n")
        for k, (y, q) in enumerate(zip(test_labels, test_q)):
            f.write(f"{k}\t{int(y)}\t{q['resolution']}\t{q['blur']}\t{q['noise']}\n")

    # 5. a pair pack of the degraded unseen images (half same identity, half different)
    i1, i2, same = sample_pairs(test_labels, num_pairs, np.random.default_rng([int(seed), 4]))
    from .binpack import write_bin

    pair_imgs = []
    for a, b in zip(i1, i2):
        pair_imgs += [_png(test_imgs[a]), _png(test_imgs[b])]
    write_bin(out / "unseen.bin", pair_imgs, same)

    from PIL import features
    import PIL

    man = {
        "version": MANIFEST_VERSION,
        "script": script,
        "characters": chars,
        "size": int(size),
        "seed": int(seed),
        "test_fraction": float(test_fraction),
        "max_test_per_identity": int(max_test_per_identity),
        "num_pairs": int(num_pairs),
        "degrade": degrade_params,
        "fonts": [f.as_dict() for f in kept],
        "skipped_fonts": skipped,
        "train_identities": "".join(chars[i] for i in train_ids),
        "test_identities": "".join(chars[i] for i in test_ids),
        "counts": {"identities": len(chars), "faces": len(kept), "images": len(images),
                   "train_images": int(len(sel)), "test_images": len(test_rows),
                   "duplicates_dropped": int(dropped_dup), "blanks_dropped": int(dropped_blank),
                   "pairs": int(len(same))},
        "renderer": {"pillow": PIL.__version__, "freetype": features.version("freetype2")},
    }
    write_json(out / "manifest.json", man)
    return man


def _train_images_stamp(ds) -> Dict:
    """What ``train_images.npy`` must agree with: the record count and size of ``train.rec``."""
    return {"records": len(ds), "rec_bytes": ds.rec_path.stat().st_size}


def _read_train_images(ds) -> Optional[np.ndarray]:
    """``train_images.npy`` beside ``ds`` when it is readable and matches ``ds``, else ``None``."""
    cache, stamp = ds.rec_path.parent / TRAIN_IMAGES, ds.rec_path.parent / (TRAIN_IMAGES + ".json")
    try:
        if json.loads(stamp.read_text(encoding="utf-8")) != _train_images_stamp(ds):
            return None
        arr = np.load(cache, allow_pickle=False)
    except (OSError, ValueError):  # missing or unreadable
        return None
    return arr if arr.dtype == np.uint8 and arr.ndim == 3 and len(arr) == len(ds) else None


def _write_train_images(ds, arr: np.ndarray) -> None:
    with atomic_open(ds.rec_path.parent / TRAIN_IMAGES, "wb") as f:
        np.save(f, arr, allow_pickle=False)
    write_json(ds.rec_path.parent / (TRAIN_IMAGES + ".json"), _train_images_stamp(ds))


def sample_pairs(labels: np.ndarray, num_pairs: int, rng: np.random.Generator):
    """``num_pairs`` index pairs of ``labels``: the first half same-label, the rest different; the
    order is shuffled. Returns ``(i1, i2, issame)``."""
    labels = np.asarray(labels)
    n_same = num_pairs // 2
    by = {}
    for i, y in enumerate(labels.tolist()):
        by.setdefault(y, []).append(i)
    multi = [v for v in by.values() if len(v) >= 2]
    if not multi or len(by) < 2:
        raise ValueError("pairs need an identity with two images and at least two identities")
    i1, i2 = [], []
    for _ in range(n_same):
        g = multi[int(rng.integers(len(multi)))]
        a, b = rng.choice(len(g), size=2, replace=False)
        i1.append(g[a]), i2.append(g[b])
    while len(i1) < num_pairs:
        a, b = rng.integers(len(labels), size=2)
        if labels[a] != labels[b]:
            i1.append(int(a)), i2.append(int(b))
    i1, i2 = np.asarray(i1), np.asarray(i2)
    same = labels[i1] == labels[i2]
    perm = rng.permutation(num_pairs)
    return i1[perm], i2[perm], same[perm]


# ----------------------------------------------------------------------------- reading it back
class GlyphSet:
    """A built glyph set: its manifest, the training RecordIO and the unseen evaluation material."""

    def __init__(self, root: PathLike):
        self.root = Path(root)
        mpath = self.root / "manifest.json"
        if not mpath.is_file():
            raise FileNotFoundError(f"{mpath} not found: build the set with 'facemargin glyphs --out {self.root}'")
        self.manifest = json.loads(mpath.read_text(encoding="utf-8"))

    def train_set(self, augment: bool = True, progress: bool = True) -> GlyphTrainSet:
        """The training identities in memory (:class:`GlyphTrainSet`), degraded batch by batch
        when ``augment``."""
        from .recordio import RecordIO

        ds = RecordIO(self.root)
        return GlyphTrainSet(self._train_images(ds, progress), ds.labels, ds.num_classes,
                             self.manifest.get("degrade"), augment=augment)

    def train_images(self, progress: bool = True) -> np.ndarray:
        """The clean training renderings as uint8 ``(N, H, W)``, in ``train.rec`` order.

        They are kept in ``train_images.npy`` next to ``train.rec`` (written when the set is built);
        a set without it, or whose ``train.rec`` changed since (record count or file size), is
        decoded once and the file written."""
        from .recordio import RecordIO

        return self._train_images(RecordIO(self.root), progress)

    @staticmethod
    def _train_images(ds, progress: bool) -> np.ndarray:
        arr = _read_train_images(ds)
        if arr is not None:
            return arr
        from tqdm.auto import tqdm

        idx = range(len(ds))
        if progress:
            idx = tqdm(idx, desc=f"decoding {ds.rec_path} once into {TRAIN_IMAGES}", unit="img", mininterval=2)
        arr = np.stack([ds.image(i)[:, :, 0] for i in idx]) if len(ds) else np.zeros((0, 0, 0), np.uint8)
        _write_train_images(ds, arr)
        return arr

    def unseen(self) -> Tuple[np.ndarray, np.ndarray, Dict[str, np.ndarray]]:
        """The degraded unseen images ``(N, H, W)`` uint8, their identities, and their degradation."""
        from .recordio import RecordIO

        ds = RecordIO(self.root / "unseen")
        imgs = np.stack([ds.image(i)[:, :, 0] for i in range(len(ds))])
        lst = self.root / "unseen.lst"
        rows = [ln.split("\t") for ln in lst.read_text(encoding="utf-8").splitlines() if ln and not ln.startswith("#")]
        if len(rows) != len(ds):
            raise ValueError(f"{lst}: {len(rows)} lines for {len(ds)} images of {ds.rec_path}")
        arr = np.asarray(rows, dtype=np.float64)
        labels = arr[:, 1].astype(np.int64)
        if not np.array_equal(labels, ds.labels):
            raise ValueError(f"{lst}: identities disagree with the labels of {ds.rec_path}")
        return imgs, labels, {"resolution": arr[:, 2], "blur": arr[:, 3], "noise": arr[:, 4]}

    def pairs(self) -> Tuple[np.ndarray, np.ndarray]:
        """The ``unseen.bin`` pack: images ``(2P, H, W)`` uint8 and ``issame`` ``(P,)``."""
        from .binpack import load_bin

        imgs, same = load_bin(self.root / "unseen.bin")
        return imgs[:, :, :, 0], same
