"""benchmarks/bench_scale.py: its MIMIC-layout tree runs through every stage and reconciles,
and its measurements (peak memory, fitted exponents, the summary line) are what they claim."""

from __future__ import annotations

import gzip
import io
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.bench_scale import StageMeasure, exponent, run_measured, scale_params, summarise
from benchmarks.scale_tree import CHEXPERT, METADATA, METADATA_COLUMNS, SPLIT, write_tree
from pipeline.cli import STAGES, run_stages

N_IMAGES = 400


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(gzip.decompress(path.read_bytes())), dtype=str)


def test_tree_has_mimic_columns_and_is_reproducible(tmp_path: Path) -> None:
    summary = write_tree(tmp_path / "a", 300, seed=5)
    write_tree(tmp_path / "b", 300, seed=5)
    for name in (METADATA, SPLIT, CHEXPERT):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    metadata = _csv(tmp_path / "a" / METADATA)
    assert tuple(metadata.columns) == METADATA_COLUMNS and len(metadata) == summary.images == 300
    assert set(_csv(tmp_path / "a" / SPLIT)["split"]) <= {"train", "validate", "test"}
    assert len(_csv(tmp_path / "a" / CHEXPERT)) == summary.studies
    jpgs = sorted((tmp_path / "a" / "files").rglob("*.jpg"))
    assert len(jpgs) == 300 - summary.jpg_missing
    assert jpgs[0].read_bytes()[:2] == b"\xff\xd8"  # a real JPEG
    reports = sorted((tmp_path / "a" / "files").rglob("*.txt"))
    assert len(reports) == summary.studies - summary.reports_missing
    assert any("IMPRESSION:" in p.read_text() for p in reports)


@pytest.mark.slow
def test_every_stage_reconciles_on_a_generated_mimic_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Generator + every stage (as bench_scale.py runs them): in = out + rejected everywhere,
    each stage's input is its upstream's output, and the deliberate breakage is accounted."""
    summary = write_tree(tmp_path / "raw", N_IMAGES, seed=3)
    reports = sorted((tmp_path / "raw/files").rglob("*.txt"))
    reports[0].unlink()  # besides the tree's own breakage, at least one of each kind
    reports[1].write_text("")
    next(reports[2].with_suffix("").glob("*.jpg")).unlink()
    params_file = tmp_path / "params.yaml"
    params_file.write_text(json.dumps(scale_params(tmp_path / "raw", 64)))
    monkeypatch.chdir(tmp_path)
    results = run_stages(list(STAGES), "scale", out=tmp_path / "out", params_path=params_file)
    stats = dict(zip(STAGES, results, strict=True))
    for stage, values in stats.items():
        if stage != "vqa":
            assert values["in"] == values["out"] + values["rejected"], stage
            assert values["reconciled"], stage
    assert stats["ingest"]["in"] == summary.images
    reasons = stats["ingest"]["reject_reasons"]
    assert reasons["view_filtered"] > 0  # laterals, as in MIMIC
    assert stats["images"]["in"] == stats["sections"]["in"] == stats["ingest"]["out"]
    metadata = _csv(tmp_path / "raw" / METADATA)
    report_files = [
        tmp_path / f"raw/files/p{s[:2]}/p{s}/s{t}.txt"
        for s, t in zip(metadata["subject_id"], metadata["study_id"], strict=True)
    ]
    no_report = sum(not path.is_file() for path in report_files)
    assert no_report > 0 and reasons["report_missing"] == no_report
    jpg_missing = sum(
        path.is_file() and not (path.with_suffix("") / f"{dicom_id}.jpg").is_file()
        for path, dicom_id in zip(report_files, metadata["dicom_id"], strict=True)
    )
    assert reasons.get("image_missing", 0) == jpg_missing
    ingested = pd.read_parquet(tmp_path / "out/interim/scale/ingest/records.parquet")
    empty = int((ingested["report_text"].str.strip() == "").sum())
    assert stats["sections"]["reject_reasons"].get("empty_report", 0) == empty
    assert stats["label"]["in"] == stats["sections"]["out"]
    assert stats["split"]["in"] == stats["label"]["out"]
    assert stats["pairs"]["in"] == stats["shards"]["in"] == stats["split"]["out"]
    # one sample per study (MedViLL's unit for MIMIC-CXR), the other images are rejects
    assert stats["shards"]["out"] == sum(stats["pairs"]["jsonl_lines"].values())
    assert stats["shards"]["reject_reasons"]["not_task_image"] > 0
    # no synthetic questions for a MIMIC-CXR dataset (vqa.synthetic_for_reports: [sample])
    assert (stats["vqa"]["in"], stats["vqa"]["out"], stats["vqa"]["source"]) == (0, 0, "none")
    index = json.loads((tmp_path / "out/shards/scale/index.json").read_text())
    assert index["total"] == stats["shards"]["out"]


def test_peak_memory_of_a_child_is_measured(tmp_path: Path) -> None:
    """A child that holds 300 MB is reported at ≥ 300 MB (tree PSS and wait4's max RSS)."""
    script = "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
    script += "time.sleep(0.6)"
    seconds, pss, rss, _, cpu = run_measured([sys.executable, "-c", script], env={})
    assert seconds >= 0.6 and 0 < cpu < seconds
    assert pss >= 300 * 2**20 and rss >= 300 * 2**20
    with pytest.raises(SystemExit, match="failed"):
        run_measured([sys.executable, "-c", "raise SystemExit(3)"], env={})


def test_exponents_and_summary_line() -> None:
    sizes = [1000, 4000, 16000]
    assert exponent(sizes, [2.0, 8.0, 32.0]) == pytest.approx(1.0)
    assert exponent(sizes, [1.0, 16.0, 256.0]) == pytest.approx(2.0)
    measures = [
        StageMeasure(stage, n, seconds, 2**30 * n // 16000, 2**29, seconds / 2)
        for n in sizes
        for stage, seconds in (("ingest", n / 1000), ("pairs", (n / 1000) ** 1.5))
    ]
    lines, final = summarise(measures)
    assert final == "scale: N=16000 max_time_exponent=1.50 max_rss_gb=1.00 worst_stage=pairs"
    assert lines[1].startswith("ingest") and lines[-1].startswith("total")
