"""Builders for hostile dataset trees, and a runner for ``medvill-prep`` as a subprocess.

Every tree is made from the real demo files (``data/sample``); bomb PNGs are written by
streaming compressed rows, so a 20,000 × 20,000 image never exists in memory. A marker file
with a unique byte string sits outside each raw root: no output may ever contain it.
"""

from __future__ import annotations

import csv
import io
import os
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
#: Bytes that exist only outside the raw roots; finding them in an output is a leak.
MARKER = b"MEDVILL-OUTSIDE-ROOT-7f3a9c"
#: Small real demo radiographs (PNG, 8-bit grey).
IMAGES = (
    "images/nih_chestxray14/00000001_000_xrv512.png",
    "images/nih_chestxray14/00027426_000_xrv512.png",
)
MANIFEST_COLUMNS = ("image_id", "patient_id", "study_id", "view", "image", "report", "synthetic")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline.cli ARGS`` with this checkout's code; never raises on failure."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def write_params(path: Path, overrides: dict[str, Any] | None = None) -> Path:
    """The project's params.yaml with ``overrides`` merged in (one level deep per block)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for block, values in (overrides or {}).items():
        if isinstance(values, dict) and isinstance(params.get(block), dict):
            params[block] = {**params[block], **values}
        else:
            params[block] = values
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


def plant_marker(outside: Path) -> tuple[Path, Path]:
    """A report and a PNG outside the root, both holding MARKER; returns (report, png)."""
    outside.mkdir(parents=True, exist_ok=True)
    report = outside / "secret.txt"
    report.write_bytes(b"FINDINGS: " + MARKER + b" lungs clear.\n")
    png = outside / "secret.png"
    data = (SAMPLE / IMAGES[0]).read_bytes()
    # a tEXt chunk right after IHDR carries the marker inside a valid PNG
    chunk = b"tEXt" + b"secret\x00" + MARKER
    text = struct.pack(">I", len(chunk) - 4) + chunk + struct.pack(">I", zlib.crc32(chunk))
    png.write_bytes(data[:33] + text + data[33:])
    return report, png


def write_manifest(root: Path, rows: list[dict[str, str]]) -> None:
    with (root / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(MANIFEST_COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({"view": "PA", "synthetic": "false", **row})


def copy_image(root: Path, relative: str, source: str = IMAGES[0]) -> str:
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((SAMPLE / source).read_bytes())
    return relative


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_bomb_png(path: Path, width: int, height: int, pixel_data: bool) -> int:
    """A grey 8-bit PNG whose header claims ``width × height``; returns its size on disk.

    With ``pixel_data`` the IDAT holds every (zero) row, compressed one row at a time, so the
    file decodes to the claimed size; without, the IDAT is empty.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)))
        compressor = zlib.compressobj(1)
        rows_per_block = 64
        block = bytes(width + 1) * rows_per_block  # filter byte 0 + zero pixels, per row
        pending = io.BytesIO()
        for start in range(0, height if pixel_data else 0, rows_per_block):
            count = min(rows_per_block, height - start)
            pending.write(compressor.compress(block[: count * (width + 1)]))
            if pending.tell() > 1 << 20:
                handle.write(_png_chunk(b"IDAT", pending.getvalue()))
                pending = io.BytesIO()
        pending.write(compressor.flush())
        handle.write(_png_chunk(b"IDAT", pending.getvalue()))
        handle.write(_png_chunk(b"IEND", b""))
    return path.stat().st_size


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def rejects_by_id(stage_dir: Path) -> dict[str, tuple[str, str]]:
    """``{id: (code, reason)}`` of one stage's rejects.parquet."""
    frame = read_table(stage_dir / "rejects.parquet")
    return {str(r.id): (str(r.code), str(r.reason)) for r in frame.itertuples()}


def output_texts(root: Path) -> list[tuple[Path, bytes]]:
    """Every output file's bytes, with Parquet tables and tar members unpacked to text.

    Parquet is compressed, so its raw bytes would hide a leaked string; tar members are read
    one by one for the same reason should a member ever be compressed.
    """
    found: list[tuple[Path, bytes]] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        found.append((path, path.read_bytes()))
        if path.suffix == ".parquet":
            found.append((path, read_table(path).to_csv().encode("utf-8", "replace")))
        if path.suffix == ".tar":
            with tarfile.open(path) as archive:
                for member in archive.getmembers():
                    extracted = archive.extractfile(member)
                    if extracted is not None:
                        found.append((path, extracted.read()))
    return found
