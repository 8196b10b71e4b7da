"""The ResNet whose features the localized heads read, under each initialisation LoVT compares.

* ``pretrained``: the image encoder of one of our checkpoints — any family built on
  :class:`~medvill.model.embeddings.VisualBackbone` (MedViLL's CNN, ConVIRT, CLIP, LoVT). Only
  the trunk's tensors are read from ``model.safetensors`` (``…visual_backbone.trunk.<i>.…``),
  so the text encoder is never built; ``config.json`` names the ResNet (``backbone``).
* ``imagenet``: torchvision's ImageNet weights, **only** from the local torch hub cache — the
  code never downloads. Absent → :func:`load_resnet` returns ``None`` with the reason, and the
  experiment skips that arm and says so (never a random network under the ImageNet name).
* ``random``: torchvision's own initialisation under the run's seed.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
import torchvision
from safetensors import safe_open
from torch import nn

from medvill.config import BACKBONE_CHANNELS
from medvill.model.cnn_weights import TORCHVISION_SLOTS, TRUNK_MARK
from medvill.model.embeddings import _TORCHVISION_WEIGHTS

log = logging.getLogger(__name__)

INITS: tuple[str, ...] = ("pretrained", "imagenet", "random")
#: VisualBackbone.trunk's indices → torchvision ResNet attribute names.
TRUNK_NAMES: dict[str, str] = {slot: name for name, slot in TORCHVISION_SLOTS.items()}
_TRUNK_MARK = TRUNK_MARK


def stage_channels(backbone: str) -> list[int]:
    """Output channels of layer1..layer4 (the feature pyramid's inputs)."""
    last = BACKBONE_CHANNELS[backbone]
    return [last // 8, last // 4, last // 2, last]


def checkpoint_backbone(checkpoint: Path) -> str:
    """The ResNet a checkpoint's image encoder is (``backbone`` of its config.json)."""
    config = json.loads((Path(checkpoint) / "config.json").read_text(encoding="utf-8"))
    backbone = config.get("backbone")
    if backbone not in BACKBONE_CHANNELS:
        raise ValueError(
            f"{checkpoint}/config.json: model_type {config.get('model_type')!r} has no ResNet "
            f"image encoder (backbone {backbone!r}); localized evaluation needs one of "
            f"{sorted(BACKBONE_CHANNELS)} (families medvill, convirt, clip, lovt)"
        )
    return str(backbone)


def trunk_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The image trunk's tensors of a checkpoint, under torchvision's ResNet names."""
    path = Path(checkpoint) / "model.safetensors"
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
            if _TRUNK_MARK not in key:
                continue
            rest = key.split(_TRUNK_MARK, 1)[1]
            slot, name = rest.split(".", 1)
            state[f"{TRUNK_NAMES[slot]}.{name}"] = handle.get_tensor(key)
    if not state:
        raise ValueError(f"{path} holds no `{_TRUNK_MARK}*` tensors: not a ResNet image encoder")
    return state


def imagenet_cache(backbone: str) -> Path:
    """Where torchvision keeps the ImageNet weights of ``backbone`` once downloaded."""
    weights = torchvision.models.get_weight(_TORCHVISION_WEIGHTS[backbone])
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def load_resnet(
    init: str, backbone: str, seed: int, checkpoint: Path | None = None
) -> tuple[nn.Module | None, str]:
    """(torchvision ResNet, where its weights came from), or (None, why) when the ImageNet
    weights are not on this machine."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    with torch.random.fork_rng(devices=[]):  # the seed decides the weights, nothing else
        torch.manual_seed(seed)
        resnet = getattr(torchvision.models, backbone)(weights=None)
    resnet.fc = nn.Identity()
    if init == "random":
        return resnet, f"random (torchvision init, seed {seed})"
    if init == "imagenet":
        cached = imagenet_cache(backbone)
        if not cached.is_file():
            return None, f"ImageNet weights for {backbone} not in the local cache ({cached})"
        state = torch.load(cached, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        resnet.load_state_dict(state, strict=False)
        return resnet, f"imagenet ({cached.name})"
    if checkpoint is None:
        raise ValueError("init 'pretrained' needs a checkpoint")
    state = trunk_state(checkpoint)
    missing, unexpected = resnet.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(
            f"{checkpoint}: the image encoder does not fit torchvision's {backbone} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return resnet, f"pretrained ({checkpoint})"
