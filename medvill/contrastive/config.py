"""Configuration of the dual-encoder contrastive models (ConVIRT, CLIP, LoVT).

One config class for the three: they share the encoders (torchvision ResNet → region
features, transformers BERT → token, sentence and report embeddings) and projection heads,
and differ in pooling, projection shape, text input and objective. The class defaults are
LoVT's published setting; :data:`OBJECTIVE_DEFAULTS` holds what each paper changes.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, BertConfig, PretrainedConfig

from medvill.config import _BERT_FIELDS, BACKBONE_CHANNELS

OBJECTIVES: tuple[str, ...] = ("convirt", "clip", "lovt")
IMAGE_POOLINGS: tuple[str, ...] = ("mean", "attention")
TEXT_POOLINGS: tuple[str, ...] = ("max", "cls", "attention")
TEXT_INPUTS: tuple[str, ...] = ("report", "random_sentence")

#: What each objective's paper sets, over the class defaults (profiles may override any field).
#: ConVIRT: average-pooled image, max-pooled BERT tokens, a random sentence of the report,
#: 2-layer projections, τ = 0.1, λ = 0.75. CLIP: attention-pooled image, [CLS] text, linear
#: projections, symmetric loss, learnable temperature from 0.07. LoVT: attention pooling of
#: regions and of sentences, batch-normalised 2-layer projections, global τ = 0.1 with LoVT's
#: 0.75 / 0.25 direction weights, local τ = 0.3, each of the four local terms weighted 0.375.
OBJECTIVE_DEFAULTS: dict[str, dict[str, Any]] = {
    "convirt": {
        "image_pooling": "mean", "text_pooling": "max", "text_input": "random_sentence",
        "projection_layers": 2, "projection_norm": "none", "global_temperature": 0.1,
        "learnable_temperature": False, "image_to_report_weight": 0.75,
    },
    "clip": {
        "image_pooling": "attention", "text_pooling": "cls", "text_input": "report",
        "projection_layers": 1, "projection_norm": "none", "global_temperature": 0.07,
        "learnable_temperature": True, "image_to_report_weight": 0.5,
    },
    "lovt": {
        "image_pooling": "attention", "text_pooling": "attention", "text_input": "report",
        "projection_layers": 2, "projection_norm": "batch", "global_temperature": 0.1,
        "learnable_temperature": False, "image_to_report_weight": 0.75,
    },
}  # fmt: skip


class ContrastiveConfig(PretrainedConfig):
    """Dual-encoder config. Image: ``backbone``, ``image_size`` (multiple of 32; the region
    grid is ``image_size // 32`` per side), ``freeze_stem``/``freeze_batchnorm`` (as MedViLL's
    backbone). Text: BERT fields, ``max_text_tokens`` WordPieces between [CLS] and [SEP],
    ``max_sentences`` per report. Heads: ``projection_dim``, ``projection_hidden``,
    ``projection_layers`` (1 = linear), ``projection_norm`` (``none``/``batch``),
    ``pooling_heads``. Objective: ``objective``, ``global_temperature`` (CLIP: the initial one),
    ``image_to_report_weight`` (λ), ``gather_negatives`` (under DDP, the candidates of the
    global InfoNCE are every rank's micro-batch, not only this rank's: the contrastive batch
    becomes micro-batch × ranks, as in CLIP's training; off by default so that a run's
    contrastive batch is ``max_micro_batch_size`` whatever the GPU count, as the papers'
    single-GPU batches of 32); LoVT's local terms: ``local_temperature``,
    ``local_weight`` (each of the four), ``region_positive_distance``, ``region_smoothing``.
    """

    model_type = "medvill_contrastive"

    def __init__(
        self,
        objective: str = "lovt",
        backbone: str = "resnet50",
        image_size: int = 224,
        freeze_stem: bool = False,
        freeze_batchnorm: bool = False,
        vocab_size: int = 30522,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int = 0,
        cls_token_id: int = 101,
        sep_token_id: int = 102,
        max_text_tokens: int = 256,
        max_sentences: int = 32,
        image_pooling: str | None = None,
        text_pooling: str | None = None,
        text_input: str | None = None,
        pooling_heads: int = 8,
        projection_dim: int = 512,
        projection_hidden: int = 2048,
        projection_layers: int | None = None,
        projection_norm: str | None = None,
        global_temperature: float | None = None,
        learnable_temperature: bool | None = None,
        image_to_report_weight: float | None = None,
        gather_negatives: bool = False,
        local_temperature: float = 0.3,
        local_weight: float = 0.375,
        region_positive_distance: float = 0.5,
        region_smoothing: float = 1.0,
        **kwargs: Any,
    ) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if backbone not in BACKBONE_CHANNELS:
            raise ValueError(f"backbone must be one of {sorted(BACKBONE_CHANNELS)}")
        if image_size % 32 != 0 or image_size < 32:
            raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}")
        defaults = OBJECTIVE_DEFAULTS[objective]
        self.objective = objective
        self.backbone = backbone
        self.image_size = image_size
        self.freeze_stem = freeze_stem
        self.freeze_batchnorm = freeze_batchnorm
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.cls_token_id = cls_token_id
        self.sep_token_id = sep_token_id
        self.max_text_tokens = max_text_tokens
        self.max_sentences = max_sentences
        self.image_pooling = image_pooling or defaults["image_pooling"]
        self.text_pooling = text_pooling or defaults["text_pooling"]
        self.text_input = text_input or defaults["text_input"]
        self.pooling_heads = pooling_heads
        self.projection_dim = projection_dim
        self.projection_hidden = projection_hidden
        self.projection_layers = projection_layers or defaults["projection_layers"]
        self.projection_norm = projection_norm or defaults["projection_norm"]
        # not "temperature": transformers reads that name as a generation setting
        self.global_temperature = (
            defaults["global_temperature"] if global_temperature is None else global_temperature
        )
        self.learnable_temperature = (
            defaults["learnable_temperature"]
            if learnable_temperature is None
            else learnable_temperature
        )
        self.image_to_report_weight = (
            defaults["image_to_report_weight"]
            if image_to_report_weight is None
            else image_to_report_weight
        )
        self.gather_negatives = gather_negatives
        self.local_temperature = local_temperature
        self.local_weight = local_weight
        self.region_positive_distance = region_positive_distance
        self.region_smoothing = region_smoothing
        self._check()
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    def _check(self) -> None:
        checks = (
            (self.image_pooling in IMAGE_POOLINGS, f"image_pooling: one of {IMAGE_POOLINGS}"),
            (self.text_pooling in TEXT_POOLINGS, f"text_pooling: one of {TEXT_POOLINGS}"),
            (self.text_input in TEXT_INPUTS, f"text_input: one of {TEXT_INPUTS}"),
            (self.projection_norm in ("none", "batch"), "projection_norm: none or batch"),
            (self.projection_layers in (1, 2), "projection_layers: 1 or 2"),
            (0.0 <= self.image_to_report_weight <= 1.0, "image_to_report_weight in [0, 1]"),
            (self.global_temperature > 0 and self.local_temperature > 0, "temperatures > 0"),
            (self.hidden_size % self.num_attention_heads == 0, "hidden_size % heads == 0"),
            (self.max_text_tokens + 2 <= self.max_position_embeddings,
             "max_text_tokens + 2 ≤ max_position_embeddings"),
            (not (self.objective == "lovt" and self.text_pooling != "attention"),
             "lovt pools sentences by attention (text_pooling: attention)"),
        )  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ValueError(f"contrastive config: {message}")

    @property
    def grid_size(self) -> int:
        return self.image_size // 32

    @property
    def visual_feature_dim(self) -> int:
        return BACKBONE_CHANNELS[self.backbone]

    def bert_config(self) -> BertConfig:
        cfg = BertConfig(**{name: getattr(self, name) for name in _BERT_FIELDS})
        cfg._attn_implementation = "sdpa"
        return cfg


AutoConfig.register(ContrastiveConfig.model_type, ContrastiveConfig, exist_ok=True)
