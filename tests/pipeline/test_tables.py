"""Batched stage tables (pipeline/tables.py): a stage run in small batches writes the same
rows, rejects and stats as one run over the whole table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import tables
from pipeline.cli import run_stages
from pipeline.records import write_parquet
from pipeline.tables import FrameWriter, iter_frames

REPO = Path(__file__).resolve().parents[2]


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": pd.Series([f"r{i:03d}" for i in range(n)], dtype="string"),
            "value": np.arange(n, dtype="float64"),
            "note": pd.Series([None if i % 3 else f"n{i}" for i in range(n)], dtype="string"),
        }
    )


def test_one_batch_is_byte_identical_to_write_parquet(tmp_path: Path) -> None:
    frame = _frame(10)
    write_parquet(frame, tmp_path / "whole.parquet")
    with FrameWriter(tmp_path / "batched.parquet") as writer:
        writer.write(frame)
    assert (tmp_path / "whole.parquet").read_bytes() == (tmp_path / "batched.parquet").read_bytes()


def test_batches_round_trip_with_dtypes_and_empty_batches(tmp_path: Path) -> None:
    frame = _frame(25)
    write_parquet(frame, tmp_path / "in.parquet")
    pieces = list(iter_frames(tmp_path / "in.parquet", batch_rows=10))
    assert [len(p) for p in pieces] == [10, 10, 5]
    with FrameWriter(tmp_path / "out.parquet") as writer:
        writer.write(pieces[0].iloc[:0])  # an empty first batch does not fix the schema
        for piece in pieces:
            writer.write(piece)
    assert writer.rows == 25
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out.parquet"), frame)
    only_columns = next(iter_frames(tmp_path / "in.parquet", columns=["id"]))
    assert list(only_columns.columns) == ["id"]


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError), FrameWriter(target) as writer:
        writer.write(_frame(3))
        raise RuntimeError("stage failed half way")
    assert not target.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_stages_in_small_batches_match_one_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo through images → split with 7-row batches (the 8-image crop montage spans two
    batches): same records, rejects, stats, montage."""
    stages = ["ingest", "images", "sections", "label", "split"]
    outputs = {}
    for batch_rows in (tables.BATCH_ROWS, 7):
        checkout = tmp_path / f"b{batch_rows}"
        shutil.copytree(REPO / "data/sample", checkout / "data/sample")
        shutil.copy2(REPO / "params.yaml", checkout / "params.yaml")
        monkeypatch.chdir(checkout)
        monkeypatch.setattr(tables, "BATCH_ROWS", batch_rows)
        run_stages(stages, "sample", workers=1)
        outputs[batch_rows] = checkout / "data/interim/sample"
    whole, batched = outputs[tables.BATCH_ROWS], outputs[7]
    for stage in stages[1:]:
        for name in ("records.parquet", "rejects.parquet"):
            pd.testing.assert_frame_equal(
                pd.read_parquet(batched / stage / name), pd.read_parquet(whole / stage / name)
            )
        assert json.loads((batched / stage / "stats.json").read_text()) == json.loads(
            (whole / stage / "stats.json").read_text()
        )
    for name in ("images/crop_montage.png", "split/patients.parquet"):
        assert (batched / name).read_bytes() == (whole / name).read_bytes()
