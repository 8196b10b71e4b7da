"""Image-report retrieval, I2R and R2I (paper §IV-C.2, table III).

A binary matched / non-matched classifier on the pooled [CLS], initialised from the IRM head (the
module is named ``cls.seq_relationship`` like the pretraining head, so its weights load from the
pretraining checkpoint). Training (docs/formats.md §2): each ``Train.jsonl`` record gives its true
pair (label 1) and one negative (label 0) built from a record with a different label set, swapping
the image with probability 0.5 and the report otherwise. Evaluation: the pipeline's
``I2T_Label_<Split>.jsonl`` / ``T2I_…`` blocks; score = softmax(logits)[matched]; positives are
candidates with ``is_aligned == [1]`` (same CheXpert label set); MRR, Hit@5, R@5, P@5.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from medvill import metrics as M
from medvill.data import text_spec_for
from medvill.device import to_device
from medvill.model.medvill import MedViLLModel, MedViLLPreTrainedModel
from medvill.tasks.common import (
    PLOTS,
    EvalSettings,
    FinetuneSettings,
    InferenceTimer,
    TaskPaths,
    encode_text,
    inference_precision,
    load_image_file,
    load_model,
    make_loader,
    metrics_document,
    model_device,
    open_finetuned,
    pyplot,
    require_checkpoint,
    resolve_image_paths,
    save_finetuned,
    savefig,
    stack,
    train_loop,
    write_json,
)
from medvill.tokenizer import load_tokenizer
from pipeline.records import atomic_write_bytes
from pipeline.taskfiles.common import FILE_SPLIT
from pipeline.taskfiles.jsonl import read_task_file

log = logging.getLogger(__name__)
TASK = "retrieval"
#: Our direction names → the pipeline's file prefixes (I2T = image-to-report).
DIRECTIONS: dict[str, str] = {"i2r": "I2T", "r2i": "T2I"}
K = 5


@dataclass
class RetrievalSettings(FinetuneSettings):
    image_root: str = "."  # task-file ``img`` paths are relative to this (pairs.image_root)
    swap_image_probability: float = 0.5  # a negative swaps the image (else the report)


class IrmHead(nn.Module):
    """Container named like ``BertPreTrainingHeads`` so ``cls.seq_relationship`` loads."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.seq_relationship = nn.Linear(hidden, 2)


class MedViLLForRetrieval(MedViLLPreTrainedModel):
    """Encoder + the 2-way IRM classifier; class 1 = matched (as in pretraining)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.medvill = MedViLLModel(config)
        self.cls = IrmHead(config.hidden_size)
        self.post_init()

    def forward(
        self,
        images: torch.Tensor,
        text_ids: torch.Tensor,
        text_valid: torch.Tensor,
        mask_type: str | None = None,
    ) -> torch.Tensor:
        pooled = self.medvill(images, text_ids, text_valid, None, mask_type).pooler_output
        return self.cls.seq_relationship(pooled)


class PairDataset(Dataset):
    """(image path, report text, label) pairs → model inputs."""

    def __init__(
        self,
        images: list[Path],
        texts: list[str],
        labels: list[int],
        tokenizer: Any,
        spec: Any,
        image_size: int,
    ) -> None:
        self.images, self.texts, self.labels = images, texts, labels
        self.tokenizer, self.spec, self.image_size = tokenizer, spec, image_size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ids, valid = encode_text(self.tokenizer, self.texts[i], self.spec)
        return {
            "image": load_image_file(self.images[i], self.image_size),
            "text_ids": ids,
            "text_valid": valid,
            "label": self.labels[i],
        }


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "images": stack(items, "image"),
        "text_ids": stack(items, "text_ids"),
        "text_valid": stack(items, "text_valid"),
        "labels": torch.tensor([x["label"] for x in items], dtype=torch.long),
    }


def training_pairs(
    rows: list[dict[str, Any]], images: list[Path], settings: RetrievalSettings, epoch: int
) -> tuple[list[Path], list[str], list[int]]:
    """One epoch's pairs (docs/formats.md §2): per record its true pair and one non-matched pair
    with a record whose label set differs (none when every record shares it); seeded by epoch.

    The partner is the k-th record (in file order) outside the row's label group, k drawn
    uniformly; it is found by binary search over the group's positions, so an epoch costs
    O(N log N) instead of a scan of all records per record (MIMIC-CXR: ~1 h → seconds).
    """
    rng = np.random.default_rng([settings.seed, epoch, 7])
    groups: dict[Any, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(_hashable(row["label"]), []).append(i)
    # per group: g_j - j = records outside the group that come before its j-th member
    outside_before = {
        label: np.asarray(members) - np.arange(len(members)) for label, members in groups.items()
    }
    out_images, out_texts, out_labels = [], [], []
    for i, row in enumerate(rows):
        out_images.append(images[i])
        out_texts.append(row["text"])
        out_labels.append(1)
        label = _hashable(row["label"])
        others = len(rows) - len(groups[label])
        if others:
            k = int(rng.integers(0, others))
            # the k-th non-member: k plus the members that precede it
            j = k + int(np.searchsorted(outside_before[label], k, side="right"))
            if rng.random() < settings.swap_image_probability:
                out_images.append(images[j])
                out_texts.append(row["text"])
            else:
                out_images.append(images[i])
                out_texts.append(rows[j]["text"])
            out_labels.append(0)
    return out_images, out_texts, out_labels


def _hashable(value: Any) -> Any:
    """A dict key with the same equality as ``value`` (task-file labels may be lists)."""
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def query_key(direction: str) -> str:
    """The task-file field naming a block's query: the image's ``id`` for I2T, the report's
    ``T_id`` for T2I."""
    return "id" if DIRECTIONS[direction] == "I2T" else "T_id"


def query_blocks(rows: list[dict[str, Any]], direction: str) -> list[list[int]]:
    """Line indices of each query block of a task file's ``rows``: consecutive lines sharing
    the query id (the rows are already read: the file is not opened again)."""
    key = query_key(direction)
    blocks: list[list[int]] = []
    for i, row in enumerate(rows):
        if blocks and rows[blocks[-1][0]][key] == row[key]:
            blocks[-1].append(i)
        else:
            blocks.append([i])
    return blocks


@torch.no_grad()
def score_pairs(
    model: MedViLLForRetrieval,
    data: PairDataset,
    batch_size: int,
    mask: str,
    timer: InferenceTimer | None = None,
) -> np.ndarray:
    """softmax(logits)[:, matched] of every pair, in order."""
    model.eval()
    device = model_device(model)
    precision = inference_precision(model)
    scores = []
    for batch in make_loader(data, batch_size, collate, shuffle=False, seed=0, device=device):
        moved = to_device(batch, device)

        def run(b: dict[str, Any] = moved) -> torch.Tensor:
            with precision.autocast():
                return model(b["images"], b["text_ids"], b["text_valid"], mask)

        logits = timer.time(run, len(batch["labels"])) if timer else run()
        scores.append(torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy())
    return np.concatenate(scores) if scores else np.zeros(0)


def block_predictions(
    rows: list[dict[str, Any]], direction: str, scores: np.ndarray, blocks: list[list[int]]
) -> dict[str, list[Any]]:
    """One direction's predictions in the layout every family writes (predictions.json):
    per query block its query id, candidate scores and which candidates are relevant
    (``is_aligned``), so the families' files compare line by line."""
    key = query_key(direction)
    return {
        "queries": [rows[b[0]][key] for b in blocks],
        "scores": [scores[b].tolist() for b in blocks],
        "relevant": [[int(rows[i]["is_aligned"][0]) for i in b] for b in blocks],
    }


def finetune(
    paths: TaskPaths, settings: RetrievalSettings, pretrained: Path | None = None
) -> dict[str, Any]:
    """Fine-tune the IRM classifier on Train.jsonl pairs."""
    source = require_checkpoint(
        pretrained or paths.pretrained, f"run `medvill pretrain --dataset {paths.dataset}` first"
    )
    tokenizer = load_tokenizer(source)
    model = load_model(MedViLLForRetrieval, source)
    spec = text_spec_for(tokenizer, model.config.max_text_tokens, settings.mask == "noncross")
    train_file = paths.pairs / "Train.jsonl"
    if not train_file.is_file():
        raise FileNotFoundError(f"{train_file} missing: run `medvill-prep pairs` first")
    rows = read_task_file(train_file)
    images = resolve_image_paths(rows, paths.root / settings.image_root, train_file)
    size = model.config.image_size
    steps = 2 * len(rows) // settings.batch_size

    def batches(epoch: int) -> Any:
        data = PairDataset(*training_pairs(rows, images, settings, epoch), tokenizer, spec, size)
        loader = make_loader(data, settings.batch_size, collate, True, settings.seed + epoch,
                             settings.num_workers, model_device(model))  # fmt: skip
        return (b for b in loader if len(b["labels"]) == settings.batch_size)

    def loss_of(m: nn.Module, b: dict[str, Any]) -> torch.Tensor:
        logits = m(b["images"], b["text_ids"], b["text_valid"], settings.mask)
        return F.cross_entropy(logits.float(), b["labels"])

    history = train_loop(model, batches, max(steps, 1), loss_of, settings, TASK)
    info = {
        "task": TASK,
        "mask": settings.mask,
        "image_root": settings.image_root,
        "pretrained": str(source),
    }
    save_finetuned(model, tokenizer, paths.finetuned(TASK), info, history, settings, paths)
    return info


def compute_fn(pred: dict[str, Any]) -> Any:
    """Metrics of resamples of the queries of one direction, given as (R, n) query weights."""
    results = [
        M.score_query(np.asarray(s), np.asarray(r, dtype=bool), K)
        for s, r in zip(pred["scores"], pred["relevant"], strict=True)
    ]

    def compute(weights: np.ndarray) -> dict[str, np.ndarray]:
        return M.retrieval_metrics_resampled(results, weights, K)

    return compute


def evaluate(
    paths: TaskPaths,
    settings: EvalSettings,
    checkpoint: Path | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Score both directions' candidate blocks of ``settings.split``."""
    ckpt, info, out = open_finetuned(paths, TASK, checkpoint, out)
    tokenizer = load_tokenizer(ckpt)
    model = load_model(MedViLLForRetrieval, ckpt)
    spec = text_spec_for(tokenizer, model.config.max_text_tokens, info["mask"] == "noncross")
    boot: dict[str, dict[str, float]] = {}
    timing: dict[str, float] = {}
    predictions: dict[str, Any] = {"task": TASK}
    for direction, prefix in DIRECTIONS.items():
        path = paths.pairs / f"{prefix}_Label_{FILE_SPLIT[settings.split]}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: run `medvill-prep pairs` first")
        rows = read_task_file(path)
        if not rows:
            raise ValueError(f"{path} has no candidate lines")
        images = resolve_image_paths(rows, paths.root / info["image_root"], path)
        labels = [int(row["is_aligned"][0]) for row in rows]
        data = PairDataset(
            images, [r["text"] for r in rows], labels, tokenizer, spec, model.config.image_size
        )
        timer = InferenceTimer(model)
        scores = score_pairs(model, data, settings.batch_size, info["mask"], timer)
        pred = block_predictions(rows, direction, scores, query_blocks(rows, direction))
        predictions[direction] = pred
        boot.update(direction_stats(pred, direction, settings))
        timing[direction] = timer.ms_per_sample
    return write_results(paths, settings, ckpt, out, boot, timing, predictions, model_device(model))


def direction_stats(
    pred: dict[str, Any], direction: str, settings: EvalSettings
) -> dict[str, dict[str, float]]:
    """Bootstrap intervals of one direction's block metrics, keyed ``<direction>/<metric>``."""
    stats = M.bootstrap(
        compute_fn(pred),
        len(pred["queries"]),
        settings.bootstrap,
        settings.seed,
        settings.confidence,
        settings.bootstrap_ci_resamples,
    )
    return {f"{direction}/{name}": value for name, value in stats.items()}


def write_results(
    paths: TaskPaths,
    settings: EvalSettings,
    ckpt: Path,
    out: Path,
    boot: dict[str, dict[str, float]],
    timing: dict[str, float],
    predictions: dict[str, Any],
    device: torch.device,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``metrics.json`` (``extra`` fields first), ``predictions.json`` and the rank
    histogram (CSV + PNG) of both directions; shared by every model family's retrieval."""
    queries = {"queries": {d: len(predictions[d]["queries"]) for d in DIRECTIONS}}
    doc = metrics_document(
        TASK, paths.dataset, ckpt, boot, settings, timing, {**(extra or {}), **queries},
        device=device,
    )  # fmt: skip
    write_json(doc, out / "metrics.json")
    write_json(predictions, out / "predictions.json")
    write_rank_histogram(predictions, out / PLOTS / "rank_histogram.csv")
    plot_ranks(predictions, out / PLOTS / "rank_histogram.png")
    return doc


def write_rank_histogram(predictions: dict[str, Any], path: Path) -> None:
    """Queries per 0-based rank of the first positive, per direction, for every rank of the
    blocks (DVC plot CSV: rank, i2r, r2i); Hit@K is the share at ranks below K."""
    ranks = {
        direction: [
            M.first_positive_rank(np.asarray(s), np.asarray(r, dtype=bool))
            for s, r in zip(predictions[direction]["scores"], predictions[direction]["relevant"],
                            strict=True)
        ]
        for direction in DIRECTIONS
    }  # fmt: skip
    size = max(len(s) for d in DIRECTIONS for s in predictions[d]["scores"])
    counts = {d: np.bincount(r, minlength=size) for d, r in ranks.items()}
    lines = ["rank," + ",".join(DIRECTIONS)]
    lines += [f"{k}," + ",".join(str(int(counts[d][k])) for d in DIRECTIONS) for k in range(size)]
    atomic_write_bytes(Path(path), ("\n".join(lines) + "\n").encode("utf-8"))


def plot_ranks(predictions: dict[str, Any], path: Path) -> None:
    """Histogram of the first-positive rank per direction (MRR and Hit@5 in one picture)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for direction in DIRECTIONS:
        pred = predictions[direction]
        ranks = [
            M.first_positive_rank(np.asarray(s), np.asarray(r, dtype=bool))
            for s, r in zip(pred["scores"], pred["relevant"], strict=True)
        ]
        ax.hist(ranks, bins=range(0, max(ranks) + 2), alpha=0.5, label=direction.upper())
    ax.axvline(K - 0.5, color="grey", linestyle=":", label=f"top {K}")
    ax.set_xlabel("0-based rank of the first positive")
    ax.set_ylabel("queries")
    ax.set_title("Image-report retrieval")
    ax.legend()
    fig.tight_layout()
    savefig(fig, path)
    plt.close(fig)
