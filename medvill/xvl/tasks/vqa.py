"""X-VL on the VQA files of the pipeline (VQA-RAD layout): the question is the text, fused
with the image; an MLP on the fused [CLS] scores the training answer vocabulary, trained with
MedViLL's soft-target BCE. Accuracy on closed, open and all questions (and the CHEST subset).

ALBEF (and so, presumably, X-VL's release) answers with a generative answer decoder ranked
over the candidate answers; this classifier over the same vocabulary is MedViLL's head, so
the two families differ only in the encoder. Files, question cleaning, the ``organs`` filter
(table IV's ALL / CHEST rows), metrics and predictions are MedViLL's (:mod:`medvill.tasks.vqa`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from medvill.tasks import vqa as V
from medvill.tasks.common import (
    EvalSettings,
    TaskPaths,
    load_model,
    make_loader,
    model_device,
    save_finetuned,
    train_loop,
)
from medvill.tokenizer import load_tokenizer
from medvill.xvl.model import XVLModel, XVLPreTrainedModel
from medvill.xvl.tasks.common import open_finetuned, pretrained_source, text_spec

log = logging.getLogger(__name__)
TASK = "vqa"


@dataclass
class XVLVqaSettings(V.VqaSettings):
    """MedViLL's VQA settings (``image_root``, ``organs``); ``mask`` is unused by X-VL."""


class XVLForVQA(XVLPreTrainedModel):
    """X-VL encoder + MLP (hidden → 2·hidden → ReLU → answers) on the fused [CLS] of the
    question over the image."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.xvl = XVLModel(config)
        self.vqa_head = V.answer_head(config)
        self.post_init()

    def forward(
        self, images: torch.Tensor, text_ids: torch.Tensor, text_valid: torch.Tensor
    ) -> torch.Tensor:
        image_embeds = self.xvl.encode_image(images)
        text = self.xvl.text.encode_text(text_ids, text_valid)
        fused = self.xvl.text.fuse(text, text_valid, image_embeds)
        return self.vqa_head(fused[:, 0])


def finetune(
    paths: TaskPaths, settings: XVLVqaSettings, pretrained: Path | None = None
) -> dict[str, Any]:
    source = pretrained_source(paths, pretrained)
    organs = V.organ_filter(settings.organs)
    files = V.VqaFiles.read(paths.vqa, "train", paths.root / settings.image_root, organs)
    tokenizer = load_tokenizer(source)
    model = load_model(XVLForVQA, source, num_labels=len(files.answers))
    data = V.QuestionDataset(files, tokenizer, text_spec(tokenizer, model.config),
                             model.config.image_size)  # fmt: skip

    def batches(epoch: int) -> Any:
        loader = make_loader(data, settings.batch_size, V.collate, True, settings.seed + epoch,
                             settings.num_workers, model_device(model))  # fmt: skip
        return (b for b in loader if len(b["index"]) == settings.batch_size)

    def loss_of(m: nn.Module, b: dict[str, Any]) -> torch.Tensor:
        logits = m(b["images"], b["text_ids"], b["text_valid"]).float()
        # MEVF's instance BCE: mean over cells × answers = sum over answers, mean over batch
        return F.binary_cross_entropy_with_logits(logits, b["target"]) * logits.shape[1]

    steps = len(data) // settings.batch_size
    history = train_loop(model, batches, steps, loss_of, settings, f"xvl {TASK}")
    info = {
        "task": TASK,
        "model": "xvl",
        "card_kind": "xvl_vqa",
        "image_root": settings.image_root,
        "answers": files.answers,
        "organs": sorted(organs),
        "pretrained": str(source),
    }
    save_finetuned(model, tokenizer, paths.finetuned(TASK), info, history, settings, paths)
    return info


def evaluate(
    paths: TaskPaths,
    settings: EvalSettings,
    checkpoint: Path | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Answer the test questions (VQA-RAD has train/test only, as in MedViLL's task)."""
    ckpt, info, out = open_finetuned(paths, TASK, checkpoint, out)
    organs = V.organ_filter(info.get("organs", []))
    files = V.VqaFiles.read(paths.vqa, "test", paths.root / info["image_root"], organs)
    if files.answers != info["answers"]:
        raise ValueError(
            "ans2label.json differs from the answer vocabulary the model was fine-tuned "
            "with: re-run `medvill finetune vqa --model xvl`"
        )
    tokenizer = load_tokenizer(ckpt)
    model = load_model(XVLForVQA, ckpt)
    data = V.QuestionDataset(files, tokenizer, text_spec(tokenizer, model.config),
                             model.config.image_size)  # fmt: skip
    return V.answer_and_score(
        paths, settings, ckpt, out, files, data, organs, model,
        lambda m, b: m(b["images"], b["text_ids"], b["text_valid"]), extra={"model": "xvl"},
    )  # fmt: skip
