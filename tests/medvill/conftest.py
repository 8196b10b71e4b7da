"""Fixtures: tiny shards that follow the pipeline's contract exactly, negatives, a tokenizer."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.records import CHEXPERT_LABELS, sample_key

FINDINGS = [
    ("the heart size is normal . the lungs are clear .", "No Finding"),
    ("there is a small left pleural effusion .", "Pleural Effusion"),
    ("mild cardiomegaly with pulmonary edema .", "Cardiomegaly"),
    ("right lower lobe consolidation concerning for pneumonia .", "Pneumonia"),
    ("endotracheal tube and central line in place .", "Support Devices"),
    ("bibasilar atelectasis , no pneumothorax .", "Atelectasis"),
]


class Pickled:
    """A member whose unpickling would create ``marker`` — proof the loader never unpickles."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def build_dataset(root: Path, n_train: int = 12, size: int = 96, per_shard: int = 5) -> dict:
    """Write ``root/shards/index.json`` + tars and ``root/pairs/irm_negatives.parquet``."""
    import pickle

    rng = np.random.default_rng(0)
    shards_dir = root / "shards"
    index: dict[str, Any] = {"dataset": "tiny", "splits": {}, "total": 0}
    records = []
    marker = root / "UNPICKLED"
    for split, count in (("train", n_train), ("valid", 2), ("test", 2)):
        (shards_dir / split).mkdir(parents=True, exist_ok=True)
        entries = []
        for shard_no, start in enumerate(range(0, count, per_shard)):
            name = f"{split}/shard-{shard_no:06d}.tar"
            n = min(per_shard, count - start)
            with tarfile.open(shards_dir / name, "w") as tar:
                for i in range(start, start + n):
                    image_id = f"{split}.{i:03d}"
                    key = sample_key("tiny", image_id)
                    text, label = FINDINGS[i % len(FINDINGS)]
                    labels = [1.0 if c == label else None for c in CHEXPERT_LABELS]
                    pixels = rng.integers(0, 255, (size, size), dtype=np.uint8)
                    pixels[: size // 2] //= 2 + (i % 3)  # images differ in structure
                    buffer = io.BytesIO()
                    fmt = "png" if i % 4 == 3 else "jpg"
                    Image.fromarray(pixels, "L").save(buffer, "PNG" if fmt == "png" else "JPEG")
                    meta = {
                        "dataset": "tiny", "image_id": image_id, "patient_id": f"p{i}",
                        "study_id": f"s{i}", "view": "PA", "split": split,
                        "section": "findings", "findings": text, "impression": "",
                        "synthetic_report": True, "labels": labels,
                    }  # fmt: skip
                    _add(tar, f"{key}.{fmt}", buffer.getvalue())
                    _add(tar, f"{key}.txt", text.encode("utf-8"))
                    _add(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
                    if i == 0:
                        _add(tar, f"{key}.pyd", pickle.dumps(Pickled(str(marker))))
                    if split == "train":
                        records.append((key, text, label))
            entries.append({"file": name, "samples": n})
        index["splits"][split] = {"shards": entries, "total": count}
        index["total"] += count
    (shards_dir / "index.json").write_text(json.dumps(index, indent=2))
    negatives = []
    for key, _text, label in records:
        others = [k for k, _, lab in records if lab != label]
        negatives.append(others[:3] if key != records[-1][0] else [])  # last: no negatives
    table = pa.table(
        {
            "key": [r[0] for r in records],
            "text": [r[1] for r in records],
            "negative_keys": pa.array(negatives, type=pa.list_(pa.string())),
        }
    )
    (root / "pairs").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "pairs" / "irm_negatives.parquet")
    return {
        "index": shards_dir / "index.json",
        "negatives": root / "pairs" / "irm_negatives.parquet",
        "marker": marker,
        "records": records,
    }


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from medvill.tokenizer import build_tokenizer

    root = tmp_path_factory.mktemp("tiny")
    data = build_dataset(root)
    tokenizer, origin = build_tokenizer(
        data["index"], root / "tokenizer", {"pretrained": "", "vocab_size": 200}
    )
    data.update(tokenizer_dir=root / "tokenizer", tokenizer=tokenizer, origin=origin, root=root)
    return data


@pytest.fixture(scope="session")
def tiny_profile() -> Any:
    """The factory below, for tests (spawned DDP workers get the built dict, not the import)."""
    return make_tiny_profile


def make_tiny_profile(**train: Any) -> dict[str, Any]:
    """hidden 32, 2 layers, 2 heads, ResNet-18 at 64² (2×2 grid, 3 sampled), 16 text tokens."""
    settings = {
        "seed": 7, "epochs": 2, "global_batch_size": 4, "max_micro_batch_size": 4, "lr": 1e-3,
        "warmup_ratio": 0.2, "num_workers": 0, "shuffle_buffer": 8, "save_every_steps": 2,
        "log_every_steps": 1, "text_weights": "", "imagenet": False, "tensorboard": False,
    }  # fmt: skip
    settings.update(train)
    model = {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "backbone": "resnet18", "image_size": 64,
        "num_sampled_visual": 3, "max_text_tokens": 16, "max_position_embeddings": 64,
    }  # fmt: skip
    return {"model": model, "train": settings}
