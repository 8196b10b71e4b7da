"""Small DICOMs and images for the localized tests: real demo pixels or generated content
with known margins and a bright target at a known place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[3]
#: A real NIH ChestX-ray14 image of the demo (512²).
DEMO_IMAGE = REPO / "data" / "sample" / "images" / "nih_chestxray14" / "00000001_000_xrv512.png"


def demo_pixels(side: int = 128) -> np.ndarray:
    """The demo X-ray, grey, resized to ``side``²."""
    with Image.open(DEMO_IMAGE) as image:
        return np.asarray(image.convert("L").resize((side, side), Image.Resampling.BOX))


def write_dicom(
    path: Path, pixels: np.ndarray, view: str = "PA", patient_id: str = "", uid: str = "1.2.3.4"
) -> Path:
    """An uncompressed 8-bit MONOCHROME2 DICOM of ``pixels`` with a view and patient id."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    meta.MediaStorageSOPInstanceUID = UID(uid)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, UID(uid)
    ds.Modality, ds.ViewPosition, ds.PatientID = "CR", view, patient_id
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def framed_target(
    content: tuple[int, int],
    margins: tuple[int, int, int, int],
    target: tuple[int, int, int, int],
    seed: int = 0,
) -> np.ndarray:
    """Chest-like texture of ``content`` (width, height) with a bright rectangle ``target``
    (x0, y0, x1, y1 in content pixels), framed by black margins (left, top, right, bottom)."""
    width, height = content
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 110 + 40 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + rng.normal(0, 5, (height, width))
    inner = np.clip(base, 60, 170).astype(np.uint8)
    x0, y0, x1, y1 = target
    inner[y0:y1, x0:x1] = 225
    left, top, right, bottom = margins
    out = np.zeros((height + top + bottom, width + left + right), dtype=np.uint8)
    out[top : top + height, left : left + width] = inner
    return out
