"""Loader throughput at the paper's shapes, and the retrieval pair builder at scale.

    python benchmarks/bench_loader.py [--samples 512] [--workers 0,2,4] [--pairs-rows 4000]

Writes synthetic paper-shape shards to a temporary folder (512² grey JPEGs like the images
stage's, a report, the json member; members.parquet and index.json as the shards stage
writes them), trains a small offline WordPiece vocabulary on the reports, then times the
pretraining loader (micro-batch 32, 512² random resized crops, 180 of 256 visual cells, 15 %
MLM) for each worker count, with the member index and with tar-header scans. The GPU needs
about 1,150 samples/s at the issue's target: compare the rate per worker with that.

Also times building one epoch's sample order (what every stream does before decoding) from
the member index vs tar headers, and one epoch of retrieval training pairs (``--pairs-rows``
records) with the indexed partner search, against the former per-record scan when
``--pairs-rows`` ≤ 10,000.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from medvill.data import LoaderSettings, PretrainShards, make_loader, read_index, text_spec_for
from pipeline.members import MEMBERS_FILE, write_member_index
from pipeline.shards import write_shard

REPORTS = [
    "the heart size is normal . the lungs are clear . no pleural effusion or pneumothorax .",
    "small left pleural effusion with adjacent atelectasis . stable cardiomegaly .",
    "mild pulmonary edema . endotracheal tube terminates 4 cm above the carina .",
    "right lower lobe consolidation concerning for pneumonia . no pneumothorax .",
]


def xray_like(rng: np.random.Generator, size: int) -> bytes:
    """A 512² grey JPEG with film-like structure (smooth gradients + noise), quality 95."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = 120 + 80 * np.sin(3 * x + rng.uniform(0, 3)) * np.cos(2 * y) + rng.normal(0, 12, x.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "L").save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def write_shards(root: Path, samples: int, per_shard: int = 128, size: int = 512) -> Path:
    rng = np.random.default_rng(0)
    index: dict = {"dataset": "bench", "splits": {}, "total": samples}
    entries = []
    for start in range(0, samples, per_shard):
        batch = []
        for i in range(start, min(start + per_shard, samples)):
            key = f"bench_{i:07d}"
            text = REPORTS[i % len(REPORTS)]
            meta = {"image_id": str(i), "split": "train", "labels": [None] * 14}
            batch.append({"__key__": key, "jpg": xray_like(rng, size), "txt": text.encode(),
                          "json": json.dumps(meta).encode()})  # fmt: skip
        relative = f"train/shard-{start // per_shard:06d}.tar"
        write_shard(batch, root / relative)
        entries.append({"file": relative, "samples": len(batch)})
    index["splits"] = {"train": {"shards": entries, "total": samples}}
    write_member_index(root, [e["file"] for e in entries])
    index["members"] = MEMBERS_FILE
    (root / "index.json").write_text(json.dumps(index))
    return root / "index.json"


def loader_rate(
    index: Path, tokenizer: object, workers: int, use_members: bool, batch: int
) -> float:
    shards = read_index(index, "train")
    if not use_members:
        shards = type(shards)(shards.files, shards.samples, None)
    settings = LoaderSettings(batch_size=batch, num_workers=workers, shuffle_buffer=256,
                              image_size=512, grid_cells=256, num_sampled_visual=180)  # fmt: skip
    dataset = PretrainShards(shards, tokenizer, text_spec_for(tokenizer, 253, False), settings)
    dataset.set_epoch(0)
    start = time.perf_counter()
    count = sum(len(b["keys"]) for b in make_loader(dataset, 0))
    return count / (time.perf_counter() - start)


def order_timing(index: Path, repeats: int = 5) -> None:
    """What each loader stream does per epoch before decoding: list every sample's members."""
    from medvill.shardreader import sample_refs

    shards = read_index(index, "train")
    timings = {}
    for name, contents in (("member index", shards.contents), ("header scan ", lambda: None)):
        start = time.perf_counter()
        for _ in range(repeats):
            refs = list(sample_refs(shards.files, lambda error: False, contents()))
        timings[name] = (time.perf_counter() - start) / repeats
        print(f"sample order, {len(refs)} samples, {name}: {timings[name] * 1000:7.1f} ms "
              f"per stream and epoch")  # fmt: skip


def pairs_timing(rows_count: int) -> None:
    from medvill.tasks.retrieval import RetrievalSettings, training_pairs

    labels = ["No Finding", "Pleural Effusion", "Cardiomegaly", "Edema", "Pneumonia"]
    rng = np.random.default_rng(0)
    rows = [{"text": f"r{i}", "label": labels[int(rng.integers(0, 5))]} for i in range(rows_count)]
    images = [Path(f"{i}.jpg") for i in range(rows_count)]
    settings = RetrievalSettings()
    start = time.perf_counter()
    training_pairs(rows, images, settings, 0)
    print(f"retrieval pairs, {rows_count} rows: indexed {time.perf_counter() - start:.3f} s")
    if rows_count <= 10_000:
        start = time.perf_counter()
        for i, row in enumerate(rows):  # the former per-record scan, for comparison
            _ = [j for j, other in enumerate(rows) if other["label"] != row["label"]] or [i]
        print(f"retrieval pairs, {rows_count} rows: scan    {time.perf_counter() - start:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pairs-rows", type=int, default=4000)
    args = parser.parse_args()
    pairs_timing(args.pairs_rows)

    from medvill.tokenizer import build_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        index = write_shards(root / "shards", args.samples)
        tokenizer, _ = build_tokenizer(
            index, root / "tokenizer", {"pretrained": "", "vocab_size": 300}
        )
        order_timing(index)
        for workers in (int(w) for w in args.workers.split(",")):
            for use_members in (True, False):
                rate = loader_rate(index, tokenizer, workers, use_members, args.batch_size)
                source = "member index" if use_members else "header scan "
                print(f"loader, {workers:2d} workers, {source}: {rate:7.1f} samples/s "
                      f"(512², batch {args.batch_size})")  # fmt: skip


if __name__ == "__main__":
    main()
