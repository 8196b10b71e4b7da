"""Medical X-VL as transformers ``PreTrainedModel`` classes (``save_pretrained`` → safetensors).

``XVLModel`` is what downstream tasks and the attention maps use: a timm ViT image encoder, the
BERT text layers, the fusion layers that cross-attend to the image tokens, the two projections
into the contrastive space and the matching head. ``XVLForPretraining`` adds the masked-word
head, the momentum (EMA) copies of everything and the feature queues, and computes the three
losses of one batch: contrast (ITC), matching with mined hard negatives (ITM) and masked words
with the momentum model's soft targets (MLM).

The queues and the momentum weights are buffers/parameters of the model, so a checkpoint holds
them and a resumed run continues with the same queue contents (exact resume).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from medvill.xvl.config import XVLConfig
from medvill.xvl.layers import MLMHead, TextEncoder
from medvill.xvl.objectives import (
    IGNORE_INDEX,
    contrastive_loss,
    copy_to_momentum,
    distilled_mlm_loss,
    enqueue,
    mine_hard_negatives,
    momentum_update,
    negative_weights,
    rank_confidence,
)


def build_vit(config: XVLConfig) -> VisionTransformer:
    """The timm ViT of the config, without classifier or pooling: it returns every token.
    With ``config.vision_initializer_range`` > 0 its linear weights are re-drawn at that std
    (:func:`init_vit_linears`): timm's 0.02 is tuned for widths of several hundred."""
    vit = VisionTransformer(
        img_size=config.image_size,
        patch_size=config.patch_size,
        embed_dim=config.vision_width,
        depth=config.vision_depth,
        num_heads=config.vision_heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        num_classes=0,
        global_pool="",
        drop_path_rate=config.vision_drop_path,
    )
    std = config.vision_initializer_range
    if std > 0:
        init_vit_linears(vit, std)
    return vit


@torch.no_grad()
def init_vit_linears(vit: nn.Module, std: float) -> None:
    """Every ``nn.Linear`` weight of the ViT (attention qkv and output, MLP) from a normal of
    ``std`` truncated at ±2 std, biases zero — timm's own scheme at another width. Why: with
    timm's 0.02 at width 96 the image [CLS] of a from-scratch ViT barely depends on the image
    (docs/xvl.md §6); patch embedding, position table and norms keep timm's init."""
    for module in vit.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class XVLPreTrainedModel(PreTrainedModel):
    """Config class and BERT's initialisation (std ``initializer_range``) for the text side;
    the ViT keeps timm's own initialisation (truncated normal, zero biases; std
    ``vision_initializer_range`` when set, :func:`build_vit`), which its weights loader then
    replaces."""

    config_class = XVLConfig
    config: XVLConfig
    base_model_prefix = "xvl"
    main_input_name = "images"
    supports_gradient_checkpointing = False
    # A pretraining checkpoint loaded as the encoder alone: its momentum copies, queues and
    # masked-word head are expected leftovers, not a mismatch worth a warning.
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [
        r"_m\.",
        r"_queue$",
        r"^queue_",
        r"^mlm_head\.",
    ]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if getattr(module, "_xvl_timm", False):
            return
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


def _mark_timm(vit: nn.Module) -> None:
    """Flag a ViT's modules so :meth:`XVLPreTrainedModel._init_weights` leaves them alone."""
    for module in vit.modules():
        module._xvl_timm = True  # type: ignore[attr-defined]


@dataclass
class XVLOutput(ModelOutput):
    """Encoder outputs: image tokens ([CLS] first), report states after the text layers, the
    fused report states, and the normalised contrastive features."""

    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    fused: torch.Tensor | None = None
    image_feat: torch.Tensor | None = None
    text_feat: torch.Tensor | None = None
    itm_logits: torch.Tensor | None = None


class XVLModel(XVLPreTrainedModel):
    """Image encoder, text and fusion encoder, projections and matching head."""

    def __init__(self, config: XVLConfig) -> None:
        super().__init__(config)
        self.visual_encoder = build_vit(config)
        _mark_timm(self.visual_encoder)
        self.text = TextEncoder(config)
        self.vision_proj = nn.Linear(config.vision_width, config.embed_dim)
        self.text_proj = nn.Linear(config.hidden_size, config.embed_dim)
        self.itm_head = nn.Linear(config.hidden_size, 2)
        self.temp = nn.Parameter(torch.tensor(float(config.initial_temperature)))
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.text.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.text.embeddings.word_embeddings = value

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → (B, 1 + patches, vision_width), [CLS] first."""
        return self.visual_encoder.forward_features(images)

    def image_features(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.vision_proj(image_embeds[:, 0]), dim=-1)

    def text_features(self, text_embeds: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(text_embeds[:, 0]), dim=-1)

    def forward(
        self, images: torch.Tensor, text_ids: torch.Tensor, text_valid: torch.Tensor
    ) -> XVLOutput:
        """Both encoders, the fusion and the matching logits of each (image, report) pair."""
        image_embeds = self.encode_image(images)
        text_embeds = self.text.encode_text(text_ids, text_valid)
        fused = self.text.fuse(text_embeds, text_valid, image_embeds)
        return XVLOutput(
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            fused=fused,
            image_feat=self.image_features(image_embeds),
            text_feat=self.text_features(text_embeds),
            itm_logits=self.itm_head(fused[:, 0]),
        )


@dataclass
class XVLPretrainingOutput(ModelOutput):
    loss: torch.Tensor | None = None
    itc_loss: torch.Tensor | None = None
    itm_loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    itm_accuracy: torch.Tensor | None = None
    itm_negatives: torch.Tensor | None = None  # how many mined negatives entered the ITM loss
    # co-learning: share of the batch's pairs the teacher did not believe (0 when off)
    noisy_fraction: torch.Tensor | None = None


class XVLForPretraining(XVLPreTrainedModel):
    """The online model, its momentum copy and the queues; ``forward`` returns the losses."""

    def __init__(self, config: XVLConfig) -> None:
        super().__init__(config)
        self.xvl = XVLModel(config)
        self.mlm_head = MLMHead(config)
        # momentum copies: same shapes, updated only by EMA (no gradient)
        self.visual_encoder_m = build_vit(config)
        _mark_timm(self.visual_encoder_m)
        self.text_m = TextEncoder(config)
        self.vision_proj_m = nn.Linear(config.vision_width, config.embed_dim)
        self.text_proj_m = nn.Linear(config.hidden_size, config.embed_dim)
        self.mlm_head_m = MLMHead(config)
        size = config.queue_size
        self.register_buffer("image_queue", torch.zeros(config.embed_dim, size))
        self.register_buffer("text_queue", torch.zeros(config.embed_dim, size))
        self.register_buffer("report_queue", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("queue_pointer", torch.zeros(1, dtype=torch.long))
        self.register_buffer("queue_filled", torch.zeros(1, dtype=torch.long))
        # the teacher's matching head (co-learning's confidence); registered last, so the
        # initialisation of every other weight is what it was without it
        self.itm_head_m = nn.Linear(config.hidden_size, 2)
        self.post_init()
        self.reset_momentum()

    def model_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        x = self.xvl
        return [
            (x.visual_encoder, self.visual_encoder_m),
            (x.text, self.text_m),
            (x.vision_proj, self.vision_proj_m),
            (x.text_proj, self.text_proj_m),
            (self.mlm_head, self.mlm_head_m),
            (x.itm_head, self.itm_head_m),
        ]

    def reset_momentum(self) -> None:
        """Momentum model := online model (at initialisation and after loading pretrained
        parts), queues emptied."""
        copy_to_momentum(self.model_pairs())
        self.queue_pointer.zero_()
        self.queue_filled.zero_()
        self.report_queue.fill_(-1)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """transformers' loader, then the momentum weights frozen again (loading resets
        ``requires_grad``)."""
        model = super().from_pretrained(*args, **kwargs)
        for _, shadow in model.model_pairs():
            shadow.requires_grad_(False)
        return model

    def get_input_embeddings(self) -> nn.Embedding:
        return self.xvl.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_head.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.mlm_head.decoder = value

    @torch.no_grad()
    def _momentum_features(
        self, images: torch.Tensor, text_ids: torch.Tensor, text_valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        image_embeds_m = self.visual_encoder_m.forward_features(images)
        image_feat_m = F.normalize(self.vision_proj_m(image_embeds_m[:, 0]), dim=-1)
        text_m = self.text_m.encode_text(text_ids, text_valid)
        text_feat_m = F.normalize(self.text_proj_m(text_m[:, 0]), dim=-1)
        return image_embeds_m, image_feat_m, text_m, text_feat_m

    @torch.no_grad()
    def teacher_match(
        self, text_m: torch.Tensor, text_valid: torch.Tensor, image_embeds_m: torch.Tensor
    ) -> torch.Tensor:
        """(B,) the momentum (teacher) model's probability that each pair is matched: its
        fusion layers and matching head on its own image and report states."""
        fused_m = self.text_m.fuse(text_m, text_valid, image_embeds_m)
        return self.itm_head_m(fused_m[:, 0]).float().softmax(-1)[:, 1]

    def forward(
        self,
        images: torch.Tensor,
        text_ids: torch.Tensor,
        text_valid: torch.Tensor,
        mlm_ids: torch.Tensor,
        mlm_labels: torch.Tensor,
        report_ids: torch.Tensor,
        report_overlap: torch.Tensor,
        alpha: float | None = None,
        generator: torch.Generator | None = None,
        colearn: bool | None = None,
        fusion_weight: float = 1.0,
    ) -> XVLPretrainingOutput:
        """Losses of one batch.

        ``text_ids``/``text_valid`` (B, L): the report ([CLS] … [SEP], padded); ``mlm_ids`` the
        same with words masked, ``mlm_labels`` their targets (−100 elsewhere); ``report_ids``
        (B,) equal for identical reports (the contrast treats them as the same positive);
        ``report_overlap`` (B, B) sentence overlap of the reports (hard-negative mining skips
        near-duplicates). ``alpha``: distillation weight (default config.distill_alpha; the
        trainer ramps it up over the first epoch). ``generator``: the hard-negative draws.
        ``colearn`` (default ``config.colearning``): pairs whose teacher confidence
        (:func:`rank_confidence` of the momentum features) is below
        ``config.colearning_threshold`` learn the teacher's pseudo-targets: its contrastive
        softmax, and its matching probability as the pair's matching target (their masked
        words keep their own targets: a report's words are right even when the image is not
        its image).
        ``fusion_weight`` scales matching and masked words in the loss (0 during the
        contrast warm-up; they are still computed, so every parameter takes part in the
        backward pass, as DDP requires, and their values are logged).
        """
        cfg = self.config
        alpha = cfg.distill_alpha if alpha is None else alpha
        x = self.xvl
        batch = images.shape[0]
        image_embeds = x.encode_image(images)
        image_feat = x.image_features(image_embeds)
        text_embeds = x.text.encode_text(text_ids, text_valid)
        text_feat = x.text_features(text_embeds)

        with torch.no_grad():
            x.temp.clamp_(0.001, 0.5)
            if self.training:
                momentum_update(self.model_pairs(), cfg.momentum)
            image_embeds_m, image_feat_m, text_m, text_feat_m = self._momentum_features(
                images, text_ids, text_valid
            )
            colearn = bool(cfg.colearning) if colearn is None else colearn
            noisy = matched_target = None
            if colearn:
                same = report_ids[:, None] == report_ids[None, :]
                confidence = rank_confidence(image_feat_m @ text_feat_m.t(), same)
                noisy = confidence < cfg.colearning_threshold
                teacher = self.teacher_match(text_m, text_valid, image_embeds_m)
                matched_target = torch.where(noisy, teacher, torch.ones_like(teacher))
            filled = int(self.queue_filled.item())
            image_all = torch.cat([image_feat_m.t(), self.image_queue[:, :filled]], 1)
            text_all = torch.cat([text_feat_m.t(), self.text_queue[:, :filled]], 1)
            reports_all = torch.cat([report_ids, self.report_queue[:filled]])
            positives = (report_ids[:, None] == reports_all[None, :]).float()

        # in fp32 under bf16/fp16 autocast: logits of up to 1/0.001 need more than bf16's
        # 8 mantissa bits to rank a queue of 65,536 features
        with torch.autocast(images.device.type, enabled=False):
            itc, sim_i2t, sim_t2i = contrastive_loss(
                image_feat.float(), text_feat.float(), image_all.float(), text_all.float(),
                positives, x.temp.float(), image_feat_m.float(), text_feat_m.float(), alpha,
                noisy,
            )  # fmt: skip
        if self.training:
            self._enqueue(image_feat_m, text_feat_m, report_ids)

        itm, accuracy, negatives = matching_loss(
            x, image_embeds, text_embeds, text_valid, sim_i2t[:, :batch], sim_t2i[:, :batch],
            report_ids, report_overlap, generator, matched_target,
        )  # fmt: skip
        mlm = self._masked_words(mlm_ids, text_valid, mlm_labels, image_embeds, image_embeds_m,
                                 alpha)  # fmt: skip
        return XVLPretrainingOutput(
            loss=itc + fusion_weight * (itm + mlm),
            itc_loss=itc,
            itm_loss=itm,
            mlm_loss=mlm,
            itm_accuracy=accuracy,
            itm_negatives=negatives,
            noisy_fraction=(
                noisy.float().mean() if noisy is not None else torch.zeros((), device=itc.device)
            ),
        )

    @torch.no_grad()
    def _enqueue(
        self, image_feat: torch.Tensor, text_feat: torch.Tensor, report_ids: torch.Tensor
    ) -> None:
        """Every rank's momentum features enter the queue (same order on every rank)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            image_feat, text_feat, report_ids = (
                _gather(image_feat), _gather(text_feat), _gather(report_ids)
            )  # fmt: skip
        size = self.config.queue_size
        image_feat, text_feat, report_ids = (
            image_feat[-size:],
            text_feat[-size:],
            report_ids[-size:],
        )
        start = int(self.queue_pointer.item())
        positions = (start + torch.arange(len(report_ids), device=report_ids.device)) % size
        self.report_queue[positions] = report_ids
        enqueue(self.text_queue, self.queue_pointer.clone(), text_feat)
        enqueue(self.image_queue, self.queue_pointer, image_feat)  # advances the pointer
        self.queue_filled.fill_(min(size, int(self.queue_filled.item()) + len(report_ids)))

    def _masked_words(
        self,
        mlm_ids: torch.Tensor,
        text_valid: torch.Tensor,
        mlm_labels: torch.Tensor,
        image_embeds: torch.Tensor,
        image_embeds_m: torch.Tensor,
        alpha: float,
    ) -> torch.Tensor:
        """Masked words predicted from the masked report fused with the image; soft targets
        from the momentum model on the same input. Logits only at masked slots."""
        chosen = mlm_labels != IGNORE_INDEX
        text = self.xvl.text.encode_text(mlm_ids, text_valid)
        fused = self.xvl.text.fuse(text, text_valid, image_embeds)
        logits = self.mlm_head(fused[chosen])
        logits_m = None
        if alpha > 0:
            with torch.no_grad():
                text_m = self.text_m.encode_text(mlm_ids, text_valid)
                fused_m = self.text_m.fuse(text_m, text_valid, image_embeds_m)
                logits_m = self.mlm_head_m(fused_m[chosen])
        return distilled_mlm_loss(logits, mlm_labels[chosen], logits_m, alpha)


def matching_loss(
    xvl: XVLModel,
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    text_valid: torch.Tensor,
    sim_i2t: torch.Tensor,
    sim_t2i: torch.Tensor,
    report_ids: torch.Tensor,
    report_overlap: torch.Tensor,
    generator: torch.Generator | None,
    matched_target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ITM over the B true pairs and up to 2B mined negatives (an image with a hard report, a
    report with a hard image), drawn from the in-batch similarities ``sim_*`` (B, B).
    Pretraining and retrieval fine-tuning share it. ``matched_target`` (B,) replaces the true
    pairs' target "matched" (1) by a probability (co-learning's teacher, for pairs it doubts);
    the loss is then the cross-entropy against those soft targets. With
    ``config.itm_balanced`` the loss is :func:`balanced_mean` of the per-pair losses (matched
    and negative pairs weigh half each) instead of their plain mean. Returns (loss, accuracy
    against the hard labels, negatives used)."""
    threshold = xvl.config.negative_similarity_threshold
    with torch.no_grad():
        same = report_ids[:, None] == report_ids[None, :]
        overlap = report_overlap.to(sim_i2t.device)
        image_for_text, ok_t = mine_hard_negatives(
            negative_weights(sim_t2i, same, overlap, threshold), generator
        )
        text_for_image, ok_i = mine_hard_negatives(
            negative_weights(sim_i2t, same, overlap, threshold), generator
        )
    images = torch.cat([image_embeds, image_embeds[image_for_text], image_embeds])
    texts = torch.cat([text_embeds, text_embeds, text_embeds[text_for_image]])
    valid = torch.cat([text_valid, text_valid, text_valid[text_for_image]])
    keep = torch.cat([torch.ones_like(ok_t), ok_t, ok_i])
    labels = torch.cat(
        [torch.ones_like(report_ids), torch.zeros_like(report_ids), torch.zeros_like(report_ids)]
    )
    fused = xvl.text.fuse(texts[keep], valid[keep], images[keep])
    logits = xvl.itm_head(fused[:, 0])
    if matched_target is None:
        per_pair = F.cross_entropy(logits.float(), labels[keep], reduction="none")
    else:
        matched = torch.cat([matched_target.float(), labels[len(report_ids) :].float()])[keep]
        soft = torch.stack([1.0 - matched, matched], dim=1)
        per_pair = -(F.log_softmax(logits.float(), -1) * soft).sum(-1)
    balanced = xvl.config.itm_balanced
    loss = balanced_mean(per_pair, labels[keep]) if balanced else per_pair.mean()
    accuracy = (logits.argmax(-1) == labels[keep]).float().mean().detach()
    return loss, accuracy, (keep.sum() - len(report_ids)).detach()


def balanced_mean(losses: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of the matched pairs' mean loss and the negatives' mean loss (a class missing from
    the batch leaves the other's mean). Matching mines up to two negatives per positive, so
    the plain mean is minimised early by answering "not matched" everywhere (accuracy 2/3);
    equal class weights take that shortcut away."""
    means = [losses[labels == c].mean() for c in (0, 1) if bool((labels == c).any())]
    return torch.stack(means).mean()


def _gather(tensor: torch.Tensor) -> torch.Tensor:
    """All ranks' rows, rank order (no gradient: only momentum features are gathered)."""
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


AutoConfig.register("xvl", XVLConfig)
AutoModel.register(XVLConfig, XVLModel)
AutoModelForPreTraining.register(XVLConfig, XVLForPretraining)
