"""A small plain CNN laid out like a torchvision ResNet trunk, for CPU learnability runs.

Why: a from-scratch ResNet-18 costs about 0.6 GMAC per 128² image, and on two CPU cores the
``learn`` profile could afford only a few dozen steps per task, far too few for a CNN started
from random weights to find the signs of the synthetic corpus (issue 13: every metric sat at
its no-image floor). This trunk is about ten times cheaper (≈ 63 MMAC at 128²) and a plain
classifier of its size reaches micro-AUROC 0.99 on the corpus in a few minutes
(``benchmarks/bench_image_signal.py``). It has no ImageNet weights; the paper profile keeps
ResNet-50.

Layout: the same eight slots as the ResNet trunk of :class:`medvill.model.embeddings.
VisualBackbone` (conv1, bn1, relu, maxpool, layer1…layer4) and the same total stride of 32, so
the feature grid (``image_size // 32``), the stem freezing (slots 0–4) and every consumer of the
(B, grid², C) features stay as they are. conv1 keeps full resolution, so a line two pixels
wide (a tube, a band of atelectasis) is seen before any pooling.
"""

from __future__ import annotations

from torch import nn

#: Channels of conv1 and of layer1…layer4; the last one is the visual feature size.
SMALL_CNN_CHANNELS: tuple[int, ...] = (16, 32, 64, 128, 256)


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    """Halve the resolution and widen: 3×3 stride-2 conv, then a 3×3 conv, each BN + ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def small_cnn_trunk() -> nn.Sequential:
    """(B, 3, H, W) → (B, 256, H/32, W/32), in the ResNet trunk's eight slots."""
    stem, *widths = SMALL_CNN_CHANNELS
    stages = [_stage(c_in, c_out) for c_in, c_out in zip([stem, *widths[:-1]], widths, strict=True)]
    return nn.Sequential(
        nn.Conv2d(3, stem, 3, padding=1, bias=False),
        nn.BatchNorm2d(stem),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        *stages,
    )
