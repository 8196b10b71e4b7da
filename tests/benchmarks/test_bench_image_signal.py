"""benchmarks/bench_image_signal.py: its shard reader, its AUROC and its CNN's shape."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from benchmarks.bench_image_signal import LABELS, TinyCNN, auroc, read_split


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_auroc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 300)
    score = np.round(rng.random(300) + 0.3 * truth, 1)  # many ties
    assert abs(auroc(truth, score) - roc_auc_score(truth, score)) < 1e-12
    assert np.isnan(auroc(np.ones(4), np.arange(4.0)))


def test_reads_pixels_and_positive_labels(tmp_path: Path) -> None:
    """Only 1 is positive (−1, 0 and blank are not); pixels come resized, in key order."""
    shards = tmp_path / "data" / "shards" / "ds"
    (shards / "train").mkdir(parents=True)
    values = [[1.0, -1.0, None, 0.0] + [None] * 10, [None] * 13 + [1.0]]
    with tarfile.open(shards / "train" / "shard-000000.tar", "w") as tar:
        for i, (level, labels) in enumerate(zip((40, 200), values, strict=True)):
            buffer = io.BytesIO()
            Image.new("L", (64, 64), level).save(buffer, format="PNG")
            _member(tar, f"k{i}.png", buffer.getvalue())
            _member(tar, f"k{i}.json", json.dumps({"labels": labels}).encode())
            _member(tar, f"k{i}.txt", b"never read")
    index = {"splits": {"train": {"shards": [{"file": "train/shard-000000.tar"}]}}}
    (shards / "index.json").write_text(json.dumps(index))
    pixels, labels = read_split(tmp_path, "ds", "train", 32)
    assert pixels.shape == (2, 32, 32) and pixels[0].max() == 40 and pixels[1].min() == 200
    assert labels.shape == (2, len(LABELS))
    assert labels[0].tolist() == [1.0] + [0.0] * 13 and labels[1].tolist() == [0.0] * 13 + [1.0]


def test_cnn_outputs_one_logit_per_label() -> None:
    assert TinyCNN(len(LABELS))(torch.zeros(2, 1, 64, 64)).shape == (2, len(LABELS))
