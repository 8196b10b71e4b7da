"""No host syncs inside a pretraining step: every micro-batch runs without reading device data.

A CPU-only machine cannot observe CUDA syncs, so the step runs on PyTorch's ``meta`` device,
whose tensors have shapes but no values: anything that reads device data on the host — ``.item()``,
``.tolist()``, ``.cpu()``, ``bool(tensor)``, boolean-mask indexing or ``nonzero`` (their output
size depends on the values) — either fails there or is recorded by the patched readers below.
The only reads allowed are the step's metrics, once, after the last backward pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from medvill.device import policy_for
from medvill.imagebatch import stack_sources
from medvill.model.medvill import MedViLLForPretraining
from medvill.pretrain import Dist, TrainSettings, _train_step
from tests.medvill.test_model import tiny_config

META = torch.device("meta")


def host_batch(config: Any, seed: int, size: int = 64) -> dict[str, Any]:
    """A micro-batch as the pretraining loader yields it (host memory, uint8 images)."""
    rng = np.random.default_rng(seed)
    slots = config.text_slots()
    ids = torch.from_numpy(rng.integers(5, config.vocab_size, (3, slots)))
    valid = torch.ones(3, slots, dtype=torch.bool)
    valid[1, -2:] = False
    labels = torch.full_like(ids, -100)
    labels[:, 1] = ids[:, 1]
    labels[2, 3] = ids[2, 3]
    arrays = [rng.integers(0, 256, (72, 72), dtype=np.uint8) for _ in range(3)]
    return {
        "keys": ["a", "b", "c"],
        "image_sources": stack_sources(arrays),
        "crop_boxes": torch.tensor([(0, 0, 72, 72), (4, 2, 60, 66), (8, 8, 50, 44)]),
        "image_size": size,
        "text_ids": ids,
        "text_valid": valid,
        "mlm_labels": labels,
        "irm_labels": torch.tensor([1, 0, 1]),
        "visual_cells": torch.tensor([0, 2, 3]),
        "mask_type": "bar",
        "step": 0,
    }


def test_meta_device_refuses_every_data_dependent_read() -> None:
    """The premise: on ``meta`` these sync-causing reads cannot happen silently."""
    x = torch.ones(4, device=META)
    for read in (lambda: x[x > 0], lambda: x.cpu(), lambda: bool(x.sum()), lambda: x.nonzero()):
        with pytest.raises((RuntimeError, NotImplementedError)):
            read()


@pytest.mark.parametrize("accumulation", [1, 3])
def test_a_training_step_reads_device_data_once_at_the_end(monkeypatch, accumulation) -> None:
    config = tiny_config(image_size=64)
    torch.manual_seed(0)
    model = MedViLLForPretraining(config).to(META).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    settings = TrainSettings(max_grad_norm=1.0)
    micro = [host_batch(config, seed) for seed in range(accumulation)]

    events: list[str] = []
    item, tolist, backward = torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.backward

    def read(original: Any, name: str) -> Any:
        def reader(self: torch.Tensor) -> Any:
            if self.device.type == "cpu":
                return original(self)  # host tensors (the loader's) are free to read
            events.append(f"{name} {tuple(self.shape)}")
            values = torch.zeros(self.shape)
            return values.item() if name == "item" else values.tolist()

        return reader

    def counted_backward(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        events.append("backward")
        return backward(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "item", read(item, "item"))
    monkeypatch.setattr(torch.Tensor, "tolist", read(tolist, "tolist"))
    monkeypatch.setattr(torch.Tensor, "backward", counted_backward)
    row = _train_step(
        model, micro, optimizer, scheduler, None, policy_for("fp32", torch.device("cpu")),
        settings, Dist(device=META),
    )  # fmt: skip

    # every micro-batch ran forward and backward without one read; then the metrics, once:
    # the summed statistics (MLM, IRM, IRM correct) and the global-batch counts
    assert events[:accumulation] == ["backward"] * accumulation
    reads = events[accumulation:]
    assert "backward" not in reads and 1 <= len(reads) <= 2, events
    assert "tolist (3,)" in reads
    assert set(row) == {"loss", "mlm_loss", "irm_loss", "irm_accuracy", "lr"}
    assert all(p.grad is None for p in params)  # the step finished: gradients were cleared
