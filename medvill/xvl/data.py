"""Shard samples → X-VL pretraining batches.

The order, the split over ranks and loader workers, the exact-resume position and the per-sample
RNG are MedViLL's loader's (:class:`medvill.data.PretrainShards`); only what one sample becomes
differs. X-VL needs no precomputed negatives (matching negatives are mined inside the batch from
the contrastive similarities), and each sample carries its report twice: intact for contrast and
matching, with words masked for MLM. A batch adds what the objectives need to know about its
reports: an id equal for identical reports (they are the same positive) and the sentence
overlap of every pair (near-duplicate reports are not mined as negatives).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import torch

from medvill.data import (
    PretrainShards,
    TextSpec,
    decode_image,
    mask_tokens,
    text_spec_for,
)
from medvill.xvl.objectives import sentence_overlap


def report_id(text: str) -> int:
    """Equal for reports that differ only in case and spacing (CRC-32 of the normalised text):
    such reports are one positive in the contrast, never each other's negative."""
    return zlib.crc32(" ".join(text.lower().split()).encode("utf-8"))


def xvl_text_spec(tokenizer: Any, max_tokens: int) -> TextSpec:
    """[CLS] w₁ … wₙ [SEP]: the text encoder's [CLS] is the report's summary token."""
    return text_spec_for(tokenizer, max_tokens, text_cls=True)


class XVLShards(PretrainShards):
    """Collated X-VL micro-batches for one rank (same order, resume and seeding as MedViLL's
    loader; build it with ``negatives=None``)."""

    def _process(self, sample: dict[str, Any], counters: dict[str, int]) -> dict[str, Any]:
        s = self.settings
        key, image_member, rng, text = self._open(sample)
        ids, valid = self._text_block(text)
        mlm_ids, mlm_labels = mask_tokens(ids, valid, self.spec, rng, s.mlm_probability)
        image = decode_image(
            sample[image_member], s.image_size, rng if s.augment else None, s.crop_scale,
            s.crop_ratio,
        )  # fmt: skip
        return {
            "key": key,
            "image": image,
            "text": text,
            "text_ids": ids,
            "text_valid": valid,
            "mlm_ids": mlm_ids,
            "mlm_labels": mlm_labels,
        }

    def _collate(self, samples: list[dict[str, Any]], step: int) -> dict[str, Any]:
        if not hasattr(self, "_steps_per_epoch"):
            self._steps_per_epoch = max(
                1, self.micro_batches_per_epoch() // self.settings.accumulation
            )
        ramp = 1.0 if self.epoch > 0 else min(1.0, (step + 1) / self._steps_per_epoch)
        return collate(samples, self.settings.seed, self.epoch, step, ramp)


def collate(
    samples: list[dict[str, Any]], seed: int, epoch: int, step: int, alpha_ramp: float = 1.0
) -> dict[str, Any]:
    """Stack processed samples; ``mining_seed`` seeds this batch's hard-negative draws
    (a function of seed, epoch, step and the batch's first key: the same on a resumed run).
    ``alpha_ramp`` scales the distillation weight: it grows linearly over the first epoch, as
    in ALBEF, because the momentum model's targets are poor at the start."""
    texts = [x["text"] for x in samples]
    first = zlib.crc32(samples[0]["key"].encode("utf-8"))
    mining_seed = int(np.random.SeedSequence([seed, epoch, step, first]).generate_state(1)[0])
    return {
        "keys": [x["key"] for x in samples],
        "images": torch.stack([x["image"] for x in samples]),
        "text_ids": torch.from_numpy(np.stack([x["text_ids"] for x in samples])),
        "text_valid": torch.from_numpy(np.stack([x["text_valid"] for x in samples])),
        "mlm_ids": torch.from_numpy(np.stack([x["mlm_ids"] for x in samples])),
        "mlm_labels": torch.from_numpy(np.stack([x["mlm_labels"] for x in samples])),
        "report_ids": torch.tensor([report_id(t) for t in texts], dtype=torch.long),
        "report_overlap": torch.from_numpy(sentence_overlap(texts)),
        "mining_seed": mining_seed,
        "alpha_ramp": alpha_ramp,
        "epoch": epoch,
        "step": step,
    }
