"""The joint encoder: transformers' ``BertModel`` driven with MedViLL's per-example masks.

No transformer layer is written here. ``BertModel.forward`` accepts ``inputs_embeds`` plus
``position_ids``/``token_type_ids`` (its ``BertEmbeddings`` adds the position and type tables,
LayerNorm and dropout) and a ready 4-D ``(B, 1, S, S)`` mask, which transformers 5 passes
through unchanged (``masking_utils._preprocess_mask_arguments``) to the attention function.

How that mask reaches the attention is the *attention backend* (docs/model.md §5):

* ``reference``: the additive float mask (0 allowed, the dtype's minimum elsewhere), which
  every attention implementation (eager adds it to the scores, SDPA takes it as ``attn_mask``)
  understands. A float (B, 1, S, S) tensor in the embedding dtype (fp32 even under autocast).
* ``sdpa_bool``: the boolean "may attend" mask itself, which ``scaled_dot_product_attention``
  takes as ``attn_mask`` (True = attend). A quarter of the fp32 mask's bytes, nothing to fill,
  and the same allowed pairs by construction. Only the SDPA implementation reads booleans that
  way — eager attention would *add* them to the scores — so it is used only under SDPA.
* ``sdpa_compute_dtype``: the additive mask, but built once in the dtype the attention computes
  in (bf16/fp16 under autocast). Under autocast the reference fp32 mask is cast to that dtype
  again in every layer, and SDPA's memory-efficient kernel turns a boolean mask into a float
  one in every layer too; this variant does neither. Which is fastest is for
  ``benchmarks/bench_gpu.py --attention`` to say on the GPU. SDPA only, like ``sdpa_bool``.
* ``flex``: FlexAttention with a block mask (medvill/model/flex.py): no dense mask at all,
  empty 128 × 128 tiles skipped. BERT's attention function is switched to ``medvill_flex``
  while it is chosen. FlexAttention has no attention dropout, so training needs
  ``attention_probs_dropout_prob: 0`` (else the first training forward pass says so), and on the
  CPU it runs forward only.
* ``auto``: ``sdpa_bool`` when BERT runs SDPA attention, else ``reference``.
"""

from __future__ import annotations

import torch
from torch.nn.attention.flex_attention import BlockMask
from transformers import BertModel

from medvill.model.flex import FLEX_IMPLEMENTATION, block_mask_for, block_mask_from_dense
from medvill.model.masks import build_mask, to_additive, to_sdpa_bool

ATTENTION_BACKENDS = ("auto", "reference", "sdpa_bool", "sdpa_compute_dtype", "flex")


def resolve_attention_backend(backend: str, bert: BertModel) -> str:
    """The concrete backend (``reference`` or ``sdpa_bool``) for this BERT's attention.

    An explicit ``sdpa_bool`` on a non-SDPA BERT is an error rather than a silent fallback:
    eager attention would add the booleans to the scores and attend to masked keys.
    """
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(
            f"unknown attention backend {backend!r}; expected one of {ATTENTION_BACKENDS}"
        )
    implementation = bert.config._attn_implementation
    if backend == "flex" or implementation == FLEX_IMPLEMENTATION:
        if backend != "flex" or implementation != FLEX_IMPLEMENTATION:
            raise ValueError(
                f"attention backend {backend!r} with BERT attention {implementation!r}: choose "
                "backends with MedViLLModel.set_attention_backend(), which switches BERT to "
                f"{FLEX_IMPLEMENTATION!r} for 'flex' and back"
            )
        return backend
    if backend == "auto":
        return "sdpa_bool" if implementation == "sdpa" else "reference"
    if backend != "reference" and implementation != "sdpa":
        raise ValueError(
            f"attention backend {backend!r} needs BERT's SDPA attention, this model uses "
            f"{implementation!r}; use 'reference' (or 'auto')"
        )
    return backend


def compute_dtype(device: torch.device, tensor_dtype: torch.dtype) -> torch.dtype:
    """The dtype attention runs in on ``device``: autocast's when it is on, else the tensors'."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return tensor_dtype


def attention_mask_for(
    mask_type: str, num_visual: int, text_valid: torch.Tensor, backend: str, dtype: torch.dtype
) -> torch.Tensor | BlockMask:
    """The (B, 1, S, S) mask BERT is handed under a concrete backend (see the module doc); under
    ``flex`` a block mask built from the mask rules, without the dense matrix."""
    if backend == "flex":
        return block_mask_for(mask_type, num_visual, text_valid)
    return format_mask(build_mask(mask_type, num_visual, text_valid), backend, dtype)


def format_mask(
    allowed: torch.Tensor, backend: str, dtype: torch.dtype
) -> torch.Tensor | BlockMask:
    """A (B, S, S) boolean "may attend" mask in the form a concrete backend hands to BERT;
    ``dtype`` is the embeddings' (the reference additive mask's dtype)."""
    if backend == "flex":
        return block_mask_from_dense(allowed)
    if backend == "sdpa_bool":
        return to_sdpa_bool(allowed)
    if backend == "reference":
        return to_additive(allowed, dtype)
    if backend == "sdpa_compute_dtype":
        return to_additive(allowed, compute_dtype(allowed.device, dtype))
    raise ValueError(f"attention backend must be resolved first, got {backend!r}")


def encode(
    bert: BertModel,
    inputs_embeds: torch.Tensor,
    position_ids: torch.Tensor,
    token_type_ids: torch.Tensor,
    mask_type: str,
    num_visual: int,
    text_valid: torch.Tensor,
    backend: str = "auto",
) -> torch.Tensor:
    """Run BERT over the joint sequence under a concrete mask; returns (B, S, H) hidden states."""
    concrete = resolve_attention_backend(backend, bert)
    mask = attention_mask_for(mask_type, num_visual, text_valid, concrete, inputs_embeds.dtype)
    out = bert(
        inputs_embeds=inputs_embeds,
        attention_mask=mask,
        position_ids=position_ids,
        token_type_ids=token_type_ids,
    )
    return out.last_hidden_state
