"""The identities and the "cameras": a script's characters, and the installed font faces covering them."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

__all__ = ["FONT_DIRS", "FONT_SUFFIXES", "charset", "FontFace", "file_sha256", "font_files", "find_fonts"]

PathLike = Union[str, os.PathLike]

FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")


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


def _resolve_faces(entries: List[Dict], dirs, missing: Optional[List[Dict]] = None) -> List[FontFace]:
    """The manifest's faces on this machine: each file found at its path or, by hash, anywhere under ``dirs``.

    A face that is nowhere raises ``FileNotFoundError``, unless ``missing`` is a list: then the
    face is left out and its manifest entry appended there."""
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
            if p is None and missing is not None:
                missing.append(dict(e))
                continue
            if p is None:
                raise FileNotFoundError(
                    f"font {e['path']} (face {e['index']}, {e['name']}, sha256 {e['sha256'][:12]}...) of the manifest "
                    "is not on this machine; install the same font files or build a new set without --manifest")
        faces.append(FontFace(str(p), int(e["index"]), str(e["name"]), str(e["sha256"])))
    return faces
