"""Decode a source image (JPEG, PNG, DICOM, other Pillow formats) into one grey channel.

Why a separate module: decoding is where nearly all the time goes and where nearly all bad
input shows up. JPEGs are decoded at a reduced DCT scale (libjpeg-turbo via Pillow's ``draft``)
when the source is at least twice the output size: the IDCT then produces 1/2, 1/4 or 1/8 of
the pixels directly instead of decoding everything and throwing most of it away. Pillow's draft
mode was measured faster than OpenCV's ``IMREAD_REDUCED_GRAYSCALE_*`` and simplejpeg on
2500×3000 q95 radiographs, and it reads the header first, so size checks cost no decode.

Every failure is raised as :class:`ImageError` with a short ``code`` (counted in stats.json)
and a message that says what is wrong; the stage adds the file name.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    from pydicom import Dataset

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC = b"DICM"
#: Reduction factors libjpeg can apply during the IDCT, largest first.
JPEG_REDUCTIONS: tuple[int, ...] = (8, 4, 2, 1)


class ImageError(Exception):
    """A source image that cannot become a training image; ``code`` is the reject kind."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Decoded:
    """One decoded source image.

    ``pixels`` is 2-D ``uint8`` (8-bit sources) or ``uint16`` (deeper sources, already windowed
    and MONOCHROME1-inverted for DICOM) at ``1/scale`` of the source resolution: pixel ``(r, c)``
    covers source pixels ``[r*scale, (r+1)*scale) × [c*scale, (c+1)*scale)``.
    """

    pixels: np.ndarray
    width: int
    height: int
    scale: int
    source_format: str
    source_mode: str
    bit_depth: int


def sniff_format(data: bytes) -> str:
    """Container format from the magic bytes, not the file name (names lie, bytes do not)."""
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    if data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == DICOM_MAGIC:
        return "dicom"
    return "other"


def reduction_for(width: int, height: int, target: int, oversample: float) -> int:
    """Largest JPEG reduction that still leaves the long side ≥ ``target × oversample``.

    Keeping the decoded image larger than the output (oversample > 1) leaves the final resize a
    real downscale, which is what keeps the result close to a full-resolution LANCZOS reference.
    """
    long_side = max(width, height)
    for factor in JPEG_REDUCTIONS:
        if math.ceil(long_side / factor) >= target * oversample:
            return factor
    return 1


#: Default pixel limit (``images.max_pixels``): 16,384 × 16,384, above the largest digital
#: radiographs (about 4,300 × 4,300 detectors; scanned films up to ~7,000 × 8,500).
DEFAULT_MAX_PIXELS = 16_384 * 16_384


def decode_image(
    data: bytes,
    target: int,
    fast: bool,
    oversample: float = 1.2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Decoded:
    """Decode ``data`` to grey; JPEGs at a reduced scale when ``fast`` and large enough.

    The size in the header is checked against ``max_pixels`` before any pixel is decoded: a
    decompression bomb (a few kB claiming 30,000 × 30,000) is an ``image_too_large`` reject,
    not gigabytes of memory.
    """
    if not data:
        raise ImageError("empty_file", "file is empty (0 bytes)")
    kind = sniff_format(data)
    if kind == "dicom":
        return _decode_dicom(data, max_pixels)
    return _decode_pillow(data, kind, target if fast else 0, oversample, max_pixels)


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Raise ImageError(``image_too_large``) when the header's size exceeds the limit."""
    if width * height > max_pixels:
        raise ImageError(
            "image_too_large",
            f"header claims {width}×{height} = {width * height:,} pixels, over "
            f"images.max_pixels={max_pixels:,}; not decoded (decompression-bomb guard)",
        )


def _open_pillow(data: bytes, kind: str, max_pixels: int) -> Image.Image:
    """Open lazily (header only); a known signature with an unreadable header is corrupt.

    Pillow's own bomb check (a process-wide limit of ~89 Mpx that raises above twice that)
    is replaced by ``max_pixels`` for this call, so the limit is the documented param.
    """
    pillow_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None
        image = Image.open(io.BytesIO(data))
        check_pixels(*image.size, max_pixels)
        return image
    except UnidentifiedImageError as error:
        if kind != "other":
            raise ImageError("corrupt_image", f"{kind} signature but unreadable header") from error
        raise ImageError(
            "unsupported_format",
            f"not a recognised image format (first bytes {data[:8].hex()})",
        ) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError("corrupt_image", f"cannot read image header: {error}") from error
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


def _decode_pillow(
    data: bytes, kind: str, target: int, oversample: float, max_pixels: int
) -> Decoded:
    """JPEG/PNG/other via Pillow; ``target`` 0 disables reduced-scale decoding."""
    image = _open_pillow(data, kind, max_pixels)
    width, height = image.size
    mode, fmt = image.mode, (image.format or kind).lower()
    bit_depth = _bit_depth(image, data, kind)
    scale = 1
    if kind == "jpeg" and target > 0:
        scale = reduction_for(width, height, target, oversample)
        if scale > 1:
            # draft picks the largest reduction r with size // request >= r: ask for the floor
            image.draft("L", (max(1, width // scale), max(1, height // scale)))
            scale = _actual_scale(width, height, image.size)
    pillow_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # the header was checked against max_pixels on open
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as error:
        raise ImageError("corrupt_image", f"cannot decode {fmt} data: {error}") from error
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit
    return Decoded(_grey(image), width, height, scale, fmt, mode, bit_depth)


def _actual_scale(width: int, height: int, decoded: tuple[int, int]) -> int:
    """The reduction libjpeg actually applied (draft may pick a different one)."""
    for factor in JPEG_REDUCTIONS:
        if decoded == (math.ceil(width / factor), math.ceil(height / factor)):
            return factor
    raise ImageError("corrupt_image", f"unexpected reduced-scale size {decoded}")


def _bit_depth(image: Image.Image, data: bytes, kind: str) -> int:
    """Bits per sample as stored (PNG IHDR byte 24 holds it; other formats imply it by mode)."""
    if kind == "png" and len(data) > 24:
        return data[24]
    return {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}.get(image.mode, 8)


def _grey(image: Image.Image) -> np.ndarray:
    """One grey channel: uint16 for deep modes, uint8 otherwise; alpha composited over black.

    Transparent pixels carry no film, so they become black like the film margin.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return stretch_to_uint16(np.asarray(image))
    if image.mode == "L":
        return np.asarray(image)
    has_alpha = "A" in image.mode or "transparency" in image.info
    if not has_alpha:
        return np.asarray(image.convert("L"))
    rgba = image.convert("RGBA")
    grey = np.asarray(rgba.convert("L"), dtype=np.uint16)
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.uint16)
    if int(alpha.min()) == 255:
        return grey.astype(np.uint8)
    return ((grey * alpha + 127) // 255).astype(np.uint8)


def stretch_to_uint16(
    values: np.ndarray, low: float | None = None, high: float | None = None
) -> np.ndarray:
    """Map ``[low, high]`` (default: the image's own min..max) linearly onto 0..65535."""
    values = np.asarray(values, dtype=np.float64)
    low = float(values.min()) if low is None else low
    high = float(values.max()) if high is None else high
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint16)
    scaled = (np.clip(values, low, high) - low) * (65535.0 / (high - low))
    return np.rint(scaled).astype(np.uint16)


def _decode_dicom(data: bytes, max_pixels: int) -> Decoded:
    """DICOM: modality LUT, then VOI LUT/window, then MONOCHROME1 inversion."""
    try:
        import pydicom
    except ImportError as error:
        raise ImageError(
            "dicom_unsupported",
            "DICOM file but pydicom is not installed (pip install 'medvill[dicom]')",
        ) from error
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as error:  # pydicom raises many types on malformed headers
        raise ImageError("corrupt_image", f"cannot parse DICOM header: {error}") from error
    if "PixelData" not in ds:
        raise ImageError("corrupt_image", "DICOM file has no PixelData element")
    check_pixels(int(ds.get("Columns", 0) or 0), int(ds.get("Rows", 0) or 0), max_pixels)
    syntax = ds.file_meta.get("TransferSyntaxUID")
    syntax_name = getattr(syntax, "name", str(syntax))
    try:
        raw = ds.pixel_array
    except NotImplementedError as error:
        raise ImageError(
            "dicom_unsupported",
            f"no installed pixel-data decoder for transfer syntax {syntax_name} ({syntax}); "
            "install a pydicom plugin that supports it (pylibjpeg-*, python-gdcm)",
        ) from error
    except Exception as error:
        raise ImageError(
            "corrupt_image", f"cannot decode DICOM pixel data ({syntax_name}): {error}"
        ) from error
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    grey = _dicom_grey(raw, photometric, int(ds.get("NumberOfFrames", 1) or 1))
    bits = int(ds.get("BitsStored", 8))
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        grey = _dicom_tone(grey, ds)
    elif grey.dtype != np.uint8:
        grey = stretch_to_uint16(grey)
    height, width = grey.shape
    return Decoded(grey, width, height, 1, "dicom", photometric, bits)


def _dicom_grey(raw: np.ndarray, photometric: str, frames: int) -> np.ndarray:
    """Single-frame grey pixels; colour DICOMs (rare for CXR) reduced to ITU-R 601 luma."""
    if frames > 1:
        raise ImageError("unsupported_format", f"multi-frame DICOM ({frames} frames)")
    if raw.ndim == 3:
        luma = raw[..., 0] * 0.299 + raw[..., 1] * 0.587 + raw[..., 2] * 0.114
        return np.rint(luma).astype(raw.dtype)
    if raw.ndim != 2:
        raise ImageError(
            "unsupported_format", f"DICOM pixel array of shape {raw.shape} ({photometric})"
        )
    return raw


def _dicom_tone(grey: np.ndarray, ds: Dataset) -> np.ndarray:
    """Apply rescale + window (or VOI LUT), stretch to uint16 (8-bit stays uint8), invert MONO1.

    A window maps onto the stored value range, so that range (not the image's min..max) is
    stretched to 16 bits: the radiologist's window then survives unchanged.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_voi_lut(apply_modality_lut(grey, ds), ds)
    if grey.dtype == np.uint8 and values.dtype == np.uint8:
        out = values
    elif "WindowCenter" in ds and "VOILUTSequence" not in ds:
        out = stretch_to_uint16(values, *_window_output_range(ds))
    else:
        out = stretch_to_uint16(values)
    if str(ds.PhotometricInterpretation) == "MONOCHROME1":
        out = np.iinfo(out.dtype).max - out
    return out


def _window_output_range(ds: Dataset) -> tuple[float, float]:
    """The range pydicom's windowing maps onto: the stored range after the rescale."""
    bits = int(ds.get("BitsStored", 16))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return ends[0], ends[1]


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """8-bit grey for margin detection and output; uint16 is stretched over its own range.

    Deep sources (16-bit PNG holding 12-bit data, windowed DICOM) rarely use the full 16-bit
    range, so dividing by 257 would give a near-black image; the image's own min..max is the
    faithful 8-bit view.
    """
    if pixels.dtype == np.uint8:
        return pixels
    values = pixels.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(pixels.shape, dtype=np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)
