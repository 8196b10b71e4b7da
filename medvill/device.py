"""Where a run computes and in which precision: one policy for pretraining and every task.

The policy is a pure function of what the hardware can do (:func:`precision_policy`), so the
CUDA branches are unit-tested on a CPU-only machine: bf16 autocast on a GPU that supports it,
fp16 autocast + GradScaler on one that does not (V100, T4), fp32 on the CPU (CPU autocast is
slower than fp32 for this model and changes the numbers the tests pin down).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class PrecisionPolicy:
    """What one forward/backward runs in: autocast dtype (None = fp32) and whether the loss
    is scaled (fp16 gradients underflow without it; bf16 has fp32's exponent range)."""

    device_type: str
    dtype: torch.dtype | None
    grad_scaler: bool

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """A fresh autocast context (or a no-op one for fp32); enter it once per forward."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device_type) if self.grad_scaler else None


def precision_policy(requested: str, device_type: str, bf16_supported: bool) -> PrecisionPolicy:
    """The precision a run uses, from the profile's ``precision`` and the device's abilities.

    ``auto``: bf16 on CUDA when supported, else fp16 with loss scaling; fp32 on the CPU.
    An explicit ``bf16`` on a GPU without bf16 is an error, not a silent downgrade; mixed
    precision is only used on CUDA (an explicit bf16/fp16 on the CPU runs fp32).
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if device_type != "cuda" or requested == "fp32":
        return PrecisionPolicy(device_type, None, False)
    if requested == "auto":
        requested = "bf16" if bf16_supported else "fp16"
    if requested == "bf16" and not bf16_supported:
        raise ValueError("precision bf16 requested, but this GPU has no bf16 support: use fp16")
    if requested == "bf16":
        return PrecisionPolicy(device_type, torch.bfloat16, False)
    return PrecisionPolicy(device_type, torch.float16, True)


def policy_for(requested: str, device: torch.device) -> PrecisionPolicy:
    """:func:`precision_policy` for a real device (asks CUDA about bf16 only on CUDA)."""
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return precision_policy(requested, device.type, bf16)


def default_device(local_rank: int = 0) -> torch.device:
    """This process's GPU when there is one (torchrun's ``LOCAL_RANK``), else the CPU."""
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def device_label(device: torch.device) -> str:
    """The name of the device that actually ran (for timing labels): a GPU's model name, or
    ``cpu`` — never the GPU's name for work that ran on the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def to_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor inside (dicts, lists, tuples) on ``device``.

    Copies are ``non_blocking``: from pinned host memory (loaders use ``pin_memory`` on CUDA)
    they overlap with compute. Non-tensors (keys, mask names) pass through unchanged.
    """
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(to_device(v, device) for v in value)
    if isinstance(value, list):
        return [to_device(v, device) for v in value]
    return value


def on_device(batches: Iterable[Any], device: torch.device) -> Iterator[Any]:
    """Each batch of ``batches`` moved to ``device`` (see :func:`to_device`)."""
    for batch in batches:
        yield to_device(batch, device)


def loader_options(device: torch.device, num_workers: int) -> dict[str, Any]:
    """DataLoader options for feeding ``device``: pinned memory for fast async host→GPU
    copies, and workers kept alive between epochs (no re-fork, no re-opened files)."""
    return {
        "pin_memory": device.type == "cuda",
        "persistent_workers": num_workers > 0,
    }


def synchronize(device: torch.device) -> Callable[[], None]:
    """A function that waits for ``device``'s queued work (timing needs it on CUDA)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None
