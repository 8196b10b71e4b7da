"""X-VL diagnosis classification: 14 CheXpert labels, one multi-label linear layer, BCE with
MedViLL's label policy and pos_weight; micro/macro AUROC and F1 at the validation threshold.

Two inputs (``input`` setting, saved as ``classifier_input`` in config.json):

* ``image`` (default) — the ViT's [CLS] token alone, as the seed's ``eval_finetune`` fine-tunes
  the pretrained visual encoder for AUC: a diagnosis from the radiograph, no report needed;
* ``pair`` — the fused [CLS] of image and report, MedViLL's table II setting (the labels are
  read off that same report, so this measures little beyond reading).

Data, label policy, metrics, curves and the predictions layout are MedViLL's
(:mod:`medvill.tasks.classification`), so ``medvill compare classification`` pairs the two
families on the same test images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvill import metrics as M
from medvill.data import read_index, stream_sizes
from medvill.tasks import classification as C
from medvill.tasks.common import (
    EvalSettings,
    InferenceTimer,
    TaskPaths,
    load_model,
    model_device,
    save_finetuned,
    train_loop,
)
from medvill.tokenizer import load_tokenizer
from medvill.xvl.config import XVLConfig
from medvill.xvl.model import XVLModel, XVLPreTrainedModel
from medvill.xvl.tasks.common import open_finetuned, pretrained_source, text_spec
from pipeline.records import CHEXPERT_LABELS

log = logging.getLogger(__name__)
TASK = "classification"
INPUTS: tuple[str, ...] = ("image", "pair")


@dataclass
class XVLClassificationSettings(C.ClassificationSettings):
    input: str = "image"  # image: the ViT [CLS] (eval_finetune); pair: fused image + report

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.input not in INPUTS:
            raise ValueError(f"classification.input must be one of {INPUTS}, got {self.input!r}")


class XVLForClassification(XVLPreTrainedModel):
    """X-VL encoder + dropout + one linear layer with ``config.num_labels`` outputs on the
    image [CLS] (``classifier_input: image``) or the fused [CLS] (``pair``)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.xvl = XVLModel(config)
        self.classifier_input = str(getattr(config, "classifier_input", "image"))
        if self.classifier_input not in INPUTS:
            raise ValueError(f"classifier_input must be one of {INPUTS}")
        width = config.vision_width if self.classifier_input == "image" else config.hidden_size
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(width, config.num_labels)
        self.post_init()

    def forward(
        self, images: torch.Tensor, text_ids: torch.Tensor, text_valid: torch.Tensor
    ) -> torch.Tensor:
        image_embeds = self.xvl.encode_image(images)
        if self.classifier_input == "image":
            feature = image_embeds[:, 0]
        else:
            text = self.xvl.text.encode_text(text_ids, text_valid)
            feature = self.xvl.text.fuse(text, text_valid, image_embeds)[:, 0]
        return self.classifier(self.dropout(feature))


def _forward(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    return model(batch["images"], batch["text_ids"], batch["text_valid"])


def _split(
    paths: TaskPaths, split: str, tokenizer: Any, model: XVLForClassification,
    settings: C.ClassificationSettings, shuffle: bool,
) -> C.LabelledShards:  # fmt: skip
    return C.LabelledShards(
        read_index(paths.index, split),
        tokenizer,
        text_spec(tokenizer, model.config),
        model.config.image_size,
        settings,
        shuffle=shuffle,
    )


def finetune(
    paths: TaskPaths, settings: XVLClassificationSettings, pretrained: Path | None = None
) -> dict[str, Any]:
    """Fine-tune from the X-VL pretraining checkpoint; choose the F1 threshold on validation."""
    source = pretrained_source(paths, pretrained)
    tokenizer = load_tokenizer(source)
    config = XVLConfig.from_pretrained(str(source), **C.chexpert_label_config())
    config.classifier_input = settings.input  # not an XVLConfig field: set, then saved with it
    model = load_model(XVLForClassification, source, config=config)
    train = _split(paths, "train", tokenizer, model, settings, shuffle=True)
    weight = C.positive_weight(train.shards, settings, model_device(model))
    workers = max(settings.num_workers, 1)
    steps = sum(n // settings.batch_size for n in stream_sizes(train.shards.total, workers))

    def batches(epoch: int) -> Any:
        train.epoch = epoch
        return C.labelled_loader(
            train, settings.batch_size, settings.num_workers, True, model_device(model)
        )

    def loss_of(m: nn.Module, b: dict[str, Any]) -> torch.Tensor:
        return C.label_loss(_forward(m, b), b, weight)

    history = train_loop(model, batches, steps, loss_of, settings, f"xvl {TASK}")
    val = C.predict(model, _split(paths, "valid", tokenizer, model, settings, False),
                    settings.eval_batch_size, _forward)  # fmt: skip
    threshold = M.best_threshold(val["targets"], val["scores"], val["valid"])
    info = {
        "task": TASK,
        "model": "xvl",
        "card_kind": "xvl_classification",
        "input": settings.input,
        "labels": list(CHEXPERT_LABELS),
        "threshold": threshold,
        "uncertain": settings.uncertain,
        "blank": settings.blank,
        "pretrained": str(source),
        "valid_micro_auroc": M.micro_auroc(val["targets"], val["scores"], val["valid"]),
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
    """Score a fine-tuned X-VL classifier on ``settings.split``: metrics (micro/macro AUROC,
    micro F1, per-label AUROC), predictions, ROC/PR/confusion curves."""
    ckpt, info, out = open_finetuned(paths, TASK, checkpoint, out)
    tokenizer = load_tokenizer(ckpt)
    model = load_model(XVLForClassification, ckpt)
    policy = C.ClassificationSettings(uncertain=info["uncertain"], blank=info["blank"])
    data = _split(paths, settings.split, tokenizer, model, policy, shuffle=False)
    timer = InferenceTimer(model)
    pred = C.predict(model, data, settings.batch_size, _forward, timer)
    return C.score_and_write(
        pred, paths, settings, ckpt, out, info["threshold"], timer,
        extra={"model": "xvl", "input": info["input"]},
    )  # fmt: skip
