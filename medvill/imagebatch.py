"""Loader images → the model's input tensor, on whatever device trains.

The pretraining loader workers only decode each JPEG to its 8-bit grey pixels and draw the
random crop box; this module turns a batch of those into the ImageNet-normalised
(B, 3, size, size) float tensor the ResNet takes. Moving the float work out of the workers is
what lets CPU workers feed a GPU: per 512² sample the workers used to spend ~12 ms on float
conversion, the antialiased crop-resize, normalisation and stacking (3 × 512² float32 = 3 MiB
through inter-process shared memory) against ~1.6 ms on the JPEG decode. On the GPU the same
work is a few kernels per micro-batch, and the host→GPU copy shrinks twelvefold (1 × 512² uint8).

The arithmetic is the one :func:`medvill.data.decode_image` has always done (uint8 → /255 →
torchvision's antialiased bilinear ``resized_crop`` → replicate grey to 3 channels →
(x − mean) / std), in the same order and dtype, so on the CPU a batch is bit-identical to the
per-sample path; on a GPU the interpolation kernel is CUDA's (float rounding may differ in the
last bits).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: (top, left, height, width) of the region of the stored image that becomes the model input.
CropBox = tuple[int, int, int, int]


def stack_sources(images: Sequence[np.ndarray]) -> torch.Tensor:
    """Grey uint8 images (H, W) → one (B, 1, H, W) uint8 tensor, zero-padded at the bottom and
    right when their sizes differ (crop boxes stay inside each image, so padding is never
    read). Shards of the images stage are all one square size: then this is a single copy."""
    if not images:
        raise ValueError("no images to stack")
    if any(a.dtype != np.uint8 or a.ndim != 2 for a in images):
        raise ValueError("expected 2-D uint8 grey images")
    if all(a.shape == images[0].shape for a in images):
        return torch.from_numpy(np.stack(images))[:, None]
    height = max(a.shape[0] for a in images)
    width = max(a.shape[1] for a in images)
    out = torch.zeros(len(images), 1, height, width, dtype=torch.uint8)
    for i, array in enumerate(images):
        out[i, 0, : array.shape[0], : array.shape[1]] = torch.from_numpy(array)
    return out


def full_box(height: int, width: int) -> CropBox:
    """The box of a whole image: no augmentation, only a resize when the size differs."""
    return 0, 0, height, width


def model_images(
    sources: torch.Tensor,
    boxes: Sequence[CropBox] | torch.Tensor,
    size: int,
    memory_format: torch.memory_format = torch.contiguous_format,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """(B, 1, H, W) uint8 images and their crop boxes → (B, 3, size, size) normalised input.

    Runs on ``sources``' device. ``boxes`` is a host-side sequence or (B, 4) CPU tensor: the
    crop sizes decide kernel shapes, so reading them from GPU memory would stall the step.
    ``memory_format`` (``channels_last`` for cuDNN) and ``dtype`` (the autocast dtype, which
    the first convolution would cast to anyway) are applied after the fp32 normalisation, so
    they never change its values.
    """
    if sources.dtype != torch.uint8 or sources.dim() != 4 or sources.shape[1] != 1:
        raise ValueError(f"expected (B, 1, H, W) uint8 images, got {tuple(sources.shape)} "
                         f"{sources.dtype}")  # fmt: skip
    if isinstance(boxes, torch.Tensor):
        if boxes.device.type != "cpu":
            raise ValueError("crop boxes must stay on the host (reading them would sync)")
        boxes = [tuple(int(v) for v in box) for box in boxes.tolist()]
    if len(boxes) != sources.shape[0]:
        raise ValueError(f"{len(boxes)} crop boxes for {sources.shape[0]} images")
    scaled = sources.float().div_(255.0)
    crops = [
        TF.resized_crop(scaled[i], top, left, h, w, [size, size], antialias=True)
        for i, (top, left, h, w) in enumerate(boxes)
    ]
    grey = torch.stack(crops).expand(-1, 3, -1, -1)
    mean, std = _statistics(sources.device)
    images = (grey - mean) / std
    if memory_format != torch.contiguous_format:
        images = images.contiguous(memory_format=memory_format)
    return images if dtype is None else images.to(dtype)


@functools.lru_cache(maxsize=8)
def _statistics(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std as (1, 3, 1, 1) tensors on ``device``, copied there once."""
    mean = torch.tensor(IMAGENET_MEAN, device=device)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD, device=device)[None, :, None, None]
    return mean, std
