"""Zero-shot image–report retrieval with a pretrained X-VL on the pairs stage's candidate blocks.

Each query (an image for I2R, a report for R2I) has a block of candidates in
``I2T_Label_<Split>.jsonl`` / ``T2I_Label_<Split>.jsonl``; a candidate is relevant when its
``is_aligned`` is 1 (same positive label set as the query, the true pair included), exactly
as MedViLL's retrieval evaluation. Two scores rank a block: the contrastive similarity of the
projected [CLS] features (ITC) and the matching probability of the fusion encoder (ITM). No
fine-tuning: this measures what pretraining alone learned. Metrics are MedViLL's (MRR, Hit@5,
Recall@5, Precision@5, :func:`medvill.metrics.retrieval_metrics`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvill.data import decode_image
from medvill.metrics import retrieval_metrics, score_query
from medvill.tasks.retrieval import DIRECTIONS, query_blocks
from medvill.xvl.model import XVLModel


class PairFeatures:
    """Encoder outputs of the images and reports of a list of (image, report) lines, each
    distinct image or report encoded once (a block of 100 candidates repeats its query 100
    times): the contrastive similarity of every line is then a dot product, and the fusion
    encoder runs only for the lines whose matching score is asked for."""

    @torch.no_grad()
    def __init__(
        self,
        model: XVLModel,
        tokenizer: Any,
        images: list[Path],
        texts: list[str],
        batch_size: int = 32,
    ) -> None:
        from medvill.data import text_block
        from medvill.xvl.data import xvl_text_spec

        model.eval()
        self.model, self.batch_size = model, batch_size
        device = next(model.parameters()).device
        spec = xvl_text_spec(tokenizer, model.config.max_text_tokens)
        image_index = {p: i for i, p in enumerate(dict.fromkeys(images))}
        text_index = {t: i for i, t in enumerate(dict.fromkeys(texts))}
        embeds, feats = [], []
        unique_images = list(image_index)
        for start in range(0, len(unique_images), batch_size):
            chunk = [decode_image(p.read_bytes(), model.config.image_size, None)
                     for p in unique_images[start : start + batch_size]]  # fmt: skip
            out = model.encode_image(torch.stack(chunk).to(device))
            embeds.append(out)
            feats.append(model.image_features(out))
        self.image_embeds, self.image_feats = torch.cat(embeds), torch.cat(feats)
        encoded = []
        for text in text_index:
            tokens = tokenizer(text, add_special_tokens=False, truncation=True,
                               max_length=spec.max_tokens)["input_ids"]  # fmt: skip
            encoded.append(text_block(tokens, spec))
        self.ids = torch.from_numpy(np.stack([e[0] for e in encoded])).to(device)
        self.valid = torch.from_numpy(np.stack([e[1] for e in encoded])).to(device)
        self.text_embeds = torch.cat([model.text.encode_text(self.ids[s : s + batch_size],
                                                             self.valid[s : s + batch_size])
                                      for s in range(0, len(self.ids), batch_size)])  # fmt: skip
        self.text_feats = model.text_features(self.text_embeds)
        self.rows_i = torch.tensor([image_index[p] for p in images], device=device)
        self.rows_t = torch.tensor([text_index[t] for t in texts], device=device)

    @torch.no_grad()
    def itc(self) -> np.ndarray:
        """Cosine similarity of the projected [CLS] features of every line."""
        sim = (self.image_feats[self.rows_i] * self.text_feats[self.rows_t]).sum(-1)
        return sim.float().cpu().numpy()

    @torch.no_grad()
    def itm(self, lines: np.ndarray | None = None) -> np.ndarray:
        """Matching probability of the given line numbers (default: every line)."""
        model, size = self.model, self.batch_size
        chosen = torch.arange(len(self.rows_i)) if lines is None else torch.as_tensor(lines)
        out = []
        for start in range(0, len(chosen), size):
            part = chosen[start : start + size].to(self.rows_i.device)
            i, t = self.rows_i[part], self.rows_t[part]
            fused = model.text.fuse(self.text_embeds[t], self.valid[t], self.image_embeds[i])
            out.append(model.itm_head(fused[:, 0]).softmax(-1)[:, 1])
        return torch.cat(out).float().cpu().numpy() if out else np.zeros(0, dtype=np.float32)


def pair_scores(
    model: XVLModel, tokenizer: Any, images: list[Path], texts: list[str], batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """(ITC similarity, ITM match probability) of each (image, text) line."""
    features = PairFeatures(model, tokenizer, images, texts, batch_size)
    return features.itc(), features.itm()


def rerank(features: PairFeatures, blocks: list[list[int]], k: int) -> np.ndarray:
    """ALBEF's retrieval ranking: per block, the contrastive similarity picks the top ``k``
    candidates and the matching head re-orders them; the rest keep their contrastive order
    below them. The score of a line is 2 + its matching probability for the top ``k`` (≥ 2)
    and its cosine similarity (≤ 1) otherwise, so one sort gives that ranking. ``k`` ≤ 0 ranks
    by the contrastive similarity alone."""
    itc = features.itc()
    scores = itc.astype(np.float64)
    if k <= 0:
        return scores
    top = np.concatenate(
        [np.asarray(b)[np.argsort(-itc[b], kind="stable")[:k]] for b in blocks]
    ).astype(np.int64)
    scores[top] = 2.0 + features.itm(top)
    return scores


def chance_mrr(candidates: int, positives: int) -> float:
    """Expected reciprocal rank of the first positive when the block is ordered at random:
    P(first positive at rank r) = C(n − r, p − 1) / C(n, p), r = 1 … n − p + 1."""
    from math import comb

    total = comb(candidates, positives)
    return sum(comb(candidates - r, positives - 1) / total / r
               for r in range(1, candidates - positives + 2))  # fmt: skip


def zero_shot_retrieval(
    checkpoint: Path, pairs: Path, root: Path, out: Path, split: str = "Test"
) -> dict[str, Any]:
    """Score both directions' blocks of ``split``; write and return ``metrics.json``."""
    from medvill.tasks.common import resolve_image_paths
    from medvill.xvl.visualize import load_checkpoint
    from pipeline.taskfiles.jsonl import read_task_file

    model, tokenizer = load_checkpoint(checkpoint)
    doc: dict[str, Any] = {"checkpoint": str(checkpoint), "split": split.lower(), "metrics": {}}
    for direction, prefix in DIRECTIONS.items():
        path = Path(pairs) / f"{prefix}_Label_{split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: run `medvill-prep pairs` first")
        rows = read_task_file(path)
        if not rows:
            raise ValueError(f"{path} has no candidate lines")
        images = resolve_image_paths(rows, Path(root), path)
        relevant = np.array([int(row["is_aligned"][0]) for row in rows], dtype=bool)
        itc, itm = pair_scores(model, tokenizer, images, [r["text"] for r in rows])
        blocks = query_blocks(rows, direction)
        for name, scores in (("itc", itc), ("itm", itm)):
            results = [score_query(scores[b], relevant[b]) for b in blocks]
            doc["metrics"][f"{direction}_{name}"] = retrieval_metrics(results)
        doc["metrics"][f"{direction}_chance"] = {"mrr": float(np.mean(
            [chance_mrr(len(b), int(relevant[b].sum())) for b in blocks]))}  # fmt: skip
        doc[f"{direction}_queries"] = len(blocks)
        doc[f"{direction}_candidates_per_query"] = round(len(rows) / len(blocks), 2)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return doc
