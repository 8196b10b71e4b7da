"""Cost of placing one annotation on the output image, per shape, at release sizes.

    python benchmarks/bench_localized.py [--repeats 200]

Times :func:`pipeline.localized.stage.place` (what the localized stage does per annotation,
without file I/O) on a 1024² source cropped by a few percent, as RSNA and SIIM-ACR images are,
and on a 2,000 × 2,500 source for Object-CXR's shapes; SIIM masks are pneumothorax-like
crescents of about 3 % of the image in the release's relative column-major run lengths. Prints
milliseconds per annotation and what that makes for each release's annotation count.
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import numpy as np

from pipeline.localized.geometry import Geometry
from pipeline.localized.rle import encode_siim
from pipeline.localized.stage import place

#: Annotation counts of the releases (positive rows of their tables, rounded).
RELEASE_COUNTS = {"box": 9_555, "siim_rle": 3_286, "ellipse": 4_000, "polygon": 2_000}


def geometry(width: int, height: int, size: int = 512) -> Geometry:
    """A source with a 3 % margin cut on each side, placed on ``size``²."""
    left, top = width * 3 // 100, height * 3 // 100
    crop_w, crop_h = width - 2 * left, height - 2 * top
    long_side = max(crop_w, crop_h)
    content_w, content_h = round(size * crop_w / long_side), round(size * crop_h / long_side)
    return Geometry(
        width,
        height,
        left,
        top,
        width - left,
        height - top,
        content_w,
        content_h,
        (size - content_w) // 2,
        (size - content_h) // 2,
        size,
    )


def crescent(size: int) -> np.ndarray:
    """A rim along the right lung apex: about 3 % of the image."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    outer = ((xx - 0.3) / 0.2) ** 2 + ((yy - 0.4) / 0.3) ** 2 <= 1
    inner = ((xx - 0.33) / 0.16) ** 2 + ((yy - 0.43) / 0.26) ** 2 <= 1
    return outer & ~inner & (yy < 0.5)


def row(shape: str, coords: list[float], rle: str = "", size: tuple[int, int] = (0, 0)):
    return SimpleNamespace(
        shape=shape, coords=json.dumps(coords), rle=rle, rle_width=size[0], rle_height=size[1]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    square, film = geometry(1024, 1024), geometry(2000, 2500)
    mask = crescent(1024)
    cases = {
        "box": (row("box", [300, 400, 520, 610]), square),
        "siim_rle": (row("siim_rle", [], encode_siim(mask), (1024, 1024)), square),
        "ellipse": (row("ellipse", [600, 900, 760, 1020]), film),
        "polygon": (row("polygon", [500, 800, 700, 780, 760, 1000, 560, 1100]), film),
    }
    print(
        f"siim mask: {mask.mean():.1%} of the image, {len(cases['siim_rle'][0].rle.split())} "
        "run-length values"
    )
    for shape, (annotation, where) in cases.items():
        place(annotation, where, 0.5)  # warm-up
        start = time.perf_counter()
        for _ in range(args.repeats):
            place(annotation, where, 0.5)
        ms = (time.perf_counter() - start) / args.repeats * 1000
        total = ms * RELEASE_COUNTS[shape] / 1000
        print(
            f"{shape:9s} {ms:7.2f} ms/annotation  → {RELEASE_COUNTS[shape]:>6,} annotations "
            f"in {total:6.1f} s"
        )


if __name__ == "__main__":
    main()
