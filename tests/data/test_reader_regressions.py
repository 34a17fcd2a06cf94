"""Inputs found by fuzzing the readers (benchmarks/fuzz_readers.py): each must be a ValueError naming the file."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from facemargin.align.folder import read_landmarks
from facemargin.data.binpack import load_bin
from facemargin.data.lfw import read_pairs_file
from facemargin.data.recordio import RecordIO, read_index, read_property, write_record
from facemargin.train.config import ConfigError, load_config

NOT_UTF8 = b"\xb3\x80 1\n"


def test_pairs_file_that_is_not_utf8_is_named(tmp_path):
    p = tmp_path / "pairs.txt"
    p.write_bytes(NOT_UTF8)
    with pytest.raises(ValueError, match=r"pairs\.txt: not a utf-8 text file \(byte 0xb3 at offset 0"):
        read_pairs_file(p)


def test_pairs_header_of_unicode_digits_is_a_pair_line_error(tmp_path):
    # '²'.isdigit() is True but int('²') fails: it is no header, and the line is named
    p = tmp_path / "pairs.txt"
    p.write_text("²\nA 1 2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"pairs\.txt, line 1: expected 'name n1 n2'"):
        read_pairs_file(p)


@pytest.mark.parametrize("name", ["lm.csv", "lm.json"])
def test_landmarks_that_are_not_utf8_are_named(name, tmp_path):
    p = tmp_path / name
    p.write_bytes(NOT_UTF8)
    with pytest.raises(ValueError, match=name.replace(".", r"\.") + ": not a utf-8 text file"):
        read_landmarks(p)


def test_deeply_nested_landmarks_json_is_named(tmp_path):
    p = tmp_path / "lm.json"
    p.write_text("[" * 100_000)
    with pytest.raises(ValueError, match=r"lm\.json: (JSON nested too deeply|invalid JSON)"):
        read_landmarks(p)


def test_overlong_csv_field_is_named_with_its_line(tmp_path):
    p = tmp_path / "lm.csv"
    p.write_text('a.jpg,1,2,3,4,5,6,7,8,9,10\n"' + "x" * 200_000 + '"\n')
    with pytest.raises(ValueError, match=r"lm\.csv, line 2: field larger than field limit"):
        read_landmarks(p)


def test_config_file_errors_name_the_file_and_key(tmp_path):
    p = tmp_path / "c.toml"
    p.write_bytes(NOT_UTF8)
    with pytest.raises(ConfigError, match=r"c\.toml: not a utf-8 text file"):
        load_config(str(p))
    p.write_text("[train]\nbatch_size = false\n")
    with pytest.raises(ConfigError, match=r"c\.toml: config key 'train\.batch_size' must be an integer, got False"):
        load_config(str(p))
    p.write_text("0 = 1\n")
    with pytest.raises(ConfigError, match=r"c\.toml: unknown config key '0'"):
        load_config(str(p))
    p.write_text("[train]\nsteps = " + "[" * 5000)
    with pytest.raises(ConfigError, match=r"c\.toml: invalid TOML"):
        load_config(str(p))


def test_recordio_text_files_that_are_not_utf8_are_named(tmp_path):
    write_record(tmp_path, np.zeros((2, 4, 4, 3), np.uint8), [0, 1])
    (tmp_path / "property").write_bytes(NOT_UTF8)
    with pytest.raises(ValueError, match=r"property: not a utf-8 text file"):
        read_property(tmp_path / "property")
    with pytest.raises(ValueError, match=r"property: not a utf-8 text file"):
        RecordIO(tmp_path)
    idx = tmp_path / "train.idx"
    idx.write_bytes(b"0\t0\n\xff\t8\n")
    with pytest.raises(ValueError, match=r"train\.idx: not a utf-8 text file \(byte 0xff at offset 4"):
        read_index(idx)


def test_recordio_index_numbers_beyond_64_bits_are_named_with_their_line(tmp_path):
    idx = tmp_path / "train.idx"
    idx.write_text("0\t0\n1\t-99999999999999999999999\n")
    with pytest.raises(ValueError, match=r"train\.idx, line 2: key or offset out of the 64-bit range"):
        read_index(idx)


def test_bin_pickle_errors_of_the_pickle_module_name_the_file(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(pickle.PROTO + bytes([4]) + pickle.EXT1 + bytes([148]) + pickle.STOP)  # unregistered extension
    with pytest.raises(ValueError, match=r"cannot read pickle .*x\.bin: unregistered extension code 148"):
        load_bin(p)
