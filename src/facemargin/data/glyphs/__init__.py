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

The modules: :mod:`.fonts` (character sets and the fonts that cover them), :mod:`.render` (one
character of one face as an aligned grey image), :mod:`.degrade` (random low-quality versions,
one image with Pillow or a batch with torch), :mod:`.builder` (:func:`build_glyph_set`),
:mod:`.glyphset` (:class:`GlyphSet`, a built set read back) and :mod:`.trainset` (the training
identities in memory, degraded batch by batch).
"""
from __future__ import annotations

from .builder import MANIFEST_VERSION, PROBE_CHARS, build_glyph_set, sample_pairs, split_identities
from .degrade import DEGRADE, apply_degradations, degrade, degrade_batch, degrade_pil, draw_degradations
from .fonts import FONT_DIRS, FONT_SUFFIXES, FontFace, charset, file_sha256, find_fonts, font_files
from .glyphset import TRAIN_IMAGES, GlyphSet
from .render import Renderer, image_hash
from .trainset import GlyphAugment, GlyphTrainSet, normalize_grey

__all__ = ["MANIFEST_VERSION", "PROBE_CHARS", "build_glyph_set", "sample_pairs", "split_identities", "DEGRADE",
           "apply_degradations", "degrade", "degrade_batch", "degrade_pil", "draw_degradations", "FONT_DIRS",
           "FONT_SUFFIXES", "FontFace", "charset", "file_sha256", "find_fonts", "font_files", "TRAIN_IMAGES",
           "GlyphSet", "Renderer", "image_hash", "GlyphAugment", "GlyphTrainSet", "normalize_grey"]
