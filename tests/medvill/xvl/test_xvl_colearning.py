"""Co-learning on uncurated pairs (docs/xvl.md §2): the momentum (teacher) model's confidence
(how its similarities rank each pair's own report and image in the batch) decides which pairs
are doubted; doubted pairs learn the teacher's pseudo-targets in the contrast and the
matching, and the option changes nothing when it is off."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medvill.families import get_family
from medvill.xvl.config import PROFILE_FIELDS, XVLConfig, config_from_profile
from medvill.xvl.objectives import contrastive_loss, rank_confidence
from tests.medvill.xvl.test_xvl_model import IDS, TINY, tiny_batch, tiny_model


def _losses(model: torch.nn.Module, batch: dict, **kwargs: object) -> object:
    """One forward in eval mode (no momentum update, no enqueue), same negative draws."""
    model.eval()
    with torch.no_grad():
        return model(**batch, generator=torch.Generator().manual_seed(0), **kwargs)


def test_off_by_default_and_the_threshold_is_checked() -> None:
    assert XVLConfig().colearning is False
    assert {"colearning", "colearning_threshold"} <= set(PROFILE_FIELDS)
    with pytest.raises(ValueError, match="colearning_threshold must be in"):
        config_from_profile({**TINY, "colearning_threshold": 1.5}, IDS)


def test_teacher_is_the_momentum_copy_of_the_matching_head() -> None:
    model = tiny_model().eval()
    assert torch.equal(model.itm_head_m.weight, model.xvl.itm_head.weight)
    assert not model.itm_head_m.weight.requires_grad
    batch = tiny_batch()
    with torch.no_grad():  # at initialisation the teacher equals the online model
        text_m = model.text_m.encode_text(batch["text_ids"], batch["text_valid"])
        image_m = model.visual_encoder_m.forward_features(batch["images"])
        teacher = model.teacher_match(text_m, batch["text_valid"], image_m)
        online = model.xvl(batch["images"], batch["text_ids"], batch["text_valid"])
    assert torch.allclose(teacher, online.itm_logits.softmax(-1)[:, 1], atol=1e-6)


def test_threshold_zero_trusts_every_pair_and_changes_nothing() -> None:
    model, batch = tiny_model(), tiny_batch()
    plain = _losses(model, batch, alpha=0.4)
    some = _losses(model, batch, alpha=0.4, colearn=True)  # threshold 0.5, p ≈ 0.5
    model.config.colearning_threshold = 0.0
    zero = _losses(model, batch, alpha=0.4, colearn=True)
    assert float(zero.noisy_fraction) == 0.0 and float(plain.noisy_fraction) == 0.0
    for name in ("itc_loss", "itm_loss", "mlm_loss"):
        assert torch.allclose(getattr(zero, name), getattr(plain, name), atol=1e-6)
    assert 0.0 <= float(some.noisy_fraction) <= 1.0


def test_doubted_pairs_learn_the_teachers_targets_not_their_pairing() -> None:
    """With a threshold above every confidence every pair is doubted: the contrastive loss no
    longer depends on the ground truth (which reports count as the image's own), only on the
    teacher; the matching target of each true pair is the teacher's probability."""
    model = tiny_model(colearning=True)
    model.config.colearning_threshold = 1.01  # above any confidence (profiles allow ≤ 1)
    with torch.no_grad():  # a sharp temperature: at 0.07 the initial similarities are flat
        model.xvl.temp.fill_(0.005)
    batch = tiny_batch()
    # other ground truth, same inputs: samples 0 and 1 said to carry the same report
    shuffled = dict(batch, report_ids=torch.tensor([0, 0, 2, 3]))
    doubted, doubted_shuffled = _losses(model, batch), _losses(model, shuffled)
    assert float(doubted.noisy_fraction) == 1.0
    assert torch.allclose(doubted.itc_loss, doubted_shuffled.itc_loss, atol=1e-6)
    plain = _losses(model, batch, colearn=False)
    plain_shuffled = _losses(model, shuffled, colearn=False)
    assert abs(float(plain.itc_loss - plain_shuffled.itc_loss)) > 1e-3
    assert not torch.allclose(doubted.itm_loss, plain.itm_loss, atol=1e-6)
    assert torch.allclose(doubted.mlm_loss, plain.mlm_loss)  # words keep their own targets


def test_contrastive_pseudo_rows_take_the_momentum_softmax_as_target() -> None:
    g = torch.Generator().manual_seed(3)
    feats = [F.normalize(torch.randn(3, 8, generator=g), dim=-1) for _ in range(4)]
    image, text, image_m, text_m = feats
    positives = torch.eye(3)
    temp = 0.1
    pseudo = torch.tensor([False, True, False])
    loss, _, _ = contrastive_loss(image, text, image_m.t(), text_m.t(), positives, temp,
                                  image_m, text_m, 0.4, pseudo)  # fmt: skip
    soft_i2t = (image_m @ text_m.t() / temp).softmax(1)
    soft_t2i = (text_m @ image_m.t() / temp).softmax(1)
    t_i2t = 0.4 * soft_i2t + 0.6 * positives
    t_t2i = 0.4 * soft_t2i + 0.6 * positives
    t_i2t[1], t_t2i[1] = soft_i2t[1], soft_t2i[1]
    i2t = -(F.log_softmax(image @ text_m.t() / temp, 1) * t_i2t).sum(1).mean()
    t2i = -(F.log_softmax(text @ image_m.t() / temp, 1) * t_t2i).sum(1).mean()
    assert loss.item() == pytest.approx(((i2t + t2i) / 2).item(), rel=1e-6)
    nobody = torch.zeros(3, dtype=torch.bool)
    none, _, _ = contrastive_loss(image, text, image_m.t(), text_m.t(), positives, temp,
                                  image_m, text_m, 0.4, nobody)  # fmt: skip
    plain, _, _ = contrastive_loss(image, text, image_m.t(), text_m.t(), positives, temp,
                                   image_m, text_m, 0.4)  # fmt: skip
    assert none.item() == plain.item()


def test_family_starts_colearning_after_the_distillation_ramp() -> None:
    family = get_family("xvl")
    model = tiny_model(colearning=True)
    model.config.colearning_threshold = 1.01
    model.eval()
    batch = {**tiny_batch(), "mining_seed": 5, "epoch": 0}
    counts = torch.tensor([4.0])
    with torch.no_grad():
        ramping = family.step(model, {**batch, "alpha_ramp": 0.5}, counts, torch.device("cpu"))
        ramped = family.step(model, {**batch, "alpha_ramp": 1.0}, counts, torch.device("cpu"))
    names = family.stat_names
    row = family.row(ramped.stats.tolist(), [4.0], 1)
    assert ramping.stats[names.index("noisy_fraction")].item() == 0.0
    assert row["noisy_fraction"] == 1.0


def test_rank_confidence_is_the_share_of_other_entries_the_own_pair_beats() -> None:
    # row i = image i; column j = report j. Pair 0 aligned (own report most similar both
    # ways), pair 1 mismatched (its own report the least similar), pairs 2 and 3 share a report
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.2, 0.3],
            [0.5, 0.0, 0.6, 0.7],
            [0.1, 0.2, 0.5, 0.4],
            [0.0, 0.3, 0.6, 0.8],
        ]
    )
    reports = torch.tensor([0, 1, 2, 2])
    confidence = rank_confidence(sim, reports[:, None] == reports[None])
    # pair 0: image 0 beats reports 1, 2, 3 (3/3), report 0 beats images 1, 2, 3 (3/3)
    # pair 1: image 1 beats none (0/3); report 1 (column 1: 0.1, 0.0, 0.2, 0.3) beats none
    # pair 2: others are 0 and 1 only: image 2 beats 0.1, 0.2 (2/2); report 2 (column 2:
    #   0.2, 0.6, 0.5, 0.6) vs images 0, 1: beats 0.2 only (1/2) → 3/4
    # pair 3: image 3 beats 0.0, 0.3 (2/2); report 3 (column 3: 0.3, 0.7) beats 0.3, 0.7 → 4/4
    assert confidence.tolist() == pytest.approx([1.0, 0.0, 0.75, 1.0])
    alone = rank_confidence(torch.ones(2, 2), torch.ones(2, 2, dtype=torch.bool))
    assert alone.tolist() == [1.0, 1.0]  # nothing to compare with: trusted
