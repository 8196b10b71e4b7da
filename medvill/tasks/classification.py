"""Diagnosis classification (paper §IV-C.1, table II): 14 CheXpert labels from the image-report
pair, one multi-label linear layer on the pooled [CLS], BCE-with-logits.

Data comes from the shards, because only their ``json`` member carries the full label values
(1 / 0 / −1 / blank) that the uncertainty policy needs; the task JSONL keeps positives only.

Label policy (``uncertain`` / ``blank`` settings): MedViLL's files list positive findings only,
so its default is uncertain → negative and blank → negative. ``positive`` (U-Ones) and
``ignore`` (the cell is left out of loss and metrics) are the CheXpert paper's alternatives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from medvill import metrics as M
from medvill.data import (
    IMAGE_MEMBERS,
    SAMPLE_MEMBERS,
    SplitShards,
    TextSpec,
    decode_image,
    deterministic_shuffle,
    log_and_continue,
    read_index,
    stream_sizes,
    text_spec_for,
)
from medvill.device import loader_options, to_device
from medvill.model.medvill import MedViLLModel, MedViLLPreTrainedModel
from medvill.shardreader import MemberReader, SampleRef, sample_refs
from medvill.tasks.common import (
    PLOTS,
    EvalSettings,
    FinetuneSettings,
    InferenceTimer,
    TaskPaths,
    encode_text,
    inference_precision,
    load_model,
    metrics_document,
    model_device,
    open_finetuned,
    pyplot,
    require_checkpoint,
    save_finetuned,
    savefig,
    stack,
    train_loop,
    write_curve,
    write_json,
)
from medvill.tokenizer import load_tokenizer
from pipeline.records import CHEXPERT_LABELS

log = logging.getLogger(__name__)
TASK = "classification"
POLICIES = {"uncertain": ("negative", "positive", "ignore"), "blank": ("negative", "ignore")}


@dataclass
class ClassificationSettings(FinetuneSettings):
    uncertain: str = "negative"  # MedViLL: only 1 is positive
    blank: str = "negative"
    pos_weight: bool = True  # BCE pos_weight = neg/pos per label (the release)
    shuffle_buffer: int = 1000

    def __post_init__(self) -> None:
        for name, allowed in POLICIES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"classification.{name} must be one of {allowed}")


def label_targets(values: list[Any], uncertain: str, blank: str) -> tuple[np.ndarray, np.ndarray]:
    """14 CheXpert values → (target (14,) float, counts (14,) bool) under the label policy."""
    if len(values) != len(CHEXPERT_LABELS):
        raise ValueError(f"expected {len(CHEXPERT_LABELS)} label values, got {len(values)}")
    target = np.zeros(len(values), dtype=np.float32)
    valid = np.ones(len(values), dtype=bool)
    for j, value in enumerate(values):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            valid[j] = blank != "ignore"
        elif float(value) == 1.0:
            target[j] = 1.0
        elif float(value) == -1.0:
            target[j] = 1.0 if uncertain == "positive" else 0.0
            valid[j] = uncertain != "ignore"
        elif float(value) != 0.0:
            raise ValueError(f"label value {value!r} is not 1, 0, -1 or blank")
    return target, valid


def chexpert_label_config() -> dict[str, Any]:
    """Config fields of a CheXpert classifier: ``id2label``/``label2id`` in the fixed CheXpert
    order (output j is ``CHEXPERT_LABELS[j]``) and the multi-label problem type, so the saved
    ``config.json`` names every output as a Hub classifier's does."""
    return {
        "id2label": dict(enumerate(CHEXPERT_LABELS)),
        "label2id": {name: j for j, name in enumerate(CHEXPERT_LABELS)},
        "problem_type": "multi_label_classification",
    }


class MedViLLForClassification(MedViLLPreTrainedModel):
    """Encoder + dropout + one linear layer with ``config.num_labels`` outputs on pooled [CLS]."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.medvill = MedViLLModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        images: torch.Tensor,
        text_ids: torch.Tensor,
        text_valid: torch.Tensor,
        mask_type: str | None = None,
    ) -> torch.Tensor:
        pooled = self.medvill(images, text_ids, text_valid, None, mask_type).pooler_output
        return self.classifier(self.dropout(pooled))


class LabelledShards(IterableDataset):
    """Shard samples of one split as classification examples (image, report, 14 targets).

    Training order: shards permuted and buffer-shuffled from (seed, epoch); sample i of that
    order goes to loader worker i mod workers, so workers never duplicate samples. Only
    jpg/png, txt and json members are read; nothing is unpickled.
    """

    def __init__(
        self,
        shards: SplitShards,
        tokenizer: Any,
        spec: TextSpec,
        image_size: int,
        settings: ClassificationSettings,
        shuffle: bool,
    ) -> None:
        super().__init__()
        self.shards, self.tokenizer, self.spec = shards, tokenizer, spec
        self.image_size, self.settings, self.shuffle = image_size, settings, shuffle
        self.epoch = 0

    def samples(self, epoch: int) -> Iterator[SampleRef]:
        """Where each sample of the epoch is, in order (member index or tar headers only, no
        member data)."""
        s = self.settings
        urls = list(self.shards.files)
        if self.shuffle:
            order = np.random.default_rng([s.seed, epoch, 1]).permutation(len(urls))
            urls = [urls[i] for i in order]
        refs = sample_refs(urls, log_and_continue, self.shards.contents())
        if self.shuffle:
            yield from deterministic_shuffle(
                refs, s.shuffle_buffer, np.random.default_rng([s.seed, epoch, 2])
            )
        else:
            yield from refs

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        with MemberReader(SAMPLE_MEMBERS) as reader:
            for i, ref in enumerate(self.samples(self.epoch)):
                if i % workers == worker:
                    yield self.process(reader.read(ref))

    def process(self, sample: dict[str, Any]) -> dict[str, Any]:
        key = sample["__key__"]
        member = next((m for m in IMAGE_MEMBERS if m in sample), None)
        if member is None or "txt" not in sample or "json" not in sample:
            raise ValueError(f"shard sample {key} lacks an image, txt or json member")
        meta = json.loads(sample["json"])
        if "labels" not in meta:
            raise ValueError(f"shard sample {key} has no labels in its json member")
        target, valid = label_targets(meta["labels"], self.settings.uncertain, self.settings.blank)
        ids, text_valid = encode_text(self.tokenizer, sample["txt"].decode("utf-8"), self.spec)
        return {
            "key": key,
            "image": decode_image(sample[member], self.image_size, None),
            "text_ids": ids,
            "text_valid": text_valid,
            "target": target,
            "valid": valid,
        }


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "keys": [x["key"] for x in items],
        "images": stack(items, "image"),
        "text_ids": stack(items, "text_ids"),
        "text_valid": stack(items, "text_valid"),
        "target": stack(items, "target"),
        "valid": stack(items, "valid"),
    }


def labelled_loader(
    dataset: LabelledShards, batch_size: int, workers: int, train: bool, device: torch.device
) -> DataLoader:
    """Batches of a labelled split (training drops the last partial batch)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=collate,
        num_workers=workers,
        drop_last=train,
        pin_memory=loader_options(device, workers)["pin_memory"],
    )


def label_counts(shards: SplitShards, settings: ClassificationSettings) -> tuple[np.ndarray, ...]:
    """(positives, counted cells) per label over a split, reading only the json members."""
    pos = np.zeros(len(CHEXPERT_LABELS))
    counted = np.zeros(len(CHEXPERT_LABELS))
    with MemberReader(("json",)) as reader:
        for ref in sample_refs(shards.files, log_and_continue, shards.contents()):
            sample = reader.read(ref)
            if "json" in sample:
                meta = json.loads(sample["json"])
                target, valid = label_targets(meta["labels"], settings.uncertain, settings.blank)
                pos += target * valid
                counted += valid
    return pos, counted


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: LabelledShards,
    batch_size: int,
    forward: Callable[[nn.Module, dict[str, Any]], torch.Tensor],
    timer: InferenceTimer | None = None,
) -> dict[str, Any]:
    """Sigmoid scores of every sample of a split, in shard order; ``forward(model, batch)``
    gives the 14 label logits (each model family calls its head its own way)."""
    model.eval()
    device = model_device(model)
    precision = inference_precision(model)
    keys, scores, targets, valid = [], [], [], []
    for batch in labelled_loader(dataset, batch_size, 0, train=False, device=device):
        moved = to_device(batch, device)

        def run(b: dict[str, Any] = moved) -> torch.Tensor:
            with precision.autocast():
                return forward(model, b)

        logits = timer.time(run, len(batch["keys"])) if timer else run()
        keys += batch["keys"]
        scores.append(torch.sigmoid(logits.float()).cpu().numpy())
        targets.append(batch["target"].numpy())
        valid.append(batch["valid"].numpy())
    if not keys:
        raise ValueError("the evaluation split has no samples")
    return {
        "keys": keys,
        "scores": np.concatenate(scores),
        "targets": np.concatenate(targets),
        "valid": np.concatenate(valid),
    }


def medvill_forward(mask: str) -> Callable[[nn.Module, dict[str, Any]], torch.Tensor]:
    """MedViLL's classifier call under attention mask ``mask``."""
    return lambda m, b: m(b["images"], b["text_ids"], b["text_valid"], mask)


def positive_weight(
    shards: SplitShards, settings: ClassificationSettings, device: torch.device
) -> torch.Tensor | None:
    """BCE ``pos_weight`` = negatives / positives per label on the train split (1 for a label
    without positives), or None when ``settings.pos_weight`` is off."""
    if not settings.pos_weight:
        return None
    pos, counted = label_counts(shards, settings)
    return torch.tensor(
        np.where(pos > 0, (counted - pos) / np.maximum(pos, 1), 1.0),
        dtype=torch.float32,
        device=device,
    )


def label_loss(
    logits: torch.Tensor, batch: dict[str, Any], weight: torch.Tensor | None
) -> torch.Tensor:
    """Binary cross-entropy over the labels the policy keeps (``valid``), averaged over them."""
    cells = F.binary_cross_entropy_with_logits(
        logits.float(), batch["target"], pos_weight=weight, reduction="none"
    )
    mask = batch["valid"].float()
    return (cells * mask).sum() / mask.sum().clamp(min=1.0)


def compute_fn(pred: dict[str, Any]) -> Any:
    """Metrics of resamples of the predictions given as (R, n) item weights (what the
    bootstrap and ``compare`` call)."""
    scores = np.asarray(pred["scores"], dtype=float)
    targets = np.asarray(pred["targets"], dtype=float)
    valid = np.asarray(pred["valid"], dtype=bool)
    threshold = float(pred["threshold"])

    def compute(weights: np.ndarray) -> dict[str, np.ndarray]:
        per_label = M.per_label_auroc_resampled(targets, scores, valid, weights)
        return {
            "micro_auroc": M.micro_auroc_resampled(targets, scores, valid, weights),
            "micro_f1": M.micro_f1_resampled(targets, scores >= threshold, valid, weights),
            "macro_auroc": M.macro_average(per_label),
        }

    return compute


def finetune(
    paths: TaskPaths, settings: ClassificationSettings, pretrained: Path | None = None
) -> dict[str, Any]:
    """Fine-tune from the pretraining checkpoint; choose the F1 threshold on validation."""
    source = require_checkpoint(
        pretrained or paths.pretrained, f"run `medvill pretrain --dataset {paths.dataset}` first"
    )
    tokenizer = load_tokenizer(source)
    model = load_model(MedViLLForClassification, source, **chexpert_label_config())
    spec = text_spec_for(tokenizer, model.config.max_text_tokens, settings.mask == "noncross")
    train = LabelledShards(
        read_index(paths.index, "train"),
        tokenizer,
        spec,
        model.config.image_size,
        settings,
        shuffle=True,
    )
    weight = positive_weight(train.shards, settings, model_device(model))
    workers = max(settings.num_workers, 1)
    steps = sum(n // settings.batch_size for n in stream_sizes(train.shards.total, workers))

    def batches(epoch: int) -> Any:
        train.epoch = epoch
        return labelled_loader(
            train, settings.batch_size, settings.num_workers, True, model_device(model)
        )

    def loss_of(m: nn.Module, b: dict[str, Any]) -> torch.Tensor:
        return label_loss(m(b["images"], b["text_ids"], b["text_valid"], settings.mask), b, weight)

    history = train_loop(model, batches, steps, loss_of, settings, TASK)
    valid_set = LabelledShards(
        read_index(paths.index, "valid"),
        tokenizer,
        spec,
        model.config.image_size,
        settings,
        shuffle=False,
    )
    val = predict(model, valid_set, settings.eval_batch_size, medvill_forward(settings.mask))
    threshold = M.best_threshold(val["targets"], val["scores"], val["valid"])
    val_auroc = M.micro_auroc(val["targets"], val["scores"], val["valid"])
    info = {
        "task": TASK,
        "labels": list(CHEXPERT_LABELS),
        "threshold": threshold,
        "mask": settings.mask,
        "uncertain": settings.uncertain,
        "blank": settings.blank,
        "pretrained": str(source),
        "valid_micro_auroc": val_auroc,
        "valid_micro_f1": M.micro_f1(val["targets"], val["scores"] >= threshold, val["valid"]),
    }
    save_finetuned(model, tokenizer, paths.finetuned(TASK), info, history, settings, paths)
    return info


def evaluate(
    paths: TaskPaths,
    settings: EvalSettings,
    checkpoint: Path | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Score a fine-tuned checkpoint on ``settings.split``; write metrics, predictions, ROC."""
    ckpt, info, out = open_finetuned(paths, TASK, checkpoint, out)
    tokenizer = load_tokenizer(ckpt)
    model = load_model(MedViLLForClassification, ckpt)
    policy = ClassificationSettings(uncertain=info["uncertain"], blank=info["blank"])
    spec = text_spec_for(tokenizer, model.config.max_text_tokens, info["mask"] == "noncross")
    data = LabelledShards(
        read_index(paths.index, settings.split),
        tokenizer,
        spec,
        model.config.image_size,
        policy,
        shuffle=False,
    )
    timer = InferenceTimer(model)
    pred = predict(model, data, settings.batch_size, medvill_forward(info["mask"]), timer)
    return score_and_write(pred, paths, settings, ckpt, out, info["threshold"], timer)


def score_and_write(
    pred: dict[str, Any],
    paths: TaskPaths,
    settings: EvalSettings,
    ckpt: Path,
    out: Path,
    threshold: float,
    timer: InferenceTimer,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Bootstrap the split's scores at the validation ``threshold`` and write ``metrics.json``,
    ``predictions.json``, the curves and the ROC plot.

    Shared by every model family's classifier so their files compare line by line; ``extra``
    (e.g. the model family and its classifier input) goes first into both documents.
    """
    extra = extra or {}
    pred["threshold"] = threshold
    boot = M.bootstrap(
        compute_fn(pred),
        len(pred["keys"]),
        settings.bootstrap,
        settings.seed,
        settings.confidence,
        settings.bootstrap_ci_resamples,
    )
    per_label = M.per_label_auroc(pred["targets"], pred["scores"], CHEXPERT_LABELS, pred["valid"])
    doc = metrics_document(
        TASK,
        paths.dataset,
        ckpt,
        boot,
        settings,
        {"classification": timer.ms_per_sample},
        {
            **extra,
            "threshold": threshold,
            "per_label_auroc": per_label,
            "samples": len(pred["keys"]),
        },
        device=timer.device,
    )
    write_json(doc, out / "metrics.json")
    write_json(
        {
            "task": TASK,
            **{k: v for k, v in extra.items() if k == "model"},
            "keys": pred["keys"],
            "threshold": pred["threshold"],
            "scores": pred["scores"].tolist(),
            "targets": pred["targets"].tolist(),
            "valid": pred["valid"].tolist(),
        },
        out / "predictions.json",
    )
    write_curves(pred, out / PLOTS)
    plot_roc(pred, out / PLOTS / "roc.png")
    return doc


def write_curves(pred: dict[str, Any], folder: Path) -> None:
    """The micro-averaged ROC and precision-recall curves over every valid (report, label)
    cell, and those cells' actual vs predicted positivity at the chosen threshold (DVC's
    confusion template), as DVC plot JSON."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    valid = np.asarray(pred["valid"], dtype=bool)
    truth = np.asarray(pred["targets"], dtype=float)[valid] > 0.5
    score = np.asarray(pred["scores"], dtype=float)[valid]
    roc: list[dict[str, float]] = []
    pr: list[dict[str, float]] = []
    if np.unique(truth).size == 2:
        fpr, tpr, thresholds = roc_curve(truth, score)
        roc = [
            {"fpr": float(f), "tpr": float(t), "threshold": float(min(h, 1.0))}
            for f, t, h in zip(fpr, tpr, thresholds, strict=True)
        ]
        precision, recall, thresholds = precision_recall_curve(truth, score)
        pr = [
            {"recall": float(r), "precision": float(p), "threshold": float(h)}
            for r, p, h in zip(recall[:-1], precision[:-1], thresholds, strict=True)
        ]
    write_curve(folder / "roc.json", "roc", roc)
    write_curve(folder / "precision_recall.json", "precision_recall", pr)
    predicted = score >= float(pred["threshold"])
    names = np.array(["negative", "positive"])
    write_curve(
        folder / "confusion.json",
        "cells",
        [
            {"actual": a, "predicted": p}
            for a, p in zip(names[truth.astype(int)], names[predicted.astype(int)], strict=True)
        ],
    )


def plot_roc(pred: dict[str, Any], path: Path) -> None:
    """Micro-average ROC plus one faint curve per label that has both classes."""
    from sklearn.metrics import roc_curve

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    valid = np.asarray(pred["valid"], dtype=bool)
    targets, scores = np.asarray(pred["targets"]), np.asarray(pred["scores"])
    for j, name in enumerate(CHEXPERT_LABELS):
        t, s = targets[valid[:, j], j], scores[valid[:, j], j]
        if np.unique(t).size == 2:
            fpr, tpr, _ = roc_curve(t, s)
            ax.plot(fpr, tpr, alpha=0.35, linewidth=1, label=name)
    t, s = targets[valid], scores[valid]
    if np.unique(t).size == 2:
        fpr, tpr, _ = roc_curve(t, s)
        ax.plot(fpr, tpr, color="black", linewidth=2, label=f"micro (AUROC {M.auroc(t, s):.3f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("Diagnosis classification ROC")
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    savefig(fig, path)
    plt.close(fig)
