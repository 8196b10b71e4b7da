"""Tests of the images stage: pure functions on generated and real images, then the stage.

Real inputs come from the embedded demo images (see data/sample/SOURCES.md); the
generated ones have margins at exactly known positions so the detector can be held to ±2 px.
"""

from __future__ import annotations

import io
import json
import math
import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.images import (
    IMAGE_COLUMNS,
    ImageSettings,
    file_names,
    prepare,
    run_stage,
)
from pipeline.imaging.decode import decode_image, reduction_for, to_uint8
from pipeline.imaging.margins import Box, MarginParams, detect_margins, leading_margin
from pipeline.imaging.montage import MontageItem, render_montage
from pipeline.imaging.resize import content_size, crop_resize_pad, encode_image
from pipeline.params import DatasetPaths
from pipeline.records import FILE_MODE, INGEST_COLUMNS, write_parquet

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "sample" / "images"
NIH = SAMPLES / "nih_chestxray14"
MHH = SAMPLES / "mhh_covid19_cc_by_3.0"
DICOM = SAMPLES / "dicom"
needs_samples = pytest.mark.skipif(not NIH.is_dir(), reason=f"sample images not found: {SAMPLES}")
MARGIN = MarginParams()


# --------------------------------------------------------------------------- generated images


def anatomy(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Chest-like content: smooth mid-grey structure with texture, never uniform on a line."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 120 + 50 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + 20 * np.sin((xx + yy) / 31.0)
    return np.clip(base + rng.normal(0, 6, base.shape), 60, 190).astype(np.uint8)


def with_margins(
    content: np.ndarray, left: int, top: int, right: int, bottom: int, value: int
) -> np.ndarray:
    """``content`` framed by uniform ``value`` borders of the given widths."""
    height, width = content.shape
    out = np.full((height + top + bottom, width + left + right), value, dtype=np.uint8)
    out[top : top + height, left : left + width] = content
    return out


def assert_box_close(box: Box, expected: Box, tolerance: int = 2) -> None:
    got = (box.left, box.top, box.right, box.bottom)
    want = (expected.left, expected.top, expected.right, expected.bottom)
    assert all(abs(g - w) <= tolerance for g, w in zip(got, want, strict=True)), (got, want)


@pytest.mark.parametrize(
    ("left", "top", "right", "bottom", "value"),
    [
        (37, 21, 12, 50, 0),  # black film border
        (0, 40, 0, 33, 255),  # white bands top/bottom only
        (15, 0, 60, 0, 8),  # near-black, left/right only
        (25, 25, 25, 25, 128),  # uniform mid-grey scanner band (caught by max_std)
        (0, 0, 0, 0, 0),  # no margin at all
    ],
)
def test_generated_margins_found_within_2px(
    left: int, top: int, right: int, bottom: int, value: int
) -> None:
    image = with_margins(anatomy(300, 240), left, top, right, bottom, value)
    box = detect_margins(image, MARGIN)
    expected = Box(left, top, image.shape[1] - right, image.shape[0] - bottom)
    assert_box_close(box, expected)


def test_noisy_margin_with_text_marker_is_still_cut() -> None:
    """Film grain on the border and a white 'R' marker in it must not stop the cut."""
    rng = np.random.default_rng(3)
    image = with_margins(anatomy(400, 320, seed=1), 60, 30, 20, 30, 10)
    image = np.clip(image.astype(np.int16) + rng.normal(0, 5, image.shape), 0, 255)
    image = image.astype(np.uint8)
    image[100:130, 15:35] = 255  # marker in the left margin
    box = detect_margins(image, MARGIN)
    assert_box_close(box, Box(60, 30, 380, 430))


def test_mixed_black_border_then_white_collimation() -> None:
    """Black outer border, then a white collimation band: both are margin."""
    inner = with_margins(anatomy(200, 200, seed=2), 18, 18, 18, 18, 250)
    image = with_margins(inner, 30, 10, 30, 10, 0)
    box = detect_margins(image, MARGIN)
    assert_box_close(box, Box(48, 28, 48 + 200, 28 + 200))


def test_wide_side_margins_do_not_eat_rows() -> None:
    """Rows are judged inside the column crop: a narrow neck must not be cut away."""
    content = anatomy(300, 200, seed=4)
    content[:60, :] = 5  # dark air around ...
    content[:60, 85:115] = 140  # ... a neck only 15 % of the content width
    image = with_margins(content, 150, 0, 150, 0, 0)
    box = detect_margins(image, MARGIN)
    assert_box_close(box, Box(150, 0, 350, 300))


def test_tilted_film_edge_is_cut_conservatively() -> None:
    """A rotated border is cut at its innermost point, never past it into the content."""
    image = anatomy(400, 400, seed=5)
    rows = np.arange(400)
    edge = 20 + rows * 30 // 400  # left border 20 px at the top, 49 px at the bottom
    for row in rows:
        image[row, : edge[row]] = 0
    box = detect_margins(image, MARGIN)
    assert 18 <= box.left <= 22
    assert (box.top, box.right, box.bottom) == (0, 400, 400)


def test_dark_content_is_never_cut_beyond_max_fraction() -> None:
    """A nearly black (under-exposed) image: the cut stops at max_fraction per side."""
    image = np.full((200, 100), 12, dtype=np.uint8)
    image[95:105, 45:55] = 200
    box = detect_margins(image, MarginParams(max_fraction=0.3))
    assert box == Box(30, 60, 70, 140)


def test_leading_margin_tolerates_short_gaps_only() -> None:
    flags = np.array([1, 1, 0, 1, 1, 0, 0, 0, 1], dtype=bool)
    assert leading_margin(flags, limit=9, gap=1) == 5
    assert leading_margin(flags, limit=9, gap=3) == 9
    assert leading_margin(flags, limit=4, gap=1) == 4
    assert leading_margin(np.zeros(5, dtype=bool), limit=5, gap=2) == 0


# --------------------------------------------------------------------------- real images

#: Sample images with known margins (SOURCES.md crop notes) → side: minimum share cut there.
KNOWN_MARGINS: dict[str, dict[str, float]] = {
    "nih_chestxray14/00005618_000.png": {"top": 0.15, "bottom": 0.2},  # white on 3 sides
    "nih_chestxray14/00028405_000.png": {"left": 0.05, "top": 0.05, "right": 0.05, "bottom": 0.05},
    "nih_chestxray14/00019534_000.png": {"left": 0.1, "bottom": 0.2},  # black field
    "nih_chestxray14/00017625_000.png": {"top": 0.08},  # "PORTABLE AP" band
    "nih_chestxray14/00026402_000.png": {"top": 0.08, "bottom": 0.08},
    "nih_chestxray14/00026355_000.png": {"right": 0.1},
    "nih_chestxray14/00030102_000.png": {"top": 0.1},
    "mhh_covid19_cc_by_3.0/86d19bba.png": {"left": 0.04},  # black bar on the left
    "mhh_covid19_cc_by_3.0/1ae7877e.png": {"left": 0.05},  # collimation
    "mhh_covid19_cc_by_3.0/a4318ac9.png": {"right": 0.1},
}


def crop_shares(box: Box, width: int, height: int) -> dict[str, float]:
    return {
        "left": box.left / width,
        "top": box.top / height,
        "right": 1 - box.right / width,
        "bottom": 1 - box.bottom / height,
    }


def sample_box(relative: str) -> tuple[Box, int, int]:
    result = prepare((SAMPLES / relative).read_bytes(), ImageSettings())
    return result.source_box, result.decoded.width, result.decoded.height


@needs_samples
@pytest.mark.parametrize("relative", sorted(KNOWN_MARGINS))
def test_real_known_margins_are_cut(relative: str) -> None:
    box, width, height = sample_box(relative)
    shares = crop_shares(box, width, height)
    for side, minimum in KNOWN_MARGINS[relative].items():
        assert shares[side] >= minimum, (side, shares)


@needs_samples
@pytest.mark.parametrize(
    "relative",
    sorted(str(p.relative_to(SAMPLES)) for p in SAMPLES.glob("*/*") if p.suffix != ".md"),
)
def test_real_crop_never_cuts_into_the_lung_field(relative: str) -> None:
    """Every sample keeps ≥ 50 % of each dimension and the whole central region.

    Exception: 00005618 (paediatric AP) really is a small film on a wide white field; its
    content is 48 % of the height (checked by eye in the crop montage).
    """
    box, width, height = sample_box(relative)
    keep = 0.45 if "00005618_000" in relative else 0.5
    assert box.width >= keep * width and box.height >= keep * height, box
    assert box.left <= 0.35 * width and box.right >= 0.65 * width, box
    assert box.top <= 0.35 * height and box.bottom >= 0.65 * height, box


@needs_samples
@pytest.mark.parametrize("name", ["00002778_000.png", "00024291_000.png", "00005425_000.png"])
def test_real_films_without_margins_are_not_cropped(name: str) -> None:
    box, width, height = sample_box(f"nih_chestxray14/{name}")
    assert box == Box(0, 0, width, height)


# --------------------------------------------------------------------------- decoding


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(array: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def test_16bit_png_is_decoded_deep_and_stretched_to_8bit() -> None:
    """12-bit data in a 16-bit PNG: kept as uint16, then min..max → 0..255 (not /257)."""
    values = np.tile(np.linspace(100, 4000, 256).astype(np.uint16), (128, 1))
    decoded = decode_image(png_bytes(values), 512, fast=True)
    assert decoded.pixels.dtype == np.uint16
    assert (decoded.bit_depth, decoded.source_format) == (16, "png")
    assert decoded.source_mode.startswith("I")
    grey = to_uint8(decoded.pixels)
    assert (int(grey[0, 0]), int(grey[0, -1])) == (0, 255)
    assert np.all(np.diff(grey[0].astype(int)) >= 0)


@needs_samples
def test_rgba_png_matches_its_rgb_luma() -> None:
    path = NIH / "00000100_000.png"
    decoded = decode_image(path.read_bytes(), 512, fast=True)
    with Image.open(path) as image:
        assert image.mode == "RGBA"
        expected = np.asarray(image.convert("RGB").convert("L"))
    assert decoded.source_mode == "RGBA" and decoded.pixels.dtype == np.uint8
    np.testing.assert_array_equal(decoded.pixels, expected)


def test_transparent_rgba_is_composited_over_black() -> None:
    rgba = np.zeros((80, 80, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 255
    rgba[:, :40, 3] = 0
    decoded = decode_image(png_bytes(rgba), 512, fast=True)
    assert int(decoded.pixels[:, :40].max()) == 0
    assert int(decoded.pixels[:, 40:].min()) == 200


@needs_samples
def test_rgb_jpeg_decodes_to_grey() -> None:
    decoded = decode_image(
        (SAMPLES / "derived_jpeg/00026402_000_rgb_q85.jpg").read_bytes(), 512, True
    )
    assert (decoded.source_mode, decoded.pixels.ndim, decoded.pixels.dtype) == ("RGB", 2, np.uint8)
    assert decoded.pixels.shape == (1024, 1024) and decoded.scale == 1


@needs_samples
def test_dicom_monochrome1_is_inverted() -> None:
    """The header-edited MONOCHROME1 file holds the same pixels as the MONOCHROME2 one."""
    mono2 = decode_image((DICOM / "siim_nih_cr_pa_monochrome2.dcm").read_bytes(), 512, True)
    mono1 = decode_image((DICOM / "xrv_fake_monochrome1.dcm").read_bytes(), 512, True)
    assert (mono1.source_mode, mono2.source_mode) == ("MONOCHROME1", "MONOCHROME2")
    assert mono2.pixels.dtype == np.uint8 and mono2.bit_depth == 8
    np.testing.assert_array_equal(mono1.pixels, 255 - mono2.pixels)


@needs_samples
def test_dicom_15bit_jpeg2000_monochrome1_windowed_and_inverted() -> None:
    """Real MONOCHROME1 CR: after VOI + inversion the spine is brighter than both lungs."""
    decoded = decode_image(
        (DICOM / "nema_wg04_RG1_J2KI_cr_chest_monochrome1.dcm").read_bytes(), 512, True
    )
    assert (decoded.width, decoded.height, decoded.bit_depth) == (1841, 1955, 15)
    assert decoded.pixels.dtype == np.uint16
    grey = to_uint8(decoded.pixels).astype(float)
    h, w = grey.shape
    band = slice(int(0.35 * h), int(0.5 * h))
    spine = grey[band, int(0.47 * w) : int(0.53 * w)].mean()
    lungs = [grey[band, int(f * w) : int((f + 0.06) * w)].mean() for f in (0.25, 0.69)]
    assert spine > max(lungs) + 20, (spine, lungs)


def test_reduction_keeps_decoded_long_side_above_target() -> None:
    assert reduction_for(2544, 3056, 512, 1.2) == 4  # 764 ≥ 614
    assert reduction_for(2048, 2500, 512, 1.2) == 4  # 625 ≥ 614
    assert reduction_for(2048, 2400, 512, 1.2) == 2  # 600 < 614 at /4
    assert reduction_for(1024, 1024, 512, 1.2) == 1
    assert reduction_for(6000, 6000, 512, 1.0) == 8
    for width, height in [(2544, 3056), (2048, 2500), (4000, 3000), (700, 900)]:
        factor = reduction_for(width, height, 512, 1.2)
        assert math.ceil(max(width, height) / factor) >= 512 * 1.2 or factor == 1


def test_reduced_scale_jpeg_decode_geometry_and_box() -> None:
    """A 2000×2000 JPEG decodes at 1/2 (1000 ≥ 614 but 500 < 614) and the box maps back."""
    image = with_margins(anatomy(1800, 1600, seed=6), 240, 120, 160, 80, 0)
    data = jpeg_bytes(image)
    result = prepare(data, ImageSettings())
    assert result.decoded.scale == 2 and result.grey.shape == (1000, 1000)
    # the box is found on the 1/2 image: source accuracy is ±scale, plus the 2 px tolerance
    assert_box_close(result.source_box, Box(240, 120, 2000 - 160, 2000 - 80), tolerance=4)
    slow = prepare(data, ImageSettings(fast_decode=False))
    assert slow.decoded.scale == 1


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@needs_samples
@pytest.mark.parametrize(
    ("source", "size", "min_psnr"),
    [
        (NIH / "00028405_000.png", (2544, 3056), 44.0),
        # sharp lead marker, pacemaker and film edge; 2513 and 3050 are not multiples of 4, so
        # the reduced image covers 3 (2) source pixels more than the film: the box must be
        # mapped fractionally or the right edge shifts by half an output pixel (31 dB)
        (MHH / "19073f37.png", (2513, 3050), 44.0),
    ],
)
def test_fast_path_matches_full_resolution_lanczos_reference(
    source: Path, size: tuple[int, int], min_psnr: float
) -> None:
    """Reduced-scale decode + LANCZOS vs full decode + LANCZOS on the same box."""
    grey = np.asarray(Image.open(source).convert("L"))
    data = jpeg_bytes(cv2.resize(grey, size, interpolation=cv2.INTER_CUBIC), quality=95)
    fast = prepare(data, ImageSettings())
    assert fast.decoded.scale == 4
    box = fast.source_box
    with Image.open(io.BytesIO(data)) as full:
        crop = full.convert("L").crop((box.left, box.top, box.right, box.bottom))
        content = (fast.placed.content_width, fast.placed.content_height)
        reference = np.asarray(crop.resize(content, Image.Resampling.LANCZOS))
    left, top = fast.placed.left, fast.placed.top
    ours = fast.placed.pixels[top : top + content[1], left : left + content[0]]
    assert psnr(ours, reference) >= min_psnr


@needs_samples
def test_full_resolution_png_reduces_first_and_stays_within_53_db_of_exact_lanczos() -> None:
    """A 2513×3050 PNG has no reduced-scale decode; reducing_gap=2 box-reduces ×2 first."""
    grey = np.asarray(Image.open(MHH / "19073f37.png").convert("L"))
    big = cv2.resize(grey, (2513, 3050), interpolation=cv2.INTER_CUBIC)
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, format="PNG")
    data = buffer.getvalue()
    exact = prepare(data, ImageSettings(reducing_gap=None))
    quick = prepare(data, ImageSettings())
    assert exact.decoded.scale == quick.decoded.scale == 1
    assert exact.source_box == quick.source_box
    box = exact.source_box
    content = (exact.placed.content_width, exact.placed.content_height)
    crop = Image.fromarray(big).crop((box.left, box.top, box.right, box.bottom))
    reference = np.asarray(crop.resize(content, Image.Resampling.LANCZOS))
    left, top = exact.placed.left, exact.placed.top
    window = (slice(top, top + content[1]), slice(left, left + content[0]))
    np.testing.assert_array_equal(exact.placed.pixels[window], reference)
    assert not np.array_equal(quick.placed.pixels, exact.placed.pixels)
    assert psnr(quick.placed.pixels[window], reference) >= 53.0


# --------------------------------------------------------------------------- resize / encode


def test_content_size_keeps_aspect_and_long_side() -> None:
    assert content_size(2000, 1000, 512) == (512, 256)
    assert content_size(1000, 3000, 512) == (171, 512)
    assert content_size(5000, 1, 512) == (512, 1)


def test_crop_resize_pad_centres_content_on_pad_value() -> None:
    grey = np.full((100, 300), 77, dtype=np.uint8)
    grey[:, :10] = 0
    placed = crop_resize_pad(grey, Box(10, 0, 300, 100), 1, (512, 177), 512, "area", 9)
    assert placed.pixels.shape == (512, 512)
    assert (placed.left, placed.top, placed.content_width, placed.content_height) == (
        0,
        167,
        512,
        177,
    )
    assert int(placed.pixels[0, 0]) == 9 and int(placed.pixels[-1, -1]) == 9
    assert np.all(placed.pixels[167 : 167 + 177, :] == 77)


def test_encoders_are_deterministic_and_grey() -> None:
    pixels = anatomy(512, 512)
    jpg, png = encode_image(pixels, "jpg", 95), encode_image(pixels, "png", 95)
    assert jpg == encode_image(pixels, "jpg", 95) and jpg.startswith(b"\xff\xd8\xff")
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "L"
        np.testing.assert_array_equal(np.asarray(image), pixels)
    with pytest.raises(ValueError, match="unknown output format 'webp'"):
        encode_image(pixels, "webp", 95)


def test_montage_draws_the_box_in_red() -> None:
    source = anatomy(200, 100)
    item = MontageItem("abc", source, Box(10, 20, 90, 180), np.zeros((512, 512), np.uint8))
    with Image.open(io.BytesIO(render_montage([item, item, item], tile=128))) as sheet:
        assert sheet.size == (2 * (2 * 128 + 6) + 3 * 6, 2 * (128 + 16) + 3 * 6)
        pixels = np.asarray(sheet.convert("RGB")).astype(int)
    # box left edge: x = 6 + 10 * 0.64 ≈ 12, inside the first cell's image area
    column = pixels[6 + 16 + 20 : 6 + 16 + 100, 12]
    assert np.all((column[:, 0] > 200) & (column[:, 1] < 100))
    assert render_montage([item]) == render_montage([item])


# --------------------------------------------------------------------------- settings, names


def test_settings_reject_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValueError, match=r"images: unknown key\(s\) \['qualty'\]"):
        ImageSettings.from_params({"images": {"qualty": 90}})
    with pytest.raises(ValueError, match=r"images.margin: unknown key\(s\) \['maxstd'\]"):
        ImageSettings.from_params({"images": {"margin": {"maxstd": 3}}})
    with pytest.raises(ValueError, match="images.format='tif'"):
        ImageSettings.from_params({"images": {"format": "tif"}})
    with pytest.raises(ValueError, match=r"images.reducing_gap=0.5 \(≥ 1, or null for exact\)"):
        ImageSettings.from_params({"images": {"reducing_gap": 0.5}})
    assert ImageSettings.from_params({"images": {"reducing_gap": None}}).reducing_gap is None
    settings = ImageSettings.from_params(
        {"images": {"output_size": 256, "margin": {"dark": 30}, "interpolation": "lanczos"}}
    )
    assert (settings.output_size, settings.margin.dark, settings.margin.bright) == (256, 30, 235)


def test_file_names_are_safe_and_unique() -> None:
    names = file_names(["abc", "p10/s5/x y", "../etc", "ABC"], "jpg")
    assert names["abc"] == "abc.jpg"
    assert names["p10/s5/x y"].startswith("p10_s5_x_y-") and names["p10/s5/x y"].endswith(".jpg")
    assert "/" not in names["../etc"] and not names["../etc"].startswith(".")
    assert names["ABC"].startswith("ABC-")  # would collide with abc.jpg on macOS/Windows
    assert len(set(names.values())) == 4


# --------------------------------------------------------------------------- the stage


def _row(image_id: str, image_path: str) -> dict[str, object]:
    return {
        "dataset": "unit",
        "image_id": image_id,
        "patient_id": f"p{image_id}",
        "study_id": f"s{image_id}",
        "view": "PA",
        "image_path": image_path,
        "report_text": "No acute findings.",
        "official_split": "",
        "synthetic_report": True,
        "extra_json": "{}",
    }


def _write_dicom_without_decoder(path: Path) -> None:
    """A valid DICOM whose transfer syntax (MPEG-2) no installed pydicom plugin decodes."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1")
    meta.MediaStorageSOPInstanceUID = UID("1.2.3.4")
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, UID("1.2.3.4")
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 128, 128, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = encapsulate([bytes(64)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


#: id → (expected reject code, phrase the reason must contain); None = kept.
BAD_INPUTS: dict[str, tuple[str, str] | None] = {
    "good_png": None,
    "deep16": None,
    "rgba": None,
    "margins": None,
    "truncated_jpg": ("corrupt_image", "image file is truncated"),
    "truncated_png": ("corrupt_image", "cannot decode png data"),
    "corrupt_png": ("corrupt_image", "png signature but unreadable header"),
    "not_an_image": ("unsupported_format", "not a recognised image format"),
    "zero_bytes": ("empty_file", "file is empty (0 bytes)"),
    "missing": ("unreadable_path", "file not found"),
    "a_directory": ("unreadable_path", "cannot read: Is a directory"),
    "tiny": ("too_small", "image is 40×90 px, under images.min_side=64"),
    "blank": ("blank_image", "every pixel has grey level 0"),
    "dicom_mpeg2": ("dicom_unsupported", "MPEG2"),
}


@pytest.fixture
def raw_dataset(tmp_path: Path) -> DatasetPaths:
    """A raw tree with one file per BAD_INPUTS case and an ingest table pointing at them."""
    raw = tmp_path / "raw"
    (raw / "img").mkdir(parents=True)
    good = with_margins(anatomy(300, 260, seed=7), 30, 20, 10, 40, 0)
    good_jpeg = jpeg_bytes(anatomy(300, 300, seed=8))
    good_png = png_bytes(anatomy(300, 300, seed=9))
    files: dict[str, tuple[str, bytes | None]] = {
        "good_png": ("img/good.png", good_png),
        "deep16": ("img/deep16.png", png_bytes(anatomy(200, 180).astype(np.uint16) * 16)),
        "rgba": (
            "img/rgba.png",
            png_bytes(np.dstack([anatomy(150, 150)] * 3 + [np.full((150, 150), 255, np.uint8)])),
        ),
        "margins": ("img/margins.png", png_bytes(good)),
        "truncated_jpg": ("img/truncated.jpg", good_jpeg[: len(good_jpeg) // 2]),
        "truncated_png": ("img/truncated.png", good_png[: len(good_png) // 2]),
        "corrupt_png": ("img/corrupt.png", good_png[:16] + bytes(range(256)) * 4),
        "not_an_image": ("img/notes.png", b"this is a report, not an image\n"),
        "zero_bytes": ("img/empty.jpg", b""),
        "missing": ("img/does_not_exist.jpg", None),
        "a_directory": ("img/subdir.png", None),
        "tiny": ("img/tiny.png", png_bytes(anatomy(90, 40))),
        "blank": ("img/blank.png", png_bytes(np.zeros((100, 100), np.uint8))),
        "dicom_mpeg2": ("img/video.dcm", None),
    }
    for relative, data in files.values():
        if data is not None:
            (raw / relative).write_bytes(data)
    (raw / "img/subdir.png").mkdir()
    _write_dicom_without_decoder(raw / "img/video.dcm")
    paths = DatasetPaths("unit", "sample", raw, tmp_path / "interim", tmp_path / "shards")
    rows = [_row(image_id, relative) for image_id, (relative, _) in files.items()]
    frame = pd.DataFrame(rows, columns=list(INGEST_COLUMNS))
    write_parquet(frame, paths.stage_dir("ingest") / "records.parquet")
    return paths


def _outputs(stage_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(stage_dir)): p.read_bytes()
        for p in sorted(stage_dir.rglob("*"))
        if p.is_file() and p.name != "timing.json"
    }


def test_stage_rejects_each_bad_input_with_a_reason_naming_the_file(
    raw_dataset: DatasetPaths,
) -> None:
    stats = run_stage(raw_dataset, {"images": {"montage_count": 3}}, workers=1)
    stage_dir = raw_dataset.stage_dir("images")
    rejects = pd.read_parquet(stage_dir / "rejects.parquet").set_index("id")
    expected_rejects = {k: v for k, v in BAD_INPUTS.items() if v is not None}
    assert sorted(rejects.index) == sorted(expected_rejects)
    ingest = pd.read_parquet(raw_dataset.stage_dir("ingest") / "records.parquet")
    paths = dict(zip(ingest["image_id"], ingest["image_path"], strict=True))
    for image_id, (code, phrase) in expected_rejects.items():
        row = rejects.loc[image_id]
        assert row["code"] == code, (image_id, row["reason"])
        assert str(raw_dataset.raw / paths[image_id]) in row["reason"]
        assert phrase in row["reason"], (image_id, row["reason"])
        assert row["stage"] == "images"
    assert (stats["in"], stats["out"], stats["rejected"]) == (14, 4, 10)
    assert stats["reconciled"] is True
    on_disk = json.loads((stage_dir / "stats.json").read_text())
    assert on_disk["in"] == on_disk["out"] + on_disk["rejected"]
    assert on_disk["reject_reasons"]["corrupt_image"] == 3


def test_stage_records_geometry_and_files(raw_dataset: DatasetPaths) -> None:
    run_stage(raw_dataset, {"images": {}}, workers=1)
    stage_dir = raw_dataset.stage_dir("images")
    records = pd.read_parquet(stage_dir / "records.parquet")
    assert list(records.columns) == [*INGEST_COLUMNS, *IMAGE_COLUMNS]
    assert list(records["image_id"]) == ["deep16", "good_png", "margins", "rgba"]
    row = records.set_index("image_id").loc["margins"]
    # 260×300 content framed by 30/20/10/40 px of black → source 300×360
    assert (row["source_width"], row["source_height"]) == (300, 360)
    crop = (row["crop_left"], row["crop_top"], row["crop_right"], row["crop_bottom"])
    assert all(abs(a - b) <= 2 for a, b in zip(crop, (30, 20, 290, 320), strict=True)), crop
    assert row["content_height"] == 512 and abs(row["content_width"] - 444) <= 4
    assert row["pad_left"] == (512 - row["content_width"]) // 2 and row["pad_top"] == 0
    deep = records.set_index("image_id").loc["deep16"]
    assert (deep["source_bit_depth"], deep["source_format"]) == (16, "png")
    assert records.set_index("image_id").loc["rgba", "source_mode"] == "RGBA"
    for image_file in records["image_file"]:
        with Image.open(stage_dir / image_file) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "L", (512, 512))
    with Image.open(stage_dir / "crop_montage.png") as montage:
        assert montage.format == "PNG" and montage.width > 512


def test_stage_outputs_get_normal_file_permissions(raw_dataset: DatasetPaths) -> None:
    """Files are written via mkstemp (0600); they must end up as open() would make them."""
    umask = os.umask(0o022)
    os.umask(umask)
    assert 0o666 & ~umask == FILE_MODE
    run_stage(raw_dataset, {"images": {}}, workers=1)
    stage_dir = raw_dataset.stage_dir("images")
    written = [p for p in stage_dir.rglob("*") if p.is_file()]
    assert len(written) >= 7  # 4 images + records, rejects, stats, timing, montage
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in written}
    assert set(modes.values()) == {FILE_MODE}, modes


def test_stage_is_byte_identical_on_rerun_and_across_worker_counts(
    raw_dataset: DatasetPaths,
) -> None:
    stage_dir = raw_dataset.stage_dir("images")
    run_stage(raw_dataset, {"images": {}}, workers=1)
    first = _outputs(stage_dir)
    (stage_dir / "files" / "stale.jpg").write_bytes(b"left over from an older run")
    # a parent that used OpenCV's thread pool must not deadlock forked workers (it did with
    # cv2.resize in the workers; the stage now resizes with Pillow)
    cv2.resize(np.zeros((2000, 2000), np.uint8), (500, 500), interpolation=cv2.INTER_AREA)
    run_stage(raw_dataset, {"images": {}}, workers=2)
    assert _outputs(stage_dir) == first
    assert "files/stale.jpg" not in _outputs(stage_dir)


def test_stage_png_output_format(raw_dataset: DatasetPaths) -> None:
    run_stage(raw_dataset, {"images": {"format": "png", "pad_value": 255}}, workers=1)
    stage_dir = raw_dataset.stage_dir("images")
    records = pd.read_parquet(stage_dir / "records.parquet").set_index("image_id")
    assert records.loc["margins", "image_file"] == "files/margins.png"
    with Image.open(stage_dir / "files/margins.png") as image:
        pixels = np.asarray(image)
    assert image.mode == "L" and int(pixels[0, 0]) == 255  # left pad column
