"""The crop montage: each source with its detected crop box next to the final square image.

A DVC image plot: reviewing it is the fastest way to see a margin detector cutting into a lung
or leaving a film border in. Drawn with Pillow (no matplotlib state, no timestamps in the PNG),
so the file is byte-identical on rerun.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.imaging.margins import Box

BACKGROUND = (24, 24, 24)
BOX_COLOUR = (255, 48, 48)
TEXT_COLOUR = (230, 230, 230)
GAP = 6
LABEL_HEIGHT = 16


@dataclass(frozen=True)
class MontageItem:
    """One record: ``box`` is in ``source`` array pixels (the decoded, possibly reduced image)."""

    label: str
    source: np.ndarray
    box: Box
    output: np.ndarray


def _fit(grey: np.ndarray, tile: int) -> tuple[Image.Image, float]:
    """``grey`` scaled to fit a tile×tile square, as RGB, and the scale used."""
    image = Image.fromarray(grey)
    factor = tile / max(image.size)
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.BILINEAR).convert("RGB"), factor


def _cell(item: MontageItem, tile: int) -> Image.Image:
    """Label on top; source with its box on the left, output on the right."""
    cell = Image.new("RGB", (2 * tile + GAP, tile + LABEL_HEIGHT), BACKGROUND)
    source, factor = _fit(item.source, tile)
    cell.paste(source, (0, LABEL_HEIGHT))
    draw = ImageDraw.Draw(cell)
    left, top = item.box.left * factor, LABEL_HEIGHT + item.box.top * factor
    right = max(left, item.box.right * factor - 1)
    bottom = max(top, LABEL_HEIGHT + item.box.bottom * factor - 1)
    draw.rectangle((left, top, right, bottom), outline=BOX_COLOUR, width=2)
    output, _ = _fit(item.output, tile)
    cell.paste(output, (tile + GAP, LABEL_HEIGHT))
    draw.text((2, 2), item.label[:60], fill=TEXT_COLOUR, font=ImageFont.load_default())
    return cell


def _message_cell(message: str, tile: int) -> Image.Image:
    """A cell with only text, so an empty stage output still yields the declared plot file."""
    cell = Image.new("RGB", (2 * tile + GAP, tile + LABEL_HEIGHT), BACKGROUND)
    ImageDraw.Draw(cell).text((2, 2), message, fill=TEXT_COLOUR, font=ImageFont.load_default())
    return cell


def render_montage(items: Sequence[MontageItem], tile: int = 256, per_row: int = 2) -> bytes:
    """PNG bytes of a grid with ``per_row`` (source, output) pairs per row."""
    cells = [_cell(item, tile) for item in items] or [_message_cell("no images kept", tile)]
    return grid_png(cells, per_row)


def grid_png(cells: Sequence[Image.Image], per_row: int) -> bytes:
    """PNG bytes of equal-sized ``cells`` laid out ``per_row`` to a row on the dark sheet
    every montage (crop boxes, localized annotations) uses."""
    cell_w, cell_h = cells[0].size
    columns = min(per_row, len(cells))
    rows = -(-len(cells) // columns)
    sheet = Image.new(
        "RGB",
        (columns * cell_w + (columns + 1) * GAP, rows * cell_h + (rows + 1) * GAP),
        BACKGROUND,
    )
    for index, cell in enumerate(cells):
        row, column = divmod(index, columns)
        sheet.paste(cell, (GAP + column * (cell_w + GAP), GAP + row * (cell_h + GAP)))
    buffer = io.BytesIO()
    # level 3: same size as the default 6 on grainy films, in less than half the time
    sheet.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
