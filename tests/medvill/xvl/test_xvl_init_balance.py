"""Width-appropriate initialisation and class-balanced matching (docs/xvl.md §6): the std the
config asks for is the std the weights get, the wider init makes a from-scratch report [CLS]
depend on its words, and the balanced matching loss equals its hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from medvill.xvl.config import config_from_profile
from medvill.xvl.model import XVLForPretraining, balanced_mean, matching_loss

from .test_xvl_model import IDS, TINY, tiny_batch, tiny_model

# std of a normal truncated at ±2 std, as a share of the std
TRUNCATED_SHARE = 0.8796


def _vit_linear_std(model: XVLForPretraining) -> float:
    weights = [m.weight.flatten() for m in model.xvl.visual_encoder.modules()
               if isinstance(m, torch.nn.Linear)]  # fmt: skip
    return float(torch.cat(weights).detach().std())


def test_vision_initializer_range_is_the_std_of_the_vit_linear_weights() -> None:
    default, wide = tiny_model(), tiny_model(vision_initializer_range=0.2)
    # timm's own init when 0 (std 0.02, truncated at ±2 absolute: no truncation in effect);
    # the asked std, truncated at ±2σ, otherwise
    assert _vit_linear_std(default) == pytest.approx(0.02, rel=0.1)
    assert _vit_linear_std(wide) == pytest.approx(0.2 * TRUNCATED_SHARE, rel=0.1)
    qkv = wide.xvl.visual_encoder.blocks[0].attn.qkv
    assert float(qkv.weight.detach().abs().max()) <= 0.4 + 1e-6
    assert float(qkv.bias.abs().max()) == 0.0
    # the momentum ViT starts as an exact copy of the re-drawn online one
    assert torch.equal(qkv.weight, wide.visual_encoder_m.blocks[0].attn.qkv.weight)


def test_initializer_range_is_the_std_of_the_text_layers() -> None:
    model = tiny_model(initializer_range=0.2)
    query = model.xvl.text.layer[0].attention.self.query.weight
    words = model.xvl.text.embeddings.word_embeddings.weight
    assert float(query.std()) == pytest.approx(0.2, rel=0.1)
    assert float(words.std()) == pytest.approx(0.2, rel=0.05)
    assert torch.equal(query, model.text_m.layer[0].attention.self.query.weight)


def _report_spread(initializer_range: float) -> float:
    """Across-batch std of the text [CLS] state over its mean's norm, 8 different reports,
    eval mode (no dropout), at initialisation."""
    model = tiny_model(initializer_range=initializer_range).eval()
    ids = torch.randint(5, 50, (8, 12), generator=torch.Generator().manual_seed(3))
    ids[:, 0] = 1
    with torch.no_grad():
        cls = model.xvl.text.encode_text(ids, torch.ones_like(ids, dtype=torch.bool))[:, 0]
    return float(cls.std(0).norm() / cls.mean(0).norm())


def test_bert_default_init_leaves_a_narrow_text_encoder_nearly_blind_to_its_words() -> None:
    # the measured reason for the learn profile's initializer_range (docs/xvl.md §6)
    blind, seeing = _report_spread(0.02), _report_spread(0.2)
    assert blind < 0.02
    assert seeing > 0.1
    assert seeing > 10 * blind


def test_profile_accepts_the_init_fields_and_refuses_bad_values() -> None:
    config = config_from_profile(
        {**TINY, "initializer_range": 0.1, "vision_initializer_range": 0.1, "itm_balanced": True},
        IDS,
    )
    assert (config.initializer_range, config.vision_initializer_range) == (0.1, 0.1)
    assert config.itm_balanced is True
    with pytest.raises(ValueError, match="vision_initializer_range must be ≥ 0"):
        config_from_profile({**TINY, "vision_initializer_range": -0.1}, IDS)
    with pytest.raises(ValueError, match="initializer_range must be > 0"):
        config_from_profile({**TINY, "initializer_range": 0.0}, IDS)


def test_balanced_mean_weighs_the_two_classes_equally() -> None:
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0, 6.0])
    labels = torch.tensor([1, 0, 0, 1, 0])
    # matched (1 + 4) / 2 = 2.5, negatives (2 + 3 + 6) / 3 = 11/3
    assert float(balanced_mean(losses, labels)) == pytest.approx((2.5 + 11 / 3) / 2)
    # one class only: its own mean
    assert float(balanced_mean(losses[:1], labels[:1])) == pytest.approx(1.0)


@pytest.mark.parametrize("balanced", [False, True])
def test_matching_loss_with_a_constant_head_equals_the_hand_computation(balanced: bool) -> None:
    """A head answering the same logits for every pair: the matched pairs cost −log p₁, the
    negatives −log p₀; with all 2B negatives mined the plain mean is (c₁ + 2c₀)/3, the
    balanced one (c₁ + c₀)/2."""
    model = tiny_model(itm_balanced=balanced)
    head = model.xvl.itm_head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.3, -0.5]))
    batch = tiny_batch(batch=4)
    x = model.xvl
    image_embeds = x.encode_image(batch["images"])
    text_embeds = x.text.encode_text(batch["text_ids"], batch["text_valid"])
    sim = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    loss, accuracy, negatives = matching_loss(
        x, image_embeds, text_embeds, batch["text_valid"], sim, sim.t(), batch["report_ids"],
        batch["report_overlap"], torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert int(negatives) == 8
    p = torch.tensor([0.3, -0.5]).softmax(0)
    matched, negative = -math.log(float(p[1])), -math.log(float(p[0]))
    expected = (matched + negative) / 2 if balanced else (matched + 2 * negative) / 3
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # the head always answers "not matched": accuracy is the negatives' share, 2/3
    assert float(accuracy) == pytest.approx(2 / 3)
