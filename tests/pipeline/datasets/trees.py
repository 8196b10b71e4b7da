"""Helpers for the adapter tests: real demo files, and running the ingest stage on a tmp tree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.datasets import run_stage
from pipeline.params import DatasetPaths

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "data" / "sample"


def real_image(name: str, dest: Path) -> Path:
    """Copy a real demo image (path under data/sample) to ``dest``; returns ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SAMPLE / name, dest)
    return dest


def real_report(study: str) -> bytes:
    """The bytes of a real demo report file, e.g. ``"S023"`` (the MIMIC website example)."""
    return (SAMPLE / "reports" / f"{study}.txt").read_bytes()


def ingest(
    tmp_path: Path, adapter: str, raw: Path, views: list[str]
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Run the ingest stage; returns stats.json, records.parquet and rejects.parquet."""
    paths = DatasetPaths(
        name=adapter,
        adapter=adapter,
        raw=raw,
        interim=tmp_path / "interim" / adapter,
        shards=tmp_path / "shards" / adapter,
    )
    stats = run_stage(paths, {"ingest": {"views": views}}, workers=1)
    out = paths.stage_dir("ingest")
    assert json.loads((out / "stats.json").read_text()) == stats
    records = pd.read_parquet(out / "records.parquet")
    rejects = pd.read_parquet(out / "rejects.parquet")
    return stats, records, rejects


def reject_map(rejects: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Rejects as ``{id: (code, reason)}`` (ids are unique in these tests)."""
    assert rejects["id"].is_unique
    return {row.id: (row.code, row.reason) for row in rejects.itertuples()}
