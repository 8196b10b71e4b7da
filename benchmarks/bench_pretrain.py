"""Pretraining throughput on this machine: loader alone vs a demo training step, and the
forward+backward time of the paper-sized model (batch 2, 512², CPU) for the record.

    python benchmarks/bench_pretrain.py --dataset sample [--root .] [--skip-paper]

Needs the dataset's shards, IRM negatives and tokenizer (``dvc repro tokenizer``). Prints a
ratio loader/train > 1 when the loader is not the bottleneck.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from medvill.config import config_from_profile, load_params, profile_section
from medvill.data import (
    IrmNegatives,
    LoaderSettings,
    PretrainShards,
    make_loader,
    read_index,
    text_spec_for,
)
from medvill.imagebatch import model_images
from medvill.model.medvill import MedViLLForPretraining
from medvill.pretrain import Paths, TrainSettings
from medvill.tokenizer import load_tokenizer, tokenizer_ids


def loader_rate(dataset: PretrainShards, epochs: int) -> tuple[float, list[dict]]:
    samples, batches = 0, []
    start = time.perf_counter()
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        for batch in make_loader(dataset, 0):
            samples += len(batch["keys"])
            if len(batches) < 3:
                batches.append(batch)
    return samples / (time.perf_counter() - start), batches


def train_rate(model: MedViLLForPretraining, batches: list[dict], steps: int) -> float:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    samples, elapsed = 0, 0.0
    for i in range(steps + 1):
        batch = batches[i % len(batches)]
        start = time.perf_counter()
        images = model_images(batch["image_sources"], batch["crop_boxes"], batch["image_size"])
        out = model(images, batch["text_ids"], batch["text_valid"],
                    batch["visual_cells"], batch["mask_type"], batch["mlm_labels"],
                    batch["irm_labels"])  # fmt: skip
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if i > 0:  # the first step warms up allocators
            elapsed += time.perf_counter() - start
            samples += len(batch["keys"])
    return samples / elapsed


def paper_step(vocab: dict[str, int], profile: dict) -> float:
    config = config_from_profile(profile, vocab)
    model = MedViLLForPretraining(config).train()
    images = torch.randn(2, 3, 512, 512)
    ids = torch.randint(5, config.vocab_size, (2, config.text_slots()))
    valid = torch.ones_like(ids, dtype=torch.bool)
    labels = torch.full_like(ids, -100)
    labels[:, :38] = ids[:, :38]  # ≈ 15 % of 253 tokens
    cells = torch.sort(torch.randperm(256)[:180]).values
    start = time.perf_counter()
    out = model(images, ids, valid, cells, "bar", labels, torch.tensor([1, 0]))
    out.loss.backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="sample")
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--epochs", type=int, default=3, help="loader passes over the train split")
    parser.add_argument("--steps", type=int, default=10, help="timed demo training steps")
    parser.add_argument("--skip-paper", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    params = load_params(args.root / args.params)
    demo = profile_section(params, "demo")
    paths = Paths.for_dataset(args.dataset, args.root)
    tokenizer = load_tokenizer(paths.tokenizer)
    ids = tokenizer_ids(tokenizer)
    config = config_from_profile(demo, ids)
    train = TrainSettings.from_dict(demo["train"])
    settings = LoaderSettings(
        batch_size=train.max_micro_batch_size, num_workers=train.num_workers,
        shuffle_buffer=train.shuffle_buffer, seed=train.seed, image_size=config.image_size,
        grid_cells=config.num_visual_features, num_sampled_visual=config.num_sampled_visual,
        mask_type=config.attention_mask_type,
    )  # fmt: skip
    negatives = IrmNegatives.read(paths.negatives) if paths.negatives.exists() else None
    dataset = PretrainShards(read_index(paths.index, "train"), tokenizer,
                             text_spec_for(tokenizer, config.max_text_tokens, False), settings,
                             negatives)  # fmt: skip
    loader, batches = loader_rate(dataset, args.epochs)
    model = MedViLLForPretraining(config)
    step = train_rate(model, batches, args.steps)
    print(f"threads: {torch.get_num_threads()}, loader workers: {train.num_workers}")
    print(f"loader alone:        {loader:8.1f} samples/s")
    print(f"demo training step:  {step:8.1f} samples/s")
    print(f"ratio loader/train:  {loader / step:8.2f}  (> 1: the loader is not the bottleneck)")
    if not args.skip_paper:
        seconds = paper_step(ids, profile_section(params, "paper"))
        print(f"paper model fwd+bwd, batch 2, 512², CPU: {seconds:.1f} s")


if __name__ == "__main__":
    main()
