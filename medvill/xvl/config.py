"""Medical X-VL configuration (a transformers ``PretrainedConfig``).

The class defaults are the paper-sized model: a ViT-S/16 image encoder (384 wide, 12 blocks,
6 heads, 224² input as the self-supervised ImageNet weights were trained), BERT-base text
layers split ALBEF-style into 6 text-only layers and 6 fusion layers whose every block also
cross-attends to the image tokens, 256-d contrastive embeddings, a 65,536-entry feature queue,
momentum 0.995 and distillation weight 0.4. The tiny CPU profiles of ``params.yaml`` override
fields, so a config saved beside a checkpoint always says which model it is.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

#: Fields a ``params.yaml`` profile may set under ``model`` (everything else is a typo).
PROFILE_FIELDS: tuple[str, ...] = (
    "vision_width", "vision_depth", "vision_heads", "patch_size", "image_size",
    "vision_drop_path", "hidden_size", "num_text_layers", "num_fusion_layers",
    "num_attention_heads", "intermediate_size", "hidden_dropout_prob",
    "attention_probs_dropout_prob", "max_position_embeddings", "max_text_tokens", "embed_dim",
    "queue_size", "momentum", "initial_temperature", "distill_alpha",
    "negative_similarity_threshold", "colearning", "colearning_threshold",
    "initializer_range", "vision_initializer_range", "itm_balanced", "contrast_warmup_epochs",
)  # fmt: skip


class XVLConfig(PretrainedConfig):
    """Configuration of the Medical X-VL image encoder, text encoder and fusion encoder.

    Image: ``vision_*`` describe the timm ViT (width, blocks, heads), ``patch_size`` and
    ``image_size`` its grid (``image_size // patch_size`` patches per side).
    Text: BERT fields; ``num_text_layers`` self-attention-only layers feed the contrastive text
    embedding, ``num_fusion_layers`` further layers add cross-attention to the image tokens and
    feed matching and masked-word prediction. ``max_text_tokens`` counts WordPieces between
    [CLS] and the final [SEP].
    Objectives: ``embed_dim`` (contrastive space), ``queue_size`` (momentum features kept
    for contrast, a ring buffer), ``momentum`` (EMA of the momentum encoders),
    ``initial_temperature`` (the contrast temperature is learned; its start),
    ``distill_alpha`` (weight of the momentum model's soft targets),
    ``negative_similarity_threshold`` (reports whose sentence overlap with the positive's is at
    least this are never mined as hard negatives: they say the same thing).
    Co-learning on uncurated pairs (off by default, docs/xvl.md §2): with ``colearning``, a
    pair whose confidence under the momentum (teacher) model — the share of the batch's other
    reports/images its own beats in the teacher's similarity — is below
    ``colearning_threshold`` is treated as possibly mismatched: its contrastive and matching
    targets become the teacher's predictions (pseudo-targets) instead of "this is a pair".
    Initialisation of the layers trained from scratch: ``initializer_range`` is the std of
    BERT's normal init of the text/fusion layers, embeddings, projections and heads (BERT's
    0.02 suits width 768; at width 96 it leaves the report's [CLS] blind to its words, the
    ``learn`` profile's reason for 0.2, docs/xvl.md §6); ``vision_initializer_range`` > 0
    re-draws the ViT's linear weights from a truncated normal of that std (0 keeps timm's
    0.02). Both are overwritten by pretrained weights when those are loaded.
    ``itm_balanced``: matching weighs its positives and its mined negatives equally (the mean
    of the two classes' losses) instead of 1 : 2 as mined, so "never matched" is no longer the
    loss's cheapest answer.
    ``contrast_warmup_epochs``: the first N epochs train the contrast alone (matching and
    masked words are computed and logged at weight 0): "align before fuse" as a schedule.
    From scratch the fusion layers' losses hold the contrast at its uniform value; once the
    two encoders agree, matching has similarities to mine hard negatives from (docs/xvl.md §6).
    """

    model_type = "xvl"

    def __init__(
        self,
        vision_width: int = 384,
        vision_depth: int = 12,
        vision_heads: int = 6,
        patch_size: int = 16,
        image_size: int = 224,
        vision_drop_path: float = 0.1,
        vocab_size: int = 30522,
        hidden_size: int = 768,
        num_text_layers: int = 6,
        num_fusion_layers: int = 6,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        max_text_tokens: int = 126,
        embed_dim: int = 256,
        queue_size: int = 65536,
        momentum: float = 0.995,
        initial_temperature: float = 0.07,
        distill_alpha: float = 0.4,
        negative_similarity_threshold: float = 0.9,
        colearning: bool = False,
        colearning_threshold: float = 0.5,
        vision_initializer_range: float = 0.0,
        itm_balanced: bool = False,
        contrast_warmup_epochs: int = 0,
        pad_token_id: int = 0,
        cls_token_id: int = 101,
        sep_token_id: int = 102,
        mask_token_id: int = 103,
        **kwargs: Any,
    ) -> None:
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vision_width = vision_width
        self.vision_depth = vision_depth
        self.vision_heads = vision_heads
        self.patch_size = patch_size
        self.image_size = image_size
        self.vision_drop_path = vision_drop_path
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_text_layers = num_text_layers
        self.num_fusion_layers = num_fusion_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.max_text_tokens = max_text_tokens
        self.embed_dim = embed_dim
        self.queue_size = queue_size
        self.momentum = momentum
        self.initial_temperature = initial_temperature
        self.distill_alpha = distill_alpha
        self.negative_similarity_threshold = negative_similarity_threshold
        self.colearning = colearning
        self.colearning_threshold = colearning_threshold
        self.vision_initializer_range = vision_initializer_range
        self.itm_balanced = itm_balanced
        self.contrast_warmup_epochs = contrast_warmup_epochs
        self.cls_token_id = cls_token_id
        self.sep_token_id = sep_token_id
        self.mask_token_id = mask_token_id

    @property
    def grid_size(self) -> int:
        """Patches per image side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def text_slots(self) -> int:
        """[CLS] + WordPieces + [SEP]."""
        return self.max_text_tokens + 2

    def check(self) -> None:
        """Refuse shapes that would fail later, deep inside a forward pass."""
        problems = []
        if self.image_size % self.patch_size:
            problems.append(f"image_size {self.image_size} is not a multiple of patch_size")
        if self.hidden_size % self.num_attention_heads:
            problems.append("hidden_size is not a multiple of num_attention_heads")
        if self.vision_width % self.vision_heads:
            problems.append("vision_width is not a multiple of vision_heads")
        if self.text_slots > self.max_position_embeddings:
            problems.append(
                f"max_text_tokens + 2 = {self.text_slots} exceeds max_position_embeddings "
                f"{self.max_position_embeddings}"
            )
        if not 0.0 <= self.momentum < 1.0:
            problems.append(f"momentum must be in [0, 1), got {self.momentum}")
        if self.queue_size < 1:
            problems.append("queue_size must be ≥ 1")
        if not 0.0 <= self.colearning_threshold <= 1.0:
            problems.append(
                f"colearning_threshold must be in [0, 1], got {self.colearning_threshold}"
            )
        if self.initializer_range <= 0:
            problems.append(f"initializer_range must be > 0, got {self.initializer_range}")
        if self.vision_initializer_range < 0:
            problems.append(
                f"vision_initializer_range must be ≥ 0 (0 = timm's init), got "
                f"{self.vision_initializer_range}"
            )
        if self.contrast_warmup_epochs < 0:
            problems.append(
                f"contrast_warmup_epochs must be ≥ 0, got {self.contrast_warmup_epochs}"
            )
        if problems:
            raise ValueError("XVL config: " + "; ".join(problems))


def config_from_profile(model_fields: dict[str, Any], token_ids: dict[str, int]) -> XVLConfig:
    """An :class:`XVLConfig` from a profile's ``model`` block and the tokenizer's ids."""
    unknown = sorted(set(model_fields) - set(PROFILE_FIELDS))
    if unknown:
        raise ValueError(f"unknown xvl model settings: {unknown} (known: {list(PROFILE_FIELDS)})")
    config = XVLConfig(**model_fields, **token_ids)
    config.check()
    return config
