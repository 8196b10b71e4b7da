"""Is the image signal learnable at all? A plain CNN trained on the shards' pixels alone.

    python benchmarks/bench_image_signal.py --root /tmp/medvill-learn [--dataset synthetic]
        [--size 128] [--model tiny|resnet18] [--epochs 20] [--minutes 5]

Reads the shards of a prepared dataset (``medvill-prep all``; the images stage's 512² output
and the label stage's 14 CheXpert values in each sample's ``json``) with its own decoder
(Pillow, no medvill code: a bug in the model's loader cannot hide here), resizes to
``--size``², and trains a small CNN with BCE on the labels that are positive in the training
split; no report text is ever read. Prints the test
split's micro and macro AUROC and each label's, beside the label-prior floor (each label's
training prevalence as the score, medvill/chance.py).

Why it exists: when MedViLL's classification sits at the floor, this says whether the images
carry the signs at that resolution (then the model path is at fault) or not (then the
corpus generator is). The last line is
``image_signal: size=… model=… micro_auroc=… macro_auroc=… floor_micro=… epochs=… seconds=…``.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from pipeline.records import CHEXPERT_LABELS

LABELS: tuple[str, ...] = CHEXPERT_LABELS


def read_split(root: Path, dataset: str, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size) uint8 pixels and (N, 14) {0, 1} positives of one split's shards."""
    shards = root / "data" / "shards" / dataset
    index = json.loads((shards / "index.json").read_text(encoding="utf-8"))
    pixels: list[np.ndarray] = []
    labels: list[list[float]] = []
    for shard in index["splits"][split]["shards"]:
        samples: dict[str, dict[str, bytes]] = {}
        with tarfile.open(shards / shard["file"]) as tar:
            for member in tar.getmembers():
                key, _, ext = member.name.partition(".")
                handle = tar.extractfile(member)
                if handle is not None and ext in ("jpg", "png", "json"):
                    samples.setdefault(key, {})[ext] = handle.read()
        for key in sorted(samples):
            sample = samples[key]
            image = sample.get("jpg") or sample.get("png")
            if image is None or "json" not in sample:
                raise ValueError(f"{shard['file']}: sample {key} lacks an image or json member")
            with Image.open(io.BytesIO(image)) as img:
                grey = img.convert("L").resize((size, size), Image.Resampling.BILINEAR)
                pixels.append(np.asarray(grey, dtype=np.uint8))
            values = json.loads(sample["json"])["labels"]
            labels.append([1.0 if v is not None and float(v) == 1.0 else 0.0 for v in values])
    return np.stack(pixels), np.asarray(labels, dtype=np.float32)


class TinyCNN(nn.Module):
    """Five conv–BN–ReLU–pool blocks (16 → 128 channels), average + max pooled, one linear."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = [1, 16, 32, 64, 96, 128]
        for c_in, c_out in itertools.pairwise(channels):
            blocks += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(2 * channels[-1], outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return self.head(torch.cat([f.mean((2, 3)), f.amax((2, 3))], dim=1))


def build(model: str, outputs: int) -> nn.Module:
    if model == "tiny":
        return TinyCNN(outputs)
    import torchvision

    net = torchvision.models.resnet18(weights=None, num_classes=outputs)
    net.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
    return net


def auroc(truth: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum formula (ties averaged); NaN without both
    classes."""
    truth = truth.astype(bool)
    pos, neg = int(truth.sum()), int((~truth).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    i = 0
    while i < len(score):
        j = i
        while j + 1 < len(score) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[truth].sum() - pos * (pos + 1) / 2) / (pos * neg))


def as_input(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).float().div(255.0).sub(0.5).div(0.25)[:, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="project root of the run")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--model", choices=("tiny", "resnet18"), default="tiny")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=5.0, help="stop training after this")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--eval-split", default="test", help="test, valid or valid+test")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    x_train, y_train = read_split(args.root, args.dataset, "train", args.size)
    evals = [read_split(args.root, args.dataset, s, args.size) for s in args.eval_split.split("+")]
    x_test = np.concatenate([e[0] for e in evals])
    y_test = np.concatenate([e[1] for e in evals])
    print(f"train {len(x_train)} images, {args.eval_split} {len(x_test)}; {args.size}²", flush=True)
    model = build(args.model, len(LABELS))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    rng = np.random.default_rng(args.seed)
    inputs, targets = as_input(x_train), torch.from_numpy(y_train)
    epochs = 0
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(inputs))
        losses = []
        for start in range(0, len(order) - args.batch_size + 1, args.batch_size):
            batch = torch.from_numpy(order[start : start + args.batch_size])
            loss = F.binary_cross_entropy_with_logits(model(inputs[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
        epochs = epoch + 1
        elapsed = time.perf_counter() - started
        print(f"epoch {epochs} loss {np.mean(losses):.4f} [{elapsed:.0f}s]", flush=True)
        if elapsed > 60 * args.minutes:
            break
    model.eval()
    with torch.no_grad():
        scores = torch.cat([
            torch.sigmoid(model(as_input(x_test[i : i + 64]))) for i in range(0, len(x_test), 64)
        ]).numpy()  # fmt: skip
    counted = [j for j in range(len(LABELS)) if 0 < y_test[:, j].sum() < len(y_test)]
    per_label = {LABELS[j]: auroc(y_test[:, j], scores[:, j]) for j in counted}
    used = [j for j in counted if y_train[:, j].sum() > 0]
    micro = auroc(y_test[:, used].ravel(), scores[:, used].ravel())
    prior = np.broadcast_to(y_train.mean(axis=0), y_test.shape)
    floor = auroc(y_test[:, used].ravel(), prior[:, used].ravel())
    macro = float(np.mean([per_label[LABELS[j]] for j in used]))
    for name, value in per_label.items():
        j = LABELS.index(name)
        print(f"  {name:<28}{value:.3f}  ({int(y_test[:, j].sum())} positive)")
    seconds = time.perf_counter() - started
    print(
        f"image_signal: size={args.size} model={args.model} micro_auroc={micro:.3f} "
        f"macro_auroc={macro:.3f} floor_micro={floor:.3f} epochs={epochs} seconds={seconds:.0f}"
    )


if __name__ == "__main__":
    main()
