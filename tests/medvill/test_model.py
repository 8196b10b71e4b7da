"""Model: paper-config shapes, SDPA = eager under the masks, overfitting, save/load."""

from __future__ import annotations

import torch

from medvill.config import MedViLLConfig
from medvill.model.medvill import MedViLLForPretraining, MedViLLModel, MedViLLModelOutput


def tiny_config(**overrides) -> MedViLLConfig:
    fields = dict(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, backbone="resnet18", image_size=64, num_sampled_visual=3,
        max_text_tokens=10, max_position_embeddings=64, pad_token_id=0, unk_token_id=1,
        cls_token_id=2, sep_token_id=3, mask_token_id=4,
    )  # fmt: skip
    fields.update(overrides)
    return MedViLLConfig(**fields)


def fixed_batch(config: MedViLLConfig, batch: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    slots = config.text_slots()
    ids = torch.randint(5, config.vocab_size, (batch, slots), generator=g)
    valid = torch.ones(batch, slots, dtype=torch.bool)
    ids[:, -1] = config.sep_token_id
    ids[1, -3:] = config.pad_token_id
    ids[1, -4] = config.sep_token_id
    valid[1, -3:] = False
    labels = torch.full_like(ids, -100)
    labels[:, 1] = ids[:, 1]
    labels[:, 4] = ids[:, 4]
    inputs = ids.clone()
    inputs[:, 1] = config.mask_token_id
    inputs[:, 4] = config.mask_token_id
    return {
        "images": torch.randn(batch, 3, config.image_size, config.image_size, generator=g),
        "text_ids": inputs,
        "text_valid": valid,
        "visual_cells": torch.tensor([0, 1, 3]),
        "mlm_labels": labels,
        "irm_labels": torch.tensor([1, 0, 1, 0][:batch]),
    }


def test_paper_config_shapes_with_tiny_hidden() -> None:
    """Paper layout: ResNet-50 at 512² → 16×16×2048; 180 sampled → S = 180 + 2 + 254 = 436;
    all 256 downstream → S = 512; 12 layers, 12 heads (hidden shrunk to 48 for CPU)."""
    config = MedViLLConfig(hidden_size=48, intermediate_size=96, vocab_size=300,
                           pad_token_id=0, unk_token_id=1, cls_token_id=2, sep_token_id=3,
                           mask_token_id=4)  # fmt: skip
    assert (config.num_hidden_layers, config.num_attention_heads) == (12, 12)
    assert (config.grid_size, config.visual_feature_dim, config.text_slots()) == (16, 2048, 254)
    model = MedViLLForPretraining(config).eval()
    images = torch.randn(1, 3, 512, 512)
    ids = torch.randint(5, 300, (1, 254))
    valid = torch.ones(1, 254, dtype=torch.bool)
    with torch.no_grad():
        features = model.medvill.visual_backbone(images)
        assert features.shape == (1, 256, 2048)
        cells = torch.sort(torch.randperm(256)[:180]).values
        labels = torch.full((1, 254), -100)
        labels[0, :7] = ids[0, :7]
        out = model(images, ids, valid, cells, mlm_labels=labels, irm_labels=torch.tensor([1]))
        assert out.last_hidden_state.shape == (1, 436, 48)
        assert out.mlm_logits.shape == (7, 300)
        assert out.irm_logits.shape == (1, 2)
        assert out.pooled_output.shape == (1, 48)
        assert torch.isfinite(out.loss)
        hidden = model.medvill(images, ids, valid).last_hidden_state  # all 256 features
        assert hidden.shape == (1, 512, 48)


def test_sdpa_and_eager_agree_and_masks_reach_the_encoder() -> None:
    """The custom 4-D mask reaches both attention paths. Under S2S neither the image block nor
    earlier text depends on a later text token (through all layers); under BAR the image rows
    do (and, from the second layer on, text rows through them — BAR's design)."""
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = MedViLLModel(config).eval()
    batch = fixed_batch(config)
    args = (batch["images"], batch["text_ids"], batch["text_valid"], batch["visual_cells"])
    changed = batch["text_ids"].clone()
    changed[:, 6] = 7  # change the 7th text token
    k = 3 + 2
    with torch.no_grad():
        for kind in ("bar", "s2s", "bi", "noncross"):
            sdpa = model(*args, mask_type=kind).last_hidden_state
            model.bert.config._attn_implementation = "eager"
            eager = model(*args, mask_type=kind).last_hidden_state
            model.bert.config._attn_implementation = "sdpa"
            assert torch.allclose(sdpa, eager, atol=1e-5), kind
        s2s = model(*args, mask_type="s2s").last_hidden_state
        s2s_changed = model(args[0], changed, args[2], args[3], mask_type="s2s").last_hidden_state
        bar = model(*args, mask_type="bar").last_hidden_state
        bar_changed = model(args[0], changed, args[2], args[3], mask_type="bar").last_hidden_state
    assert torch.allclose(s2s[:, : k + 6], s2s_changed[:, : k + 6], atol=1e-6)
    assert not torch.allclose(s2s[:, k + 6], s2s_changed[:, k + 6])
    assert not torch.allclose(bar[:, :k], bar_changed[:, :k])


def test_noncross_uses_both_cls_and_separates_modalities() -> None:
    config = tiny_config(attention_mask_type="noncross", hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)  # fmt: skip
    model = MedViLLModel(config).eval()
    batch = fixed_batch(config)
    assert batch["text_ids"].shape[1] == 12  # extra text [CLS]
    with torch.no_grad():
        out = model(batch["images"], batch["text_ids"], batch["text_valid"], batch["visual_cells"])
        other = torch.randn_like(batch["images"])
        out2 = model(other, batch["text_ids"], batch["text_valid"], batch["visual_cells"])
    assert isinstance(out, MedViLLModelOutput) and out.pooler_output.shape == (4, 32)
    hidden, hidden2 = out.last_hidden_state, out2.last_hidden_state
    assert torch.allclose(hidden[:, 5:], hidden2[:, 5:], atol=1e-6)  # text ignores the image


def test_fixed_batch_overfits() -> None:
    """MLM + IRM loss on one fixed batch falls by more than half within 50 AdamW steps."""
    torch.manual_seed(0)
    config = tiny_config()
    model = MedViLLForPretraining(config).train()
    batch = fixed_batch(config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(50):
        out = model(**batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_save_pretrained_round_trip(tmp_path) -> None:
    torch.manual_seed(1)
    config = tiny_config(attention_mask_type="s2s")
    model = MedViLLForPretraining(config)
    batch = fixed_batch(config)
    # Move BatchNorm statistics and weights away from their init so the round trip is tested.
    model.train()
    model(**batch).loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.eval()
    with torch.no_grad():
        before = model(**batch)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = MedViLLForPretraining.from_pretrained(tmp_path).eval()
    assert loaded.config.attention_mask_type == "s2s"
    assert loaded.cls.predictions.decoder.weight is loaded.get_input_embeddings().weight
    trainable = [p.requires_grad for p in loaded.parameters()]
    assert trainable == [p.requires_grad for p in model.parameters()] and not all(trainable)
    with torch.no_grad():
        after = loaded(**batch)
    assert torch.equal(before.last_hidden_state, after.last_hidden_state)
    assert torch.equal(before.mlm_logits, after.mlm_logits)
    assert torch.equal(before.loss, after.loss)
