"""Attention backends: the boolean SDPA mask and the compute-dtype additive mask allow exactly
the reference mask's pairs, and the encoder computes the same function through each (fp32
tight, CPU bf16 autocast within bf16 rounding)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medvill.model.encoder import attention_mask_for, resolve_attention_backend
from medvill.model.masks import bi_s2s_mask, build_mask, resolve_mask_type, to_sdpa_bool
from medvill.model.medvill import MedViLLModel
from medvill.pretrain import TrainSettings
from tests.medvill.test_model import fixed_batch, tiny_config

CONCRETE = ("bar", "bi", "s2s", "noncross")


def ragged_valid() -> torch.Tensor:
    """Four reports of different lengths in 9 text slots (0, 2, 5 and 8 padding slots)."""
    lengths = torch.tensor([9, 7, 4, 1])
    return torch.arange(9)[None, :] < lengths[:, None]


@pytest.mark.parametrize("kind", [*CONCRETE, "bi_s2s"])
def test_boolean_mask_allows_exactly_the_reference_pairs(kind: str) -> None:
    valid = ragged_valid()
    draws = (
        [resolve_mask_type(kind, torch.Generator().manual_seed(s)) for s in range(8)]
        if kind == "bi_s2s"
        else [kind]
    )
    if kind == "bi_s2s":
        assert set(draws) == {"bi", "s2s"}  # both outcomes of the per-batch draw are covered
        # the per-example helper draws from the same generator stream the same way
        for seed, drawn in enumerate(draws):
            direct = bi_s2s_mask(3, valid, torch.Generator().manual_seed(seed))
            assert torch.equal(direct, build_mask(drawn, 3, valid))
    for concrete in draws:
        fast = attention_mask_for(concrete, 3, valid, "sdpa_bool", torch.float32)
        reference = attention_mask_for(concrete, 3, valid, "reference", torch.float32)
        assert fast.dtype == torch.bool and fast.shape == reference.shape == (4, 1, 14, 14)
        assert torch.equal(fast, reference == 0)
        assert torch.equal(fast[:, 0], build_mask(concrete, 3, valid))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            in_bf16 = attention_mask_for(concrete, 3, valid, "sdpa_compute_dtype", torch.float32)
        assert in_bf16.dtype == torch.bfloat16 and torch.equal(in_bf16 == 0, fast)
        outside = attention_mask_for(concrete, 3, valid, "sdpa_compute_dtype", torch.float32)
        assert torch.equal(outside, reference)  # no autocast: the reference mask itself
        assert bool((reference[~fast] == torch.finfo(torch.float32).min).all())
        # SDPA gives NaN for a query with no allowed key; every row sees a [CLS]: the image's,
        # or under Non-cross the text block's own (its first slot, never padding)
        assert bool(fast.any(dim=-1).all())
        sees_cls = fast[..., 0] | (fast[..., 5] if concrete == "noncross" else False)
        assert bool(sees_cls.all())


def test_to_sdpa_bool_rejects_a_float_mask() -> None:
    with pytest.raises(ValueError, match="boolean"):
        to_sdpa_bool(torch.zeros(2, 5, 5))


@pytest.mark.parametrize("kind", CONCRETE)
def test_sdpa_attention_output_is_the_same_under_both_masks(kind: str) -> None:
    valid = ragged_valid()
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(4, 2, 14, 8, generator=g) for _ in range(3))
    fast = attention_mask_for(kind, 3, valid, "sdpa_bool", torch.float32)
    reference = attention_mask_for(kind, 3, valid, "reference", torch.float32)
    out_fast = F.scaled_dot_product_attention(q, k, v, attn_mask=fast)
    out_reference = F.scaled_dot_product_attention(q, k, v, attn_mask=reference)
    assert torch.allclose(out_fast, out_reference, atol=1e-6, rtol=0)
    # the same in bf16, against the fp32 reference, within bf16 rounding
    half = [t.bfloat16() for t in (q, k, v)]
    reference_bf16 = attention_mask_for(kind, 3, valid, "reference", torch.bfloat16)
    fast_bf16 = F.scaled_dot_product_attention(*half, attn_mask=fast).float()
    ref_bf16 = F.scaled_dot_product_attention(*half, attn_mask=reference_bf16).float()
    assert torch.allclose(fast_bf16, ref_bf16, atol=1e-2, rtol=0)
    assert torch.allclose(fast_bf16, out_reference, atol=3e-2, rtol=0)


def _encoder_outputs(model: MedViLLModel, batch: dict, kind: str, backend: str) -> torch.Tensor:
    model.set_attention_backend(backend)
    return model(
        batch["images"], batch["text_ids"], batch["text_valid"], batch["visual_cells"], kind
    ).last_hidden_state


@pytest.mark.parametrize("backend", ["sdpa_bool", "sdpa_compute_dtype"])
@pytest.mark.parametrize("kind", CONCRETE)
def test_encoder_output_is_the_same_through_each_backend(kind: str, backend: str) -> None:
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = MedViLLModel(config).eval()
    batch = fixed_batch(config, seed=3)  # example 1 has three padding slots
    batch["text_valid"][2, -5:] = False  # and example 2 five
    with torch.no_grad():
        reference = _encoder_outputs(model, batch, kind, "reference")
        fast = _encoder_outputs(model, batch, kind, backend)
        assert torch.allclose(fast, reference, atol=1e-5, rtol=0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reference_bf16 = _encoder_outputs(model, batch, kind, "reference")
            fast_bf16 = _encoder_outputs(model, batch, kind, backend)
        other = "bi" if kind != "bi" else "bar"
        wrong = _encoder_outputs(model, batch, other, "reference")
    assert fast_bf16.dtype == reference_bf16.dtype
    # bf16 tolerance: about two bf16 steps at the O(1) scale of LayerNorm outputs (kernels on
    # a GPU may round differently per mask form; on CPU the two agree exactly)
    tolerance = 8e-3
    assert torch.allclose(fast_bf16.float(), reference_bf16.float(), atol=tolerance, rtol=0)
    assert torch.allclose(fast_bf16.float(), reference, atol=5e-2, rtol=0)  # bf16 vs fp32
    # the tolerances can fail: another mask type moves the output by more than either
    assert (wrong - reference).abs().max() > tolerance
    assert (wrong - reference).abs().max() > 1e-5


def test_auto_follows_the_attention_implementation_and_bool_refuses_eager() -> None:
    model = MedViLLModel(tiny_config())
    assert resolve_attention_backend("auto", model.bert) == "sdpa_bool"
    assert resolve_attention_backend("reference", model.bert) == "reference"
    model.bert.config._attn_implementation = "eager"
    assert resolve_attention_backend("auto", model.bert) == "reference"
    for backend in ("sdpa_bool", "sdpa_compute_dtype"):
        with pytest.raises(ValueError, match=f"'{backend}' needs BERT's SDPA attention.*'eager'"):
            model.set_attention_backend(backend)
    with pytest.raises(ValueError, match="unknown attention backend 'flash'"):
        model.set_attention_backend("flash")
    assert model.attention_backend == "auto"  # a refused choice leaves the old one


def test_pretraining_settings_name_a_known_backend() -> None:
    assert TrainSettings.from_dict({}).attention_backend == "auto"
    assert TrainSettings.from_dict({"attention_backend": "reference"}).attention_backend == (
        "reference"
    )
    with pytest.raises(ValueError, match="train.attention_backend 'flash' is not one of"):
        TrainSettings.from_dict({"attention_backend": "flash"})
