#!/usr/bin/env python
"""Throughput of the photo-to-training-set path: face detection, packing, reading, index parsing.

    python benchmarks/detect_pack.py                 # 2000 images to pack, a 5.8M-line index
    python benchmarks/detect_pack.py --images 500 --index-lines 1000000 --json out.json

Measures, on this machine:

* MTCNN detection time per image on scikit-image's astronaut photo (512x512) and on a 1024x1024
  upscale, with one thread and with all threads;
* ``facemargin pack`` throughput (images/s) from a folder of 112x112 JPEGs (stored as they are) and
  from PNGs (re-encoded), in this process and with worker processes;
* RecordIO reading + JPEG decoding throughput (images/s), image by image and through a DataLoader;
* parsing an MS1M-sized ``train.idx`` (5.8M lines) with :func:`read_index`, against a line loop
  (and the line loop plus ``np.unique``, the previous reader).
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(fn, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_detect(results, repeat):
    import torch
    from PIL import Image
    from skimage import data

    from facemargin.detect import MTCNN

    img = data.astronaut()
    big = np.asarray(Image.fromarray(img).resize((1024, 1024), Image.BILINEAR))
    det = MTCNN()
    det(img)  # warm-up
    threads = torch.get_num_threads()
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        for name, im in (("512x512", img), ("1024x1024", big)):
            sec, found = timed(lambda: det(im), repeat)
            results[f"detect_s_per_image_{name}_{n}thr"] = round(sec, 4)
            print(f"detect {name}, {n} thread(s): {sec * 1000:.0f} ms/image ({len(found)} face)")
    torch.set_num_threads(threads)


def bench_pack(results, n_images, workers, tmp):
    from PIL import Image

    from facemargin.data import RecordIO
    from facemargin.data.pack import pack_folder

    rng = np.random.default_rng(0)
    for ext in (".jpg", ".png"):
        src = tmp / f"src{ext}"
        for i in range(n_images):
            d = src / f"id{i // 20:05d}"
            d.mkdir(parents=True, exist_ok=True)
            base = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((14, 14, 1)))
            Image.fromarray(np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)).save(
                d / f"{i:06d}{ext}", quality=92)
        for w in sorted({0, workers}):
            out = tmp / f"rec{ext}{w}"
            sec, res = timed(lambda: pack_folder(src, out, workers=w, progress=False))
            results[f"pack_{ext[1:]}_workers{w}_img_per_s"] = round(n_images / sec, 1)
            print(f"pack {n_images} {ext} images, {w} worker(s): {n_images / sec:.0f} images/s")
    ds = RecordIO(tmp / "rec.jpg0")
    sec, _ = timed(lambda: [ds.image(i) for i in range(len(ds))])
    results["read_decode_img_per_s"] = round(len(ds) / sec, 1)
    print(f"read + decode {len(ds)} images one by one: {len(ds) / sec:.0f} images/s")
    import torch

    def loader_pass(w):
        loader = torch.utils.data.DataLoader(ds, batch_size=128, num_workers=w)
        return sum(x.shape[0] for x, _ in loader)

    for w in sorted({0, workers}):
        sec, n = timed(lambda: loader_pass(w))
        results[f"dataloader_workers{w}_img_per_s"] = round(n / sec, 1)
        print(f"DataLoader (tensors, batch 128), {w} worker(s): {n / sec:.0f} images/s")


def bench_index(results, lines, tmp):
    from facemargin.data.recordio import read_index

    path = tmp / "train.idx"
    offsets = np.cumsum(np.random.default_rng(0).integers(2000, 9000, lines)) * 4
    with open(path, "w") as f:
        for lo in range(0, lines, 500_000):
            f.write("".join(f"{k}\t{o}\n" for k, o in zip(range(lo, min(lo + 500_000, lines)),
                                                          offsets[lo:lo + 500_000].tolist())))
    sec, (keys, offs) = timed(lambda: read_index(path))
    assert len(keys) == lines and np.array_equal(offs, offsets)
    results["read_index_s"] = round(sec, 2)

    def loop():
        k, o = [], []
        with open(path) as f:
            for line in f:
                a, b = line.split()
                k.append(int(a))
                o.append(int(b))
        return np.asarray(k), np.asarray(o)

    sec_loop, (loop_keys, _) = timed(loop)
    # the line loop plus the duplicate check it used (np.unique) is how the index used to be read
    sec_unique, _ = timed(lambda: len(np.unique(loop_keys)) != len(loop_keys))
    results["read_index_line_loop_s"] = round(sec_loop, 2)
    results["read_index_previous_s"] = round(sec_loop + sec_unique, 2)
    print(f"read_index of {lines} lines: {sec:.2f} s vectorised; {sec_loop:.2f} s with a line loop, "
          f"{sec_loop + sec_unique:.2f} s with its np.unique duplicate check (the previous reader)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000, help="images to pack (default 2000)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--index-lines", type=int, default=5_800_000, help="lines of the index to parse (MS1M: 5.8M)")
    p.add_argument("--repeat", type=int, default=3, help="detection timings: best of this many")
    p.add_argument("--json", help="write the numbers here")
    a = p.parse_args(argv)
    results = {"cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bench_detect(results, a.repeat)
        bench_pack(results, a.images, a.workers, tmp)
        bench_index(results, a.index_lines, tmp)
    if a.json:
        from facemargin.io import write_json

        write_json(a.json, results)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
