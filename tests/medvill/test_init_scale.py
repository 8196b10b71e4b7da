"""Why the ``learn`` profile sets ``initializer_range`` (issue 13): BERT's N(0, 0.02) init is
sized for width 768. In a 128-wide encoder trained from scratch it leaves the pooled [CLS] —
what IRM, retrieval and classification read — almost independent of the input, so those heads
start on a plateau. Measured here on the real sample X-rays with the profile's own model
settings: swapping the images of a batch moves the pooled output by about 4e-4 at 0.02 and by
about 4e-2 at the profile's 1/sqrt(128) ≈ 0.088.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from medvill.config import MedViLLConfig
from medvill.data import decode_image
from medvill.model.medvill import MedViLLForPretraining

REPO = Path(__file__).resolve().parents[2]


def learn_model_settings() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    return dict(params["pretrain"]["profiles"]["learn"]["model"])


def sample_batch(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eight real sample radiographs and eight different token sequences."""
    paths = sorted((REPO / "data" / "sample" / "images").rglob("*.png"))[:8]
    assert len(paths) == 8, "data/sample/images should hold at least 8 PNGs"
    images = torch.stack([decode_image(p.read_bytes(), size, None) for p in paths])
    ids = torch.randint(10, 300, (8, 32), generator=torch.Generator().manual_seed(0))
    return images, ids, torch.ones(8, 32, dtype=torch.bool)


def image_swap_effect(settings: dict, initializer_range: float) -> float:
    """Mean absolute change of the pooled [CLS] when each text gets another sample's image."""
    torch.manual_seed(0)
    config = MedViLLConfig(
        **{**settings, "initializer_range": initializer_range, "vocab_size": 300}
    )
    model = MedViLLForPretraining(config).eval()
    images, ids, valid = sample_batch(config.image_size)
    cells = torch.arange(config.num_visual_features)
    with torch.no_grad():
        own = model(images=images, text_ids=ids, text_valid=valid, visual_cells=cells)
        swapped = model(
            images=images.roll(1, 0), text_ids=ids, text_valid=valid, visual_cells=cells
        )
    return (swapped.pooled_output - own.pooled_output).abs().mean().item()


def test_learn_profile_sizes_its_init_to_its_width() -> None:
    settings = learn_model_settings()
    assert settings["initializer_range"] == pytest.approx(settings["hidden_size"] ** -0.5, abs=1e-3)


def test_bert_default_init_leaves_a_narrow_encoder_blind_to_the_image() -> None:
    settings = learn_model_settings()
    at_bert_default = image_swap_effect(settings, 0.02)
    at_profile = image_swap_effect(settings, settings["initializer_range"])
    assert at_bert_default < 2e-3
    assert at_profile > 1e-2
    assert at_profile > 20 * at_bert_default
