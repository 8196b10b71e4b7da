"""Move boxes and masks from source pixels onto the images stage's square output image.

The images stage cuts a crop box out of the source (``crop_left … crop_bottom``, source
pixels, right/bottom exclusive), resizes it to ``content_width × content_height`` and pastes it
at ``(pad_left, pad_top)`` on an ``output_size²`` canvas (pipeline/images.py). The resampler
maps the crop box's edges exactly onto the content's edges, so a point ``x`` of the source
lands at ``pad_left + (x - crop_left) · content_width / crop_width`` — the same affine map for
every annotation, one scale per axis. Coordinates here are *continuous*: pixel ``i`` covers
``[i, i + 1)``, so a box ``(x_min, y_min, x_max, y_max)`` covers whole pixels when its values
are integers.

Annotations are clipped, in this order, to the source image (a box reaching past the film edge
keeps its inside part) and to the kept content (a box partly in a cut margin keeps its visible
part); one with nothing left raises :class:`AnnotationError` with a reject code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

#: Reject codes of annotations that cannot be placed on the output image.
BOX_OUTSIDE_IMAGE = "box_outside_image"
BOX_CROPPED_OUT = "box_cropped_out"
BAD_SHAPE = "bad_shape"
MASK_SIZE_MISMATCH = "mask_size_mismatch"


class AnnotationError(ValueError):
    """One annotation that cannot be used; ``code`` is the reject kind."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Geometry:
    """Where the images stage put one source image (its geometry columns)."""

    source_width: int
    source_height: int
    crop_left: int
    crop_top: int
    crop_right: int
    crop_bottom: int
    content_width: int
    content_height: int
    pad_left: int
    pad_top: int
    output_size: int

    @classmethod
    def from_record(cls, row: Any, output_size: int) -> Geometry:
        """From one row of the images stage's records (attribute or mapping access)."""
        get = row.get if isinstance(row, dict) else lambda name: getattr(row, name)
        names = [f for f in cls.__dataclass_fields__ if f != "output_size"]
        return cls(**{name: int(get(name)) for name in names}, output_size=output_size)

    @property
    def scale_x(self) -> float:
        return self.content_width / (self.crop_right - self.crop_left)

    @property
    def scale_y(self) -> float:
        return self.content_height / (self.crop_bottom - self.crop_top)

    def point(self, x: float, y: float) -> tuple[float, float]:
        """A source point on the output image."""
        return (
            self.pad_left + (x - self.crop_left) * self.scale_x,
            self.pad_top + (y - self.crop_top) * self.scale_y,
        )

    @property
    def content_box(self) -> tuple[float, float, float, float]:
        """The output region that holds image content (the rest is padding)."""
        return (
            float(self.pad_left),
            float(self.pad_top),
            float(self.pad_left + self.content_width),
            float(self.pad_top + self.content_height),
        )


def _clip(
    box: tuple[float, float, float, float], limit: tuple[float, float, float, float]
) -> tuple[float, float, float, float] | None:
    x0, y0 = max(box[0], limit[0]), max(box[1], limit[1])
    x1, y1 = min(box[2], limit[2]), min(box[3], limit[3])
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def box_to_output(
    box: tuple[float, float, float, float], geometry: Geometry
) -> tuple[tuple[float, float, float, float], bool]:
    """A source box ``(x_min, y_min, x_max, y_max)`` on the output image, and whether it was
    clipped (to the source image or to the kept content)."""
    x0, y0, x1, y1 = box
    if not all(np.isfinite(box)) or x1 <= x0 or y1 <= y0:
        raise AnnotationError(
            BAD_SHAPE, f"box {list(box)} has no area (x_max ≤ x_min or y_max ≤ y_min)"
        )
    g = geometry
    inside = _clip(box, (0.0, 0.0, float(g.source_width), float(g.source_height)))
    if inside is None:
        raise AnnotationError(
            BOX_OUTSIDE_IMAGE,
            f"box {list(box)} lies outside the {g.source_width}×{g.source_height} source image",
        )
    kept = _clip(inside, (g.crop_left, g.crop_top, g.crop_right, g.crop_bottom))
    if kept is None:
        raise AnnotationError(
            BOX_CROPPED_OUT,
            f"box {list(box)} lies wholly in the margin the images stage cut (kept "
            f"[{g.crop_left}, {g.crop_top}, {g.crop_right}, {g.crop_bottom}])",
        )
    left, top = g.point(kept[0], kept[1])
    right, bottom = g.point(kept[2], kept[3])
    return (left, top, right, bottom), kept != tuple(float(v) for v in box)


def mask_to_output(mask: np.ndarray, geometry: Geometry, threshold: float) -> np.ndarray:
    """A source-sized boolean mask on the output image.

    The crop is resized with the box (area) filter, the same box the image used, so each
    output pixel gets the share of its area the mask covers; pixels with a share ≥
    ``threshold`` are on. A mask so small that no pixel reaches the threshold keeps its
    best-covered pixel, so a real finding never vanishes in the resize.
    """
    g = geometry
    if mask.shape != (g.source_height, g.source_width):
        raise AnnotationError(
            MASK_SIZE_MISMATCH,
            f"mask is {mask.shape[1]}×{mask.shape[0]} but the source image is "
            f"{g.source_width}×{g.source_height}",
        )
    window = mask[g.crop_top : g.crop_bottom, g.crop_left : g.crop_right]
    canvas = np.zeros((g.output_size, g.output_size), dtype=bool)
    if not window.any():
        if mask.any():
            raise AnnotationError(
                BOX_CROPPED_OUT, "mask lies wholly in the margin the images stage cut"
            )
        return canvas
    share = np.asarray(
        Image.fromarray(window.astype(np.float32), mode="F").resize(
            (g.content_width, g.content_height), Image.Resampling.BOX
        )
    )
    placed = share >= threshold
    if not placed.any():
        placed = share == share.max()
    canvas[g.pad_top : g.pad_top + g.content_height, g.pad_left : g.pad_left + g.content_width] = (
        placed
    )
    return canvas


def ellipse_to_output(box: tuple[float, float, float, float], geometry: Geometry) -> np.ndarray:
    """The output mask of the ellipse inscribed in a source box (pixel centres inside it).

    The map is a scale and shift per axis, so the ellipse stays an axis-aligned ellipse.
    """
    box_to_output(box, geometry)  # outside-image and cropped-out checks
    g = geometry
    ax0, ay0 = g.point(box[0], box[1])
    ax1, ay1 = g.point(box[2], box[3])
    cx, cy, rx, ry = (ax0 + ax1) / 2, (ay0 + ay1) / 2, (ax1 - ax0) / 2, (ay1 - ay0) / 2
    inside = np.zeros((g.output_size, g.output_size), dtype=bool)
    rows = slice(max(int(ay0), 0), min(int(np.ceil(ay1)), g.output_size))
    cols = slice(max(int(ax0), 0), min(int(np.ceil(ax1)), g.output_size))
    ys, xs = np.mgrid[rows, cols] + 0.5  # only the pixels of the ellipse's box can be inside
    inside[rows, cols] = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0
    return _in_content(inside, g)


def polygon_to_output(points: list[tuple[float, float]], geometry: Geometry) -> np.ndarray:
    """The output mask of a source polygon (vertices mapped, then filled)."""
    if len(points) < 3:
        raise AnnotationError(BAD_SHAPE, f"polygon has {len(points)} vertices (needs ≥ 3)")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    box_to_output((min(xs), min(ys), max(xs), max(ys)), geometry)  # outside / cropped checks
    g = geometry
    mapped = [g.point(x, y) for x, y in points]
    return _in_content(fill_polygon(mapped, g.output_size), g)


def fill_polygon(points: list[tuple[float, float]], size: int) -> np.ndarray:
    """Pixels of a ``size²`` grid whose centres lie inside the polygon (even-odd rule).

    Written out rather than using ImageDraw, whose integer edge rule moves a side by a pixel.
    """
    mask = np.zeros((size, size), dtype=bool)
    xs = np.array([p[0] for p in points], dtype=np.float64)
    ys = np.array([p[1] for p in points], dtype=np.float64)
    x0, y0, x1, y1 = xs, ys, np.roll(xs, -1), np.roll(ys, -1)
    first_row, last_row = max(int(ys.min()), 0), min(int(np.ceil(ys.max())), size)
    for row in range(first_row, last_row):
        centre = row + 0.5
        crossing = (y0 <= centre) != (y1 <= centre)
        if not crossing.any():
            continue
        t = (centre - y0[crossing]) / (y1[crossing] - y0[crossing])
        cuts = np.sort(x0[crossing] + t * (x1[crossing] - x0[crossing]))
        for start, end in zip(cuts[0::2], cuts[1::2], strict=True):
            first = max(int(np.ceil(start - 0.5)), 0)
            last = min(int(np.ceil(end - 0.5)), size)
            mask[row, first:last] = True
    return mask


def _in_content(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    g = geometry
    out = np.zeros_like(mask)
    rows = slice(g.pad_top, g.pad_top + g.content_height)
    cols = slice(g.pad_left, g.pad_left + g.content_width)
    out[rows, cols] = mask[rows, cols]
    if not out.any():
        raise AnnotationError(BOX_CROPPED_OUT, "shape covers no pixel of the kept image")
    return out


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The box of a non-empty output mask, in pixel edges (max exclusive)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)
