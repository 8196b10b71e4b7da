"""The joint encoder: transformers' ``BertModel`` driven with MedViLL's per-example masks.

No transformer layer is written here. ``BertModel.forward`` accepts ``inputs_embeds`` plus
``position_ids``/``token_type_ids`` (its ``BertEmbeddings`` adds the position and type tables,
LayerNorm and dropout) and a ready 4-D ``(B, 1, S, S)`` additive mask, which transformers 5
passes through unchanged (``masking_utils._preprocess_mask_arguments``) to the attention
function — SDPA by default, whose ``attn_mask`` accepts exactly that.
"""

from __future__ import annotations

import torch
from transformers import BertModel

from medvill.model.masks import build_mask, to_additive


def encode(
    bert: BertModel,
    inputs_embeds: torch.Tensor,
    position_ids: torch.Tensor,
    token_type_ids: torch.Tensor,
    mask_type: str,
    num_visual: int,
    text_valid: torch.Tensor,
) -> torch.Tensor:
    """Run BERT over the joint sequence under a concrete mask; returns (B, S, H) hidden states."""
    allowed = build_mask(mask_type, num_visual, text_valid)
    additive = to_additive(allowed, inputs_embeds.dtype)
    out = bert(
        inputs_embeds=inputs_embeds,
        attention_mask=additive,
        position_ids=position_ids,
        token_type_ids=token_type_ids,
    )
    return out.last_hidden_state
