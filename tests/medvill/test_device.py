"""The precision policy shared by pretraining and the tasks, and moving batches to a device."""

from __future__ import annotations

import pytest
import torch

from medvill.device import (
    device_label,
    loader_options,
    on_device,
    precision_policy,
    to_device,
)


def test_auto_precision_is_bf16_on_a_gpu_with_bf16():
    policy = precision_policy("auto", "cuda", bf16_supported=True)
    assert (policy.dtype, policy.grad_scaler, policy.name) == (torch.bfloat16, False, "bf16")


def test_auto_precision_is_fp16_with_loss_scaling_on_a_gpu_without_bf16():
    policy = precision_policy("auto", "cuda", bf16_supported=False)
    assert (policy.dtype, policy.grad_scaler, policy.name) == (torch.float16, True, "fp16")
    assert precision_policy("fp16", "cuda", bf16_supported=True).grad_scaler


def test_cpu_runs_fp32_whatever_is_requested():
    for requested in ("auto", "bf16", "fp16", "fp32"):
        policy = precision_policy(requested, "cpu", bf16_supported=False)
        assert (policy.dtype, policy.grad_scaler) == (None, False)
        assert policy.scaler() is None
    assert precision_policy("fp32", "cuda", bf16_supported=True).dtype is None


def test_explicit_bf16_on_a_gpu_without_it_and_unknown_names_are_errors():
    with pytest.raises(ValueError, match="no bf16 support"):
        precision_policy("bf16", "cuda", bf16_supported=False)
    with pytest.raises(ValueError, match="precision must be one of"):
        precision_policy("int8", "cuda", bf16_supported=True)


def test_fp32_autocast_context_changes_nothing():
    layer = torch.nn.Linear(4, 4)
    with precision_policy("auto", "cpu", False).autocast():
        assert layer(torch.ones(1, 4)).dtype == torch.float32


def test_every_tensor_of_a_nested_batch_moves_and_the_rest_passes_through():
    batch = {
        "images": torch.zeros(2, 3, 8, 8),
        "labels": torch.ones(2, dtype=torch.long),
        "pairs": [torch.zeros(1), (torch.ones(1), "a")],
        "keys": ["k1", "k2"],
        "mask_type": "bi",
        "step": 3,
    }
    moved = to_device(batch, torch.device("meta"))
    tensors = [moved["images"], moved["labels"], moved["pairs"][0], moved["pairs"][1][0]]
    assert all(t.device.type == "meta" for t in tensors)
    assert moved["images"].shape == (2, 3, 8, 8) and moved["labels"].dtype == torch.long
    assert (moved["keys"], moved["mask_type"], moved["step"]) == (["k1", "k2"], "bi", 3)
    assert batch["images"].device.type == "cpu"  # the input is not modified
    streamed = list(on_device([batch, batch], torch.device("meta")))
    assert [b["images"].device.type for b in streamed] == ["meta", "meta"]


def test_loader_options_pin_memory_only_for_cuda_and_keep_workers():
    assert loader_options(torch.device("cuda", 0), 4) == {
        "pin_memory": True,
        "persistent_workers": True,
    }
    assert loader_options(torch.device("cpu"), 0) == {
        "pin_memory": False,
        "persistent_workers": False,
    }


def test_timing_label_of_a_cpu_run_is_cpu():
    assert device_label(torch.device("cpu")) == "cpu"


def test_a_task_batch_moves_whole_to_the_device():
    """Classification's collated batch (what train_loop and predict move) leaves nothing
    behind on the host but its keys."""
    import numpy as np

    from medvill.tasks.classification import collate

    items = [
        {
            "key": f"k{i}",
            "image": torch.zeros(3, 8, 8),
            "text_ids": np.arange(6, dtype=np.int64),
            "text_valid": np.ones(6, dtype=bool),
            "target": np.zeros(14, dtype=np.float32),
            "valid": np.ones(14, dtype=bool),
        }
        for i in range(2)
    ]
    moved = to_device(collate(items), torch.device("meta"))
    tensors = {k: v for k, v in moved.items() if isinstance(v, torch.Tensor)}
    assert set(tensors) == {"images", "text_ids", "text_valid", "target", "valid"}
    assert {v.device.type for v in tensors.values()} == {"meta"}
    assert moved["keys"] == ["k0", "k1"]
