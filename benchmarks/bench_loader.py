"""Loader throughput at the paper's shapes, and the retrieval pair builder at scale.

    python benchmarks/bench_loader.py [--samples 512] [--workers 1] [--rounds 3]
                                      [--pairs-rows 4000] [--json PATH]

Writes synthetic paper-shape shards to a temporary folder (512² grey JPEGs like the images
stage's, a report, the json member; members.parquet and index.json as the shards stage
writes them), trains a small offline WordPiece vocabulary on the reports, then times the
pretraining loader (micro-batch 32, 512² random resized crops, 180 of 256 visual cells, 15 %
MLM) for each worker count, two ways, interleaved round by round so that load from other jobs
on a shared machine hits both alike:

* ``uint8 + device``: the loader as it is — workers decode to 8-bit pixels and draw the crop
  box; the crop-resize and normalisation run on the training device
  (``medvill.imagebatch.model_images``; timed separately on this CPU for the record);
* ``float in workers``: the former loader, whose workers also did that float work and sent
  3 × 512² float32 per sample (the same batches, bit for bit, built in the worker).

Reports samples/s per worker and the projection to 16 workers (linear: each worker is one
process on its own core). The GPU needs about 1,150 samples/s at the issue's target.

Also times building one epoch's sample order (what every stream does before decoding) from
the member index vs tar headers, and one epoch of retrieval training pairs (``--pairs-rows``
records) with the indexed partner search, against the former per-record scan when
``--pairs-rows`` ≤ 10,000.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from medvill.data import (
    LoaderSettings,
    PretrainShards,
    batch_generator,
    make_loader,
    read_index,
    text_spec_for,
)
from medvill.imagebatch import model_images, stack_sources
from medvill.model.masks import resolve_mask_type
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


class FloatInWorkers(PretrainShards):
    """The loader before the image work moved to the device: each worker finished every
    image to a normalised (3, size, size) float32 tensor and the batch carried those."""

    def _process(self, sample: dict[str, Any], counters: dict[str, int]) -> dict[str, Any]:
        out = super()._process(sample, counters)
        sources = stack_sources([out.pop("image")])
        out["image"] = model_images(sources, [out.pop("box")], self.settings.image_size)[0]
        return out

    def _collate(self, samples: list[dict[str, Any]], step: int) -> dict[str, Any]:
        s = self.settings
        generator = batch_generator(s.seed, self.epoch, step)
        cells = torch.randperm(s.grid_cells, generator=generator)[: s.num_sampled_visual]
        return {
            "keys": [x["key"] for x in samples],
            "images": torch.stack([x["image"] for x in samples]),
            "text_ids": torch.from_numpy(np.stack([x["text_ids"] for x in samples])),
            "text_valid": torch.from_numpy(np.stack([x["text_valid"] for x in samples])),
            "mlm_labels": torch.from_numpy(np.stack([x["mlm_labels"] for x in samples])),
            "irm_labels": torch.tensor([x["irm_label"] for x in samples], dtype=torch.long),
            "visual_cells": torch.sort(cells).values,
            "mask_type": resolve_mask_type(s.mask_type, generator, s.s2s_probability),
            "step": step,
        }


VARIANTS = {"uint8 + device": PretrainShards, "float in workers": FloatInWorkers}


def loader_rate(
    index: Path,
    tokenizer: object,
    workers: int,
    use_members: bool,
    batch: int,
    dataset_class: type[PretrainShards] = PretrainShards,
) -> tuple[float, list[dict[str, Any]]]:
    """Samples/s of one epoch through the DataLoader, and its first batch (for finishing)."""
    shards = read_index(index, "train")
    if not use_members:
        shards = type(shards)(shards.files, shards.samples, None)
    settings = LoaderSettings(batch_size=batch, num_workers=workers, shuffle_buffer=256,
                              image_size=512, grid_cells=256, num_sampled_visual=180)  # fmt: skip
    dataset = dataset_class(shards, tokenizer, text_spec_for(tokenizer, 253, False), settings)
    dataset.set_epoch(0)
    first: list[dict[str, Any]] = []
    count = 0
    start = time.perf_counter()
    for b in make_loader(dataset, 0):
        count += len(b["keys"])
        if not first:
            first.append(b)
    return count / (time.perf_counter() - start), first


def samples_per_cpu_second(
    index: Path, tokenizer: object, batch: int, dataset_class: type[PretrainShards]
) -> float:
    """One epoch in this process on one thread, as one worker runs it, per CPU-second used:
    what a worker delivers on a core of its own, whatever else loads a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # DataLoader workers run torch on one thread
    try:
        cpu = time.process_time()
        loader_rate(index, tokenizer, 0, True, batch, dataset_class)
        seconds = time.process_time() - cpu
    finally:
        torch.set_num_threads(threads)
    samples = read_index(index, "train").total // batch * batch  # whole batches only
    return samples / seconds


def finish_ms_per_sample(batch: dict[str, Any], repeats: int = 3) -> float:
    """CPU time per sample of ``model_images`` (what the device does per micro-batch)."""
    start = time.perf_counter()
    for _ in range(repeats):
        model_images(batch["image_sources"], batch["crop_boxes"], batch["image_size"])
    return (time.perf_counter() - start) / repeats / len(batch["keys"]) * 1000


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


def compare_loaders(
    index: Path, tokenizer: object, workers: int, batch: int, rounds: int, cpu_time: bool
) -> dict[str, Any]:
    """Both loader variants, alternating (ABBA order) for ``rounds`` rounds; medians."""
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    per_cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    finish: list[float] = []
    for r in range(rounds):
        order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
        for name in order:
            rate, first = loader_rate(index, tokenizer, workers, True, batch, VARIANTS[name])
            rates[name].append(rate)
            if cpu_time:
                per_cpu[name].append(samples_per_cpu_second(index, tokenizer, batch,
                                                            VARIANTS[name]))  # fmt: skip
            if name == "uint8 + device":
                finish.append(finish_ms_per_sample(first[0]))
            cpu_note = f", {per_cpu[name][-1]:7.1f} per CPU-second" if cpu_time else ""
            print(f"loader, {workers} worker(s), round {r + 1}, {name:>16}: {rate:7.1f} samples/s"
                  f"{cpu_note} (512², batch {batch})", flush=True)  # fmt: skip
    result: dict[str, Any] = {"workers": workers, "rounds": rounds, "batch_size": batch}
    for name, values in rates.items():
        per_worker = statistics.median(values) / max(workers, 1)
        result[name] = {"samples_per_s": values, "per_worker_median": per_worker,
                        "projected_16_workers": 16 * per_worker}  # fmt: skip
        print(f"loader, {workers} worker(s), {name:>16}: median {per_worker:6.1f} samples/s per "
              f"worker (wall) → {16 * per_worker:7.0f} on 16 workers (target 1,500)")  # fmt: skip
        if cpu_time:
            capacity = statistics.median(per_cpu[name])
            result[name].update(samples_per_cpu_second=per_cpu[name],
                                projected_16_cores=16 * capacity)  # fmt: skip
            print(f"loader, {name:>16}: median {capacity:6.1f} samples per CPU-second → "
                  f"{16 * capacity:7.0f} on 16 workers with a core each")  # fmt: skip
    new, old = (statistics.median(rates[n]) for n in VARIANTS)
    result["speedup"] = new / old
    result["finish_on_cpu_ms_per_sample"] = statistics.median(finish)
    print(f"loader, {workers} worker(s): uint8 + device is {new / old:.2f}× the former loader; "
          f"model_images on this CPU: {statistics.median(finish):.2f} ms per sample (a GPU "
          "does it in the training step)")  # fmt: skip
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--workers", default="1", help="comma list of worker counts")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per variant")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pairs-rows", type=int, default=4000)
    parser.add_argument(
        "--no-cpu-time",
        action="store_true",
        help="skip the in-process CPU-time measurement (samples per CPU-second)",
    )
    parser.add_argument("--json", type=Path, help="also write the loader results here")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    pairs_timing(args.pairs_rows)

    from medvill.tokenizer import build_tokenizer

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        index = write_shards(root / "shards", args.samples)
        tokenizer, _ = build_tokenizer(
            index, root / "tokenizer", {"pretrained": "", "vocab_size": 300}
        )
        order_timing(index)
        for workers in (int(w) for w in args.workers.split(",")):
            results.append(
                compare_loaders(
                    index, tokenizer, workers, args.batch_size, args.rounds, not args.no_cpu_time
                )
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"samples": args.samples, "cpu_count": os.cpu_count(), "loaders": results}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
