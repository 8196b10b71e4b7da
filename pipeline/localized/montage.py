"""The annotation montage: output images with their placed boxes and masks drawn on them.

A DVC image plot, like the images stage's crop montage: one look shows whether the boxes of a
new dataset sit on the findings after crop, resize and pad (a swapped x/y, a wrong origin or
a mask transposed by a column-major code are obvious here and nowhere else). Pillow only, no
timestamps, so the PNG is byte-identical on rerun.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.imaging.montage import BACKGROUND, LABEL_HEIGHT, TEXT_COLOUR, grid_png

BOX_COLOUR = (255, 210, 0)
MASK_COLOUR = np.array([255, 48, 48], dtype=np.float32)
#: Images shown (the first ones with annotations, by image id).
MONTAGE_IMAGES = 8


@dataclass(frozen=True)
class AnnotatedImage:
    """One output image, its boxes (output pixels) and the union of its masks."""

    label: str
    pixels: np.ndarray
    boxes: tuple[tuple[float, float, float, float], ...]
    mask: np.ndarray | None


def _cell(item: AnnotatedImage, tile: int) -> Image.Image:
    rgb = np.repeat(item.pixels[:, :, None].astype(np.float32), 3, axis=2)
    if item.mask is not None:
        rgb[item.mask] = 0.55 * rgb[item.mask] + 0.45 * MASK_COLOUR
    image = Image.fromarray(rgb.astype(np.uint8)).resize((tile, tile), Image.Resampling.BILINEAR)
    factor = tile / item.pixels.shape[1]
    cell = Image.new("RGB", (tile, tile + LABEL_HEIGHT), BACKGROUND)
    cell.paste(image, (0, LABEL_HEIGHT))
    draw = ImageDraw.Draw(cell)
    for x0, y0, x1, y1 in item.boxes:
        draw.rectangle(
            (
                x0 * factor,
                LABEL_HEIGHT + y0 * factor,
                x1 * factor - 1,
                LABEL_HEIGHT + y1 * factor - 1,
            ),
            outline=BOX_COLOUR,
            width=2,
        )
    draw.text((2, 2), item.label[:40], fill=TEXT_COLOUR, font=ImageFont.load_default())
    return cell


def render_annotations(items: Sequence[AnnotatedImage], tile: int = 256, per_row: int = 4) -> bytes:
    """PNG bytes of a grid of annotated images (a text cell when there are none)."""
    cells = [_cell(item, tile) for item in items]
    if not cells:
        empty = Image.new("RGB", (tile, tile + LABEL_HEIGHT), BACKGROUND)
        ImageDraw.Draw(empty).text(
            (2, 2), "no annotations", fill=TEXT_COLOUR, font=ImageFont.load_default()
        )
        cells = [empty]
    return grid_png(cells, per_row)
