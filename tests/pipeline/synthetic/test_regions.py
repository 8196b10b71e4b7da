"""The synthetic corpus's regions: one mask per drawn finding, on the finding's pixels, and
through the localized stage onto the output image like any dataset's annotations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.cli import run_stages
from pipeline.localized.rle import decode_counts
from pipeline.synthetic import CorpusConfig, write_corpus
from pipeline.synthetic.regions import OBSERVATION

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("regions")
    write_corpus(root / "raw", CorpusConfig(n_images=48, seed=11, image_size=256), workers=1)
    run_stages(
        ["ingest", "images", "localized"],
        "synthetic",
        raw=root / "raw",
        adapter="synthetic",
        out=root / "data",
        workers=1,
        params_path=REPO / "params.yaml",
    )
    return root


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_frontal_image_lists_one_region_per_drawn_finding(prepared: Path) -> None:
    raw = prepared / "raw"
    manifest = pd.read_csv(raw / "manifest.csv", dtype=str)
    frontal = manifest[manifest["view"] != "LATERAL"]
    regions = {entry["image_id"]: entry for entry in _lines(raw / "regions.jsonl")}
    assert sorted(regions) == sorted(frontal["image_id"])
    drawn = {s["study_id"]: s["findings"] for s in _lines(raw / "findings.jsonl")}
    with_regions = 0
    for row in frontal.itertuples():
        expected = []
        for finding in drawn[row.study_id]:
            if finding["kind"] == "devices":
                expected += [("device", name) for name in finding["devices"]]
            else:
                expected.append((finding["kind"], ""))
        got = [(r["kind"], r["detail"]) for r in regions[row.image_id]["regions"]]
        assert sorted(got) == sorted(expected), row.image_id
        for region in regions[row.image_id]["regions"]:
            assert region["finding"] == OBSERVATION[region["kind"]]
            mask = decode_counts(region["counts"], 256, 256)
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            assert region["box"] == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
        with_regions += bool(got)
    assert with_regions >= len(frontal) // 2


def test_masks_sit_on_their_signs_in_the_output_image(prepared: Path) -> None:
    """Nodules are brighter and pneumothoraces darker inside their mask than around it, on
    the cropped, resized and padded 512² image."""
    interim = prepared / "data" / "interim" / "synthetic"
    localized = pd.read_parquet(interim / "localized" / "records.parquet")
    stats = json.loads((interim / "localized" / "stats.json").read_text())
    assert stats["rejected"] == 0 and stats["out"] == len(localized) > 10
    assert (localized["output_size"] == 512).all() and (localized["mask_pixels"] > 0).all()
    contrasts: dict[str, list[float]] = {"Lung Lesion": [], "Pneumothorax": []}
    for row in localized.itertuples():
        if row.finding not in contrasts:
            continue
        with Image.open(interim / "images" / row.image_file) as image:
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
        mask = decode_counts(row.mask_rle, 512, 512)
        x0, y0, x1, y1 = (int(v) for v in (row.x_min, row.y_min, row.x_max, row.y_max))
        around = np.zeros_like(mask)
        around[max(y0 - 12, 0) : y1 + 12, max(x0 - 12, 0) : x1 + 12] = True
        around &= ~mask
        contrasts[row.finding].append(float(pixels[mask].mean() - pixels[around].mean()))
    assert contrasts["Lung Lesion"] and min(contrasts["Lung Lesion"]) > 5
    if contrasts["Pneumothorax"]:
        assert max(contrasts["Pneumothorax"]) < 0
