"""Golden outputs: a tiny model with fixed weights on a fixed input gives stored numbers.

The other model tests check properties (shapes, masks, save/load equality); none would notice
if an upgrade of transformers or torch quietly changed what the encoder computes (a different
attention path, LayerNorm epsilon handling, GELU variant, pooler). This one does: the weights
are written from a seeded generator by this file — not by any library's initialiser, which may
legitimately change — and the outputs must match ``tests/fixtures/golden/medvill_tiny.json``
to 2e-5 (relative to the largest value).

After a deliberate change of the model, regenerate with
``MEDVILL_REGENERATE_GOLDEN=1 python -m pytest tests/medvill/test_golden_outputs.py`` and say
why in the commit.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from medvill.model.medvill import MedViLLForPretraining
from tests.medvill.test_model import fixed_batch, tiny_config

FIXTURE = Path(__file__).parents[1] / "fixtures" / "golden" / "medvill_tiny.json"
TOLERANCE = 2e-5  # float noise between attention paths is ~1e-6; tanh-GELU moves 4e-4


def golden_model() -> MedViLLForPretraining:
    """The tiny model (dropout off) with every parameter drawn from one seeded generator in
    sorted-name order; BatchNorm running statistics stay at mean 0, variance 1."""
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = MedViLLForPretraining(config).eval()
    generator = torch.Generator().manual_seed(20240601)
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            noise = torch.randn(parameter.shape, generator=generator)
            if (
                parameter.dim() >= 2
            ):  # conv / linear / embedding: He-scaled so 18 layers stay finite
                fan_in = math.prod(parameter.shape[1:])
                parameter.copy_(noise * math.sqrt(2.0 / fan_in))
            elif name.endswith("weight"):  # LayerNorm / BatchNorm scale
                parameter.copy_(1.0 + 0.1 * noise)
            else:  # biases
                parameter.copy_(0.02 * noise)
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.zero_()
            elif name.endswith("running_var"):
                buffer.fill_(1.0)
    model.tie_weights()
    return model


def golden_outputs() -> dict[str, list]:
    model = golden_model()
    batch = fixed_batch(model.config, batch=2, seed=5)
    out: dict[str, list] = {}
    with torch.no_grad():
        for kind in ("bar", "s2s", "bi"):
            result = model(**batch, mask_type=kind)
            out[f"{kind}.pooled_output"] = result.pooled_output.tolist()
            out[f"{kind}.irm_logits"] = result.irm_logits.tolist()
            out[f"{kind}.mlm_logits"] = result.mlm_logits[:, :20].tolist()
            out[f"{kind}.last_hidden_state"] = result.last_hidden_state[:, :, :6].tolist()
    return out


def test_outputs_match_the_stored_golden_values() -> None:
    actual = golden_outputs()
    if os.environ.get("MEDVILL_REGENERATE_GOLDEN"):
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(json.dumps(actual, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"regenerated {FIXTURE}")
    expected = json.loads(FIXTURE.read_text())
    assert sorted(actual) == sorted(expected)
    for key, values in expected.items():
        want, got = torch.tensor(values), torch.tensor(actual[key])
        assert got.shape == want.shape, key
        assert torch.isfinite(want).all() and want.abs().max() > 1e-3, key  # not a dead net
        worst = (got - want).abs().max().item()
        assert worst <= TOLERANCE * max(1.0, want.abs().max().item()), f"{key}: off by {worst}"
