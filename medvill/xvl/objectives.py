"""The X-VL objectives as plain functions of tensors, so each can be tested on tiny inputs.

* :func:`momentum_update` — the momentum encoders follow the online ones by an exponential
  moving average (they give the contrastive queue stable features and the distillation targets);
* :class:`FeatureQueue` helpers — :func:`enqueue` writes a batch of momentum features into the
  ring buffer, wrapping at the end;
* :func:`contrastive_loss` — image–text contrast against the batch and the queue, with targets
  mixed from the ground truth and the momentum model's similarities (momentum distillation);
* :func:`negative_weights` / :func:`mine_hard_negatives` — for matching, one negative per
  example drawn with probability growing with its contrastive similarity, never a pair that is
  really a positive (same report) and never a report that says the same thing (sentence
  overlap at or above a threshold: "the sentence-similarity-adjusted hard negative mining");
* :func:`distilled_mlm_loss` — masked-word cross-entropy mixed with the momentum model's soft
  predictions;
* :func:`rank_confidence` — co-learning's confidence that a pair matches, from the teacher's
  in-batch similarities.
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


@torch.no_grad()
def momentum_update(pairs: list[tuple[torch.nn.Module, torch.nn.Module]], momentum: float) -> None:
    """θ_m ← m·θ_m + (1 − m)·θ for each (online, momentum) module pair."""
    for online, shadow in pairs:
        for p, p_m in zip(online.parameters(), shadow.parameters(), strict=True):
            p_m.mul_(momentum).add_(p.detach(), alpha=1.0 - momentum)


@torch.no_grad()
def copy_to_momentum(pairs: list[tuple[torch.nn.Module, torch.nn.Module]]) -> None:
    """Start each momentum module as an exact copy of its online module, frozen."""
    for online, shadow in pairs:
        for p, p_m in zip(online.parameters(), shadow.parameters(), strict=True):
            p_m.copy_(p.detach())
            p_m.requires_grad_(False)


@torch.no_grad()
def enqueue(queue: torch.Tensor, pointer: torch.Tensor, features: torch.Tensor) -> None:
    """Write ``features`` (B, D) into the ring buffer ``queue`` (D, K) at ``pointer`` (a 1-element
    long tensor), wrapping past the end, and advance the pointer (mod K). A batch larger than the
    queue keeps its last K rows."""
    size = queue.shape[1]
    features = features.detach().to(queue.dtype)
    if features.shape[0] > size:
        features = features[-size:]
    start = int(pointer.item())
    positions = (start + torch.arange(features.shape[0], device=queue.device)) % size
    queue[:, positions] = features.t()
    pointer.fill_((start + features.shape[0]) % size)


def contrastive_loss(
    image_feat: torch.Tensor,
    text_feat: torch.Tensor,
    image_feat_all: torch.Tensor,
    text_feat_all: torch.Tensor,
    positives: torch.Tensor,
    temperature: torch.Tensor | float,
    image_feat_m: torch.Tensor | None = None,
    text_feat_m: torch.Tensor | None = None,
    alpha: float = 0.0,
    pseudo: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image–text contrastive loss of a batch against batch + queue.

    ``image_feat``/``text_feat`` (B, D) are the online features (L2-normalised);
    ``*_all`` (D, B + K) the momentum features of the batch followed by the queue;
    ``positives`` (B, B + K) a 0/1 matrix of the true pairs (one report can be the positive of
    several entries: duplicates in the queue are not pushed apart). With ``alpha`` > 0 the
    targets are ``alpha`` · softmax(momentum similarities) + (1 − ``alpha``) · ground truth.
    ``pseudo`` (B,) bool (co-learning): rows of pairs the momentum model does not believe
    matched; their targets are the momentum model's softmax alone (a pseudo-target), not the
    pairing they came with. Returns (loss, image→text similarities, text→image similarities)
    of the online features.
    """
    sim_i2t = image_feat @ text_feat_all / temperature
    sim_t2i = text_feat @ image_feat_all / temperature
    targets = positives / positives.sum(1, keepdim=True)
    targets_i2t = targets_t2i = targets
    relabel = pseudo is not None and bool(pseudo.any())
    if (alpha > 0 or relabel) and image_feat_m is not None and text_feat_m is not None:
        with torch.no_grad():
            soft_i2t = (image_feat_m @ text_feat_all / temperature).softmax(1)
            soft_t2i = (text_feat_m @ image_feat_all / temperature).softmax(1)
        if alpha > 0:
            targets_i2t = alpha * soft_i2t + (1 - alpha) * targets
            targets_t2i = alpha * soft_t2i + (1 - alpha) * targets
        if relabel:
            rows = pseudo[:, None]
            targets_i2t = torch.where(rows, soft_i2t, targets_i2t)
            targets_t2i = torch.where(rows, soft_t2i, targets_t2i)
    loss_i2t = -(F.log_softmax(sim_i2t, 1) * targets_i2t).sum(1).mean()
    loss_t2i = -(F.log_softmax(sim_t2i, 1) * targets_t2i).sum(1).mean()
    return (loss_i2t + loss_t2i) / 2, sim_i2t, sim_t2i


@torch.no_grad()
def rank_confidence(similarity: torch.Tensor, same_report: torch.Tensor) -> torch.Tensor:
    """Co-learning's confidence that each pair of a batch matches, from the teacher's in-batch
    image–report similarities (B, B; row i = image i): the share of the *other* reports that
    image i finds less similar than its own, averaged with the same share for report i over
    the other images. A random pairing scores ½ on average, an aligned pair near 1, a
    mismatched one near 0 — whatever the calibration of the similarities (the matching
    head's probability is not calibrated: it trains on one positive per two negatives).
    Entries with the same report (``same_report``, B × B bool) are not "other"; a pair
    without any other entry scores 1."""
    own = similarity.diagonal()
    other = ~same_report
    beats_i2t = ((own[:, None] > similarity) & other).sum(1)
    beats_t2i = ((own[:, None] > similarity.t()) & other).sum(1)
    count = other.sum(1)
    share = (beats_i2t + beats_t2i).float() / (2 * count).clamp(min=1).float()
    return torch.where(count > 0, share, torch.ones_like(share))


def negative_weights(
    similarity: torch.Tensor,
    same_report: torch.Tensor,
    report_overlap: torch.Tensor,
    threshold: float,
) -> torch.Tensor:
    """Sampling weights (B, B) for hard negatives: softmax of the in-batch similarities, zero on
    the positive, on any entry with the same report and on reports whose sentence overlap with
    the positive's report is ≥ ``threshold``. A row may be all zero (no valid negative)."""
    weights = similarity.detach().float().softmax(1)
    forbidden = same_report | (report_overlap >= threshold)
    forbidden = forbidden | torch.eye(len(weights), dtype=torch.bool, device=weights.device)
    return weights.masked_fill(forbidden, 0.0)


def mine_hard_negatives(
    weights: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One index per row drawn with probability proportional to ``weights`` (B, B).
    Returns (indices (B,), valid (B,) bool); rows without any positive weight get index 0 and
    ``valid`` False, and must be left out of the matching loss."""
    valid = weights.sum(1) > 0
    safe = torch.where(valid[:, None], weights, torch.ones_like(weights))
    chosen = torch.multinomial(safe, 1, generator=generator).squeeze(1)
    return torch.where(valid, chosen, torch.zeros_like(chosen)), valid


def distilled_mlm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    logits_m: torch.Tensor | None,
    alpha: float,
) -> torch.Tensor:
    """(1 − α) · cross-entropy on the masked words + α · cross-entropy against the momentum
    model's softmax at the same positions; mean over masked words (0 when none is masked)."""
    chosen = labels != IGNORE_INDEX
    if not bool(chosen.any()):
        return logits.sum() * 0.0
    hard = F.cross_entropy(logits[chosen].float(), labels[chosen])
    if alpha <= 0 or logits_m is None:
        return hard
    soft = logits_m[chosen].float().softmax(-1)
    distill = -(F.log_softmax(logits[chosen].float(), -1) * soft).sum(-1).mean()
    return (1 - alpha) * hard + alpha * distill


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def report_sentences(text: str) -> frozenset[str]:
    """A report's sentences, lower-cased with whitespace collapsed and end punctuation dropped,
    as a set: reports that say the same things in another order compare equal."""
    parts = (" ".join(s.lower().split()).rstrip(".!? ") for s in _SENTENCE_END.split(text))
    return frozenset(p for p in parts if p)


def sentence_overlap(reports: list[str]) -> np.ndarray:
    """(B, B) Jaccard overlap of the reports' sentence sets (1 on the diagonal; two empty
    reports overlap 1)."""
    sets = [report_sentences(r) for r in reports]
    size = len(sets)
    out = np.ones((size, size), dtype=np.float32)
    for i in range(size):
        for j in range(i + 1, size):
            union = sets[i] | sets[j]
            value = len(sets[i] & sets[j]) / len(union) if union else 1.0
            out[i, j] = out[j, i] = value
    return out
