"""Where the model looks: X-VL's attention maps for one image and one report.

* **Cross-attention per word**: in a fusion layer every report token attends to the image
  patches; the probabilities of a word's WordPieces (averaged over heads and pieces) form a
  grid over the image — what that word "looks at".
* **Gradient-weighted cross-attention** (ALBEF's Grad-CAM): the same probabilities times their
  positive gradient of the matching score, so only attention that makes the pair look matched
  counts (plain attention also spreads over uninformative patches).
* **[CLS] self-attention per head** of the ViT's last block: what the image encoder summarises
  the image from, without any text (the maps the Medical X-VL authors show).

All maps are (grid, grid) arrays over the image patches in row-major order, the image's
[CLS] column dropped; :mod:`medvill.xvl.overlay` draws them over the image.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medvill.xvl.model import XVLModel


@dataclass
class WordSpan:
    """A word (or a chosen phrase) of the report and the token positions it covers."""

    text: str
    positions: list[int]


@dataclass
class AttentionMaps:
    """Maps of one (image, report) pair; each map is (grid, grid) float32, ≥ 0."""

    words: list[WordSpan]
    cross: list[np.ndarray]  # per word
    gradcam: list[np.ndarray]  # per word
    cls_heads: list[np.ndarray]  # per ViT head
    match_probability: float
    grid: int
    layer: int
    extra: dict[str, Any] = field(default_factory=dict)


def word_spans(tokenizer: Any, text: str, max_tokens: int) -> tuple[list[int], list[WordSpan]]:
    """Token ids ([CLS] pieces [SEP]) and the words they spell: WordPieces that continue a
    word (``##…``) join the word before them; [CLS]/[SEP] are no word."""
    pieces = tokenizer.tokenize(text)[:max_tokens]
    ids = [tokenizer.cls_token_id, *tokenizer.convert_tokens_to_ids(pieces),
           tokenizer.sep_token_id]  # fmt: skip
    words: list[WordSpan] = []
    for position, piece in enumerate(pieces, start=1):
        if piece.startswith("##") and words:
            words[-1].text += piece[2:]
            words[-1].positions.append(position)
        else:
            words.append(WordSpan(piece, [position]))
    return ids, words


def phrase_span(words: list[WordSpan], phrase: str) -> WordSpan:
    """The consecutive words that spell ``phrase`` (case-insensitive, whitespace-separated);
    a ValueError naming the report's words when it is not there."""
    wanted = phrase.lower().split()
    texts = [w.text.lower() for w in words]
    for start in range(len(texts) - len(wanted) + 1):
        if texts[start : start + len(wanted)] == wanted:
            chosen = words[start : start + len(wanted)]
            return WordSpan(" ".join(w.text for w in chosen),
                            [p for w in chosen for p in w.positions])  # fmt: skip
    raise ValueError(f"phrase {phrase!r} is not in the report (its words: {texts})")


@contextlib.contextmanager
def _recording(model: XVLModel) -> Iterator[dict[str, torch.Tensor]]:
    """Record the fusion layers' cross-attention and the ViT's last-block attention."""
    crosses = model.text.cross_attentions()
    block = model.visual_encoder.blocks[-1].attn
    captured: dict[str, torch.Tensor] = {}
    fused_before = getattr(block, "fused_attn", False)

    def keep(_module: Any, inputs: tuple[torch.Tensor, ...], _output: Any) -> None:
        captured["vit"] = inputs[0].detach()  # attn_drop's input: the softmax probabilities

    for attention in crosses:
        attention.record = True
    block.fused_attn = False  # the explicit softmax path, whose probabilities can be hooked
    handle = block.attn_drop.register_forward_hook(keep)
    try:
        yield captured
    finally:
        handle.remove()
        block.fused_attn = fused_before
        for attention in crosses:
            attention.record = False
            attention.probs = None


def _to_grid(patch_values: torch.Tensor, grid: int) -> np.ndarray:
    return patch_values.float().reshape(grid, grid).cpu().numpy().astype(np.float32)


def compute_maps(
    model: XVLModel,
    image: torch.Tensor,
    ids: list[int],
    words: list[WordSpan],
    layer: int | None = None,
) -> AttentionMaps:
    """All maps for one pair: ``image`` (3, S, S) normalised as the loader does, ``ids`` the
    report's token ids, ``words`` the spans to map, ``layer`` the fusion layer
    (:func:`default_layer` when None; negative counts from the last)."""
    model.eval()
    count = len(model.text.cross_attentions())
    layer = default_layer(count) if layer is None else layer
    if not -count <= layer < count:
        raise ValueError(f"fusion layer {layer} does not exist (the model has {count})")
    layer %= count
    grid = model.config.grid_size
    device = next(model.parameters()).device
    text_ids = torch.tensor([ids], device=device)
    valid = torch.ones_like(text_ids, dtype=torch.bool)
    with _recording(model) as captured, torch.enable_grad():
        out = model(image[None].to(device), text_ids, valid)
        match = out.itm_logits.softmax(-1)[0, 1]
        model.zero_grad(set_to_none=True)
        out.itm_logits[0, 1].backward()
        attention = model.text.cross_attentions()[layer]
        probs = attention.probs  # (1, heads, L, 1 + patches)
        if probs is None or probs.grad is None:
            raise RuntimeError("cross-attention was not recorded")
        weights = probs.detach()[0, :, :, 1:]  # drop the image [CLS] column
        grads = probs.grad[0, :, :, 1:]
        plain = weights.mean(0)  # (L, patches)
        weighted = (weights * grads.clamp(min=0)).mean(0)
        vit = captured["vit"][0, :, 0, 1:]  # (heads, patches): [CLS] → patches
    model.zero_grad(set_to_none=True)
    return AttentionMaps(
        words=words,
        cross=[_to_grid(plain[w.positions].mean(0), grid) for w in words],
        gradcam=[_to_grid(weighted[w.positions].mean(0), grid) for w in words],
        cls_heads=[_to_grid(vit[h], grid) for h in range(vit.shape[0])],
        match_probability=float(match.detach()),
        grid=grid,
        layer=layer,
    )


def default_layer(fusion_layers: int) -> int:
    """The middle fusion layer ((F − 1) // 2: the third of six, ALBEF's choice for its maps).
    Not the last: the matching score reads only the last layer's [CLS] output, so the last
    layer's word rows get no gradient and their Grad-CAM would be empty."""
    return (fusion_layers - 1) // 2


def peak_cell(grid_map: np.ndarray) -> tuple[int, int]:
    """(row, column) of a map's largest value (the first when tied)."""
    row, column = np.unravel_index(int(np.argmax(grid_map)), grid_map.shape)
    return int(row), int(column)
