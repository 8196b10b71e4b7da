"""The ``images`` stage: raw radiograph → cropped, resized, padded 8-bit grey square.

Reads ``<interim>/ingest/records.parquet`` and writes one ``files/<image id>.<jpg|png>`` per
record, ``records.parquet`` (ingest columns + image geometry), ``rejects.parquet``,
``stats.json``, ``timing.json`` and ``crop_montage.png`` (a DVC plot).

The pixel work lives in :mod:`pipeline.imaging` as pure functions; this module only resolves
params, reads files, runs the pure chain in worker processes and assembles the tables. Workers
write their output file themselves and return only a small row, so image bytes never travel
between processes. Records are processed in sorted image-id order and the encoders are
deterministic, so a rerun produces byte-identical files and tables.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from pipeline import tables
from pipeline.imaging.decode import (
    DEFAULT_MAX_PIXELS,
    Decoded,
    ImageError,
    decode_image,
    to_uint8,
)
from pipeline.imaging.margins import Box, MarginParams, detect_margins
from pipeline.imaging.montage import MontageItem, render_montage
from pipeline.imaging.resize import (
    FORMATS,
    INTERPOLATIONS,
    Placed,
    content_size,
    crop_resize_pad,
    encode_image,
)
from pipeline.parallel import parallel_map
from pipeline.params import DatasetPaths
from pipeline.rawfiles import RawInputError, read_regular_file, resolve_under
from pipeline.records import (
    INGEST_COLUMNS,
    atomic_write_bytes,
    read_parquet,
    require_table,
)
from pipeline.stage import StageRun
from pipeline.tables import FrameWriter, iter_frames, table_rows

STAGE = "images"
FILES_DIR = "files"
MONTAGE_FILE = "crop_montage.png"

#: Columns this stage adds after the ingest columns, in order.
IMAGE_COLUMNS: tuple[str, ...] = (
    "image_file",  # output path relative to the images stage dir, e.g. files/abc.jpg
    "image_sha256",  # of the output file's bytes
    "source_format",  # jpeg / png / dicom / other Pillow format name
    "source_mode",  # Pillow mode (L, RGB, RGBA, I;16, …) or DICOM photometric interpretation
    "source_bit_depth",  # bits per sample as stored
    "source_width",
    "source_height",
    "decode_scale",  # 1, 2, 4 or 8: the source was decoded at 1/decode_scale resolution
    "crop_left",  # crop box in source pixels; right/bottom exclusive
    "crop_top",
    "crop_right",
    "crop_bottom",
    "content_width",  # resized content before padding
    "content_height",
    "pad_left",  # where the content sits on the size×size canvas
    "pad_top",
)
_STRING_COLUMNS = {"image_file", "image_sha256", "source_format", "source_mode"}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class ImageSettings:
    """The ``images:`` block of params.yaml, validated (a typo fails before any work)."""

    output_size: int = 512
    format: str = "jpg"
    jpeg_quality: int = 95
    interpolation: str = "lanczos"
    reducing_gap: float | None = 2.0
    pad_value: int = 0
    min_side: int = 64
    margin: MarginParams = field(default_factory=MarginParams)
    fast_decode: bool = True
    decode_oversample: float = 1.2
    montage_count: int = 8
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ImageSettings:
        """Build from the full params dict; unknown keys and bad values name the key."""
        block = dict(params.get(STAGE) or {})
        margin = dict(block.pop("margin", None) or {})
        _check_keys(block, {f.name for f in fields(cls)} - {"margin"}, "images")
        _check_keys(margin, {f.name for f in fields(MarginParams)}, "images.margin")
        settings = cls(margin=MarginParams(**margin), **block)
        settings.validate()
        return settings

    def validate(self) -> None:
        problems = []
        if self.format not in FORMATS:
            problems.append(f"images.format={self.format!r} (choose {', '.join(FORMATS)})")
        if self.interpolation not in INTERPOLATIONS:
            choices = ", ".join(INTERPOLATIONS)
            problems.append(f"images.interpolation={self.interpolation!r} (choose {choices})")
        if self.reducing_gap is not None and self.reducing_gap < 1.0:
            problems.append(f"images.reducing_gap={self.reducing_gap} (≥ 1, or null for exact)")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"images.jpeg_quality={self.jpeg_quality} (1..100)")
        if not 0 <= self.pad_value <= 255:
            problems.append(f"images.pad_value={self.pad_value} (0..255)")
        if self.output_size < 16 or self.min_side < 1:
            problems.append(
                f"images.output_size={self.output_size} (≥16) / min_side={self.min_side} (≥1)"
            )
        if self.max_pixels < 1:
            problems.append(f"images.max_pixels={self.max_pixels} (≥1)")
        if self.decode_oversample < 1.0:
            problems.append(f"images.decode_oversample={self.decode_oversample} (≥1)")
        if not 0.0 <= self.margin.max_fraction < 0.5:
            problems.append(f"images.margin.max_fraction={self.margin.max_fraction} ([0, 0.5))")
        if problems:
            raise ValueError("invalid params.yaml: " + "; ".join(problems))


def _check_keys(block: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(block) - known)
    if unknown:
        raise ValueError(
            f"params.yaml {where}: unknown key(s) {unknown}; known: {', '.join(sorted(known))}"
        )


@dataclass(frozen=True)
class Prepared:
    """Everything the pure chain computes for one source (also used by the montage)."""

    decoded: Decoded
    grey: np.ndarray
    box: Box
    source_box: Box
    placed: Placed


def prepare(data: bytes, settings: ImageSettings) -> Prepared:
    """Decode → 8-bit grey → margins → crop/resize/pad. Raises ImageError for bad input."""
    decoded = decode_image(
        data,
        settings.output_size,
        settings.fast_decode,
        settings.decode_oversample,
        settings.max_pixels,
    )
    if min(decoded.width, decoded.height) < settings.min_side:
        raise ImageError(
            "too_small",
            f"image is {decoded.width}×{decoded.height} px, under images.min_side="
            f"{settings.min_side} px on a side",
        )
    grey = to_uint8(decoded.pixels)
    low, high = int(grey.min()), int(grey.max())
    if low == high:
        raise ImageError("blank_image", f"every pixel has grey level {low}: no image content")
    box = detect_margins(grey, settings.margin)
    source_box = box.scaled(decoded.scale, decoded.width, decoded.height)
    content = content_size(source_box.width, source_box.height, settings.output_size)
    placed = crop_resize_pad(
        grey,
        source_box,
        decoded.scale,
        content,
        settings.output_size,
        settings.interpolation,
        settings.pad_value,
        settings.reducing_gap,
    )
    return Prepared(decoded, grey, box, source_box, placed)


@dataclass(frozen=True)
class Task:
    """One record for a worker: where to read, where to write, how."""

    image_id: str
    source: str
    target: str
    image_file: str
    settings: ImageSettings
    montage: bool = False  # also hand back what the crop montage shows (no second decode)


@dataclass(frozen=True)
class Outcome:
    """A worker's answer: the new columns, or a reject code and message."""

    image_id: str
    columns: dict[str, Any] | None = None
    code: str = ""
    message: str = ""
    montage: MontageItem | None = None


def read_source(path: Path) -> bytes:
    """The source file's bytes; unreadable paths become ImageError with the OS reason.

    Only regular files are opened: a FIFO at the path would block the worker forever.
    """
    try:
        return read_regular_file(path)
    except FileNotFoundError as error:
        raise ImageError("unreadable_path", "file not found") from error
    except RawInputError as error:
        raise ImageError(error.code, error.message) from error


def process_one(task: Task) -> Outcome:
    """Worker: read, prepare, encode and write one image; never raises for bad input."""
    try:
        result = prepare(read_source(Path(task.source)), task.settings)
    except ImageError as error:
        return Outcome(task.image_id, code=error.code, message=f"{task.source}: {error.message}")
    encoded = encode_image(result.placed.pixels, task.settings.format, task.settings.jpeg_quality)
    atomic_write_bytes(Path(task.target), encoded)
    montage = None
    if task.montage:
        with Image.open(io.BytesIO(encoded)) as written:
            output = np.asarray(written.convert("L"))
        montage = MontageItem(task.image_id, result.grey, result.box, output)
    return Outcome(task.image_id, columns=_columns(task, result, encoded), montage=montage)


def _columns(task: Task, result: Prepared, encoded: bytes) -> dict[str, Any]:
    decoded, box, placed = result.decoded, result.source_box, result.placed
    return {
        "image_file": task.image_file,
        "image_sha256": hashlib.sha256(encoded).hexdigest(),
        "source_format": decoded.source_format,
        "source_mode": decoded.source_mode,
        "source_bit_depth": decoded.bit_depth,
        "source_width": decoded.width,
        "source_height": decoded.height,
        "decode_scale": decoded.scale,
        "crop_left": box.left,
        "crop_top": box.top,
        "crop_right": box.right,
        "crop_bottom": box.bottom,
        "content_width": placed.content_width,
        "content_height": placed.content_height,
        "pad_left": placed.left,
        "pad_top": placed.top,
    }


def file_names(image_ids: list[str], suffix: str, used: set[str] | None = None) -> dict[str, str]:
    """A safe, unique file name per id (ids may hold '/', spaces, or differ only in case).

    Ids that are already safe keep their name; others — and any name that would collide on a
    case-insensitive file system — get a short hash of the original id appended. ``used``
    (case-folded stems already taken) carries the names of earlier batches, so naming batch
    by batch gives the names naming all ids at once would.
    """
    names: dict[str, str] = {}
    used = set() if used is None else used
    for image_id in image_ids:
        stem = _SAFE_NAME.sub("_", image_id).lstrip(".")[:120] or "_"
        if stem != image_id or stem.casefold() in used:
            stem = f"{stem}-{hashlib.sha256(image_id.encode('utf-8')).hexdigest()[:12]}"
        used.add(stem.casefold())
        names[image_id] = f"{stem}.{suffix}"
    return names


@dataclass
class BatchState:
    """What the images stage carries from one batch to the next: ids and names only."""

    used_names: set[str] = field(default_factory=set)  # case-folded file stems
    seen_ids: set[str] = field(default_factory=set)
    tasks: int = 0  # tasks made so far (the first ``montage_count`` feed the montage)
    written: set[str] = field(default_factory=set)  # output file names of kept records
    montage_rows: list[pd.DataFrame] = field(default_factory=list)  # first kept records
    cropped: int = 0
    scales: Counter[int] = field(default_factory=Counter)
    formats: Counter[str] = field(default_factory=Counter)
    kept: int = 0


def _tasks(
    frame: pd.DataFrame,
    paths: DatasetPaths,
    settings: ImageSettings,
    run: StageRun,
    state: BatchState,
) -> list[Task]:
    """One task per distinct image id; repeated ids are rejected (they would share a file)."""
    files_dir = paths.stage_dir(STAGE) / FILES_DIR
    ids = [str(i) for i in frame["image_id"]]
    fresh = [i for i in dict.fromkeys(ids) if i not in state.seen_ids]
    names = file_names(fresh, settings.format, state.used_names)
    tasks = []
    for image_id, image_path in zip(ids, frame["image_path"], strict=True):
        source = paths.raw / str(image_path)
        if image_id in state.seen_ids:
            run.reject(image_id, "duplicate_image_id", f"{source}: image id {image_id} repeated")
            continue
        state.seen_ids.add(image_id)
        try:  # ingest checked this too; the raw root or a link may have changed since
            resolve_under(paths.raw, str(image_path))
        except RawInputError as error:
            run.reject(image_id, error.code, f"{source}: {error.message}")
            continue
        name = names[image_id]
        montage = state.tasks < settings.montage_count
        state.tasks += 1
        tasks.append(
            Task(
                image_id,
                str(source),
                str(files_dir / name),
                f"{FILES_DIR}/{name}",
                settings,
                montage,
            )
        )
    return tasks


def _records_frame(frame: pd.DataFrame, kept: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Ingest columns of the kept rows (input order) + this stage's columns, stable dtypes."""
    base = frame.drop_duplicates("image_id", keep="first")
    base = base[base["image_id"].astype(str).isin(kept)].reset_index(drop=True)
    extra = pd.DataFrame([kept[str(i)] for i in base["image_id"]], columns=list(IMAGE_COLUMNS))
    for column in IMAGE_COLUMNS:
        extra[column] = extra[column].astype("string" if column in _STRING_COLUMNS else "int64")
    return pd.concat([base[list(INGEST_COLUMNS)], extra], axis=1)


def _remove_stale(files_dir: Path, keep: set[str]) -> int:
    """Delete outputs of earlier runs that this run did not write (renamed ids, format)."""
    removed = 0
    if files_dir.is_dir():
        for path in sorted(files_dir.iterdir()):
            if path.is_file() and path.name not in keep:
                path.unlink()
                removed += 1
    return removed


def montage_items(
    records: pd.DataFrame,
    paths: DatasetPaths,
    settings: ImageSettings,
    ready: dict[str, MontageItem],
) -> list[MontageItem]:
    """The first ``montage_count`` kept records by image id.

    Workers hand back the items of the first ``montage_count`` tasks (``ready``); only when some
    of those were rejected are later records prepared again here to fill the sheet.
    """
    items = []
    ordered = records.sort_values("image_id", kind="stable").head(settings.montage_count)
    for row in ordered.itertuples(index=False):
        if str(row.image_id) in ready:
            items.append(ready[str(row.image_id)])
            continue
        result = prepare(read_source(paths.raw / str(row.image_path)), settings)
        with Image.open(paths.stage_dir(STAGE) / str(row.image_file)) as written:
            output = np.asarray(written.convert("L"))
        items.append(MontageItem(str(row.image_id), result.grey, result.box, output))
    return items


def _input_batches(source: Path) -> Iterator[pd.DataFrame]:
    """The ingest table in image-id order, batch by batch.

    The ingest stage writes it sorted, so it streams as it is; a table in another order (a
    hand-made one) is read whole and sorted first.
    """
    ids = read_parquet(source, ("image_id",))["image_id"]
    if ids.is_monotonic_increasing:
        yield from iter_frames(source)
        return
    frame = read_parquet(source).sort_values("image_id", kind="stable").reset_index(drop=True)
    batch = tables.BATCH_ROWS
    for start in range(0, max(len(frame), 1), batch):
        yield frame.iloc[start : start + batch]


def run_stage(paths: DatasetPaths, params: dict[str, Any], workers: int) -> dict[str, Any]:
    """Process every ingested image; see the module docstring for the outputs.

    Records go through in batches of the ingest table (:mod:`pipeline.tables`): the workers
    process one batch's images, its rows are appended to ``records.parquet``, and only ids,
    file names and counts are kept across batches.
    """
    settings = ImageSettings.from_params(params)
    source_table = paths.stage_dir("ingest") / "records.parquet"
    require_table(source_table, INGEST_COLUMNS)
    out_dir = paths.stage_dir(STAGE)
    run = StageRun(STAGE, paths.name, out_dir)
    run.n_in = table_rows(source_table)
    state = BatchState()
    ready: dict[str, MontageItem] = {}
    progress = f"images ({paths.name})"
    with FrameWriter(out_dir / "records.parquet") as writer:
        for frame in _input_batches(source_table):
            kept: dict[str, dict[str, Any]] = {}
            tasks = _tasks(frame, paths, settings, run, state)
            # one image is ~30 ms of work: single-task chunks cost nothing, leave no idle tail
            for outcome in parallel_map(process_one, tasks, workers, progress, chunksize=1):
                if outcome.columns is None:
                    run.reject(outcome.image_id, outcome.code, outcome.message)
                else:
                    kept[outcome.image_id] = outcome.columns
                if outcome.montage is not None:
                    ready[outcome.image_id] = outcome.montage
            records = _records_frame(frame, kept)
            _count(records, settings, state)
            writer.write(records)
    _remove_stale(out_dir / FILES_DIR, state.written)
    montage_rows = pd.concat(state.montage_rows) if state.montage_rows else records.iloc[:0]
    montage = render_montage(montage_items(montage_rows, paths, settings, ready))
    atomic_write_bytes(out_dir / MONTAGE_FILE, montage)
    run.extra.update(
        {
            "output_size": settings.output_size,
            "output_format": settings.format,
            "cropped": state.cropped,
            "decode_scales": {str(k): v for k, v in sorted(state.scales.items())},
            "source_formats": dict(sorted(state.formats.items())),
            "montage_records": min(settings.montage_count, state.kept),
        }
    )
    return run.finish_streamed(writer.rows)


def _count(records: pd.DataFrame, settings: ImageSettings, state: BatchState) -> None:
    """Add one batch's kept records to the stage totals (stats.json counts, file names, the
    first ``montage_count`` records for the montage)."""
    cropped = (
        (records["crop_left"] > 0)
        | (records["crop_top"] > 0)
        | (records["crop_right"] < records["source_width"])
        | (records["crop_bottom"] < records["source_height"])
    )
    state.cropped += int(cropped.sum())
    state.scales.update(int(s) for s in records["decode_scale"])
    state.formats.update(str(f) for f in records["source_format"])
    state.written.update(Path(f).name for f in records["image_file"])
    missing = settings.montage_count - sum(len(r) for r in state.montage_rows)
    if missing > 0:
        state.montage_rows.append(records.head(missing))
    state.kept += len(records)
