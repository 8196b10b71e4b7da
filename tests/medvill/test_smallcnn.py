"""The small plain CNN backbone (``backbone: small_cnn``, the ``learn`` profile's): the ResNet
trunk's grid, slots and freezing, no ImageNet weights, and a save/load round trip."""

from __future__ import annotations

import pytest
import torch

from medvill.config import BACKBONE_CHANNELS
from medvill.model.embeddings import VisualBackbone
from medvill.model.medvill import MedViLLForPretraining
from medvill.model.smallcnn import SMALL_CNN_CHANNELS, small_cnn_trunk
from tests.medvill.test_model import fixed_batch, tiny_config


@pytest.mark.parametrize("size", [64, 128])
def test_features_on_the_resnet_grid(size: int) -> None:
    """Stride 32 and 256 channels: (B, (size/32)², 256), what the visual projection expects."""
    config = tiny_config(backbone="small_cnn", image_size=size, num_sampled_visual=1)
    features = VisualBackbone(config)(torch.randn(2, 3, size, size))
    assert features.shape == (2, (size // 32) ** 2, 256)
    assert BACKBONE_CHANNELS["small_cnn"] == SMALL_CNN_CHANNELS[-1] == config.visual_feature_dim


def test_eight_slots_and_stem_freezing() -> None:
    """Slots 0–4 (conv1, bn1, relu, maxpool, layer1) freeze with freeze_stem, as for a ResNet;
    conv1 keeps full resolution (a two-pixel line is seen before any pooling)."""
    assert len(small_cnn_trunk()) == 8
    backbone = VisualBackbone(tiny_config(backbone="small_cnn", freeze_stem=True))
    trunk = backbone.trunk
    assert trunk[0].stride == (1, 1) and trunk[0].in_channels == 3
    assert not any(p.requires_grad for m in list(trunk)[:5] for p in m.parameters())
    assert all(p.requires_grad for m in list(trunk)[5:] for p in m.parameters())


def test_no_imagenet_weights_means_random_init(caplog) -> None:
    backbone = VisualBackbone(tiny_config(backbone="small_cnn"))
    before = [p.detach().clone() for p in backbone.parameters()]
    assert backbone.load_imagenet("small_cnn") is False
    assert "no ImageNet weights" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(before, backbone.parameters(), strict=True))


def test_round_trip_and_learning(tmp_path) -> None:
    """Saved and reloaded it gives the same output; on a fixed batch MLM + IRM falls."""
    torch.manual_seed(0)
    config = tiny_config(backbone="small_cnn", freeze_stem=False)
    model = MedViLLForPretraining(config).train()
    batch = fixed_batch(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(50):
        out = model(**batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = MedViLLForPretraining.from_pretrained(tmp_path).eval()
    assert loaded.config.backbone == "small_cnn"
    with torch.no_grad():
        assert torch.equal(model(**batch).loss, loaded(**batch).loss)
