"""Model configuration (a transformers ``PretrainedConfig``) and the params.yaml profiles.

The class defaults are the paper profile (MedViLL §4: BERT-base 12/12/768, ResNet-50 on 512×512,
180 of 256 visual features in pretraining, 253 text tokens, dropout 0.1), so a config saved next
to a checkpoint is self-describing and ``MedViLLConfig()`` is the model the paper trained.
Smaller profiles (the CPU demo, the tests) override fields from ``params.yaml``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from transformers import AutoConfig, BertConfig, PretrainedConfig

#: Attention mask schemes of the paper's Fig. 4 (plus the Bi&S2S mix). ``bar`` is MedViLL's.
MASK_TYPES: tuple[str, ...] = ("bar", "bi", "s2s", "bi_s2s", "noncross")

#: Channels of the last conv stage of each supported backbone: torchvision ResNets, and the
#: small plain CNN of medvill/model/smallcnn.py (CPU learnability runs, no ImageNet weights).
BACKBONE_CHANNELS: dict[str, int] = {"resnet50": 2048, "resnet18": 512, "small_cnn": 256}

#: Hub commits the public text weights and vocabulary are loaded at. A Hub id names a moving
#: branch; a commit does not, so a run next year reads the bytes this one did (and the
#: tokenizer and the weights it initialises always come from the same commit). The id
#: ``bert-base-uncased`` is the old alias of ``google-bert/bert-base-uncased``: same repository.
PINNED_HUB_REVISIONS: dict[str, str] = {
    "google-bert/bert-base-uncased": "86b5e0934494bd15c9632b12f734a8a67f723594",
    "bert-base-uncased": "86b5e0934494bd15c9632b12f734a8a67f723594",
}

_COMMIT = re.compile(r"[0-9a-f]{40}")
#: What a Hub repository id looks like (``name`` or ``owner/name``); anything else is a path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")

#: Fields shared with ``transformers.BertConfig``: the joint encoder is a plain BERT.
_BERT_FIELDS: tuple[str, ...] = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
)


class MedViLLConfig(PretrainedConfig):
    """Configuration of the MedViLL joint image-report encoder.

    Visual fields: ``backbone`` (torchvision ResNet name, or ``small_cnn``: medvill/model/
    smallcnn.py), ``image_size`` (square input side; the feature grid is ``image_size // 32``
    per side), ``num_sampled_visual`` (features kept per
    mini-batch in pretraining; all are used downstream), ``visual_position`` (``grid_index``: the
    shared BERT position table indexed by the row-major grid cell, as the original code;
    ``row_col``: separate learned row and column tables), ``freeze_stem`` (conv1/bn1/layer1
    frozen, as the paper) and ``freeze_batchnorm`` (BatchNorm layers use their running statistics:
    right for ImageNet weights, and it makes a sample's output independent of its batch, which
    distributed training relies on).

    Text fields: ``max_text_tokens`` WordPieces before the final [SEP]; special token ids come
    from the tokenizer. ``attention_mask_type`` is one of :data:`MASK_TYPES`;
    ``s2s_probability`` is the share of S2S mini-batches under ``bi_s2s``.
    """

    model_type = "medvill"

    def __init__(
        self,
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
        unk_token_id: int = 100,
        cls_token_id: int = 101,
        sep_token_id: int = 102,
        mask_token_id: int = 103,
        backbone: str = "resnet50",
        image_size: int = 512,
        num_sampled_visual: int = 180,
        visual_position: str = "grid_index",
        freeze_stem: bool = True,
        freeze_batchnorm: bool = True,
        max_text_tokens: int = 253,
        attention_mask_type: str = "bar",
        s2s_probability: float = 0.75,
        tie_word_embeddings: bool = True,
        **kwargs: Any,
    ) -> None:
        if backbone not in BACKBONE_CHANNELS:
            raise ValueError(
                f"backbone must be one of {sorted(BACKBONE_CHANNELS)}, got {backbone!r}"
            )
        if image_size % 32 != 0 or image_size < 32:
            raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}")
        if attention_mask_type not in MASK_TYPES:
            raise ValueError(f"attention_mask_type must be one of {MASK_TYPES}")
        if visual_position not in ("grid_index", "row_col"):
            raise ValueError("visual_position must be 'grid_index' or 'row_col'")
        if hidden_size % num_attention_heads != 0:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        grid_cells = (image_size // 32) ** 2
        if not 0 < num_sampled_visual <= grid_cells:
            raise ValueError(f"num_sampled_visual must be in 1..{grid_cells} for {image_size}²")
        text_slots = max_text_tokens + 2  # + [SEP] + the extra text [CLS] of Non-cross
        if max_position_embeddings < max(grid_cells, text_slots):
            raise ValueError("max_position_embeddings is smaller than the visual grid or text")
        if not 0.0 <= s2s_probability <= 1.0:
            raise ValueError("s2s_probability must be a probability")
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
        self.unk_token_id = unk_token_id
        self.cls_token_id = cls_token_id
        self.sep_token_id = sep_token_id
        self.mask_token_id = mask_token_id
        self.backbone = backbone
        self.image_size = image_size
        self.num_sampled_visual = num_sampled_visual
        self.visual_position = visual_position
        self.freeze_stem = freeze_stem
        self.freeze_batchnorm = freeze_batchnorm
        self.max_text_tokens = max_text_tokens
        self.attention_mask_type = attention_mask_type
        self.s2s_probability = s2s_probability
        # The MLM decoder shares the word-embedding matrix, as in BERT.
        self.tie_word_embeddings = tie_word_embeddings
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    @property
    def grid_size(self) -> int:
        """Side of the CNN feature map (ResNet downsamples by 32): 16 for 512² inputs."""
        return self.image_size // 32

    @property
    def num_visual_features(self) -> int:
        """All feature-map cells (256 at 512²); downstream tasks use every one."""
        return self.grid_size**2

    @property
    def visual_feature_dim(self) -> int:
        return BACKBONE_CHANNELS[self.backbone]

    def text_slots(self, mask_type: str | None = None) -> int:
        """Text block length: tokens + [SEP] (+ the extra text [CLS] under Non-cross)."""
        kind = mask_type or self.attention_mask_type
        return self.max_text_tokens + 1 + (1 if kind == "noncross" else 0)

    def bert_config(self) -> BertConfig:
        """The BERT encoder's own config; SDPA attention accepts our 4-D additive masks."""
        cfg = BertConfig(**{name: getattr(self, name) for name in _BERT_FIELDS})
        cfg._attn_implementation = getattr(self, "_attn_implementation", None) or "sdpa"
        return cfg


# Auto classes (AutoTokenizer reads a checkpoint's config.json) then know "medvill" instead of
# falling back to a bare PretrainedConfig with a compatibility warning on every load.
AutoConfig.register(MedViLLConfig.model_type, MedViLLConfig, exist_ok=True)


def hub_source(source: str) -> tuple[str, str | None]:
    """(where, revision) for a ``from_pretrained`` source given in params.yaml.

    A local directory, or anything shaped like a path rather than a Hub id (absolute, ``./``,
    more than one ``/``), loads as is (revision None). A Hub id loads at a fixed commit: the one in
    :data:`PINNED_HUB_REVISIONS`, or the one written after it as ``id@<commit>``. A Hub id with
    neither is refused, because its bytes could change between two runs of the same params.
    """
    repo_id, _, revision = source.partition("@")
    if Path(source).is_dir() or not _HUB_ID.fullmatch(repo_id):
        return source, None  # a folder (maybe a missing one: loading it then fails clearly)
    revision = revision or PINNED_HUB_REVISIONS.get(repo_id, "")
    if not _COMMIT.fullmatch(revision):
        raise ValueError(
            f"{source!r} is neither a local directory nor a Hub id pinned to a commit: write "
            f"it as '{repo_id}@<40-hex commit>' (pinned ids: {sorted(PINNED_HUB_REVISIONS)})"
        )
    return repo_id, revision


def load_params(path: Path | str) -> dict[str, Any]:
    """Read a params.yaml (DVC's parameter file) into a dict."""
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def profile_section(
    params: dict[str, Any], profile: str, family: str = "medvill"
) -> dict[str, Any]:
    """A pretraining profile block, with a clear error naming what exists: MedViLL's under
    ``pretrain.profiles.<profile>``, another family's under
    ``pretrain.families.<family>.profiles.<profile>``."""
    pretrain = params.get("pretrain", {})
    if family == "medvill":
        profiles, where = pretrain.get("profiles", {}), "pretrain.profiles"
    else:
        where = f"pretrain.families.{family}.profiles"
        profiles = (pretrain.get("families", {}).get(family) or {}).get("profiles", {})
    if profile not in profiles:
        raise KeyError(f"unknown profile {profile!r}; params.yaml's {where} defines "
                       f"{sorted(profiles)}")  # fmt: skip
    return profiles[profile]


def config_from_profile(
    profile: dict[str, Any], tokenizer_ids: dict[str, int] | None = None
) -> MedViLLConfig:
    """Build the model config from a profile's ``model`` block and the tokenizer's ids."""
    fields = dict(profile.get("model", {}))
    if tokenizer_ids:
        fields.update(tokenizer_ids)
    return MedViLLConfig(**fields)
