"""Crop → aspect-preserving resize → square pad → encoded bytes.

Pure array functions; the stage decides which box and which scale. Sizes are computed from the
crop box in *source* pixels, so a reduced-scale decode and a full-resolution decode of the same
file give the same output geometry (which is what makes them comparable pixel for pixel).

Resizing uses Pillow, not OpenCV: OpenCV's internal thread pool does not survive ``fork`` (a
parent that has called any OpenCV function leaves forked workers deadlocked in ``cv2.resize``),
and Pillow's antialiased filters are single-threaded, deterministic and as fast at this size.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.imaging.margins import Box

#: params.yaml ``images.interpolation`` names → Pillow filters (all antialiased when shrinking;
#: ``area`` is the box average, like OpenCV's INTER_AREA).
INTERPOLATIONS: dict[str, Image.Resampling] = {
    "area": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
FORMATS: tuple[str, ...] = ("jpg", "png")


@dataclass(frozen=True)
class Placed:
    """A padded square image and where the content sits in it."""

    pixels: np.ndarray
    content_width: int
    content_height: int
    left: int
    top: int


def content_size(box_width: int, box_height: int, size: int) -> tuple[int, int]:
    """Output (width, height) before padding: the long side becomes ``size``."""
    long_side = max(box_width, box_height)
    width = max(1, round(size * box_width / long_side))
    height = max(1, round(size * box_height / long_side))
    return width, height


def crop_resize_pad(
    grey: np.ndarray,
    source_box: Box,
    scale: int,
    content: tuple[int, int],
    size: int,
    interpolation: str,
    pad_value: int,
    reducing_gap: float | None = None,
) -> Placed:
    """Cut ``source_box`` out of ``grey``, resize it to ``content``, centre it on a size² canvas.

    ``grey`` is the source decoded at ``1/scale``; ``source_box`` is in source pixels. The box
    is mapped to fractional ``grey`` coordinates and handed to the resampler as such: rounding it
    to whole reduced pixels would stretch the content by up to ``scale - 1`` source pixels (a
    2513 px wide film decodes to 629 columns at 1/4, which cover 2516), shifting sharp edges
    such as film borders and lead markers by up to half an output pixel.

    ``reducing_gap`` (Pillow): box-reduce by a whole factor first while at least that much
    shrink is left for the filter; ``None`` filters the whole way (exact, slower).
    """
    left, top = source_box.left / scale, source_box.top / scale
    right, bottom = source_box.right / scale, source_box.bottom / scale
    x0, y0 = math.floor(left), math.floor(top)
    x1, y1 = min(math.ceil(right), grey.shape[1]), min(math.ceil(bottom), grey.shape[0])
    window = np.ascontiguousarray(grey[y0:y1, x0:x1])
    width, height = content
    if scale != 1 or (window.shape[1], window.shape[0]) != (width, height):
        resized = Image.fromarray(window).resize(
            (width, height),
            INTERPOLATIONS[interpolation],
            box=(left - x0, top - y0, right - x0, bottom - y0),
            reducing_gap=reducing_gap,
        )
        window = np.asarray(resized)
    canvas = np.full((size, size), pad_value, dtype=np.uint8)
    pad_left, pad_top = (size - width) // 2, (size - height) // 2
    canvas[pad_top : pad_top + height, pad_left : pad_left + width] = window
    return Placed(canvas, width, height, pad_left, pad_top)


def encode_image(pixels: np.ndarray, fmt: str, jpeg_quality: int) -> bytes:
    """8-bit grey JPEG or PNG bytes; both encoders are deterministic (no timestamps)."""
    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ValueError(f"expected 2-D uint8 pixels, got {pixels.dtype} {pixels.shape}")
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if fmt == "jpg":
        image.save(buffer, format="JPEG", quality=jpeg_quality)
    elif fmt == "png":
        image.save(buffer, format="PNG", compress_level=6)
    else:
        raise ValueError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return buffer.getvalue()
