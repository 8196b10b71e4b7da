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
    box: Box,
    content: tuple[int, int],
    size: int,
    interpolation: str,
    pad_value: int,
) -> Placed:
    """Cut ``box`` out of ``grey``, resize it to ``content`` and centre it on a size² canvas."""
    crop = np.ascontiguousarray(grey[box.top : box.bottom, box.left : box.right])
    width, height = content
    if (crop.shape[1], crop.shape[0]) != (width, height):
        resized = Image.fromarray(crop).resize((width, height), INTERPOLATIONS[interpolation])
        crop = np.asarray(resized)
    canvas = np.full((size, size), pad_value, dtype=np.uint8)
    left, top = (size - width) // 2, (size - height) // 2
    canvas[top : top + height, left : left + width] = crop
    return Placed(canvas, width, height, left, top)


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
