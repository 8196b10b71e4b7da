"""Does image-report matching (IRM) learn at all? A toy that only a working cross-modal path
can solve, run through ``MedViLLForPretraining`` with the loader's text construction.

Eight flat images encode one bit (bright/dark, with pixel noise) and each appears twice: once
with its own report ("… bright …" / "… dark …", label 1) and once with the other one swapped in
(label 0), as ``PretrainShards`` builds non-matched samples. Every image and every report
occurs with both labels, so the image alone or the text alone gives accuracy 0.5; only a
[CLS] that sees both modalities fits the labels. The S2S control (its image [CLS] never sees
text) must stay at exactly 0.5, which checks the toy's construction. Under BAR the tiny model
does NOT fit the toy from scratch within 60 steps today (issue 13): the learning test is a
strict xfail that records this and turns into a failure the day IRM learns, so the marker
is removed then.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medvill.config import MedViLLConfig
from medvill.data import TextSpec, mask_tokens, text_block
from medvill.model.medvill import MedViLLForPretraining

BRIGHT, DARK, FILLER = 10, 11, (20, 21, 22)


def toy_config(mask_type: str) -> MedViLLConfig:
    return MedViLLConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, backbone="resnet18", image_size=64, num_sampled_visual=4,
        max_text_tokens=8, max_position_embeddings=64, pad_token_id=0, unk_token_id=1,
        cls_token_id=2, sep_token_id=3, mask_token_id=4, attention_mask_type=mask_type,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip


def toy_batch(config: MedViLLConfig, seed: int = 0) -> dict:
    """16 pairs: 8 images (4 bright, 4 dark), each with its own and with the swapped report."""
    rng = np.random.default_rng(seed)
    spec = TextSpec(
        max_tokens=config.max_text_tokens, pad_id=0, cls_id=2, sep_id=3, mask_id=4,
        vocab_size=config.vocab_size, special_ids=(0, 1, 2, 3, 4),
    )  # fmt: skip
    bits = np.repeat(np.array([1, 1, 1, 1, 0, 0, 0, 0]), 2)
    matched = np.tile(np.array([1, 0]), 8)
    word_bits = np.where(matched == 1, bits, 1 - bits)
    ids, valid, labels = [], [], []
    for bit in word_bits:
        tokens = [FILLER[0], FILLER[1], BRIGHT if bit else DARK, FILLER[2]]
        block, slots = text_block(tokens, spec)
        inputs, targets = mask_tokens(block, slots, spec, rng, 0.15)
        ids.append(inputs)
        valid.append(slots)
        labels.append(targets)
    size = config.image_size
    generator = torch.Generator().manual_seed(seed)
    noise = 0.1 * torch.randn(8, 3, size, size, generator=generator)
    level = torch.tensor([1.0] * 4 + [-1.0] * 4)[:, None, None, None]
    images = (level + noise).repeat_interleave(2, dim=0)  # the same pixels in both pairs
    return {
        "images": images,
        "text_ids": torch.from_numpy(np.stack(ids)),
        "text_valid": torch.from_numpy(np.stack(valid)),
        "mlm_labels": torch.from_numpy(np.stack(labels)),
        "irm_labels": torch.from_numpy(matched).long(),
        "visual_cells": torch.arange(config.num_visual_features),
    }


def irm_accuracy_after_training(mask_type: str, steps: int, lr: float = 1e-3) -> float:
    """Train MLM + IRM (the trainer's loss) on the toy batch; return the best IRM accuracy."""
    torch.manual_seed(0)
    config = toy_config(mask_type)
    model = MedViLLForPretraining(config).train()
    batch = toy_batch(config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    best = 0.0
    for _ in range(steps):
        out = model(**batch, mask_type=mask_type)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        accuracy = (out.irm_logits.argmax(-1) == batch["irm_labels"]).float().mean().item()
        best = max(best, accuracy)
        if best >= 0.95:
            break
    return best


def test_toy_pairs_need_both_modalities() -> None:
    batch = toy_batch(toy_config("bar"))
    labels = batch["irm_labels"]
    assert labels.tolist().count(1) == labels.tolist().count(0) == 8
    images = batch["images"]
    for i in range(0, 16, 2):  # each image once matched, once non-matched
        assert torch.equal(images[i], images[i + 1]) and labels[i] != labels[i + 1]


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="issue 13: from scratch, IRM stays at chance on this toy (best accuracy 0.5-0.6 "
    "after 120 steps of MLM + IRM at lr 1e-3; 0.95 first at step 139, IRM alone at 135; MLM + "
    "5 x IRM not within 150) although under BAR text and image both change the image [CLS] "
    "output and labels/negatives are right; strict, so it fails once fixed",
)
def test_irm_learns_toy_matching() -> None:
    assert irm_accuracy_after_training("bar", steps=60) >= 0.9


def test_irm_cannot_learn_when_cls_is_blind_to_text() -> None:
    """S2S: the image [CLS] sees only the image, so identical images with opposite labels cap
    the accuracy at 0.5 — the control that makes the test above mean "cross-modal"."""
    assert irm_accuracy_after_training("s2s", steps=40) <= 0.5 + 1e-6
