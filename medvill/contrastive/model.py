"""Dual-encoder contrastive models (ConVIRT, CLIP, LoVT) as a transformers ``PreTrainedModel``.

Shared parts: the torchvision ResNet trunk of MedViLL (:class:`~medvill.model.embeddings.
VisualBackbone`) gives one feature per cell of the last stage's grid (the *regions*,
``image_size // 32`` per side); a transformers ``BertModel`` gives token states, from which
*sentence* embeddings are the mean of each sentence's tokens and the *report* embedding is a
pooling of tokens or sentences; projection heads map both modalities into one space.

LoVT adds local projections of regions and sentences and a parameter-free cross-attention
(scaled dot product in the projected space) that gives each region the report content it
attends to and each sentence the image content it attends to; its local losses weigh each
region/sentence by the attention-pooling weight it got (gradient stopped), as the paper.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import AutoModel, BertModel, PreTrainedModel
from transformers import initialization as init
from transformers.models.bert.modeling_bert import BertEmbeddings
from transformers.utils import ModelOutput

from medvill.config import hub_source
from medvill.contrastive.config import ContrastiveConfig
from medvill.contrastive.losses import (
    clip_logit_scale,
    gather_across_ranks,
    grid_positive_weights,
    info_nce,
    initial_log_logit_scale,
    local_intra_sample_loss,
)
from medvill.model.embeddings import VisualBackbone, _host_reachable

log = logging.getLogger(__name__)


class AttentionPool(nn.Module):
    """Multi-head attention pooling with one learned query: (B, N, D) → (B, D), plus the
    attention each element got (mean over heads, (B, N)) — LoVT's per-local weights."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        heads = math.gcd(dim, heads)  # a head count that divides the width
        self.heads = heads
        self.query = nn.Parameter(torch.zeros(heads, dim // heads))
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, count, dim = x.shape
        head_dim = dim // self.heads
        keys = self.key(x).view(batch, count, self.heads, head_dim)
        values = self.value(x).view(batch, count, self.heads, head_dim)
        scores = torch.einsum("hd,bnhd->bhn", self.query, keys) / math.sqrt(head_dim)
        if valid is not None:
            scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
        probs = scores.softmax(dim=-1)
        pooled = torch.einsum("bhn,bnhd->bhd", probs, values).reshape(batch, dim)
        return self.out(pooled), probs.mean(dim=1)


class ProjectionHead(nn.Module):
    """Linear (``layers`` 1, CLIP) or Linear → [BatchNorm] → ReLU → Linear (2; ConVIRT, LoVT
    with ``norm='batch'``). Works on (B, D) and on (B, N, D) with a validity mask: batch
    statistics come from the valid rows only, so padding sentences do not shift them."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int, layers: int, norm: str) -> None:
        super().__init__()
        if layers == 1:
            self.net = nn.Sequential(nn.Linear(dim_in, dim_out))
        else:
            parts: list[nn.Module] = [nn.Linear(dim_in, hidden)]
            if norm == "batch":
                parts.append(nn.BatchNorm1d(hidden))
            parts += [nn.ReLU(inplace=True), nn.Linear(hidden, dim_out)]
            self.net = nn.Sequential(*parts)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() == 2:
            return self.net(x)
        batch, count, dim = x.shape
        if valid is None:
            return self.net(x.reshape(batch * count, dim)).view(batch, count, -1)
        out = x.new_zeros(batch, count, self.net[-1].out_features)
        out[valid] = self.net(x[valid]).to(out.dtype)
        return out


def sentence_embeddings(
    tokens: torch.Tensor, sentence_index: torch.Tensor, max_sentences: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of each sentence's token states: (B, S, H) and which sentences exist (B, S).

    ``sentence_index`` (B, L) gives each token's sentence (−1: [CLS], [SEP], padding)."""
    slots = torch.arange(max_sentences, device=tokens.device)
    member = (sentence_index[:, :, None] == slots).to(tokens.dtype)  # (B, L, S)
    sums = torch.einsum("bls,blh->bsh", member, tokens)
    counts = member.sum(dim=1)  # (B, S)
    return sums / counts.clamp_min(1.0)[..., None], counts > 0


def cross_attend(
    queries: torch.Tensor, keys: torch.Tensor, key_valid: torch.Tensor | None
) -> torch.Tensor:
    """For each query local, the softmax(q·k/√d)-weighted mean of the other modality's
    locals (keys are also the values): (B, Nq, d)."""
    scores = queries @ keys.transpose(1, 2) / math.sqrt(queries.shape[-1])
    if key_valid is not None:
        scores = scores.masked_fill(~key_valid[:, None, :], float("-inf"))
    return scores.softmax(dim=-1) @ keys


@dataclass
class ContrastiveOutput(ModelOutput):
    """``loss`` (weighted total over the batch, divided by ``normalizer``), ``losses`` (each
    objective's per-sample values, unweighted, (B,)), ``per_sample`` (weighted total per
    sample), and the projected global embeddings (L2-normalised)."""

    loss: torch.Tensor | None = None
    per_sample: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None


class ContrastivePreTrainedModel(PreTrainedModel):
    config_class = ContrastiveConfig
    config: ContrastiveConfig
    base_model_prefix = "contrastive"
    main_input_name = "images"
    _supports_sdpa = True

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """transformers' loader, then re-freeze the CNN stem (loading resets requires_grad)."""
        model = super().from_pretrained(*args, **kwargs)
        for module in model.modules():
            if isinstance(module, VisualBackbone):
                module.apply_freezing()
        return model

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if getattr(module, "_medvill_cnn", False):
            if isinstance(module, nn.Conv2d):
                init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                init.ones_(module.weight)
                init.zeros_(module.bias)
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
            return
        super()._init_weights(module)
        if isinstance(module, AttentionPool):
            init.normal_(module.query, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, BertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1])[None])
            init.zeros_(module.token_type_ids)
        elif isinstance(module, ContrastiveModel) and module.log_logit_scale is not None:
            init.constant_(
                module.log_logit_scale, initial_log_logit_scale(self.config.global_temperature)
            )


class ContrastiveModel(ContrastivePreTrainedModel):
    """Image and report encoders with projection heads; ``forward`` returns the objective."""

    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = []

    def __init__(self, config: ContrastiveConfig) -> None:
        super().__init__(config)
        channels, hidden = config.visual_feature_dim, config.hidden_size
        self.visual_backbone = VisualBackbone(config)  # type: ignore[arg-type]
        self.text_encoder = BertModel(config.bert_config(), add_pooling_layer=False)
        self.image_pool = (
            AttentionPool(channels, config.pooling_heads)
            if config.image_pooling == "attention"
            else None
        )
        self.text_pool = (
            AttentionPool(hidden, config.pooling_heads)
            if config.text_pooling == "attention"
            else None
        )
        head = (config.projection_hidden, config.projection_dim, config.projection_layers,
                config.projection_norm)  # fmt: skip
        self.image_projection = ProjectionHead(channels, *head)
        self.text_projection = ProjectionHead(hidden, *head)
        self.region_projection: ProjectionHead | None = None
        self.sentence_projection: ProjectionHead | None = None
        if config.objective == "lovt":
            self.region_projection = ProjectionHead(channels, *head)
            self.sentence_projection = ProjectionHead(hidden, *head)
        self.log_logit_scale = (
            nn.Parameter(torch.tensor(initial_log_logit_scale(config.global_temperature)))
            if config.learnable_temperature
            else None
        )
        self.post_init()

    # ---- encoders
    def encode_image(self, images: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Regions (B, R, C), the pooled image (B, C) and the pooling weights (B, R)."""
        regions = self.visual_backbone(images)
        if self.image_pool is not None:
            pooled, weights = self.image_pool(regions)
        else:
            pooled, weights = regions.mean(dim=1), None
        return {"regions": regions, "pooled": pooled, "weights": weights}

    def encode_text(
        self, text_ids: torch.Tensor, text_valid: torch.Tensor, sentence_index: torch.Tensor
    ) -> dict[str, torch.Tensor | None]:
        """Token states (B, L, H), sentences (B, S, H) with validity, the report (B, H) and
        the sentence pooling weights (B, S) when sentences are attention-pooled."""
        tokens = self.text_encoder(
            input_ids=text_ids, attention_mask=text_valid.long()
        ).last_hidden_state
        sentences, sentence_valid = sentence_embeddings(
            tokens, sentence_index, self.config.max_sentences
        )
        weights = None
        if self.config.text_pooling == "max":
            report = tokens.masked_fill(~text_valid[..., None], float("-inf")).amax(dim=1)
        elif self.config.text_pooling == "cls":
            report = tokens[:, 0]
        else:
            report, weights = self.text_pool(sentences, sentence_valid)  # type: ignore[misc]
        return {"tokens": tokens, "sentences": sentences, "sentence_valid": sentence_valid,
                "pooled": report, "weights": weights}  # fmt: skip

    def get_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings in the joint space (retrieval, zero-shot)."""
        pooled = self.encode_image(images)["pooled"]
        return nn.functional.normalize(self.image_projection(pooled), dim=-1)

    def get_text_features(
        self, text_ids: torch.Tensor, text_valid: torch.Tensor, sentence_index: torch.Tensor
    ) -> torch.Tensor:
        """L2-normalised report embeddings in the joint space."""
        pooled = self.encode_text(text_ids, text_valid, sentence_index)["pooled"]
        return nn.functional.normalize(self.text_projection(pooled), dim=-1)

    def temperature(self) -> torch.Tensor | float:
        if self.log_logit_scale is not None:
            return 1.0 / clip_logit_scale(self.log_logit_scale)
        return self.config.global_temperature

    # ---- objective
    def forward(
        self,
        images: torch.Tensor,
        text_ids: torch.Tensor,
        text_valid: torch.Tensor,
        sentence_index: torch.Tensor,
        normalizer: torch.Tensor | float | None = None,
    ) -> ContrastiveOutput:
        config = self.config
        image = self.encode_image(images)
        text = self.encode_text(text_ids, text_valid, sentence_index)
        image_embeds = self.image_projection(image["pooled"])
        text_embeds = self.text_projection(text["pooled"])
        candidates = None
        if config.gather_negatives:
            all_images, offset = gather_across_ranks(image_embeds)
            all_texts, _ = gather_across_ranks(text_embeds)
            candidates = (all_images, all_texts, offset)
        to_report, to_image = info_nce(image_embeds, text_embeds, self.temperature(), candidates)
        weight = config.image_to_report_weight
        losses = {"image_to_report": to_report, "report_to_image": to_image}
        per_sample = weight * to_report + (1.0 - weight) * to_image
        if config.objective == "lovt":
            local = self._local_losses(image, text)
            losses.update(local)
            per_sample = per_sample + config.local_weight * (
                local["local_image"] + local["local_report"]
            )
        denominator = normalizer if normalizer is not None else per_sample.shape[0]
        return ContrastiveOutput(
            loss=per_sample.sum() / denominator,
            per_sample=per_sample,
            losses=losses,
            image_embeds=nn.functional.normalize(image_embeds, dim=-1),
            text_embeds=nn.functional.normalize(text_embeds, dim=-1),
        )

    def _local_losses(self, image: dict[str, Any], text: dict[str, Any]) -> dict[str, torch.Tensor]:
        """LoVT's two local terms per sample: regions ↔ report content attended from them
        (spatial soft positives) and sentences ↔ image content attended from them; each the
        sum of its two directions."""
        assert self.region_projection is not None and self.sentence_projection is not None
        valid = text["sentence_valid"]
        regions = self.region_projection(image["regions"])
        sentences = self.sentence_projection(text["sentences"], valid)
        region_weights = image["weights"]
        if region_weights is None:
            region_weights = torch.ones(regions.shape[:2], device=regions.device)
        sentence_weights = text["weights"]
        if sentence_weights is None:
            sentence_weights = valid.to(sentences.dtype)
        tau = self.config.local_temperature
        # not a buffer: from_pretrained materialises models from the meta device, where a
        # non-persistent buffer would come back uninitialised
        positives = grid_positive_weights(
            self.config.grid_size, self.config.region_positive_distance,
            self.config.region_smoothing,
        ).to(regions.device, regions.dtype)  # fmt: skip
        image_terms = local_intra_sample_loss(
            regions, cross_attend(regions, sentences, valid), tau, region_weights.detach(),
            None, positives,
        )  # fmt: skip
        report_terms = local_intra_sample_loss(
            sentences, cross_attend(sentences, regions, None), tau, sentence_weights.detach(),
            valid, None,
        )  # fmt: skip
        return {
            "local_image": image_terms[0] + image_terms[1],
            "local_report": report_terms[0] + report_terms[1],
        }


AutoModel.register(ContrastiveConfig, ContrastiveModel, exist_ok=True)


def load_public_weights(
    model: ContrastiveModel, text_weights: str, imagenet: bool
) -> dict[str, str]:
    """BERT weights into the text encoder and ImageNet weights into the ResNet where they can
    be had (as MedViLL's :func:`~medvill.model.medvill.load_pretrained_parts`: pinned Hub
    commit, local cache offline, word embeddings only when the vocabularies agree); what each
    part started from."""
    origin = {"text": "random", "visual": "random"}
    if text_weights:
        where, revision = hub_source(text_weights)
        try:
            offline = revision is not None and not _host_reachable("huggingface.co")
            source = BertModel.from_pretrained(
                where, revision=revision, local_files_only=offline, add_pooling_layer=False
            )
        except (OSError, ValueError) as error:
            log.warning("text weights %r unavailable (%s): BERT random init", text_weights, error)
        else:
            own = model.text_encoder.state_dict()
            same_vocab = source.config.vocab_size == model.config.vocab_size
            copy = {
                key: value
                for key, value in source.state_dict().items()
                if key in own
                and own[key].shape == value.shape
                and (same_vocab or "word_embeddings" not in key)
            }
            model.text_encoder.load_state_dict(copy, strict=False)
            label = f"{where}@{revision}" if revision else where
            origin["text"] = f"{label} ({len(copy)} tensors)"
            log.info("text encoder initialised from %s (%d tensors)", text_weights, len(copy))
    else:
        log.info("text encoder: random initialisation (no text_weights configured)")
    if imagenet and model.visual_backbone.load_imagenet(model.config.backbone):
        origin["visual"] = "imagenet"
    elif not imagenet:
        log.info("visual backbone: random initialisation (imagenet disabled)")
    return origin
