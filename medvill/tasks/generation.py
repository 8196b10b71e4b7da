"""Radiology report generation (paper §IV-C.4, table V).

Fine-tuning is MLM under a fixed S2S mask (docs/model.md §8): up to 3 tokens per report (15 %, at
most 3) become [MASK]; the final [SEP] is one of them with probability 0.5, so the model learns
to stop. The model is :class:`MedViLLForPretraining` itself (its MLM head is the generator).

Decoding appends [MASK], predicts it, replaces it with the *prediction* (the release fed the
ground-truth token back, a bug docs/model.md §8 says not to copy) and repeats until [SEP] or
``max_length`` tokens; greedy by default, beam search with ``beam_width`` > 1.

Perplexity is exact for this decoding in one forward pass: the reference tokens y_0..y_{T−2}
form a causal block R and T [MASK] slots M_t sit beside it with M_t seeing the image, R_{<t}
and itself at text position t — exactly the context M_t has when decoding after y_{<t}.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from medvill import metrics as M
from medvill.data import TextSpec, text_spec_for
from medvill.model.embeddings import joint_inputs
from medvill.model.encoder import encode, format_mask, resolve_attention_backend
from medvill.model.heads import IGNORE_INDEX
from medvill.model.medvill import MedViLLForPretraining
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
    pyplot,
    require_checkpoint,
    resolve_image_paths,
    save_finetuned,
    savefig,
    stack,
    train_loop,
    write_curve,
    write_json,
)
from medvill.tokenizer import load_tokenizer
from pipeline.records import CHEXPERT_LABELS
from pipeline.taskfiles.common import FILE_SPLIT
from pipeline.taskfiles.jsonl import read_task_file

log = logging.getLogger(__name__)
TASK = "generation"

#: (B, L) text ids whose last slot is [MASK] → (B, V) logits of that slot.
StepFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class GenerationSettings(FinetuneSettings):
    mask: str = "s2s"
    image_root: str = "."
    mask_probability: float = 0.15
    max_masked: int = 3
    sep_probability: float = 0.5
    max_length: int = 128  # generated tokens (docs/model.md §8: 128)
    beam_width: int = 1


def generation_masking(
    ids: np.ndarray,
    valid: np.ndarray,
    spec: TextSpec,
    rng: np.random.Generator,
    settings: GenerationSettings,
) -> tuple[np.ndarray, np.ndarray]:
    """Mask min(max_masked, max(1, round(p·n))) slots of a report (docs/model.md §8); the final
    [SEP] is among them with ``sep_probability``. All chosen slots become [MASK]."""
    sep_slot = int(np.flatnonzero(valid)[-1])
    tokens = np.flatnonzero(valid)[:-1]
    if spec.text_cls:
        tokens = tokens[1:]
    count = min(settings.max_masked, max(1, round(settings.mask_probability * tokens.size)))
    chosen: list[int] = []
    if rng.random() < settings.sep_probability or tokens.size == 0:
        chosen.append(sep_slot)
        count -= 1
    if count > 0 and tokens.size:
        chosen += rng.choice(tokens, size=min(count, tokens.size), replace=False).tolist()
    inputs, labels = ids.copy(), np.full_like(ids, IGNORE_INDEX)
    labels[chosen] = ids[chosen]
    inputs[chosen] = spec.mask_id
    return inputs, labels


class ReportDataset(Dataset):
    """Task-JSONL records (image path, report) → S2S training examples or decoding inputs."""

    def __init__(
        self,
        images: list[Path],
        texts: list[str],
        tokenizer: Any,
        spec: TextSpec,
        image_size: int,
        settings: GenerationSettings,
        epoch: int = 0,
        train: bool = True,
    ) -> None:
        self.images, self.texts, self.tokenizer, self.spec = images, texts, tokenizer, spec
        self.image_size, self.settings, self.epoch, self.train = image_size, settings, epoch, train

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ids, valid = encode_text(self.tokenizer, self.texts[i], self.spec)
        item = {
            "index": i,
            "image": load_image_file(self.images[i], self.image_size),
            "text_ids": ids,
            "text_valid": valid,
        }
        if self.train:
            rng = np.random.default_rng([self.settings.seed, self.epoch, i])
            item["text_ids"], item["labels"] = generation_masking(
                ids, valid, self.spec, rng, self.settings
            )
        return item


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    out = {
        "index": [x["index"] for x in items],
        "images": stack(items, "image"),
        "text_ids": stack(items, "text_ids"),
        "text_valid": stack(items, "text_valid"),
    }
    if "labels" in items[0]:
        out["labels"] = stack(items, "labels")
    return out


# --------------------------------------------------------------------------- decoding


def greedy_decode(
    step: StepFn, batch: int, mask_id: int, sep_id: int, max_length: int
) -> list[list[int]]:
    """Greedy: start from one [MASK]; each step writes the arg-max into the [MASK] slot and
    appends a new [MASK]. A sequence ends at [SEP] (not included) or after ``max_length``
    tokens; the loop stops once every sequence has ended."""
    if max_length < 1:
        raise ValueError("max_length must be >= 1")
    text = torch.full((batch, 1), mask_id, dtype=torch.long)
    done = torch.zeros(batch, dtype=torch.bool)
    out: list[list[int]] = [[] for _ in range(batch)]
    for _ in range(max_length):
        predicted = step(text).argmax(-1).cpu()  # one device→host copy per decoding step
        for b in range(batch):
            if not done[b]:
                if int(predicted[b]) == sep_id:
                    done[b] = True
                else:
                    out[b].append(int(predicted[b]))
        if bool(done.all()):
            break
        text[:, -1] = predicted
        text = torch.cat([text, torch.full((batch, 1), mask_id, dtype=torch.long)], dim=1)
    return out


def beam_decode(
    step: StepFn, mask_id: int, sep_id: int, max_length: int, beam_width: int
) -> list[int]:
    """Beam search for one image (``step`` takes the beams as a batch). Scores are summed
    log-probabilities divided by length (so short hypotheses are not favoured by default);
    a beam ends at [SEP]; unfinished beams compete at ``max_length``."""
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    finished: list[tuple[list[int], float]] = []
    for _ in range(max_length):
        text = torch.tensor([[*seq, mask_id] for seq, _ in beams], dtype=torch.long)
        logp = F.log_softmax(step(text).float(), dim=-1).cpu()
        candidates: list[tuple[list[int], float]] = []
        for (seq, score), row in zip(beams, logp, strict=True):
            values, tokens = row.topk(beam_width)
            candidates += [
                ([*seq, int(t)], score + float(v)) for v, t in zip(values, tokens, strict=True)
            ]
        candidates.sort(key=lambda c: c[1], reverse=True)
        beams = []
        for seq, score in candidates:
            if seq[-1] == sep_id:
                finished.append((seq[:-1], score / len(seq)))
            elif len(beams) < beam_width:
                beams.append((seq, score))
            if len(beams) == beam_width:
                break
        if not beams or (
            len(finished) >= beam_width
            and max(f[1] for f in finished) >= max(s / len(q) for q, s in beams)
        ):
            break
    finished += [(seq, score / max(len(seq), 1)) for seq, score in beams]
    return max(finished, key=lambda f: f[1])[0]


class Decoder:
    """Runs the CNN once per image and the transformer once per decoding step (S2S mask).

    Inference only: no autograd graph is kept, so long beam searches stay flat in memory.
    """

    @torch.no_grad()
    def __init__(self, model: MedViLLForPretraining, images: torch.Tensor) -> None:
        self.model = model
        enc = model.medvill
        features = enc.visual_backbone(images)
        self.cells = torch.arange(features.shape[1], device=features.device)
        self.visual = enc.visual_proj(features, self.cells)

    @torch.no_grad()
    def step(self, text_ids: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the last text slot; ``rows`` picks images for a batch of beams. The
        decoding loops build ``text_ids`` on the host: they move to the model's device here."""
        enc, config = self.model.medvill, self.model.config
        text_ids = text_ids.to(self.cells.device, non_blocking=True)
        visual = self.visual if rows is None else self.visual[rows.to(self.cells.device)]
        embeds, positions, types = joint_inputs(
            config, enc.bert.embeddings.word_embeddings, visual, self.cells, text_ids
        )
        valid = torch.ones_like(text_ids, dtype=torch.bool)
        k = self.cells.shape[0]
        hidden = encode(enc.bert, embeds, positions, types, "s2s", k, valid, enc.attention_backend)
        return self.model.cls.predictions(hidden[:, -1])


@torch.no_grad()
def generate(
    model: MedViLLForPretraining, images: torch.Tensor, max_length: int, beam_width: int = 1
) -> list[list[int]]:
    """Token ids of the generated report of each image (without [SEP])."""
    model.eval()
    config = model.config
    decoder = Decoder(model, images)
    if beam_width <= 1:
        return greedy_decode(
            decoder.step, images.shape[0], config.mask_token_id, config.sep_token_id, max_length
        )
    out = []
    for b in range(images.shape[0]):

        def step(text: torch.Tensor, b: int = b) -> torch.Tensor:
            return decoder.step(text, torch.full((text.shape[0],), b, dtype=torch.long))

        out.append(
            beam_decode(step, config.mask_token_id, config.sep_token_id, max_length, beam_width)
        )
    return out


@torch.no_grad()
def reference_nll(
    model: MedViLLForPretraining, images: torch.Tensor, targets: list[list[int]]
) -> list[np.ndarray]:
    """Per-token NLL (nats) of each reference (its tokens then [SEP]) under S2S decoding, in one
    forward pass (module docstring); ``targets`` exclude the final [SEP]."""
    model.eval()
    config, enc = model.config, model.medvill
    device = images.device
    seqs = [[*t, config.sep_token_id] for t in targets]
    lengths = torch.tensor([len(s) for s in seqs])
    t_max = int(lengths.max())
    batch = len(seqs)
    real = torch.full((batch, max(t_max - 1, 0)), config.pad_token_id, dtype=torch.long)
    for b, s in enumerate(seqs):
        real[b, : len(s) - 1] = torch.tensor(s[:-1], dtype=torch.long)
    masks = torch.full((batch, t_max), config.mask_token_id, dtype=torch.long)
    text_ids = torch.cat([real, masks], dim=1).to(device)
    features = enc.visual_backbone(images)
    cells = torch.arange(features.shape[1], device=device)
    visual = enc.visual_proj(features, cells)
    embeds, positions, types = joint_inputs(
        config, enc.bert.embeddings.word_embeddings, visual, cells, text_ids
    )
    k = cells.shape[0]
    n_real = real.shape[1]
    text_pos = torch.cat([torch.arange(n_real), torch.arange(t_max)]).to(device)
    positions = positions.clone()
    positions[:, k + 2 :] = text_pos
    image_len = k + 2
    seq = image_len + n_real + t_max
    allowed = torch.zeros(batch, seq, seq, dtype=torch.bool)
    allowed[:, :, :image_len] = True  # every row sees the image block; image rows nothing else
    idx = torch.arange(t_max)
    for b in range(batch):
        n = int(lengths[b])
        r = image_len + torch.arange(n - 1)
        # R_i sees R_j for j <= i
        allowed[b, r[:, None], r[None, :]] = idx[: n - 1, None] >= idx[None, : n - 1]
        m = image_len + n_real + torch.arange(n)
        # M_t sees R_j for j < t, and itself
        allowed[b, m[:, None], r[None, :]] = idx[:n, None] > idx[None, : n - 1]
        allowed[b, m, m] = True
    backend = resolve_attention_backend(enc.attention_backend, enc.bert)
    mask = format_mask(allowed.to(device), backend, embeds.dtype)
    hidden = enc.bert(
        inputs_embeds=embeds, attention_mask=mask, position_ids=positions, token_type_ids=types
    ).last_hidden_state
    logits = model.cls.predictions(hidden[:, image_len + n_real :]).float()
    logp = F.log_softmax(logits, dim=-1)
    out = []
    for b, s in enumerate(seqs):
        target = torch.tensor(s, device=device)
        out.append((-logp[b, : len(s)].gather(1, target[:, None])[:, 0]).cpu().numpy())
    return out


# --------------------------------------------------------------------------- train / evaluate


def _records(paths: TaskPaths, split: str, image_root: str) -> tuple[list[dict], list[Path]]:
    path = paths.pairs / f"{FILE_SPLIT[split]}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: run `medvill-prep pairs` first")
    rows = read_task_file(path)
    if not rows:
        raise ValueError(f"{path} has no records")
    return rows, resolve_image_paths(rows, paths.root / image_root, path)


def finetune(
    paths: TaskPaths, settings: GenerationSettings, pretrained: Path | None = None
) -> dict[str, Any]:
    """S2S MLM fine-tuning on Train.jsonl reports."""
    source = require_checkpoint(
        pretrained or paths.pretrained, f"run `medvill pretrain --dataset {paths.dataset}` first"
    )
    tokenizer = load_tokenizer(source)
    model = load_model(MedViLLForPretraining, source)
    spec = text_spec_for(tokenizer, model.config.max_text_tokens, False)
    rows, images = _records(paths, "train", settings.image_root)
    texts = [r["text"] for r in rows]

    def batches(epoch: int) -> Any:
        data = ReportDataset(
            images, texts, tokenizer, spec, model.config.image_size, settings, epoch
        )
        loader = make_loader(data, settings.batch_size, collate, True, settings.seed + epoch,
                             settings.num_workers, model_device(model))  # fmt: skip
        return (b for b in loader if len(b["index"]) == settings.batch_size)

    def loss_of(m: Any, b: dict[str, Any]) -> torch.Tensor:
        out = m(
            images=b["images"],
            text_ids=b["text_ids"],
            text_valid=b["text_valid"],
            mask_type="s2s",
            mlm_labels=b["labels"],
        )
        return out.mlm_loss

    history = train_loop(model, batches, len(rows) // settings.batch_size, loss_of, settings, TASK)
    info = {
        "task": TASK,
        "mask": "s2s",
        "image_root": settings.image_root,
        "max_length": settings.max_length,
        "beam_width": settings.beam_width,
        "pretrained": str(source),
    }
    save_finetuned(model, tokenizer, paths.finetuned(TASK), info, history, settings, paths)
    return info


def compute_fn(pred: dict[str, Any]) -> Any:
    """Perplexity, BLEU-1..4 and clinical efficacy (paper's and the release's) of resamples of
    the reports, given as (R, n) report weights. Per-report sums are computed once here."""
    hyp_labels = np.array(pred["hyp_labels"], dtype=float)
    ref_labels = np.array(pred["ref_labels"], dtype=float)
    per_report_ppl = M.report_perplexities([np.asarray(x, dtype=float) for x in pred["nll"]])
    if np.isnan(per_report_ppl).all():
        raise ValueError("no report with tokens to compute perplexity on")
    bleu = M.bleu_statistics(pred["hypotheses"], pred["references"])

    def compute(weights: np.ndarray) -> dict[str, np.ndarray]:
        out = {"perplexity": M.perplexity_resampled(per_report_ppl, weights)}
        out.update(M.bleu_resampled(bleu, weights))
        out.update(M.clinical_efficacy_resampled(hyp_labels, ref_labels, weights))
        return out

    return compute


def evaluate(
    paths: TaskPaths,
    settings: EvalSettings,
    checkpoint: Path | None = None,
    out: Path | None = None,
    max_length: int | None = None,
    beam_width: int | None = None,
) -> dict[str, Any]:
    """Generate for every report of the split and score it."""
    from pipeline.labeler import label_reports

    ckpt, info, out = open_finetuned(paths, TASK, checkpoint, out)
    max_length = max_length or int(info["max_length"])
    beam_width = beam_width or int(info["beam_width"])
    tokenizer = load_tokenizer(ckpt)
    model = load_model(MedViLLForPretraining, ckpt)
    spec = text_spec_for(tokenizer, model.config.max_text_tokens, False)
    rows, images = _records(paths, settings.split, info["image_root"])
    data = ReportDataset(
        images,
        [r["text"] for r in rows],
        tokenizer,
        spec,
        model.config.image_size,
        GenerationSettings(),
        train=False,
    )
    timer = InferenceTimer(model)
    hyps: list[str] = [""] * len(rows)
    refs: list[str] = [""] * len(rows)
    nll: list[list[float]] = [[] for _ in rows]
    loader = make_loader(data, settings.batch_size, collate, False, 0, device=timer.device)
    for batch in loader:
        images = batch["images"].to(timer.device, non_blocking=True)
        ids = timer.time(
            lambda x=images: generate(model, x, max_length, beam_width), len(batch["index"])
        )
        targets = [
            [int(t) for t, v in zip(row, valid, strict=True) if v and int(t) != spec.sep_id]
            for row, valid in zip(batch["text_ids"], batch["text_valid"], strict=True)
        ]
        with timer.precision.autocast():
            losses = reference_nll(model, images, targets)
        for j, i in enumerate(batch["index"]):
            hyps[i] = tokenizer.decode(ids[j], skip_special_tokens=True)
            refs[i] = tokenizer.decode(targets[j], skip_special_tokens=True)
            nll[i] = losses[j].tolist()
    hyp_labels = label_reports(hyps).to_numpy(dtype=float)
    ref_labels = label_reports([r["text"] for r in rows]).to_numpy(dtype=float)
    pred = {
        "task": TASK,
        "ids": [r["id"] for r in rows],
        "hypotheses": hyps,
        "references": refs,
        "nll": nll,
        "hyp_labels": hyp_labels.tolist(),
        "ref_labels": ref_labels.tolist(),
    }
    boot = M.bootstrap(
        compute_fn(pred),
        len(rows),
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
        {"generation": timer.ms_per_sample},
        {
            "reports": len(rows),
            "max_length": max_length,
            "beam_width": beam_width,
            "bleu": "nltk corpus_bleu",
            "mean_generated_tokens": float(np.mean([len(h.split()) for h in hyps])),
        },
        device=timer.device,
    )
    write_json(doc, out / "metrics.json")
    write_json(pred, out / "predictions.json")
    write_label_agreement(hyp_labels, ref_labels, out / PLOTS / "label_agreement.json")
    plot_label_agreement(hyp_labels, ref_labels, out / PLOTS / "label_agreement.png")
    return doc


def write_label_agreement(hyp: np.ndarray, ref: np.ndarray, path: Path) -> None:
    """Share of reports positive for each CheXpert label, generated vs reference (DVC plot)."""
    write_curve(
        path,
        "labels",
        [
            {"label": name, "reference": float(r), "generated": float(h)}
            for name, r, h in zip(
                CHEXPERT_LABELS, (ref == 1).mean(axis=0), (hyp == 1).mean(axis=0), strict=True
            )
        ],
    )


def plot_label_agreement(hyp: np.ndarray, ref: np.ndarray, path: Path) -> None:
    """Positive rate of each CheXpert label in generated vs reference reports."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = np.arange(len(CHEXPERT_LABELS))
    ax.bar(x - 0.2, (ref == 1).mean(axis=0), width=0.4, label="reference")
    ax.bar(x + 0.2, (hyp == 1).mean(axis=0), width=0.4, label="generated")
    ax.set_xticks(x, CHEXPERT_LABELS, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("share positive")
    ax.set_title("Clinical efficacy: CheXpert positives")
    ax.legend()
    fig.tight_layout()
    savefig(fig, path)
    plt.close(fig)
