"""The pointing game: a peak patch inside the finding's box is a hit, chance is the share of
patch centres inside it, and the shard plumbing scores exactly the regions whose finding has a
word in the report."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import medvill.xvl.pointing as pointing
from medvill.xvl.attention import AttentionMaps


def test_point_hits_inside_the_box_and_chance_is_the_covered_share() -> None:
    grid_map = np.zeros((4, 4))
    grid_map[1, 2] = 1.0  # patch centre (75, 30) on a 120 × 80 image
    assert pointing.point(grid_map, [60, 20, 90, 40], 120, 80) == (True, 1 / 16)
    hit, chance = pointing.point(grid_map, [0, 0, 59, 79], 120, 80)  # left half
    assert not hit and chance == 0.5


def _shard(root: Path) -> Path:
    """Two samples with regions: an effusion named in the report, a nodule that is not."""
    (root / "test").mkdir(parents=True)
    samples = [
        ("k1", "small left pleural effusion .", [
            {"finding": "Pleural Effusion", "box": [0, 48, 47, 95], "mask": ""},
            {"finding": "Lung Lesion", "box": [50, 0, 95, 40], "mask": ""},
        ]),
        ("k2", "the lungs are clear .", [{"finding": "Pneumothorax", "box": [0, 0, 95, 95],
                                          "mask": ""}]),
    ]  # fmt: skip
    with tarfile.open(root / "test" / "shard-000000.tar", "w") as tar:
        for key, text, regions in samples:
            buffer = io.BytesIO()
            Image.fromarray(np.full((96, 96), 90, dtype=np.uint8), "L").save(buffer, "PNG")
            for ext, data in (("png", buffer.getvalue()), ("txt", text.encode()),
                              ("json", json.dumps({"regions": regions}).encode())):  # fmt: skip
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    index = {"splits": {"test": {"shards": [{"file": "test/shard-000000.tar", "samples": 2}]}}}
    (root / "index.json").write_text(json.dumps(index))
    return root / "index.json"


def test_pointing_game_scores_only_named_findings(
    tiny_data: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = _shard(tmp_path / "shards")

    class Model:
        config = type("C", (), {"max_text_tokens": 16, "image_size": 32})()

    def fake_maps(model, image, ids, words, layer=None):  # peak in the lower-left patch
        grid = np.zeros((4, 4))
        grid[3, 0] = 1.0
        cam = np.zeros((4, 4))
        cam[0, 3] = 1.0
        return AttentionMaps(words, [grid] * len(words), [cam] * len(words), [], 0.5, 4, 0)

    monkeypatch.setattr(pointing, "compute_maps", fake_maps)
    monkeypatch.setattr("medvill.xvl.visualize.load_checkpoint",
                        lambda folder: (Model(), tiny_data["tokenizer"]))  # fmt: skip
    result = pointing.pointing_game(tmp_path / "ckpt", index)
    assert result["samples_with_regions"] == 2
    assert set(result) == {"samples_with_regions", "split", "Pleural Effusion", "all"}
    effusion = result["Pleural Effusion"]  # the nodule and the pneumothorax have no word
    assert effusion["trials"] == 1 and effusion["accuracy"] == 1.0
    assert effusion["gradcam_accuracy"] == 0.0  # its peak is top-right, outside the box
    assert effusion["chance"] == pytest.approx(4 / 16)  # the box covers the lower-left quarter
