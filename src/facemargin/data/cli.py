"""``facemargin pack`` and ``facemargin pack-pairs``: image files to ``.rec`` training sets and ``.bin`` pair packs."""
from __future__ import annotations

from pathlib import Path


def run_pack(args) -> int:
    """Entry point of ``facemargin pack``."""
    from .pack import pack_folder, pack_list

    src = Path(args.source)
    kw = dict(size=_size(args.size), quality=args.quality, workers=args.workers, progress=not args.quiet)
    if src.is_dir():
        result = pack_folder(src, args.out, **kw)
    elif src.is_file():
        result = pack_list(src, args.out, root=args.root, **kw)
    else:
        raise FileNotFoundError(f"not a folder or a list file: {src}")
    h, w = result["size"]
    print(f"packed {result['images']} image(s) of {result['classes']} identities ({h}x{w}) into "
          f"{Path(args.out) / 'train.rec'}, train.idx and property")
    return 0


def run_pack_pairs(args) -> int:
    """Entry point of ``facemargin pack-pairs``."""
    from .pack import pack_pairs

    result = pack_pairs(args.pairs, args.out, root=args.root, size=_size(args.size), quality=args.quality,
                        workers=args.workers, progress=not args.quiet)
    print(f"wrote {result['pairs']} pairs ({result['same']} same, {result['pairs'] - result['same']} different) "
          f"to {result['out']}")
    return 0


def _common(p) -> None:
    p.add_argument("--size", type=int, nargs="+", metavar=("H", "W"),
                   help="resize every image to H (square) or H W; default: keep the size (then all must match)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality of re-encoded images (default 95)")
    p.add_argument("--workers", type=int, default=0, help="reader processes (default 0: in this process)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


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
                    "target size are stored unchanged; other images are re-encoded as JPEG. The result trains "
                    "with 'facemargin train --set data.name=recordio --data OUT'.")
    p.add_argument("source", help="identity folder or list file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--root", help="list file only: folder its relative paths start from (default: the list's folder)")
    _common(p)
    p.set_defaults(func=run_pack)

    q = sub.add_parser(
        "pack-pairs", help="pack a pairs list into a .bin verification pack",
        description="Write a verification pack (pickle of encoded images and same/different flags, as insightface's "
                    "lfw.bin) from PAIRS: lines 'path1 path2 same' (same: 1/0 or true/false) or an LFW pairs.txt "
                    "('name n1 n2' / 'name1 n1 name2 n2', images in ROOT/<name>/<name>_NNNN.jpg).")
    q.add_argument("pairs", help="pairs list")
    q.add_argument("--out", required=True, help="output .bin file")
    q.add_argument("--root", help="folder the image paths start from (default: the pairs file's folder)")
    _common(q)
    q.set_defaults(func=run_pack_pairs)
