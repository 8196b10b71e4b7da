"""Run ingest → images → localized → split on a raw tree, as `medvill-prep all --adapter …`
does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.cli import run_stages

REPO = Path(__file__).resolve().parents[3]


def prepare(tmp_path: Path, adapter: str, raw: Path) -> dict[str, Any]:
    """Run every stage that applies; returns each stage's stats and tables by stage name."""
    out = tmp_path / "data"
    run_stages(
        ["ingest", "images", "localized", "sections", "split", "shards"],  # no sections, shards
        adapter,
        raw=raw,
        adapter=adapter,
        out=out,
        workers=1,
        params_path=REPO / "params.yaml",
    )
    interim = out / "interim" / adapter
    assert not (interim / "sections").exists() and not (interim / "shards").exists()
    result: dict[str, Any] = {"interim": interim}
    for stage in ("ingest", "images", "localized", "split"):
        folder = interim / stage
        result[stage] = {
            "stats": json.loads((folder / "stats.json").read_text()),
            "records": pd.read_parquet(folder / "records.parquet"),
            "rejects": pd.read_parquet(folder / "rejects.parquet"),
        }
    result["annotations"] = pd.read_parquet(interim / "ingest" / "annotations.parquet")
    result["patients"] = pd.read_parquet(interim / "split" / "patients.parquet")
    return result


def codes(rejects: pd.DataFrame) -> dict[str, str]:
    """``{id: code}`` of a rejects table."""
    return dict(zip(rejects["id"], rejects["code"], strict=True))


def splits_of(out: dict[str, Any]) -> dict[str, str]:
    """``{image_id: split}`` of the split stage's records."""
    records = out["split"]["records"]
    return dict(zip(records["image_id"], records["split"], strict=True))
