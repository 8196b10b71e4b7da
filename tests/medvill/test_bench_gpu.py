"""benchmarks/bench_gpu.py on a machine without CUDA, and its FLOP count on a tiny model."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.bench_gpu import (
    backend_agreement,
    flops_per_sample,
    mask_bytes,
    parse_backends,
    synthetic_batch,
)
from medvill.config import MedViLLConfig
from medvill.device import PrecisionPolicy, policy_for
from medvill.model.medvill import MedViLLForPretraining

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: it would benchmark")
def test_without_cuda_it_says_so_and_exits_cleanly():
    run = subprocess.run(
        [sys.executable, "benchmarks/bench_gpu.py", "--steps", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "no CUDA device" in run.stdout


def tiny_config() -> MedViLLConfig:
    return MedViLLConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, backbone="resnet18", image_size=64, num_sampled_visual=3,
        max_text_tokens=16, max_position_embeddings=64, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip


def test_synthetic_batch_has_the_paper_layout():
    config = tiny_config()
    batch = synthetic_batch(config, 4, torch.device("cpu"))
    slots = config.text_slots()
    assert batch["images"].shape == (4, 3, 64, 64)
    assert batch["text_ids"].shape == (4, slots)
    assert batch["visual_cells"].tolist() == sorted(batch["visual_cells"].tolist())
    assert len(batch["visual_cells"]) == 3
    labelled = batch["mlm_labels"] != -100
    assert (batch["text_ids"][labelled] == config.mask_token_id).all()
    assert not labelled[:, -1].any()  # [SEP] is never a target
    assert batch["irm_labels"].tolist() == [0, 1, 0, 1]


def test_flop_count_is_per_sample_and_covers_the_encoder_training_flops():
    """Counting is linear in the batch (per-sample value independent of batch size) and at
    least the 6 × parameters × tokens of the encoder's linear layers (2 forward + 4 backward
    per weight and token; the ResNet, attention scores and heads come on top)."""
    torch.manual_seed(0)
    config = tiny_config()
    model = MedViLLForPretraining(config).train()
    one = flops_per_sample(model, synthetic_batch(config, 1, torch.device("cpu")))
    three = flops_per_sample(model, synthetic_batch(config, 3, torch.device("cpu")))
    assert three == pytest.approx(one, rel=0.02)
    tokens = config.num_sampled_visual + 2 + config.text_slots()
    linear = sum(
        m.weight.numel()
        for m in model.medvill.bert.encoder.modules()
        if isinstance(m, torch.nn.Linear)
    )
    assert one >= 6 * linear * tokens
    assert all(p.grad is None for p in model.parameters())  # the count leaves no gradients


def test_attention_flag_names_known_backends():
    assert parse_backends("reference, sdpa_bool") == ["reference", "sdpa_bool"]
    with pytest.raises(argparse.ArgumentTypeError, match="comma list of"):
        parse_backends("reference,flash")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_backends(" , ")


def test_mask_bytes_per_backend_at_the_batch_shape():
    """(B, 1, S, S) with S = K + 2 + text slots: fp32 additive 4 bytes a pair, the boolean
    mask 1, the compute-dtype additive mask 2 under bf16 autocast (4 without autocast)."""
    config = tiny_config()
    batch = synthetic_batch(config, 4, torch.device("cpu"))
    pairs = 4 * (3 + 2 + config.text_slots()) ** 2
    assert mask_bytes(config, batch, "reference", torch.bfloat16) == 4 * pairs
    assert mask_bytes(config, batch, "sdpa_bool", torch.bfloat16) == pairs
    assert mask_bytes(config, batch, "auto", None) == pairs
    assert mask_bytes(config, batch, "sdpa_compute_dtype", torch.bfloat16) == 2 * pairs
    assert mask_bytes(config, batch, "sdpa_compute_dtype", None) == 4 * pairs


def test_backend_agreement_measures_each_backend_against_the_reference():
    """On the CPU the backends agree exactly (fp32) and within bf16 rounding under autocast;
    the model's chosen backend and training mode are restored afterwards."""
    torch.manual_seed(0)
    config = tiny_config()
    model = MedViLLForPretraining(config).train()
    model.medvill.set_attention_backend("sdpa_bool")
    batch = synthetic_batch(config, 2, torch.device("cpu"))
    batch["text_valid"][1, -4:] = False
    backends = ["sdpa_bool", "sdpa_compute_dtype"]
    fp32 = backend_agreement(model, batch, backends, policy_for("fp32", torch.device("cpu")))
    assert set(fp32) == set(backends) and max(fp32.values()) <= 1e-5
    cpu_bf16 = PrecisionPolicy("cpu", torch.bfloat16, grad_scaler=False)  # CPU autocast
    bf16 = backend_agreement(model, batch, backends, cpu_bf16)
    assert max(bf16.values()) <= 8e-3
    assert model.training and model.medvill.attention_backend == "sdpa_bool"


def test_synthetic_batch_carries_the_loaders_images_for_the_step():
    """Timed steps start from 8-bit images and host-side crop boxes, as the trainer's do."""
    config = tiny_config()
    batch = synthetic_batch(config, 3, torch.device("meta"))
    assert batch["image_sources"].device.type == "meta"
    assert batch["image_sources"].dtype == torch.uint8
    assert batch["image_sources"].shape == (3, 1, 64, 64)
    boxes = batch["crop_boxes"]
    assert boxes.device.type == "cpu" and boxes.shape == (3, 4)
    top, left, h, w = boxes.unbind(1)
    assert bool(((top + h <= 64) & (left + w <= 64) & (h > 0) & (w > 0)).all())


def test_flex_mask_is_tile_tables_not_a_dense_matrix():
    """At the paper's sequence (S = 436) the flex block mask is a few tile tables plus the
    (B, S) key validity, against B × S² bytes for the boolean mask."""
    config = MedViLLConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, backbone="resnet18", image_size=512, num_sampled_visual=180,
        max_text_tokens=253, max_position_embeddings=512,
    )  # fmt: skip
    batch = synthetic_batch(config, 2, torch.device("cpu"))
    dense = mask_bytes(config, batch, "sdpa_bool", None)
    flex = mask_bytes(config, batch, "flex", None)
    assert dense == 2 * 436**2
    assert 2 * 436 < flex < dense / 100
    assert parse_backends("flex,sdpa_bool") == ["flex", "sdpa_bool"]


def test_attention_dropout_is_set_on_every_layer_and_the_old_value_returned():
    from benchmarks.bench_gpu import set_attention_dropout

    model = MedViLLForPretraining(tiny_config())
    assert set_attention_dropout(model, 0.3) == 0.0  # tiny_config has no attention dropout
    ps = {m.dropout.p for m in model.modules() if type(m).__name__ == "BertSelfAttention"}
    assert ps == {0.3}
