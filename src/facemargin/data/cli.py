"""``facemargin pack`` and ``facemargin pack-pairs``: image files to ``.rec`` training sets and ``.bin`` pair packs."""
from __future__ import annotations

import sys
from pathlib import Path

IMAGE_EXTENSIONS = ".jpg, .jpeg, .png, .bmp"


def run_pack(args) -> int:
    """Entry point of ``facemargin pack``."""
    from .pack import pack_folder, pack_list

    src = Path(args.source)
    kw = dict(size=_size(args.size), quality=args.quality, workers=args.workers, progress=not args.quiet,
              skip_bad=args.skip_bad)
    if not src.is_dir() and not src.is_file():
        raise FileNotFoundError(f"not a folder or a list file: {src}")
    try:
        result = pack_folder(src, args.out, **kw) if src.is_dir() else pack_list(src, args.out, root=args.root, **kw)
    except ValueError as e:
        if kw["size"] is None and "share one size" in str(e):
            raise ValueError(f"{e}; give --size H [W] to bring every image to one size") from None
        raise
    others = result.get("others", [])
    if others and not args.skip_bad:
        print(f"facemargin pack: note: left out {len(others)} file(s) that are not images ({IMAGE_EXTENSIONS}), "
              f"e.g. {others[0]}", file=sys.stderr)
    for path, _label, reason in result["skipped"]:
        print(f"skipped: {path}: {reason}", file=sys.stderr)
    h, w = result["size"]
    line = (f"packed {result['images']} image(s) of {result['classes']} identities ({h}x{w}) into "
            f"{Path(args.out) / 'train.rec'}, train.idx and property")
    if args.skip_bad:
        line += f"; skipped {len(result['skipped'])} file(s), listed in {result['log']}"
        if result.get("dropped"):
            line += (f"; dropped {len(result['dropped'])} identity folder(s) left without a readable image "
                     f"({', '.join(result['dropped'])}), the others numbered from 0")
    print(line)
    return 0


def run_pack_pairs(args) -> int:
    """Entry point of ``facemargin pack-pairs``."""
    from .pack import pack_pairs

    result = pack_pairs(args.pairs, args.out, root=args.root, size=_size(args.size), quality=args.quality,
                        workers=args.workers, progress=not args.quiet)
    same, pairs = result["same"], result["pairs"]
    if same in (0, pairs):
        kind, missing = ("genuine (same-person)", "impostor") if same else ("impostor (different-person)", "genuine")
        print(f"facemargin pack-pairs: warning: {args.pairs} holds only {kind} pairs; a pack without {missing} "
              "pairs cannot measure verification accuracy", file=sys.stderr)
    print(f"wrote {pairs} pairs ({same} same, {pairs - same} different) to {result['out']}")
    return 0


def _common(p) -> None:
    p.add_argument("--size", type=int, nargs="+", metavar=("H", "W"),
                   help="bring every image to H (square) or H W: an image of another shape is scaled to fit "
                        "with its aspect ratio kept and centred on black bars (padded, never squashed); "
                        "default: keep the size (then all must match)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality of re-encoded images (default 95)")
    p.add_argument("--workers", type=int, default=0, help="reader processes (default 0: in this process)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (none is drawn either when stderr is not a terminal)")


def _size(size):
    """``--size H`` or ``--size H W`` as an int or a pair."""
    if size is None:
        return None
    if len(size) > 2:
        raise ValueError(f"--size takes H or H W, got {size}")
    return size[0] if len(size) == 1 else tuple(size)


def register(sub) -> None:
    """Add the ``pack`` and ``pack-pairs`` sub-commands to an argparse sub-parsers object."""
    p = sub.add_parser(
        "pack", help="pack images into an insightface train.rec/train.idx/property set",
        description="Write OUT/train.rec, OUT/train.idx and OUT/property as insightface lays them out (header "
                    "record, images grouped by identity, one identity record per class) from SOURCE: a folder "
                    "SOURCE/<identity>/<image> (photos or aligned crops; identities numbered in sorted order), "
                    "or a list file with 'path label' lines or mxnet's 'index<TAB>label<TAB>path'. JPEGs at the "
                    "target size are stored unchanged; other images are re-encoded as JPEG. In a folder, files "
                    f"without an image extension ({IMAGE_EXTENSIONS}) are left out with a note. A file that "
                    "cannot be read stops the pack with an error naming it, unless --skip-bad. The result trains "
                    "with 'facemargin train --set data.name=recordio --data OUT'.")
    p.add_argument("source", help="identity folder or list file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--root", help="list file only: folder its relative paths start from (default: the list's folder)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out files that cannot be read (not an image, corrupt, truncated, empty, missing) "
                        "and list them as 'path,label,reason' in OUT/skipped.csv, with the folder's non-image "
                        "files; the count is printed at the end. From a folder, an identity left without any "
                        "image is dropped and the others are numbered again from 0 (labels stay contiguous; "
                        "the label column then is the pack's, empty for a dropped identity); from a list file, "
                        "labels stay the list's own and an emptied label keeps an empty identity record")
    _common(p)
    p.set_defaults(func=run_pack)

    q = sub.add_parser(
        "pack-pairs", help="pack a pairs list into a .bin verification pack",
        description="Write a verification pack (pickle of encoded images and same/different flags, as insightface's "
                    "lfw.bin) from PAIRS: lines 'path1 path2 same' (same: 1/0 or true/false) or an LFW pairs.txt "
                    "('name n1 n2' / 'name1 n1 name2 n2', images in ROOT/<name>/<name>_NNNN.jpg). A missing or "
                    "unreadable image is an error naming the pairs file and line. A list of only same-person "
                    "or only different-person pairs is packed with a warning: such a pack cannot measure "
                    "verification accuracy.")
    q.add_argument("pairs", help="pairs list")
    q.add_argument("--out", required=True, help="output .bin file")
    q.add_argument("--root", help="folder the image paths start from (default: the pairs file's folder)")
    _common(q)
    q.set_defaults(func=run_pack_pairs)
