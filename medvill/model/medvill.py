"""MedViLL as transformers ``PreTrainedModel`` classes (``save_pretrained``/``from_pretrained``).

``MedViLLModel`` is the encoder shared by every task (backbone → visual projection → BERT);
``MedViLLForPretraining`` adds the MLM + IRM heads. Downstream task models can load a
pretraining checkpoint into ``MedViLLModel`` through transformers' base-model prefix handling.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForPreTraining,
    BertForPreTraining,
    BertModel,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.models.bert.modeling_bert import BertEmbeddings, BertLMPredictionHead
from transformers.utils import ModelOutput

from medvill.config import MedViLLConfig, hub_source
from medvill.model.cnn_weights import load_cnn_weights
from medvill.model.embeddings import VisualBackbone, VisualProjection, _host_reachable, joint_inputs
from medvill.model.encoder import encode, resolve_attention_backend
from medvill.model.flex import FLEX_IMPLEMENTATION
from medvill.model.heads import IGNORE_INDEX, BertPreTrainingHeads, irm_loss, mlm_loss
from medvill.model.masks import resolve_mask_type

log = logging.getLogger(__name__)


class MedViLLPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the config class; BERT parts get BERT's init, the CNN
    torchvision's (He-normal convolutions), since N(0, 0.02) would starve a deep ResNet."""

    config_class = MedViLLConfig
    config: MedViLLConfig
    base_model_prefix = "medvill"
    main_input_name = "images"
    _supports_sdpa = True
    supports_gradient_checkpointing = False

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
        if isinstance(module, BertLMPredictionHead):
            init.zeros_(module.bias)
        elif isinstance(module, BertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1])[None])
            init.zeros_(module.token_type_ids)


@dataclass
class MedViLLModelOutput(ModelOutput):
    """What the joint encoder gives every task.

    ``last_hidden_state`` (B, S, H): the sequence ``[CLS] v… [SEP] w… [SEP]`` after the last
    layer (visual slots first, so text slot j sits at ``S − L + j``). ``pooler_output`` (B, H):
    BERT's pooler on [CLS] — under Non-cross on the element-wise product of the image and text
    [CLS] outputs — which feeds IRM, retrieval and classification. Named as transformers'
    ``BaseModelOutputWithPooling``, so code written for BERT-like encoders reads it unchanged.
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None


class MedViLLModel(MedViLLPreTrainedModel):
    """The joint encoder; ``forward`` returns a :class:`MedViLLModelOutput`.

    ``attention_backend`` says how the mask reaches BERT's attention (``auto``, ``reference``,
    ``sdpa_bool``, ``sdpa_compute_dtype`` or ``flex``; medvill/model/encoder.py). It is a run-time
    choice like the precision, not part of the saved config: every backend computes the same
    function.
    """

    def __init__(self, config: MedViLLConfig) -> None:
        super().__init__(config)
        self.visual_backbone = VisualBackbone(config)
        self.visual_proj = VisualProjection(config)
        self.bert = BertModel(config.bert_config(), add_pooling_layer=True)
        self.attention_backend = "auto"
        self.post_init()

    def set_attention_backend(self, backend: str) -> None:
        """Choose the attention backend; checked against this BERT's attention now, not at the
        first batch. ``flex`` switches BERT's attention function to FlexAttention's and any
        other backend switches it back to the one it replaced."""
        config = self.bert.config
        current = config._attn_implementation
        if backend == "flex":
            wanted = FLEX_IMPLEMENTATION
        elif current == FLEX_IMPLEMENTATION:
            wanted = getattr(self, "_attention_before_flex", "sdpa")
        else:
            wanted = current
        config._attn_implementation = wanted
        try:
            resolve_attention_backend(backend, self.bert)
        except ValueError:
            config._attn_implementation = current  # a refused choice leaves the old one
            raise
        if wanted == FLEX_IMPLEMENTATION and current != FLEX_IMPLEMENTATION:
            self._attention_before_flex = current
        self.attention_backend = backend

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.bert.embeddings.word_embeddings = value

    def forward(
        self,
        images: torch.Tensor,
        text_ids: torch.Tensor,
        text_valid: torch.Tensor,
        visual_cells: torch.Tensor | None = None,
        mask_type: str | None = None,
    ) -> MedViLLModelOutput:
        """Encode a batch.

        ``images`` (B, 3, H, W) normalised; ``text_ids``/``text_valid`` (B, L) text block;
        ``visual_cells`` sorted grid indices to keep (one subset for the whole batch, as the
        paper samples per mini-batch) or None for all cells; ``mask_type`` a concrete mask
        (default the config's; ``bi_s2s`` is drawn here from the global RNG if unresolved).
        """
        config = self.config
        kind = mask_type or config.attention_mask_type
        if kind == "bi_s2s":
            kind = resolve_mask_type(kind, None, config.s2s_probability)
        features = self.visual_backbone(images)
        if visual_cells is None:
            visual_cells = torch.arange(features.shape[1], device=features.device)
        features = features.index_select(1, visual_cells)
        visual = self.visual_proj(features, visual_cells)
        embeds, positions, types = joint_inputs(
            config, self.bert.embeddings.word_embeddings, visual, visual_cells, text_ids
        )
        k = visual_cells.shape[0]
        hidden = encode(
            self.bert, embeds, positions, types, kind, k, text_valid, self.attention_backend
        )
        pooler = self.bert.pooler
        if kind == "noncross":
            # Paper §3.C: both [CLS] outputs feed IRM, combined by product (docs/model.md §5).
            first = hidden[:, 0] * hidden[:, k + 2]
            pooled = pooler.activation(pooler.dense(first))
        else:
            pooled = pooler(hidden)
        return MedViLLModelOutput(last_hidden_state=hidden, pooler_output=pooled)


@dataclass
class MedViLLPretrainingOutput(ModelOutput):
    """Loss terms and logits of one pretraining forward pass."""

    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    irm_loss: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None
    irm_logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    pooled_output: torch.Tensor | None = None


class MedViLLForPretraining(MedViLLPreTrainedModel):
    """MedViLL with MLM and IRM heads; loss = MLM + IRM (paper §3.B.4)."""

    _tied_weights_keys: ClassVar[dict[str, str]] = {
        "cls.predictions.decoder.weight": "medvill.bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config: MedViLLConfig) -> None:
        super().__init__(config)
        self.medvill = MedViLLModel(config)
        self.cls = BertPreTrainingHeads(config.bert_config())
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.medvill.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.cls.predictions.decoder = value

    def forward(
        self,
        images: torch.Tensor,
        text_ids: torch.Tensor,
        text_valid: torch.Tensor,
        visual_cells: torch.Tensor | None = None,
        mask_type: str | None = None,
        mlm_labels: torch.Tensor | None = None,
        irm_labels: torch.Tensor | None = None,
        mlm_normalizer: float | torch.Tensor | None = None,
        irm_normalizer: float | torch.Tensor | None = None,
        mlm_positions: torch.Tensor | None = None,
    ) -> MedViLLPretrainingOutput:
        """Forward pass; with labels, losses are sums over labelled items / the normalisers.

        MLM logits are computed only at labelled text slots (``mlm_labels`` ≠ −100): projecting
        every slot onto a 30k vocabulary would dominate the step for nothing. ``mlm_positions``
        (the flat indices of those slots, row-major, computed on the host by the trainer)
        gathers them without a boolean mask, whose output size would make the GPU wait.
        """
        encoded = self.medvill(images, text_ids, text_valid, visual_cells, mask_type)
        hidden, pooled = encoded.last_hidden_state, encoded.pooler_output
        irm_logits = self.cls.seq_relationship(pooled)
        out = MedViLLPretrainingOutput(
            irm_logits=irm_logits, last_hidden_state=hidden, pooled_output=pooled
        )
        if mlm_labels is not None:
            text_hidden = hidden[:, hidden.shape[1] - mlm_labels.shape[1] :]
            if mlm_positions is None:
                mlm_positions = mlm_target_positions(mlm_labels)
            flat_hidden = text_hidden.reshape(-1, text_hidden.shape[-1])
            out.mlm_logits = self.cls.predictions(flat_hidden.index_select(0, mlm_positions))
            targets = mlm_labels.reshape(-1).index_select(0, mlm_positions)
            out.mlm_loss = mlm_loss(out.mlm_logits, targets, mlm_normalizer)
        if irm_labels is not None:
            out.irm_loss = irm_loss(irm_logits, irm_labels, irm_normalizer)
        if out.mlm_loss is not None and out.irm_loss is not None:
            out.loss = out.mlm_loss + out.irm_loss
        return out


def mlm_target_positions(mlm_labels: torch.Tensor) -> torch.Tensor:
    """Flat (row-major) indices of the labelled slots of ``mlm_labels`` (B, L): the order a
    boolean mask would select them in. Cheap on the host; on a GPU it is a sync point."""
    return (mlm_labels.reshape(-1) != IGNORE_INDEX).nonzero().squeeze(1)


# ``AutoModel.from_pretrained(folder)`` on any MedViLL checkpoint gives the joint encoder (the
# ``medvill.`` weights of a pretraining or task checkpoint), ``AutoModelForPreTraining`` the
# encoder with its MLM + IRM heads, as for BERT. ``import medvill`` runs this registration.
AutoModel.register(MedViLLConfig, MedViLLModel, exist_ok=True)
AutoModelForPreTraining.register(MedViLLConfig, MedViLLForPretraining, exist_ok=True)


def load_pretrained_parts(
    model: MedViLLForPretraining, text_weights: str, imagenet: bool, cnn_weights: str = ""
) -> dict[str, str]:
    """Initialise from public weights where available; returns what each part started from.

    ``text_weights`` is a local directory or hub id of a BERT pretraining checkpoint (e.g.
    ``bert-base-uncased``), or "" for random init. A hub id loads at its pinned commit
    (:func:`medvill.config.hub_source`; an unpinned id is a configuration error, raised). The
    hub is tried only when reachable, else only the local cache; weights that cannot be had
    fall back to random initialisation with a log line saying so. Word embeddings and the MLM
    output bias are copied only when the vocabulary sizes agree (a vocabulary trained offline
    on the reports does not share ids with BERT's). ``cnn_weights`` (a local checkpoint,
    :mod:`medvill.model.cnn_weights`) starts the image CNN instead of ImageNet; unlike the
    public weights it is never skipped: a missing or non-fitting file is an error.
    """
    origin = {"text": "random", "visual": "random"}
    if text_weights:
        where, revision = hub_source(text_weights)
        try:
            offline = revision is not None and not _host_reachable("huggingface.co")
            source = BertForPreTraining.from_pretrained(
                where, revision=revision, local_files_only=offline
            )
        except (OSError, ValueError) as error:
            log.warning("text weights %r unavailable (%s): BERT random init", text_weights, error)
        else:
            state = source.state_dict()
            vocab_matches = source.config.vocab_size == model.config.vocab_size
            own = model.state_dict()
            copy = {}
            for key, value in state.items():
                target = f"medvill.{key}" if key.startswith("bert.") else key
                vocab_sized = (
                    "word_embeddings" in key
                    or key.startswith("cls.predictions.decoder")
                    or key == "cls.predictions.bias"
                )
                if vocab_sized and not vocab_matches:
                    continue
                if target in own and own[target].shape == value.shape:
                    copy[target] = value
            model.load_state_dict(copy, strict=False)
            model.tie_weights()
            label = f"{where}@{revision}" if revision else where
            origin["text"] = f"{label} ({len(copy)} tensors)"
            log.info("text encoder initialised from %s (%d tensors)", text_weights, len(copy))
    else:
        log.info("text encoder: random initialisation (no text_weights configured)")
    backbone = model.medvill.visual_backbone
    if cnn_weights:
        count = load_cnn_weights(backbone.trunk, cnn_weights)
        backbone.apply_freezing()
        origin["visual"] = f"{cnn_weights} ({count} tensors)"
        log.info("visual backbone initialised from %s (%d tensors)", cnn_weights, count)
    elif imagenet and backbone.load_imagenet(model.config.backbone):
        origin["visual"] = "imagenet"
    elif not imagenet:
        log.info("visual backbone: random initialisation (imagenet disabled)")
    if origin["visual"] == "random" and model.config.freeze_stem:
        # The paper freezes conv1/bn1/layer1 because they hold ImageNet features; frozen at
        # random values they only pass noise on. Said, not changed: the config is the record.
        log.warning(
            "visual backbone starts at random but freeze_stem is true: conv1, bn1 and layer1 "
            "stay at their random values (set model.freeze_stem: false to train them)"
        )
    return origin
