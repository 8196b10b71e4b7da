"""Shard samples → contrastive batches (image, report tokens, each token's sentence).

Same stream split, shuffle, resume and per-sample seeding as MedViLL's loader
(:class:`~medvill.data.PretrainShards`, whose iteration this subclass keeps); only what one
sample becomes differs: no masking, no IRM pairing. The report is tokenised sentence by
sentence (``sentences`` of the sample's ``json``, written by the sections stage; shards from
before it are split here with the same rules), so every token knows its sentence:

``[CLS] s₀ tokens … s₁ tokens … [SEP] [PAD] …`` with ``sentence_index`` −1 on [CLS], [SEP]
and padding. Sentences past ``max_sentences`` or past ``max_text_tokens`` are cut (a
sentence cut in the middle keeps its first tokens). ConVIRT reads one sentence drawn from the
sample's RNG (its "random sentence" text view); the others read the whole report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medvill.data import IMAGE_MEMBERS, PretrainShards, decode_image, sample_rng
from pipeline.sentences import split_sentences


@dataclass(frozen=True)
class ReportLayout:
    """Token layout of the report block."""

    max_tokens: int  # WordPieces between [CLS] and [SEP]
    max_sentences: int
    pad_id: int
    cls_id: int
    sep_id: int
    random_sentence: bool  # ConVIRT's text view: one sentence of the report

    @property
    def slots(self) -> int:
        return self.max_tokens + 2


def report_tokens(
    sentence_tokens: list[list[int]], layout: ReportLayout
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, valid, sentence_index)``, each (max_tokens + 2,), from per-sentence WordPieces."""
    ids = np.full(layout.slots, layout.pad_id, dtype=np.int64)
    index = np.full(layout.slots, -1, dtype=np.int64)
    ids[0] = layout.cls_id
    position = 1
    for number, tokens in enumerate(sentence_tokens[: layout.max_sentences]):
        room = layout.max_tokens + 1 - position
        if room <= 0:
            break
        taken = tokens[:room]
        ids[position : position + len(taken)] = taken
        index[position : position + len(taken)] = number
        position += len(taken)
    ids[position] = layout.sep_id
    valid = np.zeros(layout.slots, dtype=bool)
    valid[: position + 1] = True
    return ids, valid, index


class ContrastiveShards(PretrainShards):
    """:class:`PretrainShards` whose samples are (image, report tokens, sentence index)."""

    def __init__(self, *args: Any, layout: ReportLayout, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.layout = layout

    def sentences_of(self, sample: dict[str, Any], counters: dict[str, int]) -> list[str]:
        """The sample's sentences: from its json, else split here (older shards)."""
        text = sample["txt"].decode("utf-8")
        meta = json.loads(sample["json"]) if "json" in sample else {}
        sentences = meta.get("sentences")
        if not isinstance(sentences, list):
            counters["sentences_split_by_loader"] = counters.get("sentences_split_by_loader", 0) + 1
            sentences = split_sentences(text)
        return [str(s) for s in sentences if str(s).strip()] or [text]

    def _process(self, sample: dict[str, Any], counters: dict[str, int]) -> dict[str, Any]:
        s = self.settings
        key = sample["__key__"]
        image_member = next((m for m in IMAGE_MEMBERS if m in sample), None)
        if image_member is None or "txt" not in sample:
            raise ValueError(f"sample {key} lacks an image (jpg/png) or txt member")
        rng = sample_rng(s.seed, self.epoch, key)
        sentences = self.sentences_of(sample, counters)
        if self.layout.random_sentence:
            sentences = [sentences[int(rng.integers(0, len(sentences)))]]
        tokenised = self.tokenizer(
            sentences, add_special_tokens=False, truncation=True,
            max_length=self.layout.max_tokens,
        )["input_ids"]  # fmt: skip
        tokenised = [t for t in tokenised if t]
        if not tokenised:
            raise ValueError(f"sample {key}: the report gives no token")
        ids, valid, index = report_tokens(tokenised, self.layout)
        image_rng = rng if s.augment else None
        image = decode_image(
            sample[image_member], s.image_size, image_rng, s.crop_scale, s.crop_ratio
        )
        return {"key": key, "image": image, "text_ids": ids, "text_valid": valid,
                "sentence_index": index}  # fmt: skip

    def _collate(self, samples: list[dict[str, Any]], step: int) -> dict[str, Any]:
        return {
            "keys": [x["key"] for x in samples],
            "images": torch.stack([x["image"] for x in samples]),
            "text_ids": torch.from_numpy(np.stack([x["text_ids"] for x in samples])),
            "text_valid": torch.from_numpy(np.stack([x["text_valid"] for x in samples])),
            "sentence_index": torch.from_numpy(np.stack([x["sentence_index"] for x in samples])),
            "step": step,
        }
