"""The ``flex`` attention backend: its block masks allow exactly the reference pairs, and the
encoder computes the same function through it (fp32, CPU: forward only, as PyTorch allows)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_mask

from medvill.model.encoder import attention_mask_for, format_mask, resolve_attention_backend
from medvill.model.flex import FLEX_IMPLEMENTATION, block_mask_from_dense, mask_mod_for
from medvill.model.masks import build_mask
from medvill.model.medvill import MedViLLModel
from tests.medvill.test_attention_backends import CONCRETE, ragged_valid
from tests.medvill.test_model import fixed_batch, tiny_config


def test_block_mask_rules_allow_exactly_the_reference_pairs() -> None:
    """Element by element, for the four concrete types (Bi & S2S resolves to two of them per
    batch) on reports with 0, 2, 5 and 8 padding slots."""
    valid = ragged_valid()
    for kind in CONCRETE:
        dense = create_mask(mask_mod_for(kind, 3, valid), 4, 1, 14, 14, device="cpu")
        assert dense.shape == (4, 1, 14, 14)
        assert torch.equal(dense[:, 0], build_mask(kind, 3, valid)), kind
    with pytest.raises(ValueError, match="concrete mask type"):
        mask_mod_for("bi_s2s", 3, valid)


def test_block_mask_skips_tiles_no_query_may_see() -> None:
    """At paper-like lengths the S2S block mask marks the image queries × text keys tiles
    empty: those are never computed, where a dense mask computes and discards them."""
    valid = torch.ones(2, 254, dtype=torch.bool)
    block = attention_mask_for("s2s", 180, valid, "flex", torch.float32)
    dense_tiles = block.to_dense()  # (B, 1, query tiles, key tiles), 1 where computed
    assert dense_tiles.shape == (2, 1, 4, 4)
    assert int(dense_tiles[:, :, 0, 2:].sum()) == 0  # image rows (0–127) × text keys (256+)
    assert int(dense_tiles.sum()) < dense_tiles.numel()


def test_encoder_output_through_flex_equals_the_reference() -> None:
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = MedViLLModel(config).eval()
    batch = fixed_batch(config, seed=3)
    batch["text_valid"][2, -5:] = False
    args = (batch["images"], batch["text_ids"], batch["text_valid"], batch["visual_cells"])
    outputs = {}
    with torch.no_grad():
        for kind in CONCRETE:
            model.set_attention_backend("reference")
            reference = model(*args, kind).last_hidden_state
            model.set_attention_backend("flex")
            outputs[kind] = (reference, model(*args, kind).last_hidden_state)
    for kind, (reference, fast) in outputs.items():
        assert torch.allclose(fast, reference, atol=1e-5, rtol=0), kind
        other = outputs["bi" if kind != "bi" else "bar"][0]
        assert (other - reference).abs().max() > 1e-3  # the tolerance can fail


def test_dense_layouts_become_block_masks_with_the_same_output() -> None:
    """Generation's scoring layout is a ready (B, S, S) mask: the block mask reading it gives
    SDPA's output under that mask."""
    g = torch.Generator().manual_seed(2)
    allowed = torch.rand(2, 9, 9, generator=g) < 0.5
    allowed[:, :, 0] = True  # every query sees a key
    q, k, v = (torch.randn(2, 2, 9, 8, generator=g) for _ in range(3))
    from medvill.model.flex import flex_attention_forward

    block = format_mask(allowed, "flex", torch.float32)
    assert torch.equal(
        create_mask(block.mask_mod, 2, 1, 9, 9, device="cpu")[:, 0], allowed
    )  # the block mask reads the dense one
    out, _ = flex_attention_forward(torch.nn.Module(), q, k, v, block, scaling=0.5)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None], scale=0.5)
    assert torch.allclose(out, reference.transpose(1, 2), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="boolean"):
        block_mask_from_dense(allowed.float())


def test_training_with_attention_dropout_is_refused_and_switching_restores_sdpa() -> None:
    model = MedViLLModel(tiny_config(attention_probs_dropout_prob=0.1)).train()
    batch = fixed_batch(model.config)
    model.set_attention_backend("flex")
    assert model.bert.config._attn_implementation == FLEX_IMPLEMENTATION
    assert resolve_attention_backend("flex", model.bert) == "flex"
    with pytest.raises(ValueError, match="'flex' cannot train with attention dropout \\(0.1\\)"):
        model(batch["images"], batch["text_ids"], batch["text_valid"], batch["visual_cells"])
    for layer in model.bert.encoder.layer:  # without dropout: the CPU has no flex backward
        layer.attention.self.dropout.p = 0.0
    with pytest.raises(ValueError, match="'flex' runs forward only on the CPU"):
        model(batch["images"], batch["text_ids"], batch["text_valid"], batch["visual_cells"])
    model.set_attention_backend("sdpa_bool")
    assert model.bert.config._attn_implementation == "sdpa"
    assert resolve_attention_backend("auto", model.bert) == "sdpa_bool"
    model.attention_backend = "flex"  # set around set_attention_backend: refused, not misread
    with pytest.raises(ValueError, match="set_attention_backend"):
        resolve_attention_backend(model.attention_backend, model.bert)
