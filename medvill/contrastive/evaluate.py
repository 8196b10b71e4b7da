"""Shared evaluation of the contrastive families (``medvill evaluate-zoo``), so they sit in one
table with MedViLL (``reports/summary.md``, "Model families").

* **Zero-shot image–report retrieval** on the pairs stage's 100-candidate blocks
  (``I2T_Label_<Split>.jsonl`` / ``T2I_…``, the files MedViLL's retrieval task scores): the
  score of a candidate is the cosine similarity of the projected image and report embeddings;
  MRR, Hit@5, Recall@5, Precision@5 with MedViLL's definitions and bootstrap
  (:mod:`medvill.tasks.retrieval`). The report is read whole (ConVIRT trains on one sentence,
  but a candidate is a report), its sentences split with the sections stage's rules.
* **Fine-tuned image–report retrieval**: the same blocks scored the same way by the model
  ``medvill finetune-zoo`` fine-tuned from the pretraining checkpoint
  (:mod:`medvill.contrastive.finetune`), when one is given.
* Beside MedViLL's MRR / Hit@5 / R@5 / P@5 both retrieval paths report Hit@1/10 and R@1/10
  (the same definitions at K = 1 and 10; R@K counts every candidate with the query's label
  set as relevant, as MedViLL's blocks do).
* **Linear probe** of the frozen image encoder (the pooled feature before the projection):
  one L2-regularised logistic regression per CheXpert label on the train split's images,
  scored on ``evaluate.split``; micro and macro AUROC with the classification task's
  definitions and bootstrap (uncertain and blank count as negative, as MedViLL's default).

Outputs under ``reports/<dataset>/zoo-<model>/``: ``metrics.json`` (the tasks' layout; metric
names ``zeroshot/i2r/mrr``, ``finetuned/r2i/recall@10``, ``probe/micro_auroc``, …) and
``predictions.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvill import metrics as M
from medvill.contrastive.data import ReportLayout, report_tokens
from medvill.contrastive.model import ContrastiveModel
from medvill.data import IMAGE_MEMBERS, SAMPLE_MEMBERS, decode_image, log_and_continue, read_index
from medvill.shardreader import MemberReader, sample_refs
from medvill.tasks import classification, retrieval
from medvill.tasks.common import (
    EvalSettings,
    InferenceTimer,
    TaskPaths,
    load_image_file,
    metrics_document,
    model_device,
    require_checkpoint,
    resolve_image_paths,
    task_device,
    write_json,
)
from medvill.tokenizer import load_tokenizer
from pipeline.records import CHEXPERT_LABELS
from pipeline.sentences import split_sentences
from pipeline.taskfiles.common import FILE_SPLIT
from pipeline.taskfiles.jsonl import read_task_file

log = logging.getLogger(__name__)
TASK = "zoo"


@dataclass(frozen=True)
class ProbeSettings:
    """The linear probe: inverse regularisation strength and solver iterations."""

    c: float = 1.0
    max_iter: int = 1000


def zoo_folder(family: str) -> str:
    return f"zoo-{family}"


class Encoder:
    """Projected, L2-normalised embeddings of image files and report texts, each computed once
    (a candidate block repeats images and texts)."""

    def __init__(self, model: ContrastiveModel, tokenizer: Any, batch_size: int) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        #: inputs go to the model's device (a GPU when evaluate() found one); embeddings come
        #: back to the CPU, where the candidate blocks are scored
        self.device = model_device(model)
        config = model.config
        self.layout = ReportLayout(
            max_tokens=config.max_text_tokens, max_sentences=config.max_sentences,
            pad_id=tokenizer.pad_token_id, cls_id=tokenizer.cls_token_id,
            sep_id=tokenizer.sep_token_id, random_sentence=False,
        )  # fmt: skip

    @torch.no_grad()
    def images(self, paths: list[Path]) -> dict[Path, torch.Tensor]:
        unique = list(dict.fromkeys(paths))
        size = self.model.config.image_size
        out: dict[Path, torch.Tensor] = {}
        for start in range(0, len(unique), self.batch_size):
            chunk = unique[start : start + self.batch_size]
            batch = torch.stack([load_image_file(p, size) for p in chunk]).to(self.device)
            rows = self.model.get_image_features(batch).float().cpu()
            for path, row in zip(chunk, rows, strict=True):
                out[path] = row
        return out

    @torch.no_grad()
    def texts(self, texts: list[str]) -> dict[str, torch.Tensor]:
        unique = list(dict.fromkeys(texts))
        out: dict[str, torch.Tensor] = {}
        for start in range(0, len(unique), self.batch_size):
            chunk = unique[start : start + self.batch_size]
            encoded = [self._tokens(text) for text in chunk]
            ids, valid, index = (
                torch.from_numpy(np.stack(part)).to(self.device)
                for part in zip(*encoded, strict=True)
            )
            rows = self.model.get_text_features(ids, valid, index).float().cpu()
            for text, row in zip(chunk, rows, strict=True):
                out[text] = row
        return out

    def _tokens(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sentences = split_sentences(text) or [text]
        pieces = self.tokenizer(sentences, add_special_tokens=False)["input_ids"]
        return report_tokens([p for p in pieces if p] or [[self.tokenizer.unk_token_id]],
                             self.layout)  # fmt: skip


#: The K of Hit@K and R@K (MedViLL's tables use 5; 1 and 10 as the retrieval literature).
RECALL_KS: tuple[int, ...] = (1, 5, 10)


def block_metrics_fn(pred: dict[str, Any]) -> Any:
    """MedViLL's MRR, Hit@K, R@K (K in :data:`RECALL_KS`) and P@5 of one direction's blocks,
    per resample of the queries given as (R, n) weights."""
    results = {
        k: [M.score_query(np.asarray(s), np.asarray(r, dtype=bool), k)
            for s, r in zip(pred["scores"], pred["relevant"], strict=True)]
        for k in RECALL_KS
    }  # fmt: skip

    def compute(weights: np.ndarray) -> dict[str, np.ndarray]:
        out = M.retrieval_metrics_resampled(results[5], weights, 5)
        for k in RECALL_KS:
            at_k = M.retrieval_metrics_resampled(results[k], weights, k)
            out[f"hit@{k}"], out[f"recall@{k}"] = at_k[f"hit@{k}"], at_k[f"recall@{k}"]
        return out

    return compute


def zero_shot_retrieval(
    encoder: Encoder, paths: TaskPaths, settings: EvalSettings, kind: str = "zeroshot"
) -> tuple[dict[str, dict[str, float]], dict[str, Any], dict[str, float]]:
    """Both directions' blocks scored by cosine similarity; (bootstrap, predictions, ms).
    Metric names start with ``kind`` (``zeroshot``, or ``finetuned`` for a fine-tuned
    encoder: the scoring is the same)."""
    boot: dict[str, dict[str, float]] = {}
    predictions: dict[str, Any] = {}
    timing: dict[str, float] = {}
    for direction, prefix in retrieval.DIRECTIONS.items():
        path = paths.pairs / f"{prefix}_Label_{FILE_SPLIT[settings.split]}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: run `medvill-prep pairs` first")
        rows = read_task_file(path)
        if not rows:
            raise ValueError(f"{path} has no candidate lines")
        images = resolve_image_paths(rows, paths.root, path)
        timer = InferenceTimer(encoder.model)
        image_vectors, text_vectors = timer.time(
            lambda images=images, rows=rows: (
                encoder.images(images),
                encoder.texts([r["text"] for r in rows]),
            ),
            len(rows),
        )
        scores = np.array([
            float(image_vectors[p] @ text_vectors[r["text"]])
            for p, r in zip(images, rows, strict=True)
        ])  # fmt: skip
        blocks = retrieval.query_blocks(rows, direction)
        pred = retrieval.block_predictions(rows, direction, scores, blocks)
        predictions[direction] = pred
        stats = M.bootstrap(block_metrics_fn(pred), len(blocks), settings.bootstrap,
                            settings.seed, settings.confidence,
                            settings.bootstrap_ci_resamples)  # fmt: skip
        boot.update({f"{kind}/{direction}/{name}": v for name, v in stats.items()})
        timing[f"{kind}_{direction}"] = timer.ms_per_sample
    return boot, predictions, timing


def load_family_model(
    checkpoint: Path, family: str, device: torch.device | None = None
) -> ContrastiveModel:
    """The checkpoint's dual encoder in eval mode on ``device`` (default: the CPU); refused
    when it is another family's."""
    model = ContrastiveModel.from_pretrained(str(checkpoint)).eval()
    if device is not None:
        model = model.to(device)
    if model.config.objective != family:
        raise ValueError(f"{checkpoint} holds a {model.config.objective} model, not {family}")
    return model


@torch.no_grad()
def image_features(
    model: ContrastiveModel, index: Path, split: str, batch_size: int
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(keys, pooled image features, targets, valid) of one split's shard samples, in shard
    order (no augmentation)."""
    shards = read_index(index, split)
    keys: list[str] = []
    features: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    valid: list[np.ndarray] = []
    pending: list[torch.Tensor] = []
    device = model_device(model)

    def flush() -> None:
        if pending:
            pooled = model.encode_image(torch.stack(pending).to(device))["pooled"]
            features.extend(pooled.float().cpu().numpy())
            pending.clear()

    with MemberReader(SAMPLE_MEMBERS) as reader:
        for ref in sample_refs(list(shards.files), log_and_continue, shards.contents()):
            sample = reader.read(ref)
            member = next((m for m in IMAGE_MEMBERS if m in sample), None)
            if member is None or "json" not in sample:
                raise ValueError(f"shard sample {sample['__key__']} lacks an image or json")
            target, ok = classification.label_targets(
                json.loads(sample["json"])["labels"], "negative", "negative"
            )
            keys.append(sample["__key__"])
            targets.append(target)
            valid.append(ok)
            pending.append(decode_image(sample[member], model.config.image_size, None))
            if len(pending) == batch_size:
                flush()
    flush()
    width = model.config.visual_feature_dim
    return (keys, np.asarray(features, dtype=np.float64).reshape(-1, width),
            np.asarray(targets), np.asarray(valid))  # fmt: skip


def linear_probe(
    model: ContrastiveModel, paths: TaskPaths, settings: EvalSettings, probe: ProbeSettings
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Fit on train, score ``settings.split``. A label with one class in the training split
    cannot be fitted: its scores are the training prevalence (AUROC 0.5 if it occurs)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    _, train_x, train_y, _ = image_features(model, paths.index, "train", settings.batch_size)
    keys, test_x, test_y, test_valid = image_features(
        model, paths.index, settings.split, settings.batch_size
    )
    if not keys or len(train_x) == 0:
        raise ValueError(f"{paths.index}: the train or {settings.split} split has no samples")
    scaler = StandardScaler().fit(train_x)
    train_x, test_x = scaler.transform(train_x), scaler.transform(test_x)
    scores = np.zeros(test_y.shape, dtype=np.float64)
    fitted: list[str] = []
    for j, label in enumerate(CHEXPERT_LABELS):
        column = train_y[:, j]
        if column.min() == column.max():
            scores[:, j] = column.mean()
            continue
        regression = LogisticRegression(C=probe.c, max_iter=probe.max_iter)
        scores[:, j] = regression.fit(train_x, column).predict_proba(test_x)[:, 1]
        fitted.append(label)
    pred = {"keys": keys, "scores": scores, "targets": test_y.astype(np.float64),
            "valid": test_valid, "threshold": 0.5}  # fmt: skip
    stats = M.bootstrap(classification.compute_fn(pred), len(keys), settings.bootstrap,
                        settings.seed, settings.confidence,
                        settings.bootstrap_ci_resamples)  # fmt: skip
    boot = {f"probe/{k}": v for k, v in stats.items() if k in ("micro_auroc", "macro_auroc")}
    detail = {"keys": keys, "scores": scores.tolist(), "targets": test_y.tolist(),
              "valid": test_valid.tolist(), "fitted_labels": fitted,
              "train_samples": len(train_x)}  # fmt: skip
    return boot, detail


def evaluate(
    family: str,
    paths: TaskPaths,
    settings: EvalSettings,
    checkpoint: Path | None = None,
    out: Path | None = None,
    probe: ProbeSettings | None = None,
    finetuned: Path | None = None,
) -> dict[str, Any]:
    """Zero-shot retrieval and the linear probe of one family's pretraining checkpoint, and
    the fine-tuned retrieval of ``finetuned`` (a ``medvill finetune-zoo`` model) if given."""
    from medvill.pretrain import pretrain_folder

    default = paths.root / "models" / paths.dataset / pretrain_folder(family) / "final"
    ckpt = require_checkpoint(
        checkpoint or default,
        f"run `medvill pretrain --model {family} --dataset {paths.dataset}` first",
    )
    device = task_device()
    model = load_family_model(ckpt, family, device)
    out = Path(out or paths.root / "reports" / paths.dataset / zoo_folder(family))
    encoder = Encoder(model, load_tokenizer(ckpt), settings.batch_size)
    boot, predictions, timing = zero_shot_retrieval(encoder, paths, settings)
    probe_boot, probe_pred = linear_probe(model, paths, settings, probe or ProbeSettings())
    boot.update(probe_boot)
    predictions = {"task": TASK, "model": family, **predictions, "probe": probe_pred}
    extra: dict[str, Any] = {"finetuned_checkpoint": None}
    if finetuned is not None:
        tuned_ckpt = require_checkpoint(
            finetuned, f"run `medvill finetune-zoo --model {family} --dataset {paths.dataset}`"
        )
        tuned = load_family_model(tuned_ckpt, family, device)
        tuned_encoder = Encoder(tuned, load_tokenizer(tuned_ckpt), settings.batch_size)
        tuned_boot, tuned_pred, tuned_timing = zero_shot_retrieval(
            tuned_encoder, paths, settings, kind="finetuned"
        )
        boot.update(tuned_boot)
        timing.update(tuned_timing)
        predictions["finetuned"] = tuned_pred
        extra["finetuned_checkpoint"] = str(tuned_ckpt)
    doc = metrics_document(
        TASK, paths.dataset, ckpt, boot, settings, timing,
        {"model": family, "queries": {d: len(predictions[d]["queries"])
                                      for d in retrieval.DIRECTIONS},
         "probe_train_samples": probe_pred["train_samples"], **extra},
    )  # fmt: skip
    write_json(doc, out / "metrics.json")
    write_json(predictions, out / "predictions.json")
    return doc
