"""Find the uniform margins of a radiograph (film borders, collimation, scanner bands).

A border line (row or column) is margin when almost all of its pixels are near black or near
white (``min_fill``) — this tolerates burned-in text markers, which are white on black — or
when it is flat at any grey level (``max_std``: scanner bands, grey borders). Both thresholds
are tight on purpose: an over-exposed abdomen is also bright (225–240) and smooth (line std
≈ 2) and must not be taken for a white film border (≥ 235, std < 1.5 near the edge).
Each side is cut up to its last margin line reached from the edge, tolerating short runs of
non-margin lines (``gap``: thin film edges, a marker's grey anti-aliasing), and never more than
``max_fraction`` of the side, because under-exposed lungs can also be nearly black.

Rows are judged only within the current column range and columns within the current row
range, and the two are refined alternately: otherwise wide black side margins make every row
look "mostly black" and the crop would eat into the neck and shoulders. A tilted film edge
makes lines only partly margin, so the cut stops at the edge's innermost point (conservative).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

#: Alternating row/column refinements; the box converges in 2–3 on real films.
MAX_ITERATIONS = 4
#: Detection runs on an image whose long side is DETECT_SIDE..2×DETECT_SIDE px (box-reduced).
DETECT_SIDE = 320


@dataclass(frozen=True)
class MarginParams:
    """Thresholds on 8-bit grey levels (see the module docstring for what each protects)."""

    max_std: float = 1.5
    dark: int = 40
    bright: int = 235
    min_fill: float = 0.97
    gap: float = 0.01
    max_fraction: float = 0.4


@dataclass(frozen=True)
class Box:
    """A crop box in pixel coordinates; ``right`` and ``bottom`` are exclusive."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def scaled(self, factor: int, width: int, height: int) -> Box:
        """This box (in 1/``factor`` pixels) in source pixels, clipped to the source size."""
        return Box(
            self.left * factor,
            self.top * factor,
            min(self.right * factor, width),
            min(self.bottom * factor, height),
        )


def line_flags(
    extreme: np.ndarray, values: np.ndarray, squares: np.ndarray, axis: int, params: MarginParams
) -> np.ndarray:
    """For each line of a block (reduced along ``axis``): is it margin?

    ``extreme`` is the near-black-or-white mask, ``values`` the int32 grey levels of the block
    and ``squares`` their squares. Integer sums make the flatness test exact (no float
    cancellation in E[x²] − E[x]²): variance ≤ max_std²  ⇔  n·Σx² − (Σx)² ≤ max_std² · n².
    """
    count = extreme.shape[axis]
    fill = np.count_nonzero(extreme, axis=axis)
    total = values.sum(axis=axis, dtype=np.int64)
    spread = count * squares.sum(axis=axis, dtype=np.int64) - total * total
    return (fill >= params.min_fill * count) | (spread <= params.max_std**2 * count * count)


def thumbnail(grey: np.ndarray) -> tuple[np.ndarray, int]:
    """Box-reduce so the long side is ≤ 2 × DETECT_SIDE; returns the image and the factor.

    Detection cost then stays small whatever the decode size; a reduced pixel that mixes
    margin and content is not margin-like, so the coarser box errs towards keeping content.
    """
    factor = max(1, max(grey.shape) // DETECT_SIDE)
    if factor == 1:
        return grey, 1
    return np.asarray(Image.fromarray(grey).reduce(factor)), factor


def leading_margin(flags: np.ndarray, limit: int, gap: int) -> int:
    """How many lines to cut from the start of ``flags``.

    The cut ends after the last margin line that is reached from the edge through non-margin
    runs no longer than ``gap``, and is at most ``limit``.
    """
    cut, run = 0, 0
    for index in range(min(limit, len(flags))):
        if flags[index]:
            cut, run = index + 1, 0
        else:
            run += 1
            if run > gap:
                break
    return cut


def _cuts(flags: np.ndarray, limit: int, gap: int) -> tuple[int, int]:
    """Cut at the start and at the end of one axis."""
    return leading_margin(flags, limit, gap), leading_margin(flags[::-1], limit, gap)


def detect_margins(grey: np.ndarray, params: MarginParams) -> Box:
    """Crop box of the non-margin content of a 2-D uint8 image (in ``grey`` pixels)."""
    small, factor = thumbnail(grey)
    box = _detect(small, params)
    height, width = grey.shape
    return Box(
        box.left * factor,
        box.top * factor,
        width if box.right == small.shape[1] else box.right * factor,
        height if box.bottom == small.shape[0] else box.bottom * factor,
    )


def _detect(grey: np.ndarray, params: MarginParams) -> Box:
    """Alternate row and column cuts (each judged inside the other's range) until stable."""
    height, width = grey.shape
    extreme = (grey <= params.dark) | (grey >= params.bright)
    values = grey.astype(np.int32)
    squares = values * values
    row_limit = math.floor(params.max_fraction * height)
    col_limit = math.floor(params.max_fraction * width)
    row_gap = max(1, round(params.gap * height))
    col_gap = max(1, round(params.gap * width))
    box = Box(0, 0, width, height)
    for _ in range(MAX_ITERATIONS):
        columns = slice(box.left, box.right)
        band = slice(box.top, box.bottom)
        rows = line_flags(extreme[:, columns], values[:, columns], squares[:, columns], 1, params)
        cols = line_flags(extreme[band, :], values[band, :], squares[band, :], 0, params)
        top, bottom = _cuts(rows, row_limit, row_gap)
        left, right = _cuts(cols, col_limit, col_gap)
        new = Box(left, top, width - right, height - bottom)
        if new == box:
            break
        box = new
    return box
