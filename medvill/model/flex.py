"""The ``flex`` attention backend: MedViLL's masks as FlexAttention block masks.

``torch.nn.attention.flex_attention`` takes the mask as a *function* of (example, head, query,
key) plus a :class:`BlockMask` that lists, per 128 × 128 tile, whether the tile is empty, full
or partial. Empty tiles (text queries × later text keys under BAR/S2S, padding keys, the
off-diagonal blocks of Non-cross) are skipped outright, full tiles need no mask at all, and no
dense (B, 1, S, S) mask is ever stored: the mask function reads a (B, S) key-validity vector.

The five mask types are written here from the same rules as :mod:`medvill.model.masks` (whose
boolean matrices stay the source of truth: the tests compare both element by element).
Arbitrary dense masks — generation's scoring layout — become block masks that index them.

Limits, both PyTorch's: FlexAttention has no dropout on the attention probabilities (BERT
trains with 0.1), so a training forward pass with attention dropout is refused with a message
rather than silently computing another function; and on the CPU it runs forward only (no
backward), unfused. It is meant for CUDA, where it is compiled into one fused kernel.

transformers' own ``flex_attention`` integration is not used: it refuses dropout too and
expects its own mask preparation. This module registers ``medvill_flex`` in transformers'
``AttentionInterface``; :meth:`MedViLLModel.set_attention_backend` switches BERT to it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
from transformers import AttentionInterface

#: The name BERT's config carries while the ``flex`` backend is chosen.
FLEX_IMPLEMENTATION = "medvill_flex"

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def mask_mod_for(kind: str, num_visual: int, text_valid: torch.Tensor) -> MaskMod:
    """The "query may attend to key" function of a concrete mask type (docs/model.md §5).

    Slots below ``num_visual + 2`` are the image block (always valid keys); the rest is the text
    block, whose padding keys are never attended to.
    """
    image_len = num_visual + 2
    if text_valid.dim() != 2:
        raise ValueError("text_valid must have shape (B, L)")
    image_valid = torch.ones(text_valid.shape[0], image_len, dtype=torch.bool,
                             device=text_valid.device)  # fmt: skip
    key_valid = torch.cat([image_valid, text_valid.bool()], dim=1)

    def bi(b: Any, h: Any, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return key_valid[b, kv]

    def noncross(b: Any, h: Any, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return ((q < image_len) == (kv < image_len)) & key_valid[b, kv]

    def from_text(b: Any, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """A text query sees the whole image block and the valid text keys at or before it."""
        return (kv < image_len) | ((kv <= q) & key_valid[b, kv])

    def s2s(b: Any, h: Any, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        image_query = q < image_len
        return (image_query & (kv < image_len)) | (~image_query & from_text(b, q, kv))

    def bar(b: Any, h: Any, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        image_query = q < image_len
        return (image_query & key_valid[b, kv]) | (~image_query & from_text(b, q, kv))

    mods = {"bi": bi, "noncross": noncross, "s2s": s2s, "bar": bar}
    if kind not in mods:
        raise ValueError(f"flex block masks take a concrete mask type {sorted(mods)}, got {kind!r}")
    return mods[kind]


def block_mask_for(kind: str, num_visual: int, text_valid: torch.Tensor) -> BlockMask:
    """The block mask of a concrete mask type for a batch, on ``text_valid``'s device."""
    batch, seq = text_valid.shape[0], num_visual + 2 + text_valid.shape[1]
    mod = mask_mod_for(kind, num_visual, text_valid)
    return create_block_mask(mod, batch, None, seq, seq, device=text_valid.device)


def block_mask_from_dense(allowed: torch.Tensor) -> BlockMask:
    """A block mask that reads a ready (B, S, S) boolean mask (layouts other than the five)."""
    if allowed.dim() != 3 or allowed.dtype != torch.bool:
        raise ValueError("expected a (B, S, S) boolean mask")
    batch, queries, keys = allowed.shape

    def dense(b: Any, h: Any, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return allowed[b, q, kv]

    return create_block_mask(dense, batch, None, queries, keys, device=allowed.device)


@functools.cache
def _compiled_flex() -> Callable[..., torch.Tensor]:
    """FlexAttention compiled once per process: its fused kernel exists only compiled."""
    return torch.compile(flex_attention, dynamic=False)


def flex_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: (B, H, S, D) inputs → (B, S, H, D) output."""
    if not isinstance(attention_mask, BlockMask):
        raise TypeError(
            f"the flex attention backend needs a BlockMask, got {type(attention_mask).__name__}"
        )
    if dropout > 0:
        raise ValueError(
            f"attention backend 'flex' cannot train with attention dropout ({dropout}): "
            "FlexAttention has no dropout on the attention probabilities. Set the profile's "
            "attention_probs_dropout_prob to 0, use 'flex' for evaluation only (model.eval()), "
            "or train with 'sdpa_bool'"
        )
    if query.device.type == "cuda":
        out = _compiled_flex()(query, key, value, block_mask=attention_mask, scale=scaling)
    elif torch.is_grad_enabled() and query.requires_grad:
        raise ValueError(
            "attention backend 'flex' runs forward only on the CPU (PyTorch has no FlexAttention "
            "backward there): train with 'sdpa_bool' on the CPU, or use 'flex' under no_grad"
        )
    else:  # unfused reference implementation: PyTorch warns that it is not fast, as known
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "flex_attention called without torch.compile")
            out = flex_attention(query, key, value, block_mask=attention_mask, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(FLEX_IMPLEMENTATION, flex_attention_forward)
