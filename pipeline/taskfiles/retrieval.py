"""Retrieval evaluation blocks ``I2T_Label_{Valid,Test}.jsonl`` / ``T2I_…`` (docs/formats.md §2).

Each query gets one block of consecutive lines: the true pair plus candidates drawn without
replacement from the other labelled records of the same split, in a seeded random order (so
the true pair is not always first). Every line is one (image record, report record) pair:
``id``/``split``/``label``/``img`` describe the image's record and ``T_id``/``text`` the
report's record. In T2I the query is the report (``T_id`` constant over a block); in I2T it is
the image (``id`` constant). ``is_aligned`` is ``[1]`` when the two records' label sets are
equal as sets, so the true pair is always ``[1]`` and other same-label candidates are too.

When a split has fewer labelled records than the block size, every block holds all of them
and the result says how many blocks were short. Unlabelled records are left out: with no label
set, ``is_aligned`` would be undefined.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.taskfiles.common import TaskRecord, format_label

DIRECTIONS: tuple[str, ...] = ("I2T", "T2I")

#: Keys of one retrieval line per style, in the original order.
RETRIEVAL_KEYS: dict[str, tuple[str, ...]] = {
    "mimic": ("id", "split", "label", "is_aligned", "T_id", "text", "img"),
    "openi": ("id", "label", "is_aligned", "T_id", "text", "img"),
}


@dataclass
class RetrievalResult:
    """The counts of one retrieval file for stats.json (its lines go straight to the file)."""

    lines: int = 0
    queries: int = 0
    block_size: int = 0
    short_blocks: int = 0
    unlabelled_skipped: int = 0

    def stats(self, requested: int) -> dict[str, int]:
        return {
            "queries": self.queries,
            "requested_block_size": requested,
            "block_size": self.block_size,
            "queries_with_fewer_candidates": self.short_blocks,
            "lines": self.lines,
            "unlabelled_skipped": self.unlabelled_skipped,
        }


def retrieval_line(
    image: TaskRecord, report: TaskRecord, aligned: bool, style: str
) -> dict[str, Any]:
    """One candidate line pairing ``image``'s record with ``report``'s record."""
    values = {
        "id": image.task_id,
        "split": image.split,
        "label": format_label(image.labels or frozenset(), style),
        "is_aligned": [1 if aligned else 0],
        "T_id": report.task_id,
        "text": report.text,
        "img": image.img,
    }
    return {key: values[key] for key in RETRIEVAL_KEYS[style]}


def iter_blocks(
    records: Sequence[TaskRecord],
    direction: str,
    n_candidates: int,
    style: str,
    rng: np.random.Generator,
    result: RetrievalResult,
) -> Iterator[dict[str, Any]]:
    """The lines of all blocks of one split for ``direction`` (``I2T`` or ``T2I``), queries
    sorted by id, one line at a time; ``result`` receives the counts.

    A generator, so the file is written as the lines come: a split of N labelled records
    gives 100 N lines, and holding them all (MIMIC-CXR's held-out studies, or a hashed 20 %
    split) would grow memory with N.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown retrieval direction '{direction}'; use I2T or T2I")
    if n_candidates < 2:
        raise ValueError(f"pairs.retrieval_candidates must be >= 2, got {n_candidates}")
    pool = sorted((r for r in records if r.labels is not None), key=lambda r: r.task_id)
    result.unlabelled_skipped = len(records) - len(pool)
    result.queries = len(pool)
    if not pool:
        return
    block = min(n_candidates, len(pool))
    result.block_size = block
    result.short_blocks = len(pool) if block < n_candidates else 0
    for index, query in enumerate(pool):
        others = rng.choice(len(pool) - 1, size=block - 1, replace=False)
        others = others + (others >= index)  # skip the query's own position
        members = np.concatenate(([index], others))[rng.permutation(block)]
        for member in members:
            candidate = pool[int(member)]
            aligned = candidate.labels == query.labels
            result.lines += 1
            if direction == "T2I":
                yield retrieval_line(candidate, query, aligned, style)
            else:
                yield retrieval_line(query, candidate, aligned, style)
