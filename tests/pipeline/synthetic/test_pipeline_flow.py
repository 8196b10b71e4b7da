"""A small synthetic corpus flows through `medvill-prep all` unchanged, and the pipeline's
labels (built-in labeler on the chosen section) match the corpus's ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import STAGES, run_stages
from pipeline.records import CHEXPERT_LABELS
from pipeline.synthetic import CorpusConfig, read_ground_truth, write_corpus

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]


def test_corpus_flows_through_every_stage(tmp_path) -> None:
    raw = tmp_path / "raw"
    summary = write_corpus(raw, CorpusConfig(n_images=60, seed=3, image_size=192), workers=1)
    results = run_stages(
        list(STAGES),
        "synthetic",
        raw=raw,
        adapter="synthetic",
        out=tmp_path / "data",
        workers=1,
        params_path=REPO / "params.yaml",
    )
    by_stage = {r["stage"]: r for r in results}
    lateral = summary["views"]["LATERAL"]
    frontal = summary["images"] - lateral
    ingest = by_stage["ingest"]
    assert ingest["in"] == summary["images"]
    assert ingest["reject_reasons"] == {"view_filtered": lateral}
    for stage in ("images", "sections", "label", "split", "pairs", "shards"):
        assert by_stage[stage]["out"] == frontal, stage
    assert by_stage["images"]["cropped"] > 0  # the film border / scanner band was cut
    assert by_stage["split"]["source"] == "official"  # the generator's patient split

    interim = tmp_path / "data/interim/synthetic"
    labels = pd.read_parquet(interim / "label/records.parquet")
    truth = read_ground_truth(raw)
    for row in labels.to_dict("records"):
        expected = truth[row["study_id"]]
        positives = {n for n in CHEXPERT_LABELS if row[n] == 1.0}
        assert positives == {n for n in CHEXPERT_LABELS if expected[n] == 1.0}, row["study_id"]

    vqa = by_stage["vqa"]
    assert vqa["source"] == "synthetic" and vqa["rejected"] == 0
    questions = json.loads((raw / "vqa/questions.json").read_text())
    assert vqa["in"] == len(questions) == vqa["out"]
    train = json.loads((interim / "vqa/trainset.json").read_text())
    assert {q["answer_type"] for q in train} == {"CLOSED", "OPEN"}
    assert all(q["synthetic"] for q in train)
    index = json.loads((tmp_path / "data/shards/synthetic/index.json").read_text())
    assert index["total"] == frontal


def test_shard_json_carries_the_drawn_regions(tmp_path) -> None:
    """Each synthetic sample's json lists its localized annotations (box on the 512² image,
    mask counts), ``[]`` for a study without findings; counts match the localized table."""
    import tarfile

    raw = tmp_path / "raw"
    write_corpus(raw, CorpusConfig(n_images=30, seed=5, image_size=192), workers=1)
    results = run_stages(
        list(STAGES),
        "synthetic",
        raw=raw,
        adapter="synthetic",
        out=tmp_path / "data",
        workers=1,
        params_path=REPO / "params.yaml",
    )
    by_stage = {r["stage"]: r for r in results}
    localized = pd.read_parquet(tmp_path / "data/interim/synthetic/localized/records.parquet")
    shard_root = tmp_path / "data/shards/synthetic"
    metas = {}
    for tar_path in sorted(shard_root.rglob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())
                    metas[meta["image_id"]] = meta
    assert len(metas) == by_stage["shards"]["out"] > 0
    assert all("regions" in meta for meta in metas.values())
    expected = localized[localized["image_id"].isin(metas)]
    assert sum(len(m["regions"]) for m in metas.values()) == len(expected) > 0
    assert by_stage["shards"]["samples_with_regions"] == expected["image_id"].nunique()
    row = expected.iloc[0]
    first = metas[row["image_id"]]["regions"][0]
    assert first == {
        "finding": row["finding"],
        "box": [row["x_min"], row["y_min"], row["x_max"], row["y_max"]],
        "mask": row["mask_rle"],
    }
