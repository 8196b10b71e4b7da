"""Visual backbone and the joint input embedding ``[CLS] v_1…v_K [SEP] w_1…w_N [SEP]``.

Layout (docs/model.md §4): visual slot i = Linear(CNN feature) + position[grid cell] +
token-type 0; [CLS] and the visual [SEP] = word embedding + position 0 + type 0; text slots =
word embedding + positions 0.. (restarting at the first text slot) + type 1. BERT's own
``BertEmbeddings`` adds the position and type tables, LayerNorm and dropout, so the same
weights as ``bert-base-uncased`` apply and the sum is computed by transformers' code.
"""

from __future__ import annotations

import logging
import os
import socket

import torch
import torchvision
from torch import nn

from medvill.config import MedViLLConfig
from medvill.model.cnn_weights import trunk_state
from medvill.model.smallcnn import small_cnn_trunk

log = logging.getLogger(__name__)

_TORCHVISION_WEIGHTS = {
    "resnet50": "ResNet50_Weights.IMAGENET1K_V2",
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
}


class VisualBackbone(nn.Module):
    """torchvision ResNet trunk (no pooling, no classifier): image → (B, grid², C) features.
    ``backbone: small_cnn`` puts the plain CNN of :mod:`medvill.model.smallcnn` (same slots,
    same stride, no ImageNet weights) in its place, for CPU learnability runs.

    The paper freezes conv1, bn1 and layer1 and trains layer2–4 (``freeze_stem``). With
    ``freeze_batchnorm`` every BatchNorm keeps its running statistics in training too, like
    torchvision's detection backbones: the ImageNet statistics stay valid at small per-GPU
    batches, and a sample's features do not depend on the rest of its batch.
    """

    def __init__(self, config: MedViLLConfig) -> None:
        super().__init__()
        if config.backbone == "small_cnn":
            self.trunk = small_cnn_trunk()
        else:
            resnet = getattr(torchvision.models, config.backbone)(weights=None)
            self.trunk = nn.Sequential(
                resnet.conv1,
                resnet.bn1,
                resnet.relu,
                resnet.maxpool,
                resnet.layer1,
                resnet.layer2,
                resnet.layer3,
                resnet.layer4,
            )
        self.freeze_batchnorm = config.freeze_batchnorm
        self.freeze_stem = config.freeze_stem
        self.apply_freezing()
        for module in self.trunk.modules():
            # Marks the modules whose initialisation follows torchvision, not BERT's N(0, 0.02).
            module._medvill_cnn = True

    def apply_freezing(self) -> None:
        """Freeze conv1, bn1 and layer1 (paper). Called again after ``from_pretrained``, which
        materialises fresh parameters with ``requires_grad=True``."""
        for index, module in enumerate(self.trunk):
            module.requires_grad_(not (self.freeze_stem and index < 5))

    def train(self, mode: bool = True) -> VisualBackbone:
        super().train(mode)
        if self.freeze_batchnorm:
            for module in self.trunk.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.trunk(images)  # (B, C, g, g)
        return features.flatten(2).transpose(1, 2)  # row-major cells: (B, g², C)

    def load_imagenet(self, backbone: str) -> bool:
        """Copy torchvision's ImageNet weights into the trunk; False (and a log line) when they
        cannot be had offline. Only the torch hub cache or a reachable download server is used."""
        if backbone not in _TORCHVISION_WEIGHTS:
            log.warning("%s has no ImageNet weights: random initialisation", backbone)
            return False
        weights = torchvision.models.get_weight(_TORCHVISION_WEIGHTS[backbone])
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
        if not os.path.exists(cached) and not _host_reachable("download.pytorch.org"):
            log.warning(
                "ImageNet weights for %s not cached and download.pytorch.org unreachable: "
                "the visual backbone starts from random initialisation",
                backbone,
            )
            return False
        try:
            state = weights.get_state_dict(progress=False, check_hash=True)
        except Exception as error:  # network errors come in many types; any means "no weights"
            log.warning("could not load ImageNet weights for %s (%s): random init", backbone, error)
            return False
        # torchvision names → ``self.trunk`` indices (fc dropped)
        self.trunk.load_state_dict(trunk_state(state), strict=True)
        log.info("visual backbone: ImageNet weights %s loaded", weights)
        return True


def _host_reachable(host: str, timeout: float = 3.0) -> bool:
    """Cheap check before a download, so an offline machine falls back at once instead of
    spending minutes in retries. Honours ``HF_HUB_OFFLINE``/``MEDVILL_OFFLINE``."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") or os.environ.get("MEDVILL_OFFLINE"):
        return False
    previous = socket.getdefaulttimeout()
    try:
        socket.setdefaulttimeout(timeout)
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(previous)


class VisualProjection(nn.Module):
    """CNN feature (C) → hidden size, plus the optional learned row/column location tables."""

    def __init__(self, config: MedViLLConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(config.visual_feature_dim, config.hidden_size)
        self.grid_size = config.grid_size
        self.row_col = config.visual_position == "row_col"
        if self.row_col:
            self.row_embeddings = nn.Embedding(config.grid_size, config.hidden_size)
            self.col_embeddings = nn.Embedding(config.grid_size, config.hidden_size)

    def forward(self, features: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """``features`` (B, k, C) of grid ``cells`` (k,) → (B, k, hidden)."""
        out = self.proj(features)
        if self.row_col:
            out = out + self.row_embeddings(cells // self.grid_size)
            out = out + self.col_embeddings(cells % self.grid_size)
        return out


def joint_inputs(
    config: MedViLLConfig,
    word_embeddings: nn.Embedding,
    visual: torch.Tensor,
    cells: torch.Tensor,
    text_ids: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Assemble ``inputs_embeds``, ``position_ids`` and ``token_type_ids`` for ``BertEmbeddings``.

    ``visual`` is the projected (B, k, H) block, ``cells`` its grid indices (k,), ``text_ids`` the
    (B, L) text block (tokens, [SEP], padding; with the text [CLS] first under Non-cross).
    """
    batch, k, _ = visual.shape
    device = visual.device
    special = torch.tensor([config.cls_token_id, config.sep_token_id], device=device)
    cls_emb, sep_emb = word_embeddings(special).to(visual.dtype).unbind(0)
    embeds = torch.cat(
        [
            cls_emb.expand(batch, 1, -1),
            visual,
            sep_emb.expand(batch, 1, -1),
            word_embeddings(text_ids).to(visual.dtype),
        ],
        dim=1,
    )
    length = text_ids.shape[1]
    visual_pos = torch.zeros_like(cells) if config.visual_position == "row_col" else cells
    zero = torch.zeros(1, dtype=torch.long, device=device)
    positions = torch.cat([zero, visual_pos.long(), zero, torch.arange(length, device=device)])
    types = torch.cat(
        [
            torch.zeros(k + 2, dtype=torch.long, device=device),
            torch.ones(length, dtype=torch.long, device=device),
        ]
    )
    return embeds, positions[None].expand(batch, -1), types[None].expand(batch, -1)
