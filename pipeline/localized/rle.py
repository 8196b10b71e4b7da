"""Run-length codecs for binary masks: SIIM-ACR's release format and the pipeline's own.

Why two: SIIM-ACR ships its pneumothorax masks in a *relative, column-major* run-length code
(each start is counted from the end of the previous run, pixels are numbered top to bottom,
then left to right, ``-1`` means "no pneumothorax"); the pipeline stores its own masks, on the
square output image, as plain *row-major counts* (alternating background / foreground run
lengths, starting with background), which any reader rebuilds with one ``np.repeat``.
Both raise :class:`RleError` with a sentence naming the problem, never an IndexError.
"""

from __future__ import annotations

import numpy as np

#: SIIM's value of EncodedPixels for an image without pneumothorax.
SIIM_EMPTY = "-1"


class RleError(ValueError):
    """A run-length string that does not describe a mask of the stated size."""


def _integers(text: str, what: str) -> np.ndarray:
    parts = text.split()
    try:
        values = np.array([int(p) for p in parts], dtype=np.int64)
    except ValueError as error:
        raise RleError(f"{what}: not a list of integers ({error})") from error
    return values


def decode_siim(encoded: str, width: int, height: int) -> np.ndarray:
    """SIIM-ACR ``EncodedPixels`` → boolean mask of shape (height, width).

    Pairs are (offset, length): the run starts ``offset`` pixels after the end of the
    previous run (after pixel 0 for the first) in column-major order.
    """
    text = encoded.strip()
    mask = np.zeros(width * height, dtype=bool)
    if text == SIIM_EMPTY:
        return mask.reshape(width, height).T
    values = _integers(text, "SIIM EncodedPixels")
    if len(values) == 0 or len(values) % 2:
        raise RleError(
            f"SIIM EncodedPixels: expected an even number of integers (offset length pairs), "
            f"got {len(values)}"
        )
    if (values < 0).any() or (values[1::2] == 0).any():
        raise RleError("SIIM EncodedPixels: negative offset or zero-length run")
    position = 0
    for offset, length in zip(values[0::2], values[1::2], strict=True):
        start = position + int(offset)
        end = start + int(length)
        if end > width * height:
            raise RleError(
                f"SIIM EncodedPixels: run ends at pixel {end}, beyond the {width}×{height} "
                f"image ({width * height} pixels)"
            )
        mask[start:end] = True
        position = end
    return mask.reshape(width, height).T


def encode_siim(mask: np.ndarray) -> str:
    """The SIIM-ACR relative column-major code of a (height, width) mask (``-1`` if empty)."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    padded = np.concatenate([[False], flat, [False]])
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = changes[0::2], changes[1::2]
    if len(starts) == 0:
        return SIIM_EMPTY
    previous_ends = np.concatenate([[0], ends[:-1]])
    pairs = np.stack([starts - previous_ends, ends - starts], axis=1).reshape(-1)
    return " ".join(str(int(v)) for v in pairs)


def encode_counts(mask: np.ndarray) -> str:
    """Row-major run lengths of a 2-D mask, background first (``"0 …"`` if it starts on)."""
    flat = np.asarray(mask, dtype=bool).reshape(-1)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds)
    if flat.size and flat[0]:
        counts = np.concatenate([[0], counts])
    return " ".join(str(int(c)) for c in counts)


def decode_counts(encoded: str, width: int, height: int) -> np.ndarray:
    """Row-major counts (as :func:`encode_counts` writes them) → boolean (height, width)."""
    counts = _integers(encoded, "mask counts")
    if (counts < 0).any() or int(counts.sum()) != width * height:
        raise RleError(
            f"mask counts: runs add up to {int(counts.sum())} pixels, not {width}×{height}"
        )
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(height, width)
