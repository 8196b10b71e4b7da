"""VQA-RAD (paper §IV-C.3, table IV): answers are classes over the training answer vocabulary.

Input: the files of the pipeline's ``vqa`` stage (MEVF ``data_RAD`` layout as JSON). Feature =
h[CLS] ⊙ h[visual SEP], head MLP hidden → 2·hidden → ReLU → answers, BCE-with-logits against
the soft target (docs/model.md §8), Bi attention. Accuracy = the target score of the arg-max answer,
for open, closed and all questions (and the CHEST subset of the test questions).

Table IV's 'ALL' and 'CHEST' rows are two fine-tunings: on every question, and on the chest
X-ray questions only. ``organs`` (params ``finetune.profiles.<p>.vqa.organs``) selects the
questions by ``image_organ`` for fine-tuning and, through the checkpoint's task.json, for
evaluation: ``[]`` = ALL, ``[CHEST]`` = the CHEST setting.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
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
    load_image_file,
    load_model,
    make_loader,
    metrics_document,
    model_device,
    open_finetuned,
    require_checkpoint,
    save_finetuned,
    stack,
    train_loop,
    write_curve,
    write_json,
)
from medvill.tokenizer import load_tokenizer

log = logging.getLogger(__name__)
TASK = "vqa"


@dataclass
class VqaSettings(FinetuneSettings):
    image_root: str = "."  # image_paths.json values are relative to this (vqa.image_root)
    organs: list[str] = field(default_factory=list)  # image_organ values kept; [] = all


def organ_filter(organs: list[str] | tuple[str, ...]) -> frozenset[str]:
    """Normalised organ names (the release writes e.g. ``CHEST`` and ``HEAD``)."""
    return frozenset(o.strip().upper() for o in organs)


def clean_question(question: str) -> str:
    """Question cleaning of the release (docs/model.md §8)."""
    text = question.lower()
    for suffix in ("? -yes/no", "? -open", "? - open"):
        text = text.replace(suffix, "")
    for char in (",", "?", "...", "."):
        text = text.replace(char, "")
    text = text.replace("'s", " 's")
    return re.sub(r"\bx ray\b", "x-ray", text).strip()


def _read(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: run `medvill-prep vqa` first")
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass
class VqaFiles:
    """One split of the vqa stage's output, joined and checked."""

    entries: list[dict[str, Any]]
    targets: np.ndarray  # (n, answers) soft scores
    images: list[Path]
    answers: list[str]

    @classmethod
    def read(
        cls, folder: Path, split: str, image_root: Path, organs: frozenset[str] = frozenset()
    ) -> VqaFiles:
        """``organs`` keeps only questions on those ``image_organ`` values (empty: all)."""
        ans2label = _read(folder / "ans2label.json")
        if not ans2label:
            raise ValueError(f"{folder / 'ans2label.json'}: empty answer vocabulary")
        answers = [a for a, _ in sorted(ans2label.items(), key=lambda kv: kv[1])]
        entries = _read(folder / f"{split}set.json")
        if organs:
            entries = [e for e in entries if str(e.get("image_organ", "")).upper() in organs]
        if not entries:
            kept = f" on organs {sorted(organs)}" if organs else ""
            raise ValueError(f"{folder / f'{split}set.json'} has no questions{kept}")
        targets_by_qid = {str(t["qid"]): t for t in _read(folder / f"{split}_target.json")}
        image_paths = _read(folder / "image_paths.json")
        targets = np.zeros((len(entries), len(answers)), dtype=np.float32)
        images: list[Path] = []
        for i, entry in enumerate(entries):
            name = entry["image_name"]
            if name not in image_paths:
                raise KeyError(
                    f"{split}set.json question {entry['qid']}: unknown image "
                    f"{name!r} (not in image_paths.json)"
                )
            path = Path(image_paths[name])
            path = path if path.is_absolute() else image_root / path
            if not path.is_file():
                raise FileNotFoundError(f"image {name!r} of question {entry['qid']}: {path}")
            images.append(path)
            target = targets_by_qid.get(str(entry["qid"]))
            if target is not None:
                for label, score in zip(target["labels"], target["scores"], strict=True):
                    if not 0 <= int(label) < len(answers):
                        raise ValueError(
                            f"question {entry['qid']}: answer label {label} "
                            f"outside the vocabulary of {len(answers)}"
                        )
                    targets[i, int(label)] = float(score)
        return cls(entries, targets, images, answers)


def answer_head(config: Any) -> nn.Sequential:
    """The answer classifier of every family's VQA model: hidden → 2·hidden → ReLU → dropout →
    ``config.num_labels`` answer logits (MedViLL's head; X-VL uses the same)."""
    hidden = config.hidden_size
    return nn.Sequential(
        nn.Linear(hidden, 2 * hidden),
        nn.ReLU(),
        nn.Dropout(config.hidden_dropout_prob),
        nn.Linear(2 * hidden, config.num_labels),
    )


class MedViLLForVQA(MedViLLPreTrainedModel):
    """Encoder + MLP on h[CLS] ⊙ h[visual SEP] with ``config.num_labels`` answers."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.medvill = MedViLLModel(config)
        self.vqa_head = answer_head(config)
        self.post_init()

    def forward(
        self,
        images: torch.Tensor,
        text_ids: torch.Tensor,
        text_valid: torch.Tensor,
        mask_type: str | None = None,
    ) -> torch.Tensor:
        hidden = self.medvill(images, text_ids, text_valid, None, mask_type).last_hidden_state
        k = self.config.num_visual_features
        return self.vqa_head(hidden[:, 0] * hidden[:, k + 1])


class QuestionDataset(Dataset):
    def __init__(self, files: VqaFiles, tokenizer: Any, spec: Any, image_size: int) -> None:
        self.files, self.tokenizer, self.spec, self.image_size = files, tokenizer, spec, image_size

    def __len__(self) -> int:
        return len(self.files.entries)

    def __getitem__(self, i: int) -> dict[str, Any]:
        question = clean_question(str(self.files.entries[i]["question"]))
        ids, valid = encode_text(self.tokenizer, question, self.spec)
        return {
            "index": i,
            "image": load_image_file(self.files.images[i], self.image_size),
            "text_ids": ids,
            "text_valid": valid,
            "target": self.files.targets[i],
        }


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "index": [x["index"] for x in items],
        "images": stack(items, "image"),
        "text_ids": stack(items, "text_ids"),
        "text_valid": stack(items, "text_valid"),
        "target": stack(items, "target"),
    }


def finetune(
    paths: TaskPaths, settings: VqaSettings, pretrained: Path | None = None
) -> dict[str, Any]:
    source = require_checkpoint(
        pretrained or paths.pretrained, f"run `medvill pretrain --dataset {paths.dataset}` first"
    )
    organs = organ_filter(settings.organs)
    files = VqaFiles.read(paths.vqa, "train", paths.root / settings.image_root, organs)
    tokenizer = load_tokenizer(source)
    model = load_model(MedViLLForVQA, source, num_labels=len(files.answers))
    spec = text_spec_for(tokenizer, model.config.max_text_tokens, settings.mask == "noncross")
    data = QuestionDataset(files, tokenizer, spec, model.config.image_size)

    def batches(epoch: int) -> Any:
        loader = make_loader(data, settings.batch_size, collate, True, settings.seed + epoch,
                             settings.num_workers, model_device(model))  # fmt: skip
        return (b for b in loader if len(b["index"]) == settings.batch_size)

    def loss_of(m: nn.Module, b: dict[str, Any]) -> torch.Tensor:
        logits = m(b["images"], b["text_ids"], b["text_valid"], settings.mask).float()
        # MEVF's instance BCE: mean over cells × answers = sum over answers, mean over batch
        return F.binary_cross_entropy_with_logits(logits, b["target"]) * logits.shape[1]

    history = train_loop(model, batches, len(data) // settings.batch_size, loss_of, settings, TASK)
    info = {
        "task": TASK,
        "mask": settings.mask,
        "image_root": settings.image_root,
        "answers": files.answers,
        "organs": sorted(organs),
        "pretrained": str(source),
    }
    save_finetuned(model, tokenizer, paths.finetuned(TASK), info, history, settings, paths)
    return info


def compute_fn(pred: dict[str, Any]) -> Any:
    """Accuracies of resamples of the questions, given as (R, n) question weights."""
    targets = np.asarray(pred["target_scores"], dtype=float)
    predicted = np.asarray(pred["predicted"], dtype=int)
    kinds = list(pred["answer_types"])
    chest = np.array([o.strip().upper() == "CHEST" for o in pred["organs"]], dtype=bool)

    def compute(weights: np.ndarray) -> dict[str, np.ndarray]:
        out = M.vqa_accuracy_resampled(targets, predicted, kinds, weights)
        if chest.any():
            sub = M.vqa_accuracy_resampled(targets, predicted, kinds, weights, keep=chest)
            out.update({f"chest_{k}": v for k, v in sub.items()})
        return out

    return compute


def evaluate(
    paths: TaskPaths,
    settings: EvalSettings,
    checkpoint: Path | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """VQA-RAD has a train/test split only: ``evaluate.split`` valid is read as test."""
    ckpt, info, out = open_finetuned(paths, TASK, checkpoint, out)
    organs = organ_filter(info.get("organs", []))
    files = VqaFiles.read(paths.vqa, "test", paths.root / info["image_root"], organs)
    if files.answers != info["answers"]:
        raise ValueError(
            "ans2label.json differs from the answer vocabulary the model was "
            "fine-tuned with: re-run `medvill finetune vqa`"
        )
    tokenizer = load_tokenizer(ckpt)
    model = load_model(MedViLLForVQA, ckpt)
    spec = text_spec_for(tokenizer, model.config.max_text_tokens, info["mask"] == "noncross")
    data = QuestionDataset(files, tokenizer, spec, model.config.image_size)
    return answer_and_score(
        paths, settings, ckpt, out, files, data, organs, model,
        lambda m, b: m(b["images"], b["text_ids"], b["text_valid"], info["mask"]),
    )  # fmt: skip


def answer_and_score(
    paths: TaskPaths,
    settings: EvalSettings,
    ckpt: Path,
    out: Path,
    files: VqaFiles,
    data: QuestionDataset,
    organs: set[str],
    model: nn.Module,
    forward: Callable[[nn.Module, dict[str, Any]], torch.Tensor],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Answer every test question with ``forward(model, batch)`` (answer logits), then write
    ``metrics.json`` (bootstrap intervals), ``predictions.json`` and the accuracy plot.

    Shared by every model family's VQA head, so their files are comparable line by line;
    ``extra`` adds fields (e.g. the model family) to both documents.
    """
    extra = extra or {}
    timer = InferenceTimer(model)
    predicted = np.zeros(len(data), dtype=int)
    model.eval()
    loader = make_loader(data, settings.batch_size, collate, False, 0, device=timer.device)
    with torch.no_grad():
        for batch in loader:
            moved = to_device(batch, timer.device)
            logits = timer.time(lambda b=moved: forward(model, b), len(batch["index"]))
            predicted[batch["index"]] = logits.argmax(-1).cpu().numpy()
    pred = {
        "task": TASK,
        **extra,
        "qids": [e["qid"] for e in files.entries],
        "predicted": predicted.tolist(),
        "target_scores": files.targets.tolist(),
        "answer_types": [str(e.get("answer_type", "")) for e in files.entries],
        "organs": [str(e.get("image_organ", "")) for e in files.entries],
        "predicted_answers": [files.answers[i] for i in predicted],
    }
    boot = M.bootstrap(
        compute_fn(pred),
        len(data),
        settings.bootstrap,
        settings.seed,
        settings.confidence,
        settings.bootstrap_ci_resamples,
    )
    doc = metrics_document(
        TASK,
        paths.dataset,
        ckpt,
        boot,
        settings,
        {"vqa": timer.ms_per_sample},
        {
            **extra,
            "questions": len(data),
            "answers": len(files.answers),
            "organs": ", ".join(sorted(organs)) or "ALL",
        },
        device=timer.device,
    )
    write_json(doc, out / "metrics.json")
    write_json(pred, out / "predictions.json")
    write_curve(
        out / PLOTS / "accuracy.json",
        "accuracy",
        [
            {"subset": name, "accuracy": value}
            for name, value in doc["metrics"].items()
            if value is not None and not np.isnan(value)
        ],
    )
    return doc
