"""X-VL image–report retrieval fine-tuned as ALBEF does, scored on MedViLL's candidate blocks.

Training (``Train.jsonl`` pairs): image–text contrast within the batch (entries with the same
report are one positive) plus matching with hard negatives mined from the in-batch
similarities (:func:`medvill.xvl.model.matching_loss`, the pretraining's rule: never the same
report, nor one whose sentences overlap ≥ ``negative_similarity_threshold``). No momentum
model or queue: the fine-tuning batches are small and the blocks are 100 candidates.

Evaluation: each query's block (``I2T_Label_<Split>.jsonl`` / ``T2I_…``, 100 candidates,
relevant = same positive label set) is ranked by the contrastive similarity; the top
``rerank_k`` are re-ranked by the matching probability (ALBEF's ITC-then-ITM inference;
``rerank_k: 0`` ranks by contrast alone). MedViLL's metrics (MRR, Hit@5, R@5, P@5) with the
tasks' bootstrap; the contrast-only MRR is reported beside them.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from medvill import metrics as M
from medvill.data import text_block
from medvill.tasks import retrieval as R
from medvill.tasks.common import (
    EvalSettings,
    FinetuneSettings,
    InferenceTimer,
    TaskPaths,
    load_image_file,
    load_model,
    make_loader,
    model_device,
    resolve_image_paths,
    save_finetuned,
    stack,
    train_loop,
)
from medvill.tokenizer import load_tokenizer
from medvill.xvl.data import report_id
from medvill.xvl.model import XVLModel, XVLPreTrainedModel, matching_loss
from medvill.xvl.objectives import contrastive_loss, sentence_overlap
from medvill.xvl.retrieval import PairFeatures, rerank
from medvill.xvl.tasks.common import open_finetuned, pretrained_source, text_spec
from pipeline.taskfiles.common import FILE_SPLIT
from pipeline.taskfiles.jsonl import read_task_file

log = logging.getLogger(__name__)
TASK = "retrieval"


@dataclass
class XVLRetrievalSettings(FinetuneSettings):
    image_root: str = "."  # task-file ``img`` paths are relative to this (pairs.image_root)
    # candidates per block the matching head re-ranks (ALBEF: k_test 256 of COCO's 5,000
    # images; our blocks hold 100). 0: contrastive similarity only.
    rerank_k: int = 16

    def __post_init__(self) -> None:
        if self.rerank_k < 0:
            raise ValueError(f"retrieval.rerank_k must be ≥ 0, got {self.rerank_k}")


class XVLForRetrieval(XVLPreTrainedModel):
    """The X-VL encoder with its retrieval fine-tuning loss (contrast + matching); saved, it
    loads as :class:`XVLModel` for scoring."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.xvl = XVLModel(config)
        self.post_init()

    def forward(
        self,
        images: torch.Tensor,
        text_ids: torch.Tensor,
        text_valid: torch.Tensor,
        report_ids: torch.Tensor,
        report_overlap: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """``loss`` = in-batch contrast + matching; ``itc_loss``, ``itm_loss`` beside it."""
        x = self.xvl
        image_embeds = x.encode_image(images)
        text_embeds = x.text.encode_text(text_ids, text_valid)
        image_feat, text_feat = x.image_features(image_embeds), x.text_features(text_embeds)
        with torch.no_grad():
            x.temp.clamp_(0.001, 0.5)
            positives = (report_ids[:, None] == report_ids[None, :]).float()
        with torch.autocast(images.device.type, enabled=False):
            itc, sim_i2t, sim_t2i = contrastive_loss(
                image_feat.float(), text_feat.float(), image_feat.float().t(),
                text_feat.float().t(), positives, x.temp.float(),
            )  # fmt: skip
        itm, _, _ = matching_loss(
            x, image_embeds, text_embeds, text_valid, sim_i2t, sim_t2i, report_ids,
            report_overlap, generator,
        )  # fmt: skip
        return {"loss": itc + itm, "itc_loss": itc, "itm_loss": itm}


class ReportPairs(Dataset):
    """Task-file lines (image path, report) → X-VL inputs and the report's identity."""

    def __init__(
        self, images: list[Path], texts: list[str], tokenizer: Any, spec: Any, image_size: int
    ) -> None:
        self.images, self.texts = images, texts
        self.tokenizer, self.spec, self.image_size = tokenizer, spec, image_size

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        tokens = self.tokenizer(self.texts[i], add_special_tokens=False, truncation=True,
                                max_length=self.spec.max_tokens)["input_ids"]  # fmt: skip
        ids, valid = text_block(tokens, self.spec)
        return {
            "image": load_image_file(self.images[i], self.image_size),
            "text_ids": ids,
            "text_valid": valid,
            "text": self.texts[i],
        }


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a batch; the reports' ids and sentence overlap steer the negatives, and
    ``mining_seed`` (from the batch's reports) makes the draws repeatable."""
    texts = [x["text"] for x in items]
    return {
        "images": stack(items, "image"),
        "text_ids": stack(items, "text_ids"),
        "text_valid": stack(items, "text_valid"),
        "report_ids": torch.tensor([report_id(t) for t in texts], dtype=torch.long),
        "report_overlap": torch.from_numpy(sentence_overlap(texts)),
        "mining_seed": zlib.crc32("\n".join(texts).encode("utf-8")),
    }


def finetune(
    paths: TaskPaths, settings: XVLRetrievalSettings, pretrained: Path | None = None
) -> dict[str, Any]:
    """Fine-tune contrast and matching on the ``Train.jsonl`` pairs."""
    source = pretrained_source(paths, pretrained)
    tokenizer = load_tokenizer(source)
    model = load_model(XVLForRetrieval, source)
    train_file = paths.pairs / "Train.jsonl"
    if not train_file.is_file():
        raise FileNotFoundError(f"{train_file} missing: run `medvill-prep pairs` first")
    rows = read_task_file(train_file)
    images = resolve_image_paths(rows, paths.root / settings.image_root, train_file)
    data = ReportPairs(images, [r["text"] for r in rows], tokenizer,
                       text_spec(tokenizer, model.config), model.config.image_size)  # fmt: skip

    def batches(epoch: int) -> Any:
        loader = make_loader(data, settings.batch_size, collate, True, settings.seed + epoch,
                             settings.num_workers, model_device(model))  # fmt: skip
        return (b for b in loader if len(b["report_ids"]) == settings.batch_size)

    def loss_of(m: nn.Module, b: dict[str, Any]) -> torch.Tensor:
        device = b["images"].device
        seed = int(np.random.SeedSequence([settings.seed, b["mining_seed"]]).generate_state(1)[0])
        generator = torch.Generator(device=device).manual_seed(seed)
        return m(b["images"], b["text_ids"], b["text_valid"], b["report_ids"],
                 b["report_overlap"], generator)["loss"]  # fmt: skip

    steps = len(data) // settings.batch_size
    history = train_loop(model, batches, steps, loss_of, settings, f"xvl {TASK}")
    info = {
        "task": TASK,
        "model": "xvl",
        "card_kind": "xvl_retrieval",
        "image_root": settings.image_root,
        "rerank_k": settings.rerank_k,
        "pretrained": str(source),
    }
    save_finetuned(model, tokenizer, paths.finetuned(TASK), info, history, settings, paths)
    return info


def score_blocks(
    model: XVLModel, tokenizer: Any, path: Path, image_root: Path, direction: str, k: int,
    batch_size: int, timer: InferenceTimer,
) -> tuple[dict[str, Any], float]:  # fmt: skip
    """One direction's predictions (MedViLL's layout) and its contrast-only MRR."""
    rows = read_task_file(path)
    if not rows:
        raise ValueError(f"{path} has no candidate lines")
    images = resolve_image_paths(rows, image_root, path)
    blocks = R.query_blocks(rows, direction)

    def run() -> tuple[np.ndarray, np.ndarray]:
        features = PairFeatures(model, tokenizer, images, [r["text"] for r in rows], batch_size)
        return rerank(features, blocks, k), features.itc()

    scores, itc = timer.time(run, len(rows))
    pred = R.block_predictions(rows, direction, scores, blocks)
    relevant = pred["relevant"]
    itc_only = M.retrieval_metrics(
        [M.score_query(itc[b], np.asarray(r, dtype=bool)) for b, r in zip(blocks, relevant,
                                                                          strict=True)]
    )["mrr"]  # fmt: skip
    return pred, float(itc_only)


def evaluate(
    paths: TaskPaths,
    settings: EvalSettings,
    checkpoint: Path | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Rank both directions' candidate blocks of ``settings.split``."""
    ckpt, info, out = open_finetuned(paths, TASK, checkpoint, out)
    tokenizer = load_tokenizer(ckpt)
    model = load_model(XVLModel, ckpt)
    model.eval()
    boot: dict[str, dict[str, float]] = {}
    timing: dict[str, float] = {}
    itc_only: dict[str, float] = {}
    predictions: dict[str, Any] = {"task": TASK, "model": "xvl"}
    for direction, prefix in R.DIRECTIONS.items():
        path = paths.pairs / f"{prefix}_Label_{FILE_SPLIT[settings.split]}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: run `medvill-prep pairs` first")
        timer = InferenceTimer(model)
        pred, itc_only[direction] = score_blocks(
            model, tokenizer, path, paths.root / info["image_root"], direction,
            int(info["rerank_k"]), settings.batch_size, timer,
        )  # fmt: skip
        predictions[direction] = pred
        boot.update(R.direction_stats(pred, direction, settings))
        timing[direction] = timer.ms_per_sample
    extra = {"model": "xvl", "rerank_k": int(info["rerank_k"]), "itc_only_mrr": itc_only}
    return R.write_results(
        paths, settings, ckpt, out, boot, timing, predictions, model_device(model), extra
    )
