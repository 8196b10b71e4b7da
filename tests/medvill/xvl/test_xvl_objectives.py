"""X-VL objectives on tiny hand-checkable inputs: EMA, queue ring buffer, hard-negative mining,
contrastive and distilled MLM loss values, report sentence overlap."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medvill.xvl.objectives import (
    contrastive_loss,
    copy_to_momentum,
    distilled_mlm_loss,
    enqueue,
    mine_hard_negatives,
    momentum_update,
    negative_weights,
    sentence_overlap,
)


def test_momentum_update_is_the_exponential_moving_average() -> None:
    online, shadow = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        online.weight.copy_(torch.tensor([[1.0, 2.0]]))
        online.bias.fill_(4.0)
        shadow.weight.copy_(torch.tensor([[3.0, -2.0]]))
        shadow.bias.fill_(0.0)
    momentum_update([(online, shadow)], 0.9)
    assert torch.allclose(shadow.weight, torch.tensor([[0.9 * 3 + 0.1 * 1, 0.9 * -2 + 0.1 * 2]]))
    assert torch.allclose(shadow.bias, torch.tensor([0.4]))
    assert torch.equal(online.weight, torch.tensor([[1.0, 2.0]]))  # the online model is untouched
    copy_to_momentum([(online, shadow)])
    assert torch.equal(shadow.weight, online.weight)
    assert not shadow.weight.requires_grad and online.weight.requires_grad


def test_enqueue_writes_at_the_pointer_and_wraps() -> None:
    queue = torch.zeros(2, 5)
    pointer = torch.zeros(1, dtype=torch.long)
    first = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    enqueue(queue, pointer, first)
    assert queue[0].tolist() == [1, 2, 3, 0, 0] and int(pointer) == 3
    enqueue(queue, pointer, torch.tensor([[4.0, 4.0], [5.0, 5.0], [6.0, 6.0]]))
    assert queue[0].tolist() == [6, 2, 3, 4, 5] and int(pointer) == 1  # 6 wrapped to slot 0
    big = torch.arange(14, dtype=torch.float32).reshape(7, 2)  # more rows than the queue holds
    enqueue(queue, pointer, big)
    assert sorted(queue[0].tolist()) == [4, 6, 8, 10, 12]  # the last five rows are kept
    assert int(pointer) == (1 + 5) % 5


def test_negative_weights_forbid_positive_same_report_and_near_duplicates() -> None:
    similarity = torch.tensor(
        [[5.0, 1.0, 2.0, 0.0], [1.0, 5.0, 1.0, 1.0], [0.0, 0.0, 5.0, 3.0], [1.0, 2.0, 3.0, 4.0]]
    )
    same = torch.eye(4, dtype=torch.bool)
    same[0, 3] = same[3, 0] = True  # 0 and 3 carry the same report
    overlap = torch.eye(4)
    overlap[1, 2] = overlap[2, 1] = 0.95  # 1 and 2 say nearly the same thing
    weights = negative_weights(similarity, same, overlap, threshold=0.9)
    assert (weights.diagonal() == 0).all()
    assert weights[0, 3] == 0 and weights[3, 0] == 0
    assert weights[1, 2] == 0 and weights[2, 1] == 0
    # what is left keeps the softmax's proportions
    row = similarity[0].softmax(0)
    assert torch.isclose(weights[0, 2] / weights[0, 1], row[2] / row[1])


def test_mining_never_picks_a_forbidden_entry_and_follows_the_weights() -> None:
    weights = torch.tensor([[0.0, 0.7, 0.2, 0.1], [0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    generator = torch.Generator().manual_seed(0)
    draws = mine_hard_negatives(weights.repeat(20_000, 1), generator)[0].view(20_000, 3)
    _, valid = mine_hard_negatives(weights, generator)
    assert valid.tolist() == [True, False, True]
    counts = torch.bincount(draws[:, 0], minlength=4).float() / len(draws)
    assert counts[0] == 0  # the positive itself, never
    assert torch.allclose(counts, torch.tensor([0.0, 0.7, 0.2, 0.1]), atol=0.015)
    assert set(draws[:, 2].tolist()) == {0, 1}
    # from real similarities: the hardest negative is drawn most often
    similarity = torch.tensor([[4.0, 3.0, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    w = negative_weights(similarity, torch.eye(3, dtype=torch.bool), torch.eye(3), 0.9)
    picks = mine_hard_negatives(w.repeat(2000, 1), generator)[0].view(2000, 3)
    assert (picks[:, 0] == 1).float().mean() > 0.9  # e^3 against e^0
    assert (picks[:, 0] != 0).all()


def test_contrastive_loss_matches_hand_computation() -> None:
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    queue = torch.tensor([[0.0], [-1.0]])  # one queued feature, a negative of both
    image_all = torch.cat([image.t(), queue], 1)
    text_all = torch.cat([text.t(), queue], 1)
    positives = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    loss, sim_i2t, _ = contrastive_loss(image, text, image_all, text_all, positives, 1.0)
    # row 0: logits (1, 0, 0); row 1: logits (0, 1, -1)
    row0 = -math.log(math.e / (math.e + 2))
    row1 = -math.log(math.e / (1 + math.e + math.exp(-1)))
    assert sim_i2t.shape == (2, 3)
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # distillation: alpha = 1 with the momentum features equal to the online ones is the
    # entropy of the model's own softmax
    full, _, _ = contrastive_loss(image, text, image_all, text_all, positives, 1.0,
                                  image, text, alpha=1.0)  # fmt: skip
    p = (image @ text_all).softmax(1)
    entropy = -(p * p.log()).sum(1).mean().item()
    assert full.item() == pytest.approx(entropy, rel=1e-6)


def test_duplicate_reports_in_the_queue_share_the_target() -> None:
    """The same report queued earlier (another feature of it) is a positive too: it is not
    pushed away, so the loss with both marked positive is the cross-entropy against ½, ½."""
    a = F.normalize(torch.tensor([[1.0, 0.5]]), dim=-1)  # the report's feature in this batch
    b = torch.tensor([[1.0, 0.0]])  # its queued feature, closer to the image
    image = b
    text_all = torch.cat([a.t(), b.t()], 1)
    one, logits, _ = contrastive_loss(image, b, text_all, text_all, torch.tensor([[1.0, 0.0]]), 1)
    both = contrastive_loss(image, b, text_all, text_all, torch.tensor([[1.0, 1.0]]), 1)[0]
    log_p = (image @ text_all).log_softmax(1)[0]
    assert both.item() == pytest.approx(-(0.5 * log_p[0] + 0.5 * log_p[1]).item(), rel=1e-6)
    assert one.item() == pytest.approx(-log_p[0].item(), rel=1e-6)
    assert logits[0, 1] > logits[0, 0]
    assert one.item() > both.item()  # as a negative, the closer duplicate costs more


def test_distilled_mlm_loss_mixes_hard_and_soft_targets() -> None:
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    labels = torch.tensor([[0, -100]])
    teacher = torch.tensor([[[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]])
    hard = F.cross_entropy(logits[0, :1], labels[0, :1]).item()
    soft = -(teacher[0, 0].softmax(0) * logits[0, 0].log_softmax(0)).sum().item()
    assert distilled_mlm_loss(logits, labels, None, 0.0).item() == pytest.approx(hard)
    mixed = distilled_mlm_loss(logits, labels, teacher, 0.4).item()
    assert mixed == pytest.approx(0.6 * hard + 0.4 * soft, rel=1e-6)
    none = distilled_mlm_loss(logits, torch.full((1, 2), -100), teacher, 0.4)
    assert none.item() == 0.0 and none.requires_grad is False


def test_sentence_overlap_ignores_order_case_and_spacing() -> None:
    reports = [
        "No pneumothorax. Heart size is normal.",
        "heart size  is normal.\nNo pneumothorax",
        "No pneumothorax. Small left effusion.",
        "",
    ]
    overlap = sentence_overlap(reports)
    assert overlap[0, 1] == 1.0
    assert overlap[0, 2] == pytest.approx(1 / 3)
    assert overlap[0, 3] == 0.0
    assert np.array_equal(overlap, overlap.T) and (overlap.diagonal() == 1).all()
