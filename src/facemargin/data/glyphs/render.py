"""Rendering: one character of one font face as a centred grey image, in one process or several."""
from __future__ import annotations

import hashlib
import io
from typing import Dict, List, Optional, Tuple

import numpy as np

from .fonts import FontFace

__all__ = ["Renderer", "image_hash"]


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


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img, "L").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


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
