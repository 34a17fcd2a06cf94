"""Data: Fashion-MNIST and the open-set protocol, image folders, and face formats read without mxnet.

* :func:`load_fashion_mnist` (IDX, gzip or not), :class:`OpenSetProtocol` (train on some classes,
  verify on pairs of the others), :class:`ArrayDataset`, :class:`ImageFolder`;
* :class:`RecordIO` / :func:`write_record` (insightface ``train.rec``/``train.idx``/``property``),
  :func:`load_bin` / :func:`write_bin` (verification packs, restricted unpickler),
  :func:`load_lfw` / :func:`load_lfw_pairs` (LFW folder and ``pairs.txt``);
* :func:`pack_folder` / :func:`pack_list` / :func:`pack_pairs`: image files to a ``.rec`` set or a
  ``.bin`` pack (``facemargin pack``, ``facemargin pack-pairs``).
"""
from .._lazy import lazy_package


def _public():
    """The public names, imported on first use (``facemargin --help`` needs no torch)."""
    from .arrays import ArrayDataset, images_to_tensor, normalize_uint8
    from .fashion import (FASHION_MNIST_CLASSES, download_fashion_mnist, find_fashion_mnist,
                          load_fashion_mnist, read_idx, write_idx)
    from .folder import ImageFolder
    from .openset import OpenSetProtocol
    from .images import decode_image, encode_image, load_image, save_image, resize_image
    from .recordio import RecordIO, write_record, rebuild_index
    from .binpack import load_bin, write_bin, read_bin_raw
    from .lfw import load_lfw, load_lfw_pairs
    from .pack import pack_folder, pack_list, pack_pairs
    return locals()


__getattr__ = lazy_package(__name__, _public)

__all__ = ["ArrayDataset", "images_to_tensor", "normalize_uint8", "FASHION_MNIST_CLASSES",
           "download_fashion_mnist", "find_fashion_mnist", "load_fashion_mnist", "read_idx", "write_idx",
           "ImageFolder", "OpenSetProtocol", "decode_image", "encode_image", "load_image", "save_image",
           "resize_image", "RecordIO", "write_record", "rebuild_index", "load_bin", "write_bin",
           "read_bin_raw", "load_lfw", "load_lfw_pairs", "pack_folder", "pack_list", "pack_pairs"]
