"""The record tables every stage reads and writes, and atomic Parquet/JSON I/O.

Each stage reads the previous stage's ``records.parquet``, appends its own columns and writes a
new ``records.parquet`` plus a ``rejects.parquet`` (one row per input it could not keep, with a
reason naming the file). Writes go to a temporary file that is renamed into place, so a run
killed half way leaves either the old output or the new one, never a torn file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

#: The 14 CheXpert observations, in the column order of the CheXpert labeler's output CSV.
CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

#: Columns every adapter must produce (one row per image).
INGEST_COLUMNS: tuple[str, ...] = (
    "dataset",  # dataset name, e.g. "mimic_cxr"
    "image_id",  # unique within the dataset (MIMIC dicom_id, Open-I image id, …)
    "patient_id",  # splits are patient-level
    "study_id",  # one report per study; several images may share it
    "view",  # AP / PA / LATERAL / LL / … (upper case), "" when unknown
    "image_path",  # source image, relative to the raw dataset root
    "report_text",  # the raw report text, unmodified
    "official_split",  # train / valid / test from the dataset, "" when it has none
    "synthetic_report",  # True when the report was written for the demo, not by a radiologist
    "extra_json",  # dataset-specific metadata (MeSH terms, source, …) as sorted-key JSON
)

REJECT_COLUMNS: tuple[str, ...] = ("id", "stage", "code", "reason")


@dataclass(frozen=True)
class Reject:
    """One input row a stage could not keep.

    ``code`` is a short machine-readable kind (``corrupt_image``, ``empty_report``, …) used for
    counts in stats.json; ``reason`` is the human sentence and names the file.
    """

    id: str
    stage: str
    code: str
    reason: str


def rejects_frame(rejects: Iterable[Reject]) -> pd.DataFrame:
    """Rejects as a DataFrame sorted by id, so the file is byte-identical on rerun."""
    rows = [(r.id, r.stage, r.code, r.reason) for r in rejects]
    frame = pd.DataFrame(rows, columns=list(REJECT_COLUMNS), dtype="string")
    return frame.sort_values(["id", "reason"], kind="stable").reset_index(drop=True)


def require_columns(frame: pd.DataFrame, columns: Sequence[str], source: Path | str) -> None:
    """Fail with a message naming the file when an upstream table lacks expected columns."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {missing}; was it written by an older medvill "
            "version? Re-run the upstream stage."
        )


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Permissions of every output file: what ``open()`` would give (0644 under the usual umask).
#: mkstemp creates 0600 files, which other members of a lab group could not read.
FILE_MODE = 0o666 & ~_current_umask()


def _atomic_target(path: Path) -> tuple[int, Path]:
    """A temporary file beside ``path`` (same file system, so the final rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, FILE_MODE)
    return fd, Path(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and an atomic rename."""
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` only when the ``with`` block ends normally.

    For outputs too large to assemble in memory first (task files of MIMIC-CXR's 200k
    studies): they are written piece by piece into a temporary file, renamed into place at
    the end, and removed if anything fails, as :func:`atomic_write_bytes` does.
    """
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write a DataFrame as Parquet atomically, without the pandas index (stable bytes)."""
    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    fd, tmp = _atomic_target(path)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_parquet(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a stage table; a missing file names the stage that should have written it.

    ``columns`` reads only those (a missing one is named with the file, as
    :func:`require_columns` does): a stage that needs ids and labels should not hold every
    report text, sections JSON and metadata string of 400k rows.
    """
    if columns is None:
        require_table(path, ())
        return pq.read_table(path).to_pandas()
    require_table(path, columns)
    return pq.read_table(path, columns=list(columns)).to_pandas()


def require_table(path: Path, columns: Sequence[str]) -> None:
    """Fail naming the stage to run when ``path`` is missing, or naming the file when it
    lacks one of ``columns`` (checked on the Parquet schema, no column is read)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: run the stage that writes it first "
            f"(stage '{path.parent.name}')."
        )
    if columns:
        present = set(pq.read_schema(path).names)
        missing = [c for c in columns if c not in present]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {missing}; was it written by an older medvill "
                "version? Re-run the upstream stage."
            )


def dumps_json(value: Any) -> str:
    """Canonical JSON (sorted keys, UTF-8, 2-space indent) so reruns are byte-identical."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, indent=2) + "\n"


def write_json(value: Any, path: Path) -> None:
    atomic_write_bytes(path, dumps_json(value).encode("utf-8"))


def stream_json(value: Any, path: Path) -> None:
    """:func:`write_json`'s bytes, encoded and written chunk by chunk (no whole-file string)."""
    encoder = json.JSONEncoder(sort_keys=True, ensure_ascii=False, indent=2)
    with atomic_writer(path) as handle:
        for chunk in encoder.iterencode(value):
            handle.write(chunk.encode("utf-8"))
        handle.write(b"\n")


def sample_key(dataset: str, image_id: str) -> str:
    """The WebDataset key of one image-report sample: ``<dataset>_<image_id>``.

    WebDataset splits a member name at its first dot into key and extension, so dots (and path
    separators, spaces, …) in ids are replaced by ``-``. Replacing alone would let two ids meet
    (``c.1`` and ``c-1`` both give ``c-1``, and WebDataset would merge them into one sample with
    duplicate members), so an id that needed any replacement also gets the first 10 hex digits
    of its SHA-256. The key depends on the id alone — the IRM negatives file, the shards and the
    task files all name a sample the same way whatever other ids exist. Case is kept: keys
    differing only in case are distinct in a tar and in WebDataset's reader.
    """
    safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_") else "-" for ch in image_id)
    if safe != image_id or not safe:
        safe = f"{safe}-{hashlib.sha256(image_id.encode('utf-8')).hexdigest()[:10]}"
    return f"{dataset}_{safe}"
