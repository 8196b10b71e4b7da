"""The self-attention masks of MedViLL (paper Fig. 4 and 8; docs/model.md §5).

The sequence is ``[CLS] v_1 … v_K [SEP_V] | T`` where the image block ``I`` is the first
``K + 2`` positions and the text block ``T`` holds the report tokens, the final [SEP] and padding
(under Non-cross it starts with an extra text [CLS]). Every function takes ``text_valid``, a bool
tensor that is True on real text slots (tokens, [SEP], the text [CLS]) and False on padding, of
shape ``(L,)`` for one example or ``(B, L)`` for a batch, and returns the boolean "query may
attend to key" matrix of shape ``(S, S)`` / ``(B, S, S)`` with ``S = K + 2 + L``. Rows are
queries, columns keys. Padding keys are never attended to; padding rows get a harmless row.

Booleans are the source of truth (the tests compare them with hand-written matrices);
:func:`to_additive` turns them into the 4-D additive mask BERT's attention adds to its scores,
:func:`to_sdpa_bool` into the 4-D boolean mask SDPA takes directly (medvill/model/encoder.py).
"""

from __future__ import annotations

import torch

from medvill.config import MASK_TYPES


def _blocks(num_visual: int, text_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Per-slot helpers: key validity (B, S), image-block flag (S,), and whether input was 1-D."""
    if num_visual < 0:
        raise ValueError("num_visual must be >= 0")
    single = text_valid.dim() == 1
    valid_text = text_valid.bool().reshape(1, -1) if single else text_valid.bool()
    if valid_text.dim() != 2:
        raise ValueError("text_valid must have shape (L,) or (B, L)")
    batch = valid_text.shape[0]
    image_len = num_visual + 2
    image_valid = torch.ones(batch, image_len, dtype=torch.bool, device=valid_text.device)
    key_valid = torch.cat([image_valid, valid_text], dim=1)
    is_image = torch.zeros(key_valid.shape[1], dtype=torch.bool, device=valid_text.device)
    is_image[:image_len] = True
    return key_valid, is_image, single


def _finish(mask: torch.Tensor, single: bool) -> torch.Tensor:
    return mask[0] if single else mask


def _causal_text(is_image: torch.Tensor) -> torch.Tensor:
    """(S, S): text query t may see text keys at or before t (lower-triangular on T × T)."""
    seq = is_image.shape[0]
    idx = torch.arange(seq, device=is_image.device)
    lower = idx[None, :] <= idx[:, None]
    text = ~is_image
    return text[:, None] & text[None, :] & lower


def bi_mask(num_visual: int, text_valid: torch.Tensor) -> torch.Tensor:
    """Bidirectional (Fig. 4a): every query sees every non-padding key of both modalities."""
    key_valid, is_image, single = _blocks(num_visual, text_valid)
    seq = is_image.shape[0]
    mask = key_valid[:, None, :].expand(-1, seq, -1)
    return _finish(mask.clone(), single)


def s2s_mask(num_visual: int, text_valid: torch.Tensor) -> torch.Tensor:
    """Sequence-to-sequence (Fig. 4d): image queries see only I; text query t sees I and the
    text keys at or before t."""
    key_valid, is_image, single = _blocks(num_visual, text_valid)
    image_keys = is_image[None, None, :]
    image_rows = is_image[None, :, None]
    text_part = _causal_text(is_image)[None] & key_valid[:, None, :]
    from_image = image_rows & image_keys
    from_text = ~image_rows & (image_keys | text_part)
    return _finish(from_image | from_text, single)


def bar_mask(num_visual: int, text_valid: torch.Tensor) -> torch.Tensor:
    """Bidirectional auto-regressive, MedViLL's (Fig. 4b): image queries see everything (I and the
    non-padding text); text queries are causal over text and see all of I, as in S2S."""
    key_valid, is_image, single = _blocks(num_visual, text_valid)
    image_rows = is_image[None, :, None]
    text_part = _causal_text(is_image)[None] & key_valid[:, None, :]
    from_image = image_rows & key_valid[:, None, :]
    from_text = ~image_rows & (is_image[None, None, :] | text_part)
    return _finish(from_image | from_text, single)


def noncross_mask(num_visual: int, text_valid: torch.Tensor) -> torch.Tensor:
    """Non-crossing (Fig. 4c): I↔I and T↔T (bidirectional, non-padding) only. The caller puts
    the extra text [CLS] at the first text slot so IRM can use both [CLS] outputs."""
    key_valid, is_image, single = _blocks(num_visual, text_valid)
    same = is_image[:, None] == is_image[None, :]
    return _finish(same[None] & key_valid[:, None, :], single)


def bi_s2s_mask(
    num_visual: int,
    text_valid: torch.Tensor,
    generator: torch.Generator | None = None,
    s2s_probability: float = 0.75,
) -> torch.Tensor:
    """Bi & S2S: one draw per mini-batch (the paper), S2S with probability 0.75, else Bi.

    The draw comes from ``generator`` so a seeded run picks the same masks again.
    """
    use_s2s = torch.rand((), generator=generator).item() < s2s_probability
    return (s2s_mask if use_s2s else bi_mask)(num_visual, text_valid)


_FIXED = {"bar": bar_mask, "bi": bi_mask, "s2s": s2s_mask, "noncross": noncross_mask}


def resolve_mask_type(
    kind: str, generator: torch.Generator | None = None, s2s_probability: float = 0.75
) -> str:
    """The concrete mask of one mini-batch: ``bi_s2s`` becomes ``s2s`` or ``bi`` by a seeded draw.

    Drawing this once per batch in the loader (not inside the model) keeps every rank of a
    distributed step on the same mask and makes resumption replay the same choice.
    """
    if kind not in MASK_TYPES:
        raise ValueError(f"unknown attention mask type {kind!r}; expected one of {MASK_TYPES}")
    if kind != "bi_s2s":
        return kind
    return "s2s" if torch.rand((), generator=generator).item() < s2s_probability else "bi"


def build_mask(kind: str, num_visual: int, text_valid: torch.Tensor) -> torch.Tensor:
    """Boolean mask of a concrete type (``bi_s2s`` must be resolved first, per batch)."""
    if kind == "bi_s2s":
        raise ValueError("resolve 'bi_s2s' to 'bi' or 's2s' per batch with resolve_mask_type()")
    if kind not in _FIXED:
        raise ValueError(f"unknown attention mask type {kind!r}; expected one of {MASK_TYPES}")
    return _FIXED[kind](num_visual, text_valid)


def to_additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, S, S) bool → (B, 1, S, S) additive: 0 where allowed, the dtype's minimum elsewhere.

    transformers passes a 4-D mask through unchanged to the SDPA/eager attention, which adds it
    to the scores; the most negative finite value (as transformers itself uses) acts as −∞
    without producing NaN, since no row is fully masked (every query sees a [CLS]: the image's,
    or under Non-cross the text block's own).
    """
    if mask.dim() != 3 or mask.dtype != torch.bool:
        raise ValueError("expected a (B, S, S) boolean mask")
    additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    additive.masked_fill_(~mask, torch.finfo(dtype).min)
    return additive[:, None]


def to_sdpa_bool(mask: torch.Tensor) -> torch.Tensor:
    """(B, S, S) bool → (B, 1, S, S) bool for ``scaled_dot_product_attention`` (True = attend).

    The same allowed pairs as :func:`to_additive`, one byte per pair instead of the float
    dtype's, and no fill. SDPA returns NaN for a row with no allowed key; every MedViLL mask
    lets each query see a [CLS] — the image's, or under Non-cross the text block's own, which
    is never padding (tested, not checked here: checking would make the GPU wait for the host
    on every forward pass).
    """
    if mask.dim() != 3 or mask.dtype != torch.bool:
        raise ValueError("expected a (B, S, S) boolean mask")
    return mask[:, None]
