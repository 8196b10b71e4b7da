"""Boxes and masks through crop → resize → pad, on hand-computed geometry."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.localized.geometry import (
    AnnotationError,
    Geometry,
    box_to_output,
    ellipse_to_output,
    mask_box,
    mask_to_output,
    polygon_to_output,
)

#: A 200 × 100 source, crop [20, 10, 180, 90) (160 × 80) → 64 × 32 content at (0, 16) on 64².
GEOMETRY = Geometry(
    source_width=200,
    source_height=100,
    crop_left=20,
    crop_top=10,
    crop_right=180,
    crop_bottom=90,
    content_width=64,
    content_height=32,
    pad_left=0,
    pad_top=16,
    output_size=64,
)


def test_box_maps_by_scale_and_offset() -> None:
    assert box_to_output((20, 10, 180, 90), GEOMETRY) == ((0.0, 16.0, 64.0, 48.0), False)
    # x: (100 − 20) · 0.4 = 32, (140 − 20) · 0.4 = 48; y: 16 + 40 · 0.4 = 32, 16 + 60 · 0.4 = 40
    assert box_to_output((100, 50, 140, 70), GEOMETRY) == ((32.0, 32.0, 48.0, 40.0), False)


def test_box_partly_in_the_cut_margin_or_past_the_film_is_clipped() -> None:
    box, clipped = box_to_output((0, 0, 45, 35), GEOMETRY)
    assert clipped and box == (0.0, 16.0, 10.0, 26.0)
    box, clipped = box_to_output((170, 80, 260, 140), GEOMETRY)
    assert clipped and box == (60.0, 44.0, 64.0, 48.0)


@pytest.mark.parametrize(
    ("box", "code"),
    [
        ((210, 10, 250, 40), "box_outside_image"),
        ((-30, -20, -1, -1), "box_outside_image"),
        ((0, 0, 15, 100), "box_cropped_out"),
        ((50, 50, 50, 60), "bad_shape"),
        ((60, 50, 40, 70), "bad_shape"),
    ],
)
def test_unplaceable_boxes_raise_with_a_code(box: tuple[float, ...], code: str) -> None:
    with pytest.raises(AnnotationError) as caught:
        box_to_output(box, GEOMETRY)
    assert caught.value.code == code


def test_mask_follows_the_box_it_covers() -> None:
    mask = np.zeros((100, 200), dtype=bool)
    mask[50:70, 100:140] = True
    out = mask_to_output(mask, GEOMETRY, 0.5)
    assert out.shape == (64, 64)
    assert mask_box(out) == (32.0, 32.0, 48.0, 40.0)
    assert out.sum() == 16 * 8


def test_tiny_mask_keeps_its_best_pixel_and_wrong_size_is_refused() -> None:
    mask = np.zeros((100, 200), dtype=bool)
    mask[50, 100] = True  # 1 source pixel = 0.16 of an output pixel
    out = mask_to_output(mask, GEOMETRY, 0.5)
    assert out.sum() == 1 and out[32, 32]
    with pytest.raises(AnnotationError, match="mask is 100×100 but the source image is 200×100"):
        mask_to_output(np.ones((100, 100), dtype=bool), GEOMETRY, 0.5)
    margin_only = np.zeros((100, 200), dtype=bool)
    margin_only[0:5, 0:5] = True
    with pytest.raises(AnnotationError, match="margin") as caught:
        mask_to_output(margin_only, GEOMETRY, 0.5)
    assert caught.value.code == "box_cropped_out"


def test_ellipse_and_polygon_are_filled_on_the_output_grid() -> None:
    ellipse = ellipse_to_output((60, 30, 140, 70), GEOMETRY)  # → box (16, 24, 48, 40)
    assert mask_box(ellipse) == (16.0, 24.0, 48.0, 40.0)
    assert abs(ellipse.sum() - np.pi * 16 * 8) < 12  # area of the 32 × 16 ellipse
    triangle = polygon_to_output([(20, 10), (180, 10), (20, 90)], GEOMETRY)
    # pixel centres inside (0, 16), (64, 16), (0, 48): the top row reaches x = 63 - ε
    assert mask_box(triangle) == (0.0, 16.0, 63.0, 48.0)
    assert triangle.sum() == sum(int(np.ceil(64 * (1 - (r + 0.5) / 32) - 0.5)) for r in range(32))
    with pytest.raises(AnnotationError, match="needs ≥ 3"):
        polygon_to_output([(0, 0), (5, 5)], GEOMETRY)


def test_mask_threshold_decides_partly_covered_pixels() -> None:
    """A source rectangle covering 2.5 output pixels of width: columns fully covered are on
    at any threshold; the half-covered column only when the threshold is ≤ 0.5."""
    mask = np.zeros((100, 200), dtype=bool)
    mask[50:70, 100:107] = True  # x 100–107 → output 32.0–34.8: two full columns, one at 0.8
    mask[50:70, 120:126] = True  # x 120–126 → output 40.0–42.4: two full columns, one at 0.4
    at_half = mask_to_output(mask, GEOMETRY, 0.5)
    assert at_half[32:40].any(axis=0).nonzero()[0].tolist() == [32, 33, 34, 40, 41]
    strict = mask_to_output(mask, GEOMETRY, 0.9)
    assert strict[32:40].any(axis=0).nonzero()[0].tolist() == [32, 33, 40, 41]
    loose = mask_to_output(mask, GEOMETRY, 0.3)
    assert loose[32:40].any(axis=0).nonzero()[0].tolist() == [32, 33, 34, 40, 41, 42]
