"""Run-length codecs: SIIM-ACR's relative column-major code (hand-decoded examples) and the
pipeline's row-major counts."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.localized.rle import RleError, decode_counts, decode_siim, encode_counts, encode_siim


def test_siim_offsets_are_relative_and_pixels_column_major() -> None:
    # 4 wide × 3 high: pixel p is column p // 3, row p % 3.
    # "1 2": skip 1 → pixels 1, 2 (column 0, rows 1–2); "3 1": 3 after pixel 2's end → pixel 6
    # (column 2, row 0).
    mask = decode_siim("1 2 3 1", width=4, height=3)
    expected = np.zeros((3, 4), dtype=bool)
    expected[1:3, 0] = True
    expected[0, 2] = True
    assert mask.shape == (3, 4)
    assert (mask == expected).all()
    assert encode_siim(expected) == "1 2 3 1"


def test_siim_minus_one_is_an_empty_mask_and_round_trips() -> None:
    assert not decode_siim("-1", 8, 8).any()
    assert encode_siim(np.zeros((5, 5), dtype=bool)) == "-1"
    rng = np.random.default_rng(3)
    mask = rng.random((37, 23)) > 0.7
    assert (decode_siim(encode_siim(mask), 23, 37) == mask).all()


@pytest.mark.parametrize(
    ("code", "phrase"),
    [
        ("5 2 7", "even number of integers"),
        ("5 x", "not a list of integers"),
        ("10 10 5 100", "beyond the 10×10 image (100 pixels)"),
        ("3 0", "zero-length run"),
        ("-2 3", "negative offset"),
    ],
)
def test_bad_siim_codes_say_what_is_wrong(code: str, phrase: str) -> None:
    with pytest.raises(RleError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        decode_siim(code, 10, 10)


def test_counts_are_row_major_background_first() -> None:
    mask = np.array([[1, 1, 0], [0, 0, 1]], dtype=bool)
    assert encode_counts(mask) == "0 2 3 1"
    assert (decode_counts("0 2 3 1", 3, 2) == mask).all()
    assert encode_counts(np.zeros((2, 2), dtype=bool)) == "4"
    with pytest.raises(RleError, match="add up to 5 pixels, not 3×2"):
        decode_counts("2 3", 3, 2)
