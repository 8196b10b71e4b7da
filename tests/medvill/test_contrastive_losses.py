"""The contrastive objectives against values computed by hand (written out with math.log and
math.exp below, not with the code under test)."""

from __future__ import annotations

import math

import pytest
import torch

from medvill.contrastive.losses import (
    clip_logit_scale,
    grid_positive_weights,
    info_nce,
    initial_log_logit_scale,
    local_intra_sample_loss,
)


def softplus(x: float) -> float:
    """log(1 + e^x): the two-candidate InfoNCE loss when the other candidate leads by x."""
    return math.log1p(math.exp(x))


# Image 0 = (1, 0), image 1 = (0, 1); report 0 = (1, 0), report 1 = (1, 1)/√2 (given unnormalised
# as (2, 2) to show that similarities are cosines). cos: [[1, 1/√2], [0, 1/√2]].
IMAGES = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
REPORTS = torch.tensor([[1.0, 0.0], [2.0, 2.0]])
R = 1 / math.sqrt(2)


def test_info_nce_at_convirt_temperature() -> None:
    """τ = 0.1: logits [[10, 7.07], [0, 7.07]]."""
    to_report, to_image = info_nce(IMAGES, REPORTS, 0.1)
    # image 0: its report scores 10, the other 10/√2; image 1: 10/√2 against 0
    assert to_report.tolist() == pytest.approx(
        [softplus(10 * R - 10), softplus(0 - 10 * R)], abs=1e-6
    )
    # report 0: image 0 scores 10, image 1 scores 0; report 1: both images score 10/√2
    assert to_image.tolist() == pytest.approx([softplus(0 - 10), math.log(2)], abs=1e-6)
    # ConVIRT's loss: λ = 0.75 on image→report, averaged over the batch
    convirt = (0.75 * to_report + 0.25 * to_image).mean().item()
    assert convirt == pytest.approx(
        (0.75 * (softplus(10 * R - 10) + softplus(-10 * R)) + 0.25 * (softplus(-10) + math.log(2)))
        / 2,
        rel=1e-5,
    )
    assert convirt == pytest.approx(0.10649, abs=1e-5)


def test_clip_temperature_starts_at_0_07_and_the_scale_is_capped_at_100() -> None:
    start = torch.tensor(initial_log_logit_scale())
    assert clip_logit_scale(start).item() == pytest.approx(1 / 0.07)
    assert clip_logit_scale(torch.tensor(math.log(1000.0))).item() == pytest.approx(100.0)
    # symmetric loss at τ = 0.07: the mean of the two directions
    to_report, to_image = info_nce(IMAGES, REPORTS, 1 / clip_logit_scale(start))
    scale = 1 / 0.07
    expected = (
        softplus(scale * (R - 1)) + softplus(-scale * R) + softplus(-scale) + math.log(2)
    ) / 4
    assert ((to_report + to_image) / 2).mean().item() == pytest.approx(expected, rel=1e-5)


def test_info_nce_with_another_rank_s_candidates() -> None:
    """This rank holds pair 1 only (offset 1 in the gathered candidates): image 1 scores its
    report 10/√2 against report 0's 0; report 1 scores image 1 and image 0 both 10/√2."""
    to_report, to_image = info_nce(IMAGES[1:], REPORTS[1:], 0.1, (IMAGES, REPORTS, 1))
    assert to_report.tolist() == pytest.approx([softplus(0 - 10 * R)], abs=1e-6)
    assert to_image.tolist() == pytest.approx([math.log(2)], abs=1e-6)
    with pytest.raises(ValueError, match="candidates"):
        info_nce(IMAGES[1:], REPORTS[1:], 0.1, (IMAGES, REPORTS[:1], 1))


def test_info_nce_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"two \(B, d\) embeddings"):
        info_nce(IMAGES, REPORTS[:1], 0.1)


LOCAL = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])  # (1, 2, 2): two unit locals
ATTENDED = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
WEIGHTS = torch.tensor([[0.25, 0.75]])


def test_local_loss_by_hand() -> None:
    """τ = 0.3, identity positives, weights ¼ / ¾. cos(local_i, attended_j) = [[1, 0],
    [0.6, 0.8]]: local 0 beats its other candidate by 1/τ, local 1 by 0.2/τ; reversed,
    attended 0 sees locals at 1 and 0.6, attended 1 at 0 and 0.8."""
    forward, backward = local_intra_sample_loss(LOCAL, ATTENDED, 0.3, WEIGHTS)
    t = 0.3
    assert forward.item() == pytest.approx(
        0.25 * softplus(-1 / t) + 0.75 * softplus(-0.2 / t), rel=1e-5
    )
    assert backward.item() == pytest.approx(
        0.25 * softplus(-0.4 / t) + 0.75 * softplus(-0.8 / t), rel=1e-5
    )
    assert forward.item() == pytest.approx(0.31954, abs=1e-5)


def test_padding_locals_change_nothing() -> None:
    """A padding sentence (valid False) is neither an anchor nor a candidate."""
    padded_local = torch.cat([LOCAL, torch.tensor([[[-0.3, 0.9]]])], dim=1)
    padded_attended = torch.cat([ATTENDED, torch.tensor([[[0.7, -0.7]]])], dim=1)
    valid = torch.tensor([[True, True, False]])
    weights = torch.tensor([[0.25, 0.75, 5.0]])
    padded = local_intra_sample_loss(padded_local, padded_attended, 0.3, weights, valid)
    plain = local_intra_sample_loss(LOCAL, ATTENDED, 0.3, WEIGHTS)
    for a, b in zip(padded, plain, strict=True):
        assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_soft_positives_move_the_positive_term() -> None:
    """Positives [[0.5, 0.5], [0.5, 0.5]]: each anchor's positive score is the mean of its
    row, the denominators unchanged."""
    t = 0.3
    positives = torch.full((2, 2), 0.5)
    forward, _ = local_intra_sample_loss(LOCAL, ATTENDED, t, WEIGHTS, None, positives)
    row0 = math.log(math.exp(1 / t) + math.exp(0)) - 0.5 * (1 / t + 0)
    row1 = math.log(math.exp(0.6 / t) + math.exp(0.8 / t)) - 0.5 * (0.6 / t + 0.8 / t)
    assert forward.item() == pytest.approx(0.25 * row0 + 0.75 * row1, rel=1e-5)


def test_region_positives_follow_lovt_spatial_smoothing() -> None:
    """3 × 3 grid, distances relative to the diagonal (√18 cells): from the corner, the cells
    at 1, √2 and 2 cells (0.236, 0.333, 0.471) are within 0.5 and weigh exp(−d); √5 (0.527)
    and beyond are not positives."""
    weights = grid_positive_weights(3, threshold=0.5, smooth=1.0)
    diagonal = math.sqrt(18)
    d1, d2, d3 = 1 / diagonal, math.sqrt(2) / diagonal, 2 / diagonal
    raw = [1.0, math.exp(-d1), math.exp(-d3), math.exp(-d1), math.exp(-d2), 0, math.exp(-d3),
           0, 0]  # fmt: skip
    assert weights[0].tolist() == pytest.approx([w / sum(raw) for w in raw], rel=1e-6)
    assert weights.sum(dim=1).tolist() == pytest.approx([1.0] * 9)
    centre = weights[4]
    assert (centre > 0).all()  # every cell is within 0.5 of the centre (corners: 0.333)
