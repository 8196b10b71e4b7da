"""The localized stage's params, and the shards stage's need of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.datasets import ANNOTATIONS_FILE
from pipeline.localized.annotations import annotation, annotations_frame
from pipeline.params_schema import ParamsError, validate_params
from pipeline.records import write_parquet
from pipeline.shards import localized_regions
from tests.pipeline.frames import dataset_paths

DATASETS = {"sample": {"adapter": "sample", "raw": "data/sample"}}


@pytest.mark.parametrize("value", [0, 1.5, "half"])
def test_a_bad_mask_threshold_is_named_before_any_work(value: object) -> None:
    with pytest.raises(ParamsError, match="localized.mask_threshold"):
        validate_params({"datasets": DATASETS, "localized": {"mask_threshold": value}}, "p.yaml")
    validate_params({"datasets": DATASETS, "localized": {"mask_threshold": 0.25}}, "p.yaml")


def test_shards_of_an_annotated_dataset_refuse_to_run_before_the_localized_stage(
    tmp_path: Path,
) -> None:
    paths = dataset_paths(tmp_path, "syn")
    write_parquet(annotations_frame([]), paths.stage_dir("ingest") / ANNOTATIONS_FILE)
    assert localized_regions(paths) is None  # no annotations: samples stay as they were
    box = annotation("img", 0, "Nodule", "box", "t.csv:2", (1, 2, 3, 4))
    write_parquet(annotations_frame([box]), paths.stage_dir("ingest") / ANNOTATIONS_FILE)
    with pytest.raises(FileNotFoundError, match="run `medvill-prep localized --dataset syn`"):
        localized_regions(paths)
