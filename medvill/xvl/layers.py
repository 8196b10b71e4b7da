"""BERT layers for the X-VL text and fusion encoders, with attention you can look at.

The parameter names follow transformers' ``BertLayer`` (``attention.self.query``,
``attention.output.LayerNorm``, ``intermediate.dense``, ``output.dense``…), so a BERT
checkpoint's layers copy in by renaming the layer index only. A fusion layer adds
``crossattention`` (queries from the text, keys and values from the image tokens).

Why not ``transformers.BertLayer`` itself: its cross-attention is only allowed in decoder
(causal) mode, and the attention maps the users ask for need the softmax probabilities and,
for the gradient-weighted variant, their gradients. Here each attention computes through
PyTorch's fused SDPA kernel during training and, when ``record`` is on, through the explicit
softmax whose probabilities (and their gradients) are kept on the module.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from medvill.xvl.config import XVLConfig


class Attention(nn.Module):
    """Multi-head attention, BERT layout. ``record = True`` keeps the last forward's
    probabilities in ``probs`` (B, heads, queries, keys) with ``retain_grad`` when they need a
    gradient, for the attention maps."""

    def __init__(self, config: XVLConfig, key_width: int | None = None) -> None:
        super().__init__()
        width = config.hidden_size
        self.heads = config.num_attention_heads
        self.head_dim = width // self.heads
        kv = key_width or width
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(kv, width)
        self.value = nn.Linear(kv, width)
        self.dropout = config.attention_probs_dropout_prob
        self.record = False
        self.probs: torch.Tensor | None = None

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_dim).transpose(1, 2)

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, key_valid: torch.Tensor | None
    ) -> torch.Tensor:
        """``key_valid`` (B, keys) bool: padding keys are never attended to."""
        q = self._split(self.query(queries))
        k = self._split(self.key(keys))
        v = self._split(self.value(keys))
        mask = None if key_valid is None else key_valid[:, None, None, :]
        if self.record:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            probs = scores.softmax(-1)
            if probs.requires_grad:
                probs.retain_grad()
            self.probs = probs
            context = F.dropout(probs, self.dropout, self.training) @ v
        else:
            context = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
            )
        batch, _, length, _ = context.shape
        return context.transpose(1, 2).reshape(batch, length, -1)


class AttentionOutput(nn.Module):
    """Projection, dropout, residual, LayerNorm (BERT's ``SelfOutput``)."""

    def __init__(self, config: XVLConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class AttentionBlock(nn.Module):
    """Attention + output, named ``self``/``output`` as BERT's ``BertAttention``."""

    def __init__(self, config: XVLConfig, key_width: int | None = None) -> None:
        super().__init__()
        self.self = Attention(config, key_width)
        self.output = AttentionOutput(config)

    def forward(
        self, hidden: torch.Tensor, keys: torch.Tensor, key_valid: torch.Tensor | None
    ) -> torch.Tensor:
        return self.output(self.self(hidden, keys, key_valid), hidden)


class Intermediate(nn.Module):
    def __init__(self, config: XVLConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(hidden))


class Output(nn.Module):
    def __init__(self, config: XVLConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class Layer(nn.Module):
    """One BERT layer; with ``cross`` it cross-attends to image tokens after self-attention."""

    def __init__(self, config: XVLConfig, cross: bool) -> None:
        super().__init__()
        self.attention = AttentionBlock(config)
        self.crossattention = AttentionBlock(config, config.vision_width) if cross else None
        self.intermediate = Intermediate(config)
        self.output = Output(config)

    def forward(
        self,
        hidden: torch.Tensor,
        text_valid: torch.Tensor,
        image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.attention(hidden, hidden, text_valid)
        if self.crossattention is not None:
            if image is None:
                raise ValueError("a fusion layer needs the image tokens")
            hidden = self.crossattention(hidden, image, None)
        return self.output(self.intermediate(hidden), hidden)


class TextEmbeddings(nn.Module):
    """Word + position + token-type embeddings, BERT's names."""

    def __init__(self, config: XVLConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)[None]
        hidden = (
            self.word_embeddings(ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(torch.zeros_like(ids))
        )
        return self.dropout(self.LayerNorm(hidden))


class TextEncoder(nn.Module):
    """Embeddings, ``num_text_layers`` text layers and ``num_fusion_layers`` fusion layers in one
    ``layer`` list (BERT's numbering: a 6 + 6 split of BERT-base copies its layers 0–11)."""

    def __init__(self, config: XVLConfig) -> None:
        super().__init__()
        self.embeddings = TextEmbeddings(config)
        self.num_text_layers = config.num_text_layers
        self.layer = nn.ModuleList(
            [Layer(config, cross=False) for _ in range(config.num_text_layers)]
            + [Layer(config, cross=True) for _ in range(config.num_fusion_layers)]
        )

    def encode_text(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The report alone: embeddings and the text layers."""
        hidden = self.embeddings(ids)
        for layer in self.layer[: self.num_text_layers]:
            hidden = layer(hidden, valid)
        return hidden

    def fuse(self, text: torch.Tensor, valid: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Report states from :meth:`encode_text` through the fusion layers over the image."""
        hidden = text
        for layer in self.layer[self.num_text_layers :]:
            hidden = layer(hidden, valid, image)
        return hidden

    def cross_attentions(self) -> list[Attention]:
        """The fusion layers' cross-attention modules, first to last."""
        return [
            layer.crossattention.self
            for layer in self.layer[self.num_text_layers :]
            if layer.crossattention is not None
        ]


class MLMHead(nn.Module):
    """BERT's prediction head: transform, then a decoder tied to the word embeddings."""

    def __init__(self, config: XVLConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.LayerNorm(self.act(self.dense(hidden))))
