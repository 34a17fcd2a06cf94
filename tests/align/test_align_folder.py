"""The library side of ``facemargin align``: crop names, and the names the command line re-exports."""
from pathlib import Path

from facemargin.align import cli, folder


def test_aligned_name_keeps_png_and_jpeg_and_makes_the_rest_jpeg():
    assert folder.aligned_name("a/b.png") == Path("a/b.png")
    assert folder.aligned_name("a/b.JPEG") == Path("a/b.JPEG")
    assert folder.aligned_name("a/b.bmp") == Path("a/b.jpg")
    assert folder.aligned_name(Path("c.tiff")) == Path("c.jpg")


def test_the_command_line_module_still_offers_the_library_names():
    assert cli.read_landmarks is folder.read_landmarks
    assert cli.align_folder is folder.align_folder
    assert cli.aligned_name is folder.aligned_name
