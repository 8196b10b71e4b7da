"""The two localized heads on a ResNet's feature pyramid (layer1–layer4, strides 4–32).

* **Detection**: torchvision's Faster R-CNN with an FPN over the four stages (plus its max-pool
  level), anchors scaled to the input (``image_size / 16`` … ``image_size``, ratios ½, 1, 2), no
  resize inside the detector (images come at ``image_size``², already normalised). LoVT used
  YOLOv3 on RSNA; any torchvision detector on our backbone answers the same question (does the
  pretrained trunk localize?) with a maintained implementation.
* **Segmentation**: an FPN decoder — torchvision's ``FeaturePyramidNetwork`` merges the four
  stages top-down, a 3×3 conv + 1×1 conv on the stride-4 level gives one logit per pixel,
  bilinearly upsampled to the input. Small on purpose: the trunk should do the work.

``frozen`` keeps the trunk's weights and BatchNorm statistics fixed (a linear-evaluation analogue
for localized tasks); ``finetuned`` trains everything, BatchNorm included.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

VARIANTS: tuple[str, ...] = ("frozen", "finetuned")
RETURN_LAYERS = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}


def freeze_trunk(trunk: nn.Module, variant: str) -> None:
    """No gradient into the trunk for ``frozen``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    trunk.requires_grad_(variant == "finetuned")


def set_training(model: nn.Module, trunk: nn.Module, variant: str) -> None:
    """Train mode for the head; a frozen trunk keeps its BatchNorm statistics (eval mode)."""
    model.train()
    if variant == "frozen":
        trunk.eval()


def detector(
    resnet: nn.Module,
    channels: list[int],
    num_classes: int,
    image_size: int,
    fpn_channels: int,
    proposals: int = 1000,
) -> tuple[FasterRCNN, nn.Module]:
    """(Faster R-CNN over the ResNet, its trunk) for ``num_classes`` findings + background;
    ``proposals`` region proposals per image after NMS (torchvision: 2,000 in training, 1,000
    in testing; a small image needs far fewer, and the ROI head's time grows with them)."""
    backbone = BackboneWithFPN(
        resnet, RETURN_LAYERS, channels, fpn_channels, extra_blocks=LastLevelMaxPool()
    )
    base = image_size / 16
    anchors = AnchorGenerator(
        sizes=tuple((base * 2**i,) for i in range(5)), aspect_ratios=((0.5, 1.0, 2.0),) * 5
    )
    model = FasterRCNN(
        backbone,
        num_classes=num_classes + 1,
        min_size=image_size,
        max_size=image_size,
        image_mean=[0.0, 0.0, 0.0],  # inputs are already ImageNet-normalised
        image_std=[1.0, 1.0, 1.0],
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=2 * proposals,
        rpn_post_nms_top_n_train=proposals,
        rpn_pre_nms_top_n_test=2 * proposals,
        rpn_post_nms_top_n_test=proposals,
        box_batch_size_per_image=min(512, proposals),
    )
    return model, backbone.body


class FPNSegmenter(nn.Module):
    """ResNet stages → FPN → one logit per input pixel."""

    def __init__(self, resnet: nn.Module, channels: list[int], fpn_channels: int) -> None:
        super().__init__()
        self.body = IntermediateLayerGetter(resnet, RETURN_LAYERS)
        self.fpn = FeaturePyramidNetwork(channels, fpn_channels)
        self.head = nn.Sequential(
            nn.Conv2d(fpn_channels, fpn_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(fpn_channels, 1, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → (B, S, S) logits."""
        finest = self.fpn(self.body(images))["0"]
        logits = self.head(finest)
        size = images.shape[-2:]
        return nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)[
            :, 0
        ]


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy + soft Dice (1 − (2·Σpt + 1) / (Σp + Σt + 1)), averaged over the batch:
    the Dice term keeps a small foreground from being drowned by the background."""
    target = target.to(logits.dtype)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target)
    probs = logits.sigmoid()
    overlap = (probs * target).flatten(1).sum(1)
    total = probs.flatten(1).sum(1) + target.flatten(1).sum(1)
    soft_dice = 1.0 - (2.0 * overlap + 1.0) / (total + 1.0)
    return bce + soft_dice.mean()
