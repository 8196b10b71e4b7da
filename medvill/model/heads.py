"""Pretraining heads and losses: masked language modelling and image-report matching.

The heads are transformers' ``BertPreTrainingHeads``: the MLM predictor (transform + decoder
tied to the word embeddings) and a 2-way linear layer on the pooled [CLS] — BERT's next-sentence
head, which is exactly the paper's IRM classifier (so ``bert-base-uncased`` initialises both).
IRM class 1 means "matched" (the paper's y = 1); retrieval scores are softmax(logits)[:, 1].

Losses are *sums* divided by a caller-given normaliser. The trainer passes the number of
labelled tokens/pairs in the whole global batch (all ranks, all accumulation micro-batches), so
gradient accumulation and DDP give the same gradient as one big batch.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from transformers.models.bert.modeling_bert import BertPreTrainingHeads

__all__ = ["IGNORE_INDEX", "BertPreTrainingHeads", "irm_loss", "mlm_loss"]

#: Label of text slots that are not MLM targets (PyTorch's cross-entropy default).
IGNORE_INDEX = -100


def mlm_loss(
    logits: torch.Tensor, labels: torch.Tensor, normalizer: float | torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy summed over the labelled tokens (``logits`` (n, V), ``labels`` (n,)) and
    divided by ``normalizer`` (default: n, i.e. the mean)."""
    total = F.cross_entropy(logits.float(), labels, reduction="sum")
    denom = labels.numel() if normalizer is None else normalizer
    return total / _at_least_one(denom)


def _at_least_one(denom: float | int | torch.Tensor) -> float | torch.Tensor:
    """The normaliser, at least 1; a tensor stays on its device (no host sync per step)."""
    if isinstance(denom, torch.Tensor):
        return denom.clamp(min=1.0)
    return max(float(denom), 1.0)


def irm_loss(
    logits: torch.Tensor, labels: torch.Tensor, normalizer: float | torch.Tensor | None = None
) -> torch.Tensor:
    """Binary matched/non-matched cross-entropy over the pooled [CLS] logits (B, 2)."""
    total = F.cross_entropy(logits.float(), labels, reduction="sum")
    denom = labels.numel() if normalizer is None else normalizer
    return total / _at_least_one(denom)
